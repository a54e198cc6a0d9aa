"""``tasks list|show|note|retry|cancel|remove``."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Sequence
from typing import Any

import click

import job_machine as jm

from .._printable import printable
from ..task import TaskInfo, TaskSummary
from ._common import (
    _PRIORITY,
    _STATE_WORDS,
    _TASK_ID,
    _cell,
    _check_queue,
    _dsn_option,
    _help_group,
    _json_option,
    _loads,
    _need_dsn,
    _print_json,
    _print_table,
    _terminal,
    _when,
)

# -- tasks ----------------------------------------------------------------------------


@_help_group
def tasks() -> None:
    """List, show, note, retry, cancel and remove tasks."""


def _summary_json(t: TaskSummary) -> dict[str, Any]:
    return {
        "id": t.id,
        "queue": t.queue,
        "state": t.state,
        "status": int(t.status),
        "attempts": t.attempts,
        "created": t.created,
        "modified": t.modified,
        "run_after": t.run_after,
        "worker_id": t.worker_id,
        "priority": t.priority,
        "title": t.title,
        "grouping": t.grouping,
        "parameters": t.parameters,
    }


@tasks.command("list")
@click.option("--state", type=click.Choice(_STATE_WORDS), help="Only tasks in this state.")
@click.option("--queue", callback=_check_queue, metavar="QUEUE", help="Only tasks of this queue.")
@click.option("--grouping", metavar="TEXT", help="Only tasks sent with this --grouping.")
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    metavar="N",
    default=50,
    show_default=True,
    help="At most this many tasks.",
)
@click.option(
    "--before-id",
    type=_TASK_ID,
    metavar="ID",
    help="Only tasks older than this id: the next page starts below the last id shown.",
)
@click.option(
    "--offset",
    type=click.IntRange(min=0),
    metavar="N",
    default=0,
    help="Skip this many tasks first (slower than --before-id on deep pages).",
)
@_json_option
@_dsn_option
def tasks_list(
    *,
    state: str | None,
    queue: str | None,
    grouping: str | None,
    limit: int,
    before_id: int | None,
    offset: int,
    as_json: bool,
    dsn: str | None,
) -> None:
    """List tasks, newest first.

    The data column shows the first 200 characters of the task's JSON.
    """
    with jm.Admin(_need_dsn(dsn)) as admin:
        found = admin.list_tasks(
            state=state,
            queue=queue,
            grouping=grouping,
            limit=limit,
            before_id=before_id,
            offset=offset,
        )
    if as_json:
        _print_json([_summary_json(t) for t in found])
        return
    headers = ["id", "queue", "state", "priority", "attempts", "created", "modified"]
    headers += ["run_after", "worker", "title", "data"]
    rows = [
        [
            t.id,
            t.queue,
            t.state,
            t.priority,
            t.attempts,
            t.created,
            t.modified,
            t.run_after,
            t.worker_id,
            t.title,
            t.parameters,
        ]
        for t in found
    ]
    if _terminal() and all(t.title is None for t in found):
        # Room for the data on a terminal; a pipe always gets every column.
        title = headers.index("title")
        headers.pop(title)
        for row in rows:
            row.pop(title)
    _print_table(headers, rows, "no tasks")
    if _terminal() and len(found) == limit:
        click.echo(f"more: --before-id {found[-1].id}", err=True)


def _info_json(info: TaskInfo) -> dict[str, Any]:
    worker = None
    if info.worker is not None:
        worker_id, host, pid = info.worker
        worker = {"id": worker_id, "host": host, "pid": pid}
    return {
        "id": info.id,
        "queue": info.queue,
        "state": info.state,
        "status": int(info.status),
        "priority": info.priority,
        "attempts": info.attempts,
        "max_attempts": info.max_attempts,
        "title": info.title,
        "grouping": info.grouping,
        "unique_key": info.unique_key,
        "data": info.data,
        "reply": info.reply,
        "results": info.results,
        "errors": info.errors,
        "notes": info.notes,
        "parents": info.parents,
        "children": info.children,
        "created": info.created,
        "modified": info.modified,
        "run_after": info.run_after,
        "started": info.started,
        "remove_after": info.remove_after,
        "keep_for": info.keep_for,
        "time_limit": info.time_limit,
        "expires_at": info.expires_at,
        "cancelled_at": info.cancelled_at,
        "worker": worker,
        "worker_id": info.worker_id,
    }


def _text(value: str | None) -> str:
    return "-" if value is None else _cell(value)


def _json_text(value: Any) -> str:
    # JSON escapes C0 controls; printable() also the C1 ones and bidi overrides.
    return printable(json.dumps(value, ensure_ascii=False))


def _kept(info: TaskInfo) -> str:
    """When a finished task is removed, by its own option or the worker's."""
    if info.remove_after is not None:
        return f"{_when(info.remove_after)} (once finished)"
    if info.keep_for is not None:
        return f"{info.keep_for:g} s after it finishes"
    return "- (the worker's remove_after)"


