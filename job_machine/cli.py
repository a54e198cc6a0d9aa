"""The ``job-machine`` command line: install the schema, run a worker, send
tasks, and look at and act on the machine. ``job-machine --help`` lists the
commands; docs/cli.md describes each one.

Every command that needs a database takes ``--dsn``, by default
``$JOB_MACHINE_DSN``. Errors are one line on stderr: exit code 2 for a
usage error (a bad option, argument or JSON), 1 for a failure at run time
(the database, a task that failed, an action the task's state forbids).
When stdout is not a terminal, tables are tab-separated lines with a header
line, without colors; ``--json`` gives scripts the same data as JSON.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click
import psycopg
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

import job_machine as jm

from . import demo as _demo
from ._async.admin import PURGEABLE
from ._sync.connection import describe_target
from .task import STATE_NAMES, QueueStats, TaskInfo, TaskSummary, WorkerInfo

F = TypeVar("F", bound=Callable[..., Any])

#: Exit code of a usage error: a bad option, argument or JSON, or no database given.
EXIT_USAGE = 2
#: Exit code of a failure at run time.
EXIT_FAILURE = 1
#: Exit code after Ctrl-C (128 + SIGINT), as a shell reports it.
EXIT_INTERRUPTED = 130

ENV_DSN = "JOB_MACHINE_DSN"

logger = logging.getLogger("job_machine.cli")

_SECONDS = click.FloatRange(min=0, min_open=True)
_SECONDS_OR_ZERO = click.FloatRange(min=0)
_TASK_ID = click.IntRange(min=1)
_STATE_WORDS = list(STATE_NAMES.values())
_PURGE_STATES = list(PURGEABLE)
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

#: The Worker options the ``worker`` command passes on when given:
#: (constructor argument, type, help). Left out, the class's own value holds.
_WORKER_OPTIONS: list[tuple[str, Any, str]] = [
    (
        "timeout",
        _SECONDS,
        "Seconds without a notification after which the worker pings its connection "
        "and reads its queues again [30]",
    ),
    ("dead_after", _SECONDS, "Seconds within which a dead worker's tasks wait again [15]"),
    (
        "max_runtime",
        _SECONDS,
        "Give up on a task a live worker has run this many seconds [never]",
    ),
    (
        "orphan_after",
        _SECONDS,
        "Revive a started task no registered worker holds after this many seconds [1800]",
    ),
    ("retries", click.IntRange(min=0), "Retries after the first attempt before a task fails [3]"),
    ("retry_backoff", _SECONDS_OR_ZERO, "Seconds before the first retry, doubling [1]"),
    ("retry_backoff_cap", _SECONDS_OR_ZERO, "Longest wait between retries, seconds [300]"),
    ("reconnect_backoff", _SECONDS, "Seconds before the first reconnect, doubling [0.5]"),
    ("reconnect_backoff_cap", _SECONDS, "Longest wait between reconnects, seconds [30]"),
    ("shutdown_grace", _SECONDS, "Seconds the task in hand gets to finish after SIGTERM [30]"),
    ("housekeeping_interval", _SECONDS, "Seconds between the fleet's slower chores [60]"),
    ("remove_after", _SECONDS, "Days after which finished tasks are deleted [30]"),
    (
        "listen_dsn",
        click.STRING,
        "Where to LISTEN and keep the registry session when --dsn is a PgBouncer "
        "in transaction mode.",
    ),
]


# -- shared options and checks ------------------------------------------------

_dsn_option = click.option(
    "--dsn",
    envvar=ENV_DSN,
    show_envvar=True,
    metavar="DSN",
    help="PostgreSQL connection string (postgresql://... or key=value).",
)
_json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of text."
)


def _need_dsn(dsn: str | None) -> str:
    if not dsn:
        raise click.UsageError(
            f"no database: pass --dsn DSN or set {ENV_DSN}",
            ctx=click.get_current_context(silent=True),
        )
    return dsn


def _check_queue(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return jm.validate_queue(value)
    except jm.InvalidQueueName as ex:
        raise click.BadParameter(str(ex), ctx, param) from None


def _check_queues(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    return tuple(q for v in values if (q := _check_queue(ctx, param, v)) is not None)


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float:
    """Seconds, given as ``90`` or with a unit: ``90s``, ``15m``, ``2h``, ``7d``."""
    if value is None:
        return 0.0
    text = value.strip().lower()
    factor = _DURATION_UNITS.get(text[-1:], 1.0)
    if text[-1:] in _DURATION_UNITS:
        text = text[:-1]
    try:
        seconds = float(text) * factor
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        raise click.BadParameter(
            f"{value!r} is not a duration: give seconds, or a number with s, m, h or d "
            "(90, 15m, 2h, 7d)",
            ctx,
            param,
        )
    return seconds


def _parse_json(text: str) -> Any:
    """The JSON argument of ``send`` (``-``: read it from stdin)."""
    if text == "-":
        text = sys.stdin.read()

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, parse_constant=no_constant)
    except ValueError as ex:  # JSONDecodeError is a ValueError
        raise click.BadParameter(f"not valid JSON: {ex}", param_hint="'JSON'") from None


# -- output -------------------------------------------------------------------


def _terminal() -> bool:
    """Whether stdout is a terminal: tables and colors then, plain lines otherwise."""
    return sys.stdout.isatty()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"cannot print {type(value).__name__} as JSON")


def _print_json(value: Any) -> None:
    if _terminal():
        text = json.dumps(value, default=_json_default, ensure_ascii=False, indent=2)
    else:
        text = json.dumps(value, default=_json_default, ensure_ascii=False)
    click.echo(text)


def _when(value: datetime | None, compact: bool = False) -> str:
    """Local time; ``compact`` (terminal tables): HH:MM:SS today, else MM-DD HH:MM."""
    if value is None:
        return "-"
    local = value.astimezone()
    if not compact:
        return local.strftime("%Y-%m-%d %H:%M:%S")
    if local.date() == datetime.now().astimezone().date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%m-%d %H:%M")


def _cell(value: object, compact: bool = False) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, datetime):
        text = _when(value, compact)
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, list | tuple):
        text = ",".join(str(v) for v in value) or "-"
    else:
        text = str(value)
    return " ".join(text.split()) if any(c in text for c in "\t\r\n") else text


def _rich_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], width: int | None = None
) -> Table:
    """A table for a terminal ``width`` columns wide: the last column (a task's
    data) is cut to the room the others leave."""
    cells = [[_cell(v, compact=True) for v in row] for row in rows]
    if width is not None and cells:
        others = sum(
            max(len(h), *(len(row[i]) for row in cells)) + 3 for i, h in enumerate(headers[:-1])
        )
        room = max(width - others, 12)
        for row in cells:
            if len(row[-1]) > room:
                row[-1] = row[-1][: room - 1] + "…"
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
    for header in headers:
        table.add_column(header, no_wrap=True, overflow="ellipsis")
    for row in cells:
        # Text, not str: a task's data must never be read as rich markup.
        table.add_row(*(Text(c) for c in row))
    return table


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], empty: str) -> None:
    """A table on a terminal; a header line and tab-separated lines in a pipe."""
    if not _terminal():
        click.echo("\t".join(headers))
        for row in rows:
            click.echo("\t".join(_cell(v) for v in row))
    elif not rows:
        click.echo(empty)
    else:
        console = Console()
        console.print(_rich_table(headers, rows, console.width))


def _one_line(ex: BaseException) -> str:
    return " ".join(str(ex).split()) or type(ex).__name__


# -- the command group --------------------------------------------------------


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(jm.__version__, "-V", "--version", prog_name="job-machine")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Hand work from one process to another through PostgreSQL.

    Commands that need a database take --dsn, by default $JOB_MACHINE_DSN.
    Exit codes: 0 success, 1 failure, 2 usage error.
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


# -- install --------------------------------------------------------------------


def _schema_version(dsn: str) -> int | None:
    """The installed schema version, None when there is none."""
    with jm.Admin(dsn) as admin:
        return admin.schema_version()


@cli.command()
@click.option(
    "--print",
    "print_sql",
    is_flag=True,
    help="Print the SQL (sql/create_tables.sql) instead of running it; needs no database.",
)
@_dsn_option
def install(print_sql: bool, dsn: str | None) -> None:
    """Install or upgrade the jobmachine schema.

    Idempotent: run it at every deploy. On a database that has the schema,
    job_machine's or Perl Job::Machine's, it upgrades in place and loses
    nothing. Prints the schema version before and after. `migrate` is the
    same command.
    """
    if print_sql:
        click.echo(jm.create_tables_sql(), nl=False)
        return
    target = _need_dsn(dsn)
    before = _schema_version(target)
    jm.install_schema(target)
    after = _schema_version(target)
    if before is None:
        what = "installed the jobmachine schema"
    elif before != after:
        what = "upgraded the jobmachine schema"
    else:
        what = "the jobmachine schema is up to date"
    shown = "none" if before is None else str(before)
    click.echo(f"{what}: version {shown} -> {after} ({describe_target(target)})")


cli.add_command(
    click.Command(
        "migrate",
        callback=install.callback,
        params=install.params,
        help="Install or upgrade the jobmachine schema: the same as `install`.",
        short_help="The same as install.",
    )
)


# -- worker ---------------------------------------------------------------------


def _worker_options(f: F) -> F:
    for name, kind, text in reversed(_WORKER_OPTIONS):
        metavar = {"retries": "N", "remove_after": "DAYS", "listen_dsn": "DSN"}.get(name, "SECONDS")
        option = click.option(
            "--" + name.replace("_", "-"), name, type=kind, metavar=metavar, help=text
        )
        f = option(f)
    return f


def _setup_logging(level: str) -> None:
    handler: logging.Handler
    if sys.stderr.isatty():
        handler = RichHandler(console=Console(stderr=True), show_path=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def _describe(obj: object) -> str:
    if inspect.ismodule(obj):
        return "a module"
    if isinstance(obj, type):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    if callable(obj):
        return "a function"
    return f"a {type(obj).__name__}"


def _load_worker_class(spec: str) -> type[jm.Worker] | type[jm.AsyncWorker]:
    """Import ``module:ClassName``, looking in the working directory first."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(
            f"{spec!r} is not MODULE:CLASS (for example myapp.workers:Accounting)",
            param_hint="'MODULE:CLASS'",
        )
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as ex:
        if ex.name and (module_name == ex.name or module_name.startswith(ex.name + ".")):
            raise click.BadParameter(
                f"no module named {ex.name!r} (looked in {cwd} and the installed packages)",
                param_hint="'MODULE:CLASS'",
            ) from None
        logger.debug("importing %s failed", module_name, exc_info=True)
        raise jm.JobMachineError(
            f"could not import {module_name}: {type(ex).__name__}: {ex} "
            "(--log-level debug shows the traceback)"
        ) from None
    except Exception as ex:
        logger.debug("importing %s failed", module_name, exc_info=True)
        raise jm.JobMachineError(
            f"could not import {module_name}: {type(ex).__name__}: {_one_line(ex)} "
            "(--log-level debug shows the traceback)"
        ) from None
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise click.BadParameter(
                f"module {module_name!r} has no {attr!r}", param_hint="'MODULE:CLASS'"
            ) from None
    bases = (jm.Worker, jm.AsyncWorker)
    if obj in bases:
        raise click.BadParameter(
            f"{spec} is job_machine's own base class: name your subclass of it",
            param_hint="'MODULE:CLASS'",
        )
    if not (isinstance(obj, type) and issubclass(obj, bases)):
        raise click.BadParameter(
            f"{spec} is {_describe(obj)}, not a subclass of job_machine.Worker "
            "or job_machine.AsyncWorker",
            param_hint="'MODULE:CLASS'",
        )
    if obj.process in (jm.Worker.process, jm.AsyncWorker.process):
        raise click.BadParameter(
            f"{spec} does not override process(task)", param_hint="'MODULE:CLASS'"
        )
    return obj


