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
import contextlib
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
from . import supervisor as _supervisor
from ._async.admin import PURGEABLE
from ._printable import PrintableFilter, printable
from ._sync.connection import describe_target
from ._worker_config import WorkerConfig
from .channels import Exact, validate_subscription
from .task import (
    STATE_NAMES,
    HourStats,
    QueueStats,
    Stats,
    TaskInfo,
    TaskSummary,
    WorkerInfo,
)

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
_INT32 = 2**31 - 1
_PRIORITY = click.IntRange(-_INT32, _INT32)
_PORT = click.IntRange(0, 65535)
_STATE_WORDS = list(STATE_NAMES.values())
_PURGE_STATES = list(PURGEABLE)
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

#: The click type of each kind of worker setting (job_machine/_worker_config.py).
_SETTING_TYPES: dict[str, Any] = {
    "seconds": _SECONDS,
    "seconds0": _SECONDS_OR_ZERO,
    "days": _SECONDS,
    "priority": _PRIORITY,
    "dsn": click.STRING,
}


def _worker_option_list() -> list[tuple[str, Any, str, str]]:
    """The Worker options the ``worker`` command passes on when given:
    (constructor argument, type, metavar, help), built from WorkerConfig.
    Left out, the class's own value holds."""
    options = []
    for s in WorkerConfig.settings:
        if not s.in_cli:
            continue
        kind = _SETTING_TYPES.get(s.kind) or click.IntRange(min=s.minimum)
        text = f"{s.help}." if s.kind == "dsn" else f"{s.help} [{s.shown_default}]"
        options.append((s.name, kind, s.metavar, text))
    return options


_WORKER_OPTIONS = _worker_option_list()


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