def _limit(info: TaskInfo) -> str:
    """How long one attempt may run, by the task's own option or the worker's."""
    if info.time_limit is not None:
        return f"{info.time_limit:g} s an attempt"
    return "- (the worker's time_limit)"


def _task_ids(ids: Sequence[int], states: dict[int, str] | None = None) -> str:
    """``3 (done), 4 (running)``; ``-`` for none."""
    if not ids:
        return "-"
    if states is None:
        return ", ".join(str(i) for i in ids)
    return ", ".join(f"{i} ({states.get(i, 'removed')})" for i in ids)


def _worker_of(info: TaskInfo) -> str:
    if info.worker is not None:
        worker_id, host, pid = info.worker
        return f"{worker_id} on {printable(host)}, pid {pid} (running it)"
    if info.worker_id is not None:
        return f"{info.worker_id} (the last to claim it)"
    return "-"


def _print_info(info: TaskInfo, tracebacks: bool, parent_states: dict[int, str]) -> None:
    if info.max_attempts is not None:
        max_attempts = str(info.max_attempts)
    else:
        max_attempts = "- (the worker's retries + 1)"
    fields = [
        ("id", str(info.id)),
        ("queue", _cell(info.queue)),
        ("state", f"{info.state} ({int(info.status)})"),
        ("priority", str(info.priority)),
        ("attempts", str(info.attempts)),
        ("max_attempts", max_attempts),
        ("title", _text(info.title)),
        ("grouping", _text(info.grouping)),
        ("unique_key", _text(info.unique_key)),
        ("parents", _task_ids(info.parents, parent_states)),
        ("children", _task_ids(info.children)),
        ("created", _when(info.created)),
        ("modified", _when(info.modified)),
        ("run_after", _when(info.run_after)),
        ("started", _when(info.started)),
        ("remove_after", _kept(info)),
        ("time_limit", _limit(info)),
        ("expires_at", _when(info.expires_at)),
        ("cancelled_at", _when(info.cancelled_at)),
        ("worker", _worker_of(info)),
        ("data", _json_text(info.data)),
        ("notes", _json_text(info.notes) if info.notes else "-"),
        ("reply", "-" if info.reply is None else _json_text(info.reply)),
        ("results", str(len(info.results))),
    ]
    width = max(len(name) for name, _ in [*fields, ("errors", "")])
    for name, value in fields:
        click.echo(f"{click.style(name.ljust(width), bold=True)}  {value}")
    if len(info.results) > 1:  # the last one is the reply, shown above
        for n, result in enumerate(info.results, 1):
            click.echo(f"  result {n}: {_json_text(result)}")
    click.echo(f"{click.style('errors'.ljust(width), bold=True)}  {len(info.errors)}")
    for error in info.errors:
        if isinstance(error, dict):
            attempt = f"attempt {error['attempt']}: " if "attempt" in error else ""
            kind, message = printable(str(error.get("type"))), printable(str(error.get("message")))
            click.echo(f"  {printable(attempt)}{kind}: {message}")
            if tracebacks and error.get("traceback"):
                for line in printable(str(error["traceback"]), lines=True).rstrip().split("\n"):
                    click.echo(f"    {line}")
        else:
            click.echo(f"  {_json_text(error)}")


def _states_of(admin: jm.Admin, ids: Sequence[int]) -> dict[int, str]:
    """The state of each task of ``ids`` that still exists."""
    states: dict[int, str] = {}
    for task_id in ids:
        with contextlib.suppress(jm.UnknownTask):
            states[task_id] = admin.task_info(task_id).state
    return states


@tasks.command("show")
@click.argument("task_id", metavar="ID", type=_TASK_ID)
@click.option("--traceback", "tracebacks", is_flag=True, help="Show each error's traceback.")
@_json_option
@_dsn_option
def tasks_show(task_id: int, tracebacks: bool, as_json: bool, dsn: str | None) -> None:
    """Show one task: state, options, attempts, data, notes, replies, every
    error, its parents (with their states) and children, and its worker."""
    with jm.Admin(_need_dsn(dsn)) as admin:
        info = admin.task_info(task_id)
        parent_states = {} if as_json else _states_of(admin, info.parents)
    if as_json:
        _print_json(_info_json(info))
    else:
        _print_info(info, tracebacks, parent_states)