@cli.command()
@click.argument("worker_class", metavar="MODULE:CLASS")
@click.option(
    "-q",
    "--queue",
    "queues",
    multiple=True,
    metavar="QUEUE",
    callback=_check_queues,
    help="A queue to serve; repeat for several. Default: the class's `queue`.",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    metavar="N",
    help="Tasks processed at once (passed as concurrency=N to the class).",
)
@_worker_options
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="Log to stderr from this level up.",
)
@_dsn_option
def worker(
    *,
    worker_class: str,
    queues: tuple[str, ...],
    concurrency: int | None,
    log_level: str,
    dsn: str | None,
    **options: Any,
) -> None:
    """Run a worker: serve its queues until SIGTERM or Ctrl-C.

    MODULE:CLASS names a subclass of job_machine.Worker or AsyncWorker, for
    example myapp.workers:Accounting; the working directory is searched
    first. An AsyncWorker runs under asyncio. Logs go to stderr. Options
    left out keep the class's own values (job_machine's defaults in brackets).

    On SIGTERM or SIGINT the worker stops claiming, finishes the task in hand
    within --shutdown-grace and exits 0; a second signal exits at once
    (128 + the signal) and the task goes back to waiting.
    """
    _setup_logging(log_level)
    cls = _load_worker_class(worker_class)
    target = _need_dsn(dsn)
    if not queues and getattr(cls, "queue", None) is None:
        raise click.UsageError(
            f"no queue: pass --queue, or set `queue` on {cls.__name__}",
            ctx=click.get_current_context(silent=True),
        )
    options["concurrency"] = concurrency
    kwargs = {name: value for name, value in options.items() if value is not None}
    try:
        instance = cls(target, queue=list(queues) or None, **kwargs)
    except ValueError as ex:
        raise click.UsageError(str(ex), ctx=click.get_current_context(silent=True)) from None
    kind = "asyncio" if isinstance(instance, jm.AsyncWorker) else "sync"
    logger.info(
        "starting %s (%s) on %s, pid %d, database %s",
        cls.__name__,
        kind,
        ", ".join(instance.queues),
        os.getpid(),
        describe_target(target),
    )
    if isinstance(instance, jm.AsyncWorker):
        asyncio.run(instance.receive())
    else:
        instance.receive()
    logger.info("%s stopped", cls.__name__)