def _check_subscriptions(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    """A worker's queues: names, or patterns (``gl.*``, ``gl.**``)."""
    try:
        return tuple(validate_subscription(v) for v in values)
    except jm.InvalidQueueName as ex:
        raise click.BadParameter(str(ex), ctx, param) from None


def _optional_duration(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> float | None:
    """A duration (see :func:`_duration`), or None when the option is left out."""
    return None if value is None else _duration(ctx, param, value)


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


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(text: str) -> Any:
    """Strict JSON: NaN and Infinity are refused (ValueError)."""
    return json.loads(text, parse_constant=_no_constant)


def _parse_json(text: str) -> Any:
    """The JSON argument of ``send`` (``-``: read it from stdin)."""
    if text == "-":
        text = sys.stdin.read()
    try:
        return _loads(text)
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
    text = " ".join(text.split()) if any(c in text for c in "\t\r\n") else text
    return printable(text)


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


# -- roles ----------------------------------------------------------------------


def _check_prefix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return jm.Roles(value).prefix
    except ValueError as ex:
        raise click.BadParameter(str(ex), ctx=ctx, param=param) from None


@cli.command()
@click.option(
    "--prefix",
    default=jm.Roles().prefix,
    show_default=True,
    callback=_check_prefix,
    help="The roles are PREFIX_sender, _worker, _reader and _admin (roles are cluster-wide: "
    "one prefix per application of a shared cluster).",
)
@click.option(
    "--print",
    "print_sql",
    is_flag=True,
    help="Print the SQL (sql/roles.sql) instead of running it; needs no database.",
)
@_dsn_option
def roles(prefix: str, print_sql: bool, dsn: str | None) -> None:
    """Create the least-privilege group roles, or grant them again.

    PREFIX_sender sends tasks and reads replies, PREFIX_worker runs workers,
    PREFIX_reader reads everything and writes nothing, PREFIX_admin is the
    reader plus an operator's actions (docs/roles.md); GRANT them to your
    login users. Idempotent: run it after every `install`, since an upgrade
    may add tables or columns. Run it as the schema's owner; the first run
    also needs CREATEROLE. With --print, set the prefix with
    PGOPTIONS='-c jobmachine.role_prefix=PREFIX' when you run the SQL.
    """
    if print_sql:
        click.echo(jm.roles_sql(), nl=False)
        return
    target = _need_dsn(dsn)
    names = jm.install_roles(target, prefix=prefix)
    click.echo(f"roles {', '.join(names.all)} have their privileges ({describe_target(target)})")


# -- worker ---------------------------------------------------------------------


def _worker_options(f: F) -> F:
    for name, kind, metavar, text in reversed(_WORKER_OPTIONS):
        option = click.option(
            "--" + name.replace("_", "-"), name, type=kind, metavar=metavar, help=text
        )
        f = option(f)
    return f


_log_format_option = click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per line, with task_id, queue, attempt and worker_id on "
    "the records about a task, secrets scrubbed (docs/observability.md).",
)


def _setup_logging(
    level: str,
    log_format: str = "text",
    dsns: Sequence[str | None] = (),
    secrets: Sequence[str | None] = (),
) -> None:
    handler: logging.Handler
    if log_format == "json":
        from .logging import JsonFormatter  # noqa: PLC0415

        handler = logging.StreamHandler(sys.stderr)
        # The DSN's password and the other secrets never reach a line.
        handler.setFormatter(JsonFormatter(dsn=[d for d in dsns if d], secrets=secrets))
        logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
        return
    if sys.stderr.isatty():
        handler = RichHandler(console=Console(stderr=True), show_path=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # Titles, queue names and errors in log lines come from senders: no
    # control character or terminal escape of theirs reaches the terminal.
    handler.addFilter(PrintableFilter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def _describe(obj: object) -> str:
    if inspect.ismodule(obj):
        return "a module"
    if isinstance(obj, type):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    if callable(obj):
        return "a function"
    return f"a {type(obj).__name__}"


def _import_spec(spec: str, form: str, example: str, hint: str) -> object:
    """Import ``module:name`` (``name`` may be dotted), looking in the working
    directory first; ``hint`` names the argument in errors."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(f"{spec!r} is not {form} (for example {example})", param_hint=hint)
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as ex:
        if ex.name and (module_name == ex.name or module_name.startswith(ex.name + ".")):
            raise click.BadParameter(
                f"no module named {ex.name!r} (looked in {cwd} and the installed packages)",
                param_hint=hint,
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
                f"module {module_name!r} has no {attr!r}", param_hint=hint
            ) from None
    return obj


def _load_app(spec: str) -> jm.App:
    """Import ``module:app``, a :class:`job_machine.App`."""
    obj = _import_spec(spec, "MODULE:APP", "myapp.tasks:app", "'--app'")
    if not isinstance(obj, jm.App):
        raise click.BadParameter(
            f"{spec} is {_describe(obj)}, not a job_machine.App", param_hint="'--app'"
        )
    if not obj.functions:
        raise click.BadParameter(
            f"{spec} has no task functions (decorate some with @app.task)", param_hint="'--app'"
        )
    return obj


def _load_worker_class(spec: str) -> type[jm.Worker] | type[jm.AsyncWorker]:
    """Import ``module:ClassName``, looking in the working directory first."""
    obj = _import_spec(spec, "MODULE:CLASS", "myapp.workers:Accounting", "'MODULE:CLASS'")
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
@click.argument("worker_class", metavar="[MODULE:CLASS]", required=False)
@click.option(
    "--app",
    "app_spec",
    metavar="MODULE:APP",
    help="Serve the task functions of this job_machine.App instead of a Worker class "
    "(docs/tasks.md).",
)
@click.option(
    "-q",
    "--queue",
    "queues",
    multiple=True,
    metavar="QUEUE",
    callback=_check_subscriptions,
    help="A queue to serve, or a pattern: gl.* (the queues one level below gl), "
    "gl.** (every queue below gl); repeat for several. Default: the class's `queue`, "
    "or the queues of the app's task functions.",
)
@click.option(
    "--exact-queue",
    "exact_queues",
    multiple=True,
    metavar="QUEUE",
    callback=_check_subscriptions,
    help="A queue to serve by its exact name, even one ending in * or ** (a Perl "
    "client's queue named `reports.*`, say); repeat for several.",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    metavar="N",
    help="Tasks processed at once (passed as concurrency=N to the class).",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    metavar="N",
    help="Run N worker processes under a supervisor that restarts one that dies "
    "(for CPU-bound work; each process runs --concurrency tasks at once).",
)
@_worker_options
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="Log to stderr from this level up.",
)
@_log_format_option
@_dsn_option
def worker(
    *,
    worker_class: str | None,
    app_spec: str | None,
    queues: tuple[str, ...],
    exact_queues: tuple[str, ...],
    concurrency: int | None,
    processes: int | None,
    log_level: str,
    log_format: str,
    dsn: str | None,
    **options: Any,
) -> None:
    """Run a worker: serve its queues until SIGTERM or Ctrl-C.

    MODULE:CLASS names a subclass of job_machine.Worker or AsyncWorker, for
    example myapp.workers:Accounting; or --app MODULE:APP names a
    job_machine.App, whose task functions are served (under asyncio when one
    of them is an async def). The working directory is searched first. An
    AsyncWorker runs under asyncio. --queue also takes patterns:
    gl.* serves the queues one level below gl, gl.** every queue below it,
    including queues created while it runs. Logs go to stderr. Options left
    out keep the class's own values (job_machine's defaults in brackets).

    On SIGTERM or SIGINT the worker stops claiming, finishes the task in hand
    within --shutdown-grace and exits 0; a second signal exits at once
    (128 + the signal) and the task goes back to waiting.

    With --processes N a supervisor runs N worker processes with these
    options, restarts one that dies (with backoff; it gives up on a crash
    loop, exit 1) and passes SIGTERM and SIGINT on to them.
    """
    _setup_logging(log_level, log_format, [dsn, options.get("listen_dsn")])
    if (worker_class is None) == (app_spec is None):
        raise click.UsageError(
            "name a Worker class (MODULE:CLASS) or an app (--app MODULE:APP), one of them",
            ctx=click.get_current_context(silent=True),
        )
    queues = queues + tuple(Exact(q) for q in exact_queues)
    options["concurrency"] = concurrency
    kwargs = {name: value for name, value in options.items() if value is not None}
    instance: jm.Worker | jm.AsyncWorker
    app: jm.App | None = None
    if app_spec is not None:
        app = _load_app(app_spec)
        target = _need_dsn(dsn)
        if app.dsn is None:  # its functions' own sends go where the worker works
            app.dsn = target
        make = app.async_worker if app.needs_asyncio else app.worker
        name = app_spec
        try:
            instance = make(list(queues) or None, dsn=target, **kwargs)
        except ValueError as ex:
            raise click.UsageError(str(ex), ctx=click.get_current_context(silent=True)) from None
    else:
        assert worker_class is not None
        cls = _load_worker_class(worker_class)
        target = _need_dsn(dsn)
        if not queues and getattr(cls, "queue", None) is None:
            raise click.UsageError(
                f"no queue: pass --queue, or set `queue` on {cls.__name__}",
                ctx=click.get_current_context(silent=True),
            )
        name = cls.__name__
        try:
            instance = cls(target, queue=list(queues) or None, **kwargs)
        except ValueError as ex:
            raise click.UsageError(str(ex), ctx=click.get_current_context(silent=True)) from None
    kind = "asyncio" if isinstance(instance, jm.AsyncWorker) else "sync"
    if processes is not None:
        ctx = click.get_current_context()
        # The worker and app were made to check the arguments once, here:
        # each process makes its own.
        _supervise(
            ctx,
            name=name,
            kind=kind,
            target=target,
            processes=processes,
            grace=instance.shutdown_grace,
        )
        return
    # A supervisor's worker process ends itself to stop a task's attempt
    # (time limit, cancel); a fresh one follows.
    instance.exit_on_stop = _supervisor.watch_supervisor()
    _log_worker_context(instance, log_format)
    logger.info(
        "starting %s (%s) on %s, pid %d, database %s",
        name,
        kind,
        ", ".join(instance.queues),
        os.getpid(),
        describe_target(target),
    )
    if isinstance(instance, jm.AsyncWorker):
        asyncio.run(_receive_then_close(instance, app))
    else:
        try:
            instance.receive()
        finally:
            if app is not None:  # what its functions sent went through its clients
                app.close()
    logger.info("%s stopped", name)


def _child_args(ctx: click.Context) -> list[str]:
    """The arguments of a worker process: the worker command's own, as
    given (not --processes, and not --dsn: it goes in the environment,
    which ps does not show)."""
    args: list[str] = []
    for param in ctx.command.params:
        name = param.name
        if name is None or name in ("processes", "dsn"):
            continue
        if ctx.get_parameter_source(name) in (None, click.core.ParameterSource.DEFAULT):
            continue
        value = ctx.params.get(name)
        if value is None:
            continue
        if isinstance(param, click.Argument):
            args.append(str(value))
            continue
        assert isinstance(param, click.Option)
        if param.is_flag:
            if value:
                args.append(param.opts[0])
            elif param.secondary_opts:
                args.append(param.secondary_opts[0])
            continue
        for one in value if param.multiple else [value]:
            args += [param.opts[0], str(one)]
    return args


def _supervise(
    ctx: click.Context, *, name: str, kind: str, target: str, processes: int, grace: float
) -> None:
    """Run ``processes`` worker processes of the command in ``ctx`` until a
    signal (docs/cli.md, "Worker processes")."""
    env = dict(os.environ)
    env[ENV_DSN] = target
    env[_supervisor.ENV_SUPERVISOR] = str(os.getpid())
    command = _supervisor.child_command(_child_args(ctx))
    logger.info(
        "supervising %d worker processes of %s (%s), pid %d, database %s",
        processes,
        name,
        kind,
        os.getpid(),
        describe_target(target),
    )
    code = _supervisor.Supervisor(command, env, processes, shutdown_grace=grace).run()
    if code:
        ctx.exit(code)


def _log_worker_context(instance: jm.Worker | jm.AsyncWorker, log_format: str) -> None:
    """JSON logs: worker_id on every record, and the fields of the task in
    hand on the records logged inside process() (the user's own too)."""
    if log_format == "json":
        from .logging import WorkerContext  # noqa: PLC0415

        for handler in logging.getLogger().handlers:
            handler.addFilter(WorkerContext(instance))


async def _receive_then_close(worker: jm.AsyncWorker, app: jm.App | None) -> None:
    """Serve, then close the app's clients on the loop they were used on."""
    try:
        await worker.receive()
    finally:
        if app is not None:
            await app.aclose()


# -- send -------------------------------------------------------------------------


@cli.command()
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


# -- status ------------------------------------------------------------------------

_STATS_HEADERS = ["queue", "waiting", "delayed", "blocked", "running", "failed", "paused"]
_STATES_COUNTED = ("waiting", "delayed", "blocked", "running", "failed")


def _stats_rows(stats: Sequence[QueueStats]) -> list[list[object]]:
    return [
        [s.queue, s.waiting, s.delayed, s.blocked, s.running, s.failed, s.paused] for s in stats
    ]


def _stats_json(stats: Stats, line: str) -> dict[str, Any]:
    return {
        "status": line,
        "queues": [dataclasses.asdict(s) for s in stats.queues],
        "totals": {field: stats.total(field) for field in _STATES_COUNTED},
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


@cli.command()
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
    return value.astimezone().strftime("%Y-%m-%d %H:%M")


# -- tasks ----------------------------------------------------------------------------


@cli.group(invoke_without_command=True)
@click.pass_context
def tasks(ctx: click.Context) -> None:
    """List, show, note, retry, cancel and remove tasks."""
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


# -- queues ---------------------------------------------------------------------------


@cli.group(invoke_without_command=True)
@click.pass_context
def queues(ctx: click.Context) -> None:
    """List, pause and resume queues."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


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


# -- cron schedules -------------------------------------------------------------------


@cli.group(invoke_without_command=True)
@click.pass_context
def schedules(ctx: click.Context) -> None:
    """Add, list, pause, resume and remove cron schedules (docs/schedules.md)."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


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


@cli.group(invoke_without_command=True)
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


@cli.command()
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
            unfinished = ("waiting", "delayed", "blocked", "running", "failed")
            count = stats.done + sum(stats.total(state) for state in unfinished)
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


# -- web ----------------------------------------------------------------------------------


_VISIBLE_TO_PS = "(prefer the variable: a command line is visible to ps)"
#: The dashboard's credentials: (option, environment variable, metavar, help).
_WEB_CREDENTIALS = [
    (
        "--token",
        "JOB_MACHINE_WEB_TOKEN",
        "TOKEN",
        "Ask for this access token (16+ characters) on a login page, or as "
        f"'Authorization: Bearer TOKEN' {_VISIBLE_TO_PS}.",
    ),
    ("--user", "JOB_MACHINE_WEB_USER", "NAME", "Ask for HTTP basic credentials: this user name..."),
    (
        "--password",
        "JOB_MACHINE_WEB_PASSWORD",
        "PASSWORD",
        f"...and this password, 12+ characters {_VISIBLE_TO_PS}.",
    ),
    (
        "--secret",
        "JOB_MACHINE_WEB_SECRET",
        "SECRET",
        "Sign login sessions with this secret (16+ characters), the same for every "
        "dashboard process behind one address; default: a key new in each process "
        f"{_VISIBLE_TO_PS}.",
    ),
]


def _web_credential_options(f: F) -> F:
    for name, envvar, metavar, text in reversed(_WEB_CREDENTIALS):
        option = click.option(name, envvar=envvar, show_envvar=True, metavar=metavar, help=text)
        f = option(f)
    return f


def _seconds_option(
    name: str, kind: click.ParamType[Any], default: float, text: str
) -> Callable[[F], F]:
    """An option of a number of seconds, its default shown."""
    return click.option(
        name, type=kind, default=default, show_default=True, metavar="SECONDS", help=text
    )


@cli.command()
@_dsn_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    metavar="ADDRESS",
    help="Address to listen on. Anything but the loopback needs --token or --user/--password.",
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="No credentials at all: anyone who can reach the port reads every task and acts "
    "(loopback only; logged as a warning). Default: a token is made and the URL that "
    "logs in with it printed.",
)
@click.option("--port", type=_PORT, default=8080, show_default=True, help="Port to listen on.")
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Also answer to this host name (repeat for more): a name browsers use to reach "
    "the dashboard, a reverse proxy's. Always answered: 127.0.0.1, localhost, [::1] "
    "and --host; any other is refused.",
)
@_web_credential_options
@click.option("--read-only", is_flag=True, help="Hide every action; refuse action requests.")
@_seconds_option(
    "--refresh", click.IntRange(0, 3600), 5, "How often the overview reloads itself; 0: never."
)
@_seconds_option(
    "--session-lifetime",
    click.IntRange(60, 30 * 86400),
    12 * 3600,
    "How long a login lasts before the browser must log in again.",
)
@_seconds_option(
    "--statement-timeout",
    click.FloatRange(0, 3600),
    10,
    "Cancel a statement of the dashboard that runs longer; 0: the server's setting.",
)
@_log_format_option
def web(*, dsn: str | None, host: str, port: int, log_format: str, **settings: Any) -> None:
    """Serve the admin dashboard: counts, history, tasks, workers, locks,
    and (unless --read-only) retry, cancel, remove, pause, resume and stop,
    each confirmed first.

    It listens on 127.0.0.1 unless told otherwise, and asks for a token it
    makes up, printing the URL that logs in with it (--token, --user and
    --password choose credentials; --no-auth asks for none). Any other
    address needs a token or basic credentials of your own. Needs the web
    extra: pip install 'job_machine[web]'. See docs/dashboard.md.
    """
    target = _need_dsn(dsn)
    try:
        from . import web as dashboard  # noqa: PLC0415
    except ImportError as ex:
        raise click.ClickException(
            "the dashboard needs the web extra: pip install 'job_machine[web]' "
            f"({(ex.name or 'a module').partition('.')[0]} is not installed)"
        ) from None
    try:
        # token, user, password, secret, no_auth, read_only, refresh,
        # allowed_hosts, session_lifetime, statement_timeout: DashboardConfig's own names.
        config = dashboard.DashboardConfig(target, **settings)
        dashboard.check_exposure(config, host)
    except ValueError as ex:
        raise click.UsageError(str(ex), ctx=click.get_current_context(silent=True)) from None
    _setup_logging("info", log_format, [target], [config.token, config.password, config.secret])
    dashboard.serve(config, host=host, port=port, json_logs=log_format == "json")


# -- metrics ------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=9187,
    show_default=True,
    help="The port to serve /metrics on (0: any free one, logged).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The address to listen on. The metrics carry queue names and counts and ask "
    "for no credentials: expose them beyond this machine only on a trusted network.",
)
@_dsn_option
def metrics(port: int, host: str, dsn: str | None) -> None:
    """Serve Prometheus metrics on http://HOST:PORT/metrics until SIGTERM or
    Ctrl-C: tasks by queue and state, the oldest waiting age per queue,
    workers running, idle and dead, done and failed counts, paused queues.
    Each scrape reads the database then (a few index reads); nothing runs in
    between. Needs the metrics extra: pip install 'job_machine[metrics]'.
    See docs/observability.md.
    """
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    target = _need_dsn(dsn)
    try:
        from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415

        from .metrics import JobMachineCollector  # noqa: PLC0415
    except ImportError:
        raise click.ClickException(
            "metrics need the metrics extra: pip install 'job_machine[metrics]' "
            "(prometheus_client is not installed)"
        ) from None
    _setup_logging("info")
    stop = threading.Event()
    with jm.Admin(target) as admin:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(JobMachineCollector(admin))
        server, thread = start_http_server(port, host, registry=registry)
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
        try:
            address = server.server_address
            logger.info(
                "serving metrics of %s on http://%s:%d/metrics",
                describe_target(target),
                f"[{host}]" if ":" in host else host,
                address[1],
            )
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            server.shutdown()
            server.server_close()
            thread.join()
    logger.info("metrics stopped")


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


# ---- limits and worker commands (issue 18: fleet-wide limits, broadcast) ----


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


@cli.group(invoke_without_command=True)
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


# ---- end of limits and worker commands ----


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
