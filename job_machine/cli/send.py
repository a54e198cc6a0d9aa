"""``send``: send one task, and with --wait print its reply."""

from __future__ import annotations

import click

import job_machine as jm

from .._printable import printable
from ._common import (
    _INT32,
    _PRIORITY,
    _SECONDS,
    _TASK_ID,
    _check_queue,
    _dsn_option,
    _json_option,
    _need_dsn,
    _optional_duration,
    _parse_json,
    _print_json,
)

# -- send -------------------------------------------------------------------------


@click.command()
@click.argument("queue", callback=_check_queue)
@click.argument("data", metavar="JSON")
@click.option(
    "--priority",
    type=_PRIORITY,
    metavar="N",
    default=0,
    show_default=True,
    help="Higher runs first (then oldest first); may be negative.",
)
@click.option(
    "--delay",
    metavar="DURATION",
    callback=_optional_duration,
    help="Not before this long from now: seconds, or 15m, 2h, 7d.",
)
@click.option(
    "--attempts",
    type=click.IntRange(min=1, max=_INT32),
    metavar="N",
    help="How many times it may run in all [the worker's --retries + 1].",
)
@click.option(
    "--time-limit",
    metavar="DURATION",
    callback=_optional_duration,
    help="How long one attempt may run before the worker stops it "
    "(seconds, or 90s, 15m, 2h) [the worker's --time-limit].",
)
@click.option(
    "--expire-after",
    metavar="DURATION",
    callback=_optional_duration,
    help="Fail it as expired unless a worker starts it within this long from now "
    "(seconds, or 15m, 2h, 7d).",
)
@click.option("--title", metavar="TEXT", help="Free text to recognise it by.")
@click.option(
    "--grouping", metavar="TEXT", help="A key to find related tasks by (tasks list --grouping)."
)
@click.option(
    "--unique-key",
    metavar="TEXT",
    help="While a task of QUEUE with this key is waiting, blocked or running, "
    "send nothing and print that task's id.",
)
@click.option(
    "--parent",
    "parents",
    type=_TASK_ID,
    metavar="ID",
    multiple=True,
    help="A task that must be done before this one runs; repeat for several. "
    "If one fails, this one fails without running.",
)
@click.option("--wait", is_flag=True, help="Wait for the reply and print it as JSON.")
@click.option(
    "--timeout",
    type=_SECONDS,
    metavar="SECONDS",
    default=30.0,
    show_default=True,
    help="With --wait: seconds to wait for the reply.",
)
@_json_option
@_dsn_option
def send(
    *,
    queue: str,
    data: str,
    priority: int,
    delay: float | None,
    attempts: int | None,
    time_limit: float | None,
    expire_after: float | None,
    title: str | None,
    grouping: str | None,
    unique_key: str | None,
    parents: tuple[int, ...],
    wait: bool,
    timeout: float,
    as_json: bool,
    dsn: str | None,
) -> None:
    """Send a task to QUEUE and print its id.

    JSON is the task's data (any JSON value; `-` reads it from stdin). With
    --wait, prints the reply as JSON instead, the id going to stderr; a task
    that failed, or no reply within --timeout, exits 1. With --json, prints
    {"id": ...}, and with --wait {"id": ..., "reply": ...}. A --parent that
    does not exist exits 1 and sends nothing.
    """
    if unique_key == "":
        raise click.BadParameter("the key is empty", param_hint="'--unique-key'")
    payload = _parse_json(data)
    with jm.Client(_need_dsn(dsn), queue=queue) as client:
        task_id = client.send(
            payload,
            priority=priority,
            delay=delay,
            attempts=attempts,
            time_limit=time_limit,
            expire_after=expire_after,
            title=title,
            grouping=grouping,
            unique_key=unique_key,
            parents=parents or None,
        )
        if not wait:
            if as_json:
                _print_json({"id": task_id})
            else:
                click.echo(task_id)
            return
        click.echo(f"sent task {task_id} to {printable(queue)}; waiting for its reply", err=True)
        try:
            reply = client.wait(task_id, timeout=timeout)
        except jm.TaskFailed as ex:
            if as_json:
                _print_json({"id": task_id, "state": "failed", "error": ex.error})
            raise
    _print_json({"id": task_id, "reply": reply} if as_json else reply)