# -- send -------------------------------------------------------------------------


@cli.command()
@click.argument("queue", callback=_check_queue)
@click.argument("data", metavar="JSON")
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
    *, queue: str, data: str, wait: bool, timeout: float, as_json: bool, dsn: str | None
) -> None:
    """Send a task to QUEUE and print its id.

    JSON is the task's data (any JSON value; `-` reads it from stdin). With
    --wait, prints the reply as JSON instead, the id going to stderr; a task
    that failed, or no reply within --timeout, exits 1. With --json, prints
    {"id": ...}, and with --wait {"id": ..., "reply": ...}.
    """
    payload = _parse_json(data)
    with jm.Client(_need_dsn(dsn), queue=queue) as client:
        task_id = client.send(payload)
        if not wait:
            if as_json:
                _print_json({"id": task_id})
            else:
                click.echo(task_id)
            return
        click.echo(f"sent task {task_id} to {queue}; waiting for its reply", err=True)
        try:
            reply = client.wait(task_id, timeout=timeout)
        except jm.TaskFailed as ex:
            if as_json:
                _print_json({"id": task_id, "state": "failed", "error": ex.error})
            raise
    _print_json({"id": task_id, "reply": reply} if as_json else reply)


# -- status ------------------------------------------------------------------------

_STATS_HEADERS = ["queue", "waiting", "delayed", "running", "done", "failed"]


