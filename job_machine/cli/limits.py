"""``limits list|set|clear``: the fleet-wide limits of queues (docs/limits.md)."""

from __future__ import annotations

import dataclasses
from typing import Any

import click

import job_machine as jm

from .._printable import printable
from ..channels import Exact
from ._common import (
    _INT32,
    _check_queue,
    _dsn_option,
    _json_option,
    _need_dsn,
    _optional_duration,
    _print_json,
    _print_table,
)


def _limit_json(limit: jm.QueueLimit) -> dict[str, Any]:
    return dataclasses.asdict(limit)


def _list_limits(as_json: bool, dsn: str | None) -> None:
    with jm.Admin(_need_dsn(dsn)) as admin:
        found = admin.limits()
    if as_json:
        _print_json([_limit_json(x) for x in found])
        return
    headers = ["queue", "concurrency", "rate", "per", "per grouping", "running", "recent"]
    rows = [
        [
            printable(x.queue),
            "-" if x.concurrency is None else x.concurrency,
            "-" if x.rate is None else x.rate,
            f"{x.per:g} s" if x.rate is not None else "-",
            x.per_grouping,
            x.running,
            x.recent if x.rate is not None else "-",
        ]
        for x in found
    ]
    _print_table(headers, rows, "no limits")


@click.group(invoke_without_command=True)
@click.pass_context
def limits(ctx: click.Context) -> None:
    """List, set and clear the fleet-wide limits of queues (docs/limits.md)."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@limits.command("list")
@_json_option
@_dsn_option
def limits_list(as_json: bool, dsn: str | None) -> None:
    """List the queues' limits, with how many of each queue's tasks are
    started now (running or claimed ahead) and, with a rate, how many were
    claimed in its window."""
    _list_limits(as_json, dsn)


@limits.command("set")
@click.argument("queue", callback=_check_queue)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=_INT32),
    metavar="N",
    help="At most N of its tasks started at once, across every worker.",
)
@click.option(
    "--rate",
    type=click.IntRange(min=1, max=_INT32),
    metavar="N",
    help="At most N of its tasks started per --per.",
)
@click.option(
    "--per",
    metavar="DURATION",
    callback=_optional_duration,
    help="The window of --rate: seconds, or 15m, 2h, 7d [1 s].",
)
@click.option(
    "--per-grouping",
    is_flag=True,
    help="The limits apply to each --grouping of its tasks on its own.",
)
@click.option("--exact", is_flag=True, help="QUEUE is a queue named like a pattern (gl.*).")
@_dsn_option
def limits_set(
    *,
    queue: str,
    concurrency: int | None,
    rate: int | None,
    per: float | None,
    per_grouping: bool,
    exact: bool,
    dsn: str | None,
) -> None:
    """Limit QUEUE across every worker, replacing its limits: give
    --concurrency, --rate (with --per), or both. The queue need not exist
    yet; only the queue of exactly this name is limited, not those below
    it. Perl workers do not honour limits.
    """
    if concurrency is None and rate is None:
        raise click.UsageError(
            "give --concurrency, --rate or both (`limits clear QUEUE` removes them)",
            ctx=click.get_current_context(silent=True),
        )
    name = Exact(queue) if exact else queue
    with jm.Admin(_need_dsn(dsn)) as admin:
        admin.set_limits(
            name,
            concurrency=concurrency,
            rate=rate,
            per=1.0 if per is None else per,
            per_grouping=per_grouping,
        )
    click.echo(f"queue {printable(queue)} limited")


@limits.command("clear")
@click.argument("queue", callback=_check_queue)
@click.option("--exact", is_flag=True, help="QUEUE is a queue named like a pattern (gl.*).")
@_dsn_option
def limits_clear(queue: str, exact: bool, dsn: str | None) -> None:
    """Remove the limits of QUEUE (none: nothing happens)."""
    with jm.Admin(_need_dsn(dsn)) as admin:
        admin.set_limits(Exact(queue) if exact else queue)
    click.echo(f"queue {printable(queue)} has no limits")
