"""What the commands share: exit codes, the --dsn and --json options, argument
checks, output (tables, JSON, times) and logging setup."""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click
from rich import box
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

import job_machine as jm

from .._async.admin import PURGEABLE
from .._format import local_time
from .._printable import PrintableFilter, printable
from .._worker_config import WorkerConfig
from ..channels import validate_subscription
from ..task import STATE_NAMES

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


def _help_group(f: Callable[[], None]) -> click.Group:
    """A command group named and documented as ``f`` that prints its help
    when called without a command."""

    def show_help() -> None:
        ctx = click.get_current_context()
        if ctx.invoked_subcommand is None:
            click.echo(ctx.get_help())

    show_help.__doc__ = f.__doc__
    return click.group(f.__name__, invoke_without_command=True)(show_help)


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
    if value is None or not compact:
        return local_time(value)
    local = value.astimezone()
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
        from ..logging import JsonFormatter  # noqa: PLC0415

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