def _stats_rows(stats: Sequence[QueueStats]) -> list[list[object]]:
    return [[s.queue, s.waiting, s.delayed, s.running, s.done, s.failed] for s in stats]


def _status_json(admin: jm.Admin) -> dict[str, Any]:
    stats = admin.stats()
    totals = {
        field: sum(getattr(s, field) for s in stats)
        for field in ("waiting", "delayed", "running", "done", "failed")
    }
    return {
        "status": admin.status_string(),
        "queues": [dataclasses.asdict(s) for s in stats],
        "totals": totals,
        "workers": sum(1 for w in admin.workers() if w.alive),
    }


def _print_status(admin: jm.Admin, as_json: bool, stamp: bool = False) -> None:
    if as_json:
        _print_json(_status_json(admin))
        return
    line = admin.status_string()
    click.echo(f"{datetime.now():%H:%M:%S} {line}" if stamp else line)
    _print_table(_STATS_HEADERS, _stats_rows(admin.stats()), "no tasks")


def _status_screen(admin: jm.Admin) -> RenderableType:
    line = Text(f"{datetime.now():%H:%M:%S}  {admin.status_string()}", style="bold")
    stats = admin.stats()
    if not stats:
        return Group(line, Text("no tasks"))
    return Group(line, _rich_table(_STATS_HEADERS, _stats_rows(stats)))


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
            except (jm.JobMachineError, psycopg.Error) as ex:
                click.echo(f"Error: {_one_line(ex)}", err=True)
    with Live(_status_screen(admin), auto_refresh=False) as live:
        while True:
            time.sleep(interval)
            try:
                screen = _status_screen(admin)
            except (jm.JobMachineError, psycopg.Error) as ex:
                screen = Text(f"{datetime.now():%H:%M:%S}  Error: {_one_line(ex)}", style="red")
            live.update(screen, refresh=True)