def _note_pair(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, Any]:
    """``KEY=TEXT`` (a string) or ``KEY:=JSON`` (any JSON value; null removes the note)."""
    notes: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=TEXT or KEY:=JSON", ctx, param)
        if key.endswith(":"):
            key = key[:-1]
            try:
                notes[key] = _loads(value)
            except ValueError as ex:
                raise click.BadParameter(
                    f"{item!r}: the value is not valid JSON: {ex}", ctx, param
                ) from None
        else:
            notes[key] = value
        if not key:
            raise click.BadParameter(f"{item!r} has no key", ctx, param)
    return notes


@tasks.command("note")
@click.argument("task_id", metavar="ID", type=_TASK_ID)
@click.argument("notes", metavar="KEY=VALUE...", nargs=-1, required=True, callback=_note_pair)
@_json_option
@_dsn_option
def tasks_note(task_id: int, notes: dict[str, Any], as_json: bool, dsn: str | None) -> None:
    """Attach notes (metadata) to a task, and print all its notes.

    KEY=TEXT sets a string; KEY:=JSON sets any JSON value (count:=3,
    tags:='["a"]'); KEY:=null removes the note. Other notes stay.
    """
    target = _need_dsn(dsn)
    with jm.Client(target) as client:
        client.note(task_id, **notes)
        now = client.task_info(task_id).notes
    if as_json:
        _print_json({"id": task_id, "notes": now})
    else:
        click.echo(f"task {task_id} notes: {_json_text(now)}")


@tasks.command("retry")
@click.argument("task_id", metavar="ID", type=_TASK_ID)
@click.option(
    "--queue", callback=_check_queue, metavar="QUEUE", help="Send it to this queue instead."
)
@click.option("--priority", type=_PRIORITY, metavar="N", help="Give it this priority instead.")
@_dsn_option
def tasks_retry(task_id: int, queue: str | None, priority: int | None, dsn: str | None) -> None:
    """Send a done or failed task again, with a fresh budget of attempts.

    Its earlier results and errors stay. A task whose parents are not all
    done is blocked again until they are. A waiting, blocked or running task
    is left alone (exit 1).
    """
    with jm.Admin(_need_dsn(dsn)) as admin:
        admin.retry(task_id, queue, priority)
        info = admin.task_info(task_id)
    with_priority = "" if priority is None else f", priority {info.priority}"
    click.echo(
        f"task {task_id} is {info.state} again on queue {printable(str(info.queue))}{with_priority}"
    )


@tasks.command("cancel")
@click.argument("task_id", metavar="ID", type=_TASK_ID)
@click.option("-y", "--yes", is_flag=True, help="Cancel a running task without asking.")
@_dsn_option
def tasks_cancel(task_id: int, yes: bool, dsn: str | None) -> None:
    """Cancel a waiting, blocked or running task: it fails with a Cancelled
    error (not retried), a client waiting for it is told, and the tasks
    blocked on it fail too. A running task's worker stops it (docs/deadlines.md);
    that is asked first (--yes does not ask; any answer but y or yes
    cancels nothing, exit 1). A finished task is left alone (exit 1)."""
    with jm.Admin(_need_dsn(dsn)) as admin:
        if not yes and admin.task_info(task_id).state == "running":
            click.echo(
                f"Task {task_id} is running: stop it and cancel it? [y/N]: ", nl=False, err=True
            )
            answer = sys.stdin.readline()  # asked once: anything but y is no
            if not sys.stdin.isatty():
                click.echo(err=True)  # the answer was not echoed: end the prompt's line
            if answer.strip().lower() not in ("y", "yes"):
                raise click.ClickException(
                    f"task {task_id} not cancelled (--yes cancels without asking)"
                )
        admin.cancel(task_id)
    click.echo(f"task {task_id} cancelled")


@tasks.command("remove")
@click.argument("task_id", metavar="ID", type=_TASK_ID)
@_dsn_option
def tasks_remove(task_id: int, dsn: str | None) -> None:
    """Delete a task and its results. A running task is left alone (exit 1)."""
    with jm.Admin(_need_dsn(dsn)) as admin:
        admin.remove(task_id)
    click.echo(f"task {task_id} removed")
