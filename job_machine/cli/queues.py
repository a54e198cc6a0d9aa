"""``queues list|pause|resume``."""

from __future__ import annotations

import dataclasses

import click

import job_machine as jm

from .._printable import printable
from ._common import (
    _check_queue,
    _dsn_option,
    _help_group,
    _json_option,
    _need_dsn,
    _print_json,
    _print_table,
)
from .status import _STATS_HEADERS, _stats_rows

# -- queues ---------------------------------------------------------------------------


@_help_group
def queues() -> None:
    """List, pause and resume queues."""


@queues.command("list")
@_json_option
@_dsn_option
def queues_list(as_json: bool, dsn: str | None) -> None:
    """List the queues: their tasks by state (as in `status`), and whether
    each is paused."""
    with jm.Admin(_need_dsn(dsn)) as admin:
        found = admin.stats().queues
    if as_json:
        _print_json([dataclasses.asdict(q) for q in found])
        return
    _print_table(_STATS_HEADERS, _stats_rows(found), "no queues")


@queues.command("pause")
@click.argument("queue", callback=_check_queue)
@_dsn_option
def queues_pause(queue: str, dsn: str | None) -> None:
    """Pause QUEUE: it still takes tasks, but no worker claims them until
    `queues resume`; tasks already running go on. An unknown queue exits 1."""
    with jm.Admin(_need_dsn(dsn)) as admin:
        admin.pause(queue)
    click.echo(f"queue {printable(queue)} paused")


@queues.command("resume")
@click.argument("queue", callback=_check_queue)
@_dsn_option
def queues_resume(queue: str, dsn: str | None) -> None:
    """Resume a paused QUEUE: its workers are woken at once. An unknown
    queue exits 1."""
    with jm.Admin(_need_dsn(dsn)) as admin:
        admin.resume(queue)
    click.echo(f"queue {printable(queue)} resumed")