@cli.command()
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

    The line reads W=waiting (due now) D=delayed (retry in backoff)
    R=running done= F=failed workers=(alive). --watch refreshes it in
    place until Ctrl-C; in a pipe it prints one block, or with --json one
    JSON line, per refresh.
    """
    with jm.Admin(_need_dsn(dsn)) as admin:
        if not watch:
            _print_status(admin, as_json)
            return
        try:
            _watch(admin, interval, as_json)
        except KeyboardInterrupt:
            return


# -- tasks ----------------------------------------------------------------------------


@cli.group(invoke_without_command=True)
@click.pass_context
def tasks(ctx: click.Context) -> None:
    """List, show, retry, cancel and remove tasks."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


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
        "parameters": t.parameters,
    }


@tasks.command("list")
@click.option("--state", type=click.Choice(_STATE_WORDS), help="Only tasks in this state.")
@click.option("--queue", callback=_check_queue, metavar="QUEUE", help="Only tasks of this queue.")
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
@_json_option
@_dsn_option
def tasks_list(
    *,
    state: str | None,
    queue: str | None,
    limit: int,
    before_id: int | None,
    as_json: bool,
    dsn: str | None,
) -> None:
    """List tasks, newest first.

    The data column shows the first 200 characters of the task's JSON.
    """
    with jm.Admin(_need_dsn(dsn)) as admin:
        found = admin.list_tasks(state=state, queue=queue, limit=limit, before_id=before_id)
    if as_json:
        _print_json([_summary_json(t) for t in found])
        return
    headers = ["id", "queue", "state", "attempts", "created", "modified", "run_after"]
    headers += ["worker", "data"]
    rows = [
        [
            t.id,
            t.queue,
            t.state,
            t.attempts,
            t.created,
            t.modified,
            t.run_after,
            t.worker_id,
            t.parameters,
        ]
        for t in found
    ]
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
        "attempts": info.attempts,
        "data": info.data,
        "reply": info.reply,
        "errors": info.errors,
        "created": info.created,
        "modified": info.modified,
        "run_after": info.run_after,
        "started": info.started,
        "worker": worker,
        "worker_id": info.worker_id,
    }


