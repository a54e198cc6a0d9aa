"""``status`` (counts by queue and state, --watch) and ``history`` (by hour)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click
from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

import job_machine as jm

from .._format import local_time, one_line
from ..task import COUNTED_STATES, HourStats, QueueStats, Stats
from ._common import (
    _dsn_option,
    _json_option,
    _need_dsn,
    _print_json,
    _print_table,
    _rich_table,
    _terminal,
)

# -- status ------------------------------------------------------------------------

_STATS_HEADERS = ["queue", *COUNTED_STATES, "paused"]


def _stats_rows(stats: Sequence[QueueStats]) -> list[list[object]]:
    return [
        [s.queue, s.waiting, s.delayed, s.blocked, s.running, s.failed, s.paused] for s in stats
    ]


def _stats_json(stats: Stats, line: str) -> dict[str, Any]:
    return {
        "status": line,
        "queues": [dataclasses.asdict(s) for s in stats.queues],
        "totals": {field: stats.total(field) for field in COUNTED_STATES},
        "done": stats.done,
        "done_estimated": stats.done_estimated,
        "workers": stats.workers,
        "busy": stats.busy,
        "idle": stats.idle,
    }


def _stats_summary(stats: Stats) -> str:
    """The second line of ``status``: the done count in full, the workers."""
    done = f"{stats.done} (estimated)" if stats.done_estimated else str(stats.done)
    return f"done {done}; workers {stats.workers} alive: {stats.busy} busy, {stats.idle} idle"


def _print_status(admin: jm.Admin, as_json: bool, stamp: bool = False) -> None:
    line = admin.status_string()
    stats = admin.stats()
    if as_json:
        _print_json(_stats_json(stats, line))
        return
    click.echo(f"{datetime.now():%H:%M:%S} {line}" if stamp else line)
    click.echo(_stats_summary(stats))
    _print_table(_STATS_HEADERS, _stats_rows(stats.queues), "no queues")


def _status_screen(admin: jm.Admin) -> RenderableType:
    line = Text(f"{datetime.now():%H:%M:%S}  {admin.status_string()}", style="bold")
    stats = admin.stats()
    summary = Text(_stats_summary(stats))
    if not stats.queues:
        return Group(line, summary, Text("no queues"))
    return Group(line, summary, _rich_table(_STATS_HEADERS, _stats_rows(stats.queues)))


def _watch(admin: jm.Admin, interval: float, as_json: bool) -> None:
    """Refresh the status every ``interval`` seconds until Ctrl-C: in place on a
    terminal, as one more block (or JSON line) per refresh otherwise. A database
    error after the first refresh is shown and retried, not fatal."""
    if as_json or not _terminal():
        _print_status(admin, as_json, stamp=True)
        while True:
            time.sleep(interval)
            if not as_json:
                click.echo()
            try:
                _print_status(admin, as_json, stamp=True)
            except jm.JobMachineError as ex:
                click.echo(f"Error: {one_line(ex)}", err=True)
    with Live(_status_screen(admin), auto_refresh=False) as live:
        while True:
            time.sleep(interval)
            try:
                screen = _status_screen(admin)
            except jm.JobMachineError as ex:
                screen = Text(f"{datetime.now():%H:%M:%S}  Error: {one_line(ex)}", style="red")
            live.update(screen, refresh=True)


@click.command()
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    default=2.0,
    show_default=True,
    help="With --watch: seconds between refreshes.",
)
@_json_option
@_dsn_option
def status(watch: bool, interval: float, as_json: bool, dsn: str | None) -> None:
    """Show the totals line and the tasks of each queue by state.

    The line reads W=waiting (due now) D=delayed (not due yet: --delay, or
    a retry in backoff) B=blocked (waiting for parent tasks) R=running
    F=failed done= workers=busy/alive; the next line gives the done count in
    full and the workers alive, busy and idle. The table has a row per queue,
    paused or not. --watch refreshes it in place until Ctrl-C; in a pipe it
    prints one block, or with --json one JSON line, per refresh.
    """
    with jm.Admin(_need_dsn(dsn)) as admin:
        if not watch:
            _print_status(admin, as_json)
            return
        try:
            _watch(admin, interval, as_json)
        except KeyboardInterrupt:
            return


# -- history -------------------------------------------------------------------------


def _hour_json(h: HourStats) -> dict[str, Any]:
    return {"hour": h.hour, "done": h.done, "failed": h.failed}


@click.command()
@_json_option
@_dsn_option
def history(as_json: bool, dsn: str | None) -> None:
    """Show how many tasks were done and failed in each of the last 24 hours.

    One row per hour, oldest first, by when the tasks finished; hours
    without any are included, and the current hour is the last row. Tasks
    already removed (purge, remove_after) are not counted.
    """
    with jm.Admin(_need_dsn(dsn)) as admin:
        hours = admin.history()
    if as_json:
        _print_json([_hour_json(h) for h in hours])
        return
    rows = [[_hour(h.hour), h.done, h.failed] for h in hours]
    _print_table(["hour", "done", "failed"], rows, "no history")


def _hour(value: datetime) -> str:
    """The start of an hour, local time, to the minute."""
    return local_time(value, seconds=False)
