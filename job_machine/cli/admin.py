"""``workers list|stop``, ``purge`` and ``reset``: an operator's actions on
the fleet and the tables."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import click

import job_machine as jm

from .._dsn import describe_target
from .._printable import printable
from ..task import COUNTED_STATES, WorkerInfo
from ._common import (
    _PURGE_STATES,
    _TASK_ID,
    _check_queue,
    _dsn_option,
    _duration,
    _json_option,
    _need_dsn,
    _parse_json,
    _print_json,
    _print_table,
)

# -- workers, purge -------------------------------------------------------------------


def _worker_json(w: WorkerInfo) -> dict[str, Any]:
    return dataclasses.asdict(w)


def _list_workers(as_json: bool, dsn: str | None) -> None:
    with jm.Admin(_need_dsn(dsn)) as admin:
        found = admin.workers()
    if as_json:
        _print_json([_worker_json(w) for w in found])
        return
    headers = ["id", "host", "pid", "alive", "queues", "running", "started", "seen", "command"]
    rows = [
        [w.id, w.host, w.pid, w.alive, w.queues, w.running, w.started, w.seen, w.command]
        for w in found
    ]
    _print_table(headers, rows, "no workers")


@click.group(invoke_without_command=True)
@_json_option
@_dsn_option
@click.pass_context
def workers(ctx: click.Context, as_json: bool, dsn: str | None) -> None:
    """List the registered workers (the same as `workers list`), or stop them."""
    if ctx.invoked_subcommand is None:
        _list_workers(as_json, dsn)
        return
    for name in ("as_json", "dsn"):
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            option = "--json" if name == "as_json" else "--dsn"
            raise click.UsageError(
                f"{option} goes after the subcommand: job-machine workers "
                f"{ctx.invoked_subcommand} ... {option}",
                ctx=ctx,
            )


@workers.command("list")
@_json_option
@_dsn_option
def workers_list(as_json: bool, dsn: str | None) -> None:
    """List the registered workers: alive (PostgreSQL holds their liveness
    lock) or not, their queues, the tasks each is running, and a command
    left for it (stop) that it has not read yet."""
    _list_workers(as_json, dsn)


@workers.command("stop")
@click.argument("worker_id", metavar="[WORKER_ID]", type=_TASK_ID, required=False)
@click.option("--all", "every", is_flag=True, help="Stop every registered worker.")
@_dsn_option
def workers_stop(worker_id: int | None, every: bool, dsn: str | None) -> None:
    """Ask a worker (or --all) to stop: it finishes the task in hand and
    exits 0, as on SIGTERM. Each reads the request with its next heartbeat,
    within a few seconds (dead_after / 4). An unknown worker exits 1.
    """
    if (worker_id is None) == (not every):
        raise click.UsageError(
            "give a WORKER_ID or --all, not both" if every else "give a WORKER_ID or --all",
            ctx=click.get_current_context(silent=True),
        )
    with jm.Admin(_need_dsn(dsn)) as admin:
        alive = {w.id: w.alive for w in admin.workers()}
        if worker_id is not None and worker_id not in alive:
            raise click.ClickException(f"there is no worker {worker_id}")
        asked = admin.stop_workers(worker_id)
    if worker_id is not None:
        if not asked:  # gone since it was listed
            raise click.ClickException(f"there is no worker {worker_id}")
        note = "" if alive[worker_id] else " (it is not alive)"
        click.echo(f"asked worker {worker_id} to stop{note}")
        return
    dead = sum(1 for a in alive.values() if not a)
    note = f" ({dead} of them not alive)" if asked and dead else ""
    click.echo(f"asked {asked} worker{'' if asked == 1 else 's'} to stop{note}")


@click.command()
@click.option(
    "--state",
    type=click.Choice(_PURGE_STATES),
    default="finished",
    show_default=True,
    help="Which finished tasks: done, failed, or both.",
)
@click.option("--queue", callback=_check_queue, metavar="QUEUE", help="Only tasks of this queue.")
@click.option(
    "--older-than",
    metavar="DURATION",
    callback=_duration,
    help="Only tasks finished longer ago than this: seconds, or 15m, 2h, 7d. Default: all.",
)
@_dsn_option
def purge(state: str, queue: str | None, older_than: float, dsn: str | None) -> None:
    """Delete finished tasks and their results; prints how many.

    Deletes in batches, so it holds no long lock. A reply a client has not
    read yet goes too: --older-than keeps the recent ones. Workers delete
    finished tasks older than their remove_after (30 days) by themselves.
    """
    with jm.Admin(_need_dsn(dsn)) as admin:
        removed = admin.purge(state, queue=queue, older_than=older_than)
    click.echo(f"removed {removed} task{'' if removed == 1 else 's'}")


@click.command()
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@_dsn_option
def reset(yes: bool, dsn: str | None) -> None:
    """Delete every task (waiting, running or finished, with its results),
    every named lock and every cron schedule, in one transaction.

    Asks first, showing how many tasks there are (--yes does not ask);
    any answer but y or yes deletes nothing (exit 1). Registered workers and
    queues stay; a worker running a task finds it gone when it answers,
    and a client waiting for one is told it was removed. Nothing brings
    them back.
    """
    target = _need_dsn(dsn)
    with jm.Admin(target) as admin:
        if not yes:
            stats = admin.stats()
            count = stats.done + sum(stats.total(state) for state in COUNTED_STATES)
            about = "~" if stats.done_estimated else ""
            question = (
                f"Delete every task ({about}{count}), result, named lock and schedule "
                f"of {describe_target(target)}?"
            )
            click.echo(f"{question} [y/N]: ", nl=False, err=True)
            try:
                answer = sys.stdin.readline()  # asked once: anything but y is no
            except KeyboardInterrupt:
                raise click.Abort from None
            if not sys.stdin.isatty():
                click.echo(err=True)  # the answer was not echoed: end the prompt's line
            if answer.strip().lower() not in ("y", "yes"):
                raise click.ClickException("nothing deleted (--yes resets without asking)")
        removed = admin.reset(confirm=True)
    counts = ", ".join(f"{n} {what}" for what, n in removed.items())
    click.echo(f"reset: removed {counts}")


@workers.command("broadcast")
@click.argument("command")
@click.argument("data", metavar="[JSON]", required=False)
@click.option(
    "--worker",
    "worker_ids",
    type=_TASK_ID,
    multiple=True,
    metavar="WORKER_ID",
    help="Only this worker (repeat for more) [every registered worker].",
)
@_dsn_option
def workers_broadcast(
    command: str, data: str | None, worker_ids: tuple[int, ...], dsn: str | None
) -> None:
    """Send COMMAND, with JSON as its args, to the workers: each is woken
    and runs its handler for it once (at the latest with its next
    heartbeat, dead_after / 4). Built in:
    `concurrency N` (tasks at once from now on), `status` (the worker logs
    what it is doing), `stop`; others are the workers' own
    (Worker.on_command). Prints how many workers it was left for.
    """
    args = None if data is None else _parse_json(data)
    with jm.Admin(_need_dsn(dsn)) as admin:
        sent = admin.broadcast(command, args, list(worker_ids) if worker_ids else None)
    click.echo(f"sent {printable(command)} to {sent} worker{'' if sent == 1 else 's'}")