def _print_info(info: TaskInfo, tracebacks: bool) -> None:
    if info.worker is not None:
        worker_id, host, pid = info.worker
        worker = f"{worker_id} on {host}, pid {pid} (running it)"
    elif info.worker_id is not None:
        worker = f"{info.worker_id} (the last to claim it)"
    else:
        worker = "-"
    fields = [
        ("id", str(info.id)),
        ("queue", _cell(info.queue)),
        ("state", f"{info.state} ({int(info.status)})"),
        ("attempts", str(info.attempts)),
        ("created", _when(info.created)),
        ("modified", _when(info.modified)),
        ("run_after", _when(info.run_after)),
        ("started", _when(info.started)),
        ("worker", worker),
        ("data", json.dumps(info.data, ensure_ascii=False)),
        ("reply", "-" if info.reply is None else json.dumps(info.reply, ensure_ascii=False)),
        ("errors", str(len(info.errors))),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        click.echo(f"{click.style(name.ljust(width), bold=True)}  {value}")
    for error in info.errors:
        if isinstance(error, dict):
            attempt = error.get("attempt", "?")
            click.echo(f"  attempt {attempt}: {error.get('type')}: {error.get('message')}")
            if tracebacks and error.get("traceback"):
                for line in str(error["traceback"]).rstrip().splitlines():
                    click.echo(f"    {line}")
        else:
            click.echo(f"  {json.dumps(error, ensure_ascii=False)}")


@tasks.command("show")
@click.argument("task_id", metavar="ID", type=_TASK_ID)
@click.option("--traceback", "tracebacks", is_flag=True, help="Show each error's traceback.")
@_json_option
@_dsn_option
def tasks_show(task_id: int, tracebacks: bool, as_json: bool, dsn: str | None) -> None:
    """Show one task: state, attempts, data, reply, every error, and its worker."""
    with jm.Admin(_need_dsn(dsn)) as admin:
        info = admin.task_info(task_id)
    if as_json:
        _print_json(_info_json(info))
    else:
        _print_info(info, tracebacks)


@tasks.command("retry")
@click.argument("task_id", metavar="ID", type=_TASK_ID)
@click.option(
    "--queue", callback=_check_queue, metavar="QUEUE", help="Send it to this queue instead."
)
@_dsn_option
def tasks_retry(task_id: int, queue: str | None, dsn: str | None) -> None:
    """Send a done or failed task again, with a fresh count of attempts.

    Its earlier results and errors stay. A waiting or running task is left
    alone (exit 1).
    """
    with jm.Admin(_need_dsn(dsn)) as admin:
        admin.retry(task_id, queue)
        now_on = admin.task_info(task_id).queue
    click.echo(f"task {task_id} is waiting again on queue {now_on}")


@tasks.command("cancel")
@click.argument("task_id", metavar="ID", type=_TASK_ID)
@_dsn_option
def tasks_cancel(task_id: int, dsn: str | None) -> None:
    """Cancel a waiting task: it fails with a Cancelled error, and a client
    waiting for it is told. A running or finished task is left alone (exit 1)."""
    with jm.Admin(_need_dsn(dsn)) as admin:
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


# -- workers, purge -------------------------------------------------------------------


def _worker_json(w: WorkerInfo) -> dict[str, Any]:
    return dataclasses.asdict(w)


@cli.command()
@_json_option
@_dsn_option
def workers(as_json: bool, dsn: str | None) -> None:
    """List the registered workers: alive (PostgreSQL holds their liveness
    lock) or not, their queues, and the tasks each is running."""
    with jm.Admin(_need_dsn(dsn)) as admin:
        found = admin.workers()
    if as_json:
        _print_json([_worker_json(w) for w in found])
        return
    headers = ["id", "host", "pid", "alive", "queues", "running", "started", "seen"]
    rows = [[w.id, w.host, w.pid, w.alive, w.queues, w.running, w.started, w.seen] for w in found]
    _print_table(headers, rows, "no workers")


@cli.command()
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


# -- demo ---------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--dsn",
    metavar="DSN",
    help=f"PostgreSQL to use. Default: start a throwaway embedded PostgreSQL "
    f"(${ENV_DSN} is not read: the demo writes tasks).",
)
@click.option(
    "--tasks",
    "count",
    type=click.IntRange(1, 100_000),
    metavar="N",
    default=10,
    show_default=True,
    help="How many tasks to send.",
)
@click.option(
    "--work",
    type=click.FloatRange(0, 60),
    metavar="SECONDS",
    default=0.1,
    show_default=True,
    help="Seconds each task takes the worker, to watch them flow; 0 measures throughput.",
)
def demo(dsn: str | None, count: int, work: float) -> None:
    """Watch tasks flow: install the schema, start a worker in another
    process, send it tasks and show the replies coming back.

    Without --dsn it starts a throwaway PostgreSQL (pip install
    'job_machine[embedded]').
    """
    _demo.demo(dsn, count, work)


# -- entry points ----------------------------------------------------------------------------


def _error(message: str, code: int) -> int:
    click.echo(f"Error: {message}", err=True)
    return code


def _run(command: click.Command, argv: Sequence[str] | None, prog_name: str) -> int:
    """Run a click command; turn every expected error into one line on stderr
    and an exit code (2 usage, 1 failure, 130 interrupted)."""
    try:
        rv = command.main(
            args=list(argv) if argv is not None else None,
            prog_name=prog_name,
            standalone_mode=False,
        )
    except click.UsageError as ex:
        hint = f" (see '{ex.ctx.command_path} --help')" if ex.ctx is not None else ""
        return _error(_one_line(Exception(ex.format_message())) + hint, EXIT_USAGE)
    except click.ClickException as ex:
        return _error(_one_line(Exception(ex.format_message())), ex.exit_code)
    except click.Abort:
        return _error("interrupted", EXIT_INTERRUPTED)
    except (jm.JobMachineError, ValueError, psycopg.Error) as ex:
        return _error(_one_line(ex), EXIT_FAILURE)
    return rv if isinstance(rv, int) else 0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``job-machine`` script and ``python -m job_machine.cli``."""
    sys.exit(_run(cli, argv, "job-machine"))


def demo_main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m job_machine.demo``: ``job-machine demo``."""
    sys.exit(_run(demo, argv, "python -m job_machine.demo"))


if __name__ == "__main__":
    main()
