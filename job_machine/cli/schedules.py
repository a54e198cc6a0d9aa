"""``schedules add|list|pause|resume|remove``: cron schedules."""

from __future__ import annotations

import dataclasses

import click

import job_machine as jm

from ._common import (
    _INT32,
    _PRIORITY,
    _check_queue,
    _dsn_option,
    _help_group,
    _json_option,
    _need_dsn,
    _optional_duration,
    _parse_json,
    _print_json,
    _print_table,
    _when,
)

# -- cron schedules -------------------------------------------------------------------


@_help_group
def schedules() -> None:
    """Add, list, pause, resume and remove cron schedules (docs/schedules.md)."""


@schedules.command("add")
@click.argument("name")
@click.argument("cron")
@click.argument("queue", callback=_check_queue)
@click.argument("data", metavar="[JSON]", required=False, default="null")
@click.option(
    "--timezone",
    metavar="ZONE",
    default="UTC",
    show_default=True,
    help="Read CRON in this IANA zone (Europe/Oslo); DST as Debian cron.",
)
@click.option("--priority", type=_PRIORITY, metavar="N", default=0, show_default=True)
@click.option(
    "--attempts",
    type=click.IntRange(min=1, max=_INT32),
    metavar="N",
    help="How many times each task may run in all [the worker's --retries + 1].",
)
@click.option("--title", metavar="TEXT", help="The tasks' title [NAME].")
@click.option("--grouping", metavar="TEXT", help="The tasks' grouping.")
@click.option(
    "--remove-after",
    metavar="DURATION",
    callback=_optional_duration,
    help="Keep each task this long once finished: seconds, or 15m, 2h, 7d "
    "[the worker's --remove-after].",
)
@_json_option
@_dsn_option
def schedules_add(
    *,
    name: str,
    cron: str,
    queue: str,
    data: str,
    timezone: str,
    priority: int,
    attempts: int | None,
    title: str | None,
    grouping: str | None,
    remove_after: float | None,
    as_json: bool,
    dsn: str | None,
) -> None:
    """Send a task with JSON (default null; `-` reads stdin) to QUEUE at
    every tick of CRON, or replace the schedule NAME.

    CRON has five fields (minute hour day month weekday; quote it), six with
    seconds first, or is @hourly, @daily, @weekly, @monthly or @yearly. The
    workers' housekeeper sends each tick's task once; ticks missed while no
    worker ran are run once. A replaced schedule keeps its paused state.
    """
    payload = _parse_json(data)
    with jm.Admin(_need_dsn(dsn)) as admin:
        info = admin.schedule(
            name,
            cron,
            queue,
            payload,
            timezone=timezone,
            priority=priority,
            attempts=attempts,
            title=title,
            grouping=grouping,
            remove_after=remove_after,
        )
    if as_json:
        _print_json(dataclasses.asdict(info))
        return
    state = "paused" if info.paused else f"next at {_when(info.next_run)}"
    click.echo(f"schedule {info.name}: {info.cron} ({info.timezone}) to {info.queue}, {state}")


@schedules.command("list")
@_json_option
@_dsn_option
def schedules_list(as_json: bool, dsn: str | None) -> None:
    """List the schedules: cron, zone, queue, whether paused, the next tick,
    and the last task sent with its state."""
    with jm.Admin(_need_dsn(dsn)) as admin:
        found = admin.schedules()
    if as_json:
        _print_json([dataclasses.asdict(s) for s in found])
        return
    headers = ["name", "cron", "timezone", "queue", "paused", "next", "last", "last task"]
    rows = [
        [
            s.name,
            s.cron,
            s.timezone,
            s.queue,
            s.paused,
            None if s.paused else s.next_run,
            s.last_run,
            f"{s.last_task_id} {s.last_state or 'gone'}" if s.last_task_id else None,
        ]
        for s in found
    ]
    _print_table(headers, rows, "no schedules")


@schedules.command("pause")
@click.argument("name")
@_dsn_option
def schedules_pause(name: str, dsn: str | None) -> None:
    """Pause schedule NAME: it sends nothing, and the ticks that pass are
    skipped, until `schedules resume`. An unknown schedule exits 1."""
    with jm.Admin(_need_dsn(dsn)) as admin:
        admin.pause_schedule(name)
    click.echo(f"schedule {name} paused")


@schedules.command("resume")
@click.argument("name")
@_dsn_option
def schedules_resume(name: str, dsn: str | None) -> None:
    """Resume schedule NAME from its next tick after now. An unknown
    schedule exits 1."""
    with jm.Admin(_need_dsn(dsn)) as admin:
        admin.resume_schedule(name)
        info = next(s for s in admin.schedules() if s.name == name)
    click.echo(f"schedule {name} resumed: next at {_when(info.next_run)}")


@schedules.command("remove")
@click.argument("name")
@_dsn_option
def schedules_remove(name: str, dsn: str | None) -> None:
    """Remove schedule NAME: no tick of it is sent any more (the tasks it
    sent stay). An unknown schedule exits 1."""
    with jm.Admin(_need_dsn(dsn)) as admin:
        admin.unschedule(name)
    click.echo(f"schedule {name} removed")
