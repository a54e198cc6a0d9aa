"""The dashboard's pages and actions: a Starlette app over :class:`AsyncAdmin`.

Pages are rendered on the server (Jinja2, autoescaped) and work without
JavaScript; static/app.js only shows times in the browser's zone and
submits filter menus on change. Every action is a GET confirmation page
whose form POSTs (with the CSRF token) to ``/do/<action>``, which acts,
then redirects with a one-time message. See docs/dashboard.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
from jinja2 import Environment, FileSystemLoader, select_autoescape
from psycopg.conninfo import conninfo_to_dict
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from .. import __version__
from .._async.admin import STATES, AsyncAdmin, status_line
from .._async.connection import describe_target
from .._printable import printable
from ..errors import (
    ConnectionFailed,
    InvalidQueueName,
    JobMachineError,
    SchemaMissing,
    StatementTimeout,
    UnknownTask,
)
from ..task import HourStats
from .security import (
    CSRF_FIELD,
    FAILURE_DELAY,
    FLASH_COOKIE,
    SESSION_COOKIE,
    SESSION_LIFETIME,
    Access,
    Guard,
    Scrubber,
    cookie,
    host_key,
    log_failure,
    safe_next,
    same,
)
from .task_page import CHILDREN_PAGE, MAX_PARENTS, raw_result, task_page

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

logger = logging.getLogger("job_machine.web")

#: The most characters of JSON shown for one value on a task's page.
MAX_JSON = 100_000
#: The most parents and children whose states a task's page looks up.
MAX_RELATED = MAX_PARENTS + CHILDREN_PAGE
#: The largest task id (a bigint).
MAX_ID = 2**63 - 1
#: Seconds a connection attempt of the dashboard may take, unless the DSN says.
CONNECT_TIMEOUT = 10


@dataclass(frozen=True)
class DashboardConfig:
    """How a dashboard runs.

    ``dsn`` is the database. ``read_only`` hides every action and refuses
    action POSTs. ``token`` (a login form, or ``Authorization: Bearer``) or
    ``user`` and ``password`` (HTTP basic) make every page ask for
    credentials. Without either, a random token is made
    (``token_generated`` says so; :func:`job_machine.web.serve` prints the
    URL that logs in with it, and listens on the loopback only), unless
    ``no_auth``: no credentials at all, for anyone who reaches it.

    ``secret`` (16+ characters) signs the login sessions, CSRF tokens and
    flash messages, so that several dashboard processes behind one address
    accept each other's; without it a key new in every process signs them.
    A session lasts ``session_lifetime`` seconds from its login (12 hours);
    logging out refuses its cookie from then on in the process that served
    the logout (see docs/dashboard.md for several processes).

    ``refresh`` is the overview's
    auto-refresh period in seconds (0: off), ``page_size`` the tasks per
    page, ``scan`` the most tasks one page of a title search reads.

    ``allowed_hosts`` are the host names the dashboard answers to besides
    127.0.0.1, localhost and [::1] (and the address :func:`serve` listens
    on): the names browsers use to reach it, a reverse proxy's for one.
    A request for any other name is refused (400), so a site that rebinds
    its own name to this machine's address reads nothing.

    ``statement_timeout`` (seconds, 0: the server's setting) bounds each
    statement of the dashboard's connection; ``connection_wait`` is how
    long a request waits for that connection, busy with another request,
    before the answer is 503.

    The DSN, the token and the password stay out of ``repr()``.

    :raises ValueError: a short token, password or secret, a user without a
        password or the reverse, credentials with ``no_auth``, a malformed
        host name, a value out of range.
    """

    dsn: str = field(repr=False)
    read_only: bool = False
    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    refresh: int = 5
    page_size: int = 50
    scan: int = 10_000
    allowed_hosts: tuple[str, ...] = ()
    statement_timeout: float = 10.0
    connection_wait: float = 5.0
    no_auth: bool = False
    secret: str | None = field(default=None, repr=False)
    session_lifetime: int = SESSION_LIFETIME
    token_generated: bool = False

    def __post_init__(self) -> None:
        self._check_access()
        if isinstance(self.allowed_hosts, str):
            raise ValueError("allowed_hosts is a sequence of host names, not one string")
        object.__setattr__(self, "allowed_hosts", tuple(self.allowed_hosts))
        for name in self.allowed_hosts:
            if not host_key(name):
                raise ValueError(f"{name!r} is not a host name (give a name or an IP address)")
        if not 0 <= self.statement_timeout <= 3600:
            raise ValueError(
                f"statement_timeout must be from 0 to 3600 seconds, not {self.statement_timeout}"
            )
        if not 0 < self.connection_wait <= 600:
            raise ValueError(
                f"connection_wait must be from over 0 to 600 seconds, not {self.connection_wait}"
            )
        if not 0 <= self.refresh <= 3600:
            raise ValueError(f"refresh must be from 0 to 3600 seconds, not {self.refresh}")
        if not 1 <= self.page_size <= 1000:
            raise ValueError(f"page_size must be from 1 to 1000, not {self.page_size}")
        if not self.page_size <= self.scan <= 1_000_000:
            raise ValueError(f"scan must be from page_size to 1000000, not {self.scan}")

    def _check_access(self) -> None:
        """Check the credentials, the secret and the session lifetime; make
        up a token when there are no credentials and not no_auth."""
        if self.token is not None and len(self.token) < 16:
            raise ValueError(
                "the access token must have at least 16 characters (make one with "
                "python -c 'import secrets; print(secrets.token_urlsafe())')"
            )
        if (self.user is None) != (self.password is None) or self.user == "" or self.password == "":
            raise ValueError("basic authentication needs both a user name and a password")
        if self.no_auth and (self.token is not None or self.user is not None):
            raise ValueError("no_auth (--no-auth) and credentials exclude each other")
        if self.token is None and self.user is None and not self.no_auth:
            object.__setattr__(self, "token", secrets.token_urlsafe(32))
            object.__setattr__(self, "token_generated", True)
        if self.secret is not None and len(self.secret) < 16:
            raise ValueError(
                "the session secret must have at least 16 characters (make one with "
                "python -c 'import secrets; print(secrets.token_urlsafe())')"
            )
        if not 60 <= self.session_lifetime <= 30 * 86400:
            raise ValueError(
                f"session_lifetime must be from 60 seconds to 30 days, not {self.session_lifetime}"
            )
        if self.user is not None and ":" in self.user:
            raise ValueError("the user name of basic authentication cannot contain ':'")
        if self.password is not None and len(self.password) < 12:
            raise ValueError(
                "the password of basic authentication must have at least 12 characters"
            )


class Busy(Exception):
    """The dashboard's connection stayed busy with other requests."""


def session_options(dsn: str, statement_timeout: float) -> dict[str, str]:
    """Connection parameters for the dashboard's connection: the
    statement_timeout added to the DSN's own options (or $PGOPTIONS), and a
    connect_timeout unless the DSN or $PGCONNECT_TIMEOUT has one."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:  # connecting says the DSN is invalid
        return {}
    found: dict[str, str] = {}
    if statement_timeout:
        options = params.get("options") or os.environ.get("PGOPTIONS", "")
        timeout = f"-c statement_timeout={round(statement_timeout * 1000)}"
        found["options"] = f"{options} {timeout}".strip()
    if "connect_timeout" not in params and "PGCONNECT_TIMEOUT" not in os.environ:
        found["connect_timeout"] = str(CONNECT_TIMEOUT)
    return found


class _Database:
    """The app's AsyncAdmin on one connection of its own, used by one
    request at a time (a dashboard's statements are short, and bounded by
    statement_timeout); a request that waits more than ``wait`` seconds for
    it gets :class:`Busy`."""

    def __init__(self, dsn: str, statement_timeout: float, wait: float) -> None:
        self._admin = AsyncAdmin(dsn, connect_kwargs=session_options(dsn, statement_timeout))
        self._lock = asyncio.Lock()
        self._wait = wait
        #: Whether the database refused writes at the end of the last use:
        #: a standby (a replica), whose pages are read-only whatever the config.
        self.server_read_only = False

    @asynccontextmanager
    async def use(self) -> AsyncIterator[AsyncAdmin]:
        try:
            async with asyncio.timeout(self._wait):
                await self._lock.acquire()
        except TimeoutError:
            raise Busy() from None
        try:
            yield self._admin
            # After the page's own statements, so the page renders with it.
            self.server_read_only = await self._admin.read_only()
        finally:
            self._lock.release()

    async def close(self) -> None:
        await self._admin.close()


# -- formatting for the templates ---------------------------------------------


def _local(value: datetime | None) -> str:
    """A timestamp in the server's zone (static/app.js shows the browser's)."""
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _ago(value: datetime | None) -> str:
    """``12 s ago``, ``3 min ago``, ``in 2 h``."""
    if value is None:
        return "-"
    seconds = (datetime.now(value.tzinfo) - value).total_seconds()
    future, seconds = seconds < 0, abs(seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        if seconds >= size or size == 1:
            text = f"{int(seconds // size)} {unit}"
            break
    return f"in {text}" if future else f"{text} ago"


def _pretty(value: Any) -> str:
    """JSON, indented; cut after MAX_JSON characters."""
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if len(text) > MAX_JSON:
        return f"{text[:MAX_JSON]}\n... (cut: {len(text):,} characters in all)"
    return text


def _seconds(value: float | None) -> str:
    """A duration: ``90 s``, ``15 min``, ``2 h``, ``30 d``."""
    if value is None:
        return "-"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.3g} s"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(local=_local, ago=_ago, pretty=_pretty, seconds=_seconds)
    env.filters["num"] = lambda n: f"{n:,}"
    env.globals.update(version=__version__, states=list(STATES))
    return env


templates = Jinja2Templates(env=_environment())


def _chart(history: list[HourStats], width: int = 1100, height: int = 220) -> dict[str, Any]:
    """Coordinates of the 24-hour chart (server-rendered SVG): a stacked
    bar of done and failed tasks per hour, and the scale."""
    top = max([h.done + h.failed for h in history] + [1])
    scale = 1
    while scale * 10 < top:
        scale *= 10
    # A round top value, not far above the highest bar: 4, 8, 120, 2,500...
    ceiling = next(
        int(m * scale)
        for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)
        if m * scale >= top and float(m * scale).is_integer()
    )
    plot_h, left, bottom = height - 24, 40, height - 20
    slot = (width - left) / max(len(history), 1)
    bars = []
    for i, h in enumerate(history):
        done_h = h.done / ceiling * plot_h
        failed_h = h.failed / ceiling * plot_h
        local = h.hour.astimezone()
        bars.append(
            {
                "x": round(left + i * slot + 2, 1),
                "w": round(slot - 4, 1),
                "done_y": round(bottom - done_h, 1),
                "done_h": round(done_h, 1),
                "failed_y": round(bottom - done_h - failed_h, 1),
                "failed_h": round(failed_h, 1),
                "label": local.strftime("%H:00") if i % 3 == 0 else "",
                "label_x": round(left + i * slot + slot / 2, 1),
                "title": f"{local:%Y-%m-%d %H:00}: {h.done:,} done, {h.failed:,} failed",
            }
        )
    return {
        "width": width,
        "height": height,
        "bars": bars,
        "ceiling": ceiling,
        "left": left,
        "top_y": bottom - plot_h,
        "mid_y": bottom - plot_h / 2,
        "bottom": bottom,
        "done": sum(h.done for h in history),
        "failed": sum(h.failed for h in history),
    }


# -- rendering -------------------------------------------------------------------


def _config(request: Request) -> DashboardConfig:
    config: DashboardConfig = request.app.state.config
    return config


def _access(request: Request) -> Access:
    access: Access = request.app.state.access
    return access


def _db(request: Request) -> _Database:
    db: _Database = request.app.state.db
    return db


def _page(request: Request, template: str, code: int = 200, /, **context: Any) -> Response:
    """Render a template with what every page shows (the flash message
    read once, the CSRF token, the mode)."""
    config, access = _config(request), _access(request)
    standby = _db(request).server_read_only
    if standby and not config.read_only:
        config = replace(config, read_only=True)  # a replica takes no actions
    flash = access.read_flash(request.cookies.get(FLASH_COOKIE))
    response = templates.TemplateResponse(
        request,
        template,
        {
            "config": config,
            "csrf": request.state.csrf,
            "csrf_field": CSRF_FIELD,
            "flash": flash,
            "logged_in": bool(config.token) and access.allows(request),
            "database": describe_target(config.dsn),
            "refresh": 0,
            "standby": standby,
            **context,
        },
        status_code=code,
    )
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def _error(request: Request, status: int, title: str, message: str) -> Response:
    return _page(request, "error.html", status, title=title, message=message)


def _int_param(request: Request, name: str, low: int, high: int) -> int | None:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise HTTPException(400, f"{name} must be a whole number from {low} to {high}")
    return value


def _redirect(request: Request, path: str, kind: str, message: str) -> Response:
    """303 to ``path``, with ``message`` shown there once."""
    response = RedirectResponse(path, status_code=303)
    value = _access(request).flash_value(kind, message)
    response.headers.append("Set-Cookie", cookie(FLASH_COOKIE, value, request))
    return response


# -- pages -------------------------------------------------------------------------


async def overview(request: Request) -> Response:
    """Totals, queues, workers and the last 24 hours; refreshes itself."""
    refresh = _int_param(request, "refresh", 0, 3600)
    if refresh is None:
        refresh = _config(request).refresh
    async with _db(request).use() as admin:
        stats = await admin.stats()
        history = await admin.history()
    totals = {s: stats.total(s) for s in ("waiting", "delayed", "blocked", "running", "failed")}
    return _page(
        request,
        "overview.html",
        stats=stats,
        totals=totals,
        status=status_line(stats),
        chart=_chart(history),
        refresh=refresh,
        default_refresh=_config(request).refresh or 5,
    )


async def tasks(request: Request) -> Response:
    """Tasks newest first, filtered by state, queue and title; keyset pages."""
    config = _config(request)
    params = request.query_params
    state = params.get("state") or None
    queue = params.get("queue") or None
    title = params.get("title", "").strip() or None
    before_id = _int_param(request, "before_id", 1, MAX_ID)
    error = None
    page = None
    async with _db(request).use() as admin:
        queues = await admin.queues()
        try:
            page = await admin.search_tasks(
                state=state,
                queue=queue,
                title=title,
                before_id=before_id,
                limit=config.page_size,
                scan=config.scan,
            )
        except ValueError as ex:  # an unknown state, an empty or NUL queue name
            error = str(ex)
    if queue is not None and queue not in queues:
        queues.append(queue)
    filters = {k: v for k, v in (("state", state), ("queue", queue), ("title", title)) if v}
    next_url = None
    if page is not None and page.next_before_id is not None:
        next_url = "/tasks?" + urlencode({**filters, "before_id": page.next_before_id})
    return _page(
        request,
        "tasks.html",
        400 if error else 200,
        page=page,
        error=error,
        queues=queues,
        state=state,
        queue=queue,
        title=title,
        before_id=before_id,
        first_url="/tasks?" + urlencode(filters) if before_id else None,
        next_url=next_url,
        scan=config.scan,
    )


def _task_id(request: Request) -> int:
    task_id: int = request.path_params["task_id"]
    if not 1 <= task_id <= MAX_ID:  # beyond a bigint: no such task, no query
        raise HTTPException(404, f"there is no task {task_id}")
    return task_id


async def task(request: Request) -> Response:
    """One task, a page of it: its fields, its children by id, its newest
    results and errors, each value cut (task_page.py)."""
    task_id = _task_id(request)
    children_after = _int_param(request, "children_after", 0, MAX_ID) or 0
    results_before = _int_param(request, "results_before", 1, MAX_ID)
    errors_before = _int_param(request, "errors_before", 1, MAX_ID)
    async with _db(request).use() as admin:
        found = await task_page(
            admin,
            task_id,
            children_after=children_after,
            results_before=results_before,
            errors_before=errors_before,
        )
        info = found.info
        related = await admin.task_states([*info.parents, *info.children][:MAX_RELATED])
    return _page(request, "task.html", info=info, page=found, related=related)


async def task_result(request: Request) -> Response:
    """One result or error of a task, whole, as plain text (the task page cuts it)."""
    task_id = _task_id(request)
    result_id: int = request.path_params["result_id"]
    text = None
    if 1 <= result_id <= MAX_ID:
        async with _db(request).use() as admin:
            text = await raw_result(admin, task_id, result_id)
    if text is None:
        raise HTTPException(404, f"task {task_id} has no result {result_id}")
    return PlainTextResponse(text)


async def workers(request: Request) -> Response:
    """The registered workers."""
    async with _db(request).use() as admin:
        found = await admin.workers()
    return _page(request, "workers.html", workers=found)


async def metrics(request: Request) -> Response:
    """The Prometheus metrics (job_machine.metrics), read now; a scraper
    authenticates with ``Authorization: Bearer <token>``."""
    try:
        from ..metrics import CONTENT_TYPE_LATEST, render_async  # noqa: PLC0415
    except ImportError:  # the optional extra is not installed
        return PlainTextResponse(
            "Metrics need prometheus-client: pip install 'job_machine[metrics]'.",
            status_code=501,
        )
    async with _db(request).use() as admin:
        body = await render_async(admin)
    return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def locks(request: Request) -> Response:
    """The named locks."""
    async with _db(request).use() as admin:
        found = await admin.locks()
    return _page(request, "locks.html", locks=found)


async def schedules(request: Request) -> Response:
    """The cron schedules."""
    async with _db(request).use() as admin:
        found = await admin.schedules()
    return _page(request, "schedules.html", schedules=found)


# ---- fleet-wide limits (issue 18 part 4): the page; its action is "set_limits" ----


async def limits(request: Request) -> Response:
    """The queues' fleet-wide limits."""
    async with _db(request).use() as admin:
        found = await admin.limits()
    return _page(request, "limits.html", limits=found)


# ---- end of fleet-wide limits ----


# -- actions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """One thing an operator can do: confirmed on a page, done by a POST.
    The name of the action is the :class:`AsyncAdmin` method that does it
    (``stop`` is ``stop_workers``)."""

    #: What the target is: "task" (an id), "queue" (a name), "worker" (an
    #: id) or "schedule" (a name).
    kind: str
    #: The button, and the title of the confirmation page.
    label: str
    #: What it does, for the confirmation page.
    explain: str
    #: The message once done (``{target}``; a retry also has ``{state}``, ``{queue}``).
    done: str
    #: Where to go afterwards (``{target}``), and after success if elsewhere.
    back: str
    back_done: str | None = None


ACTIONS: dict[str, Action] = {
    "retry": Action(
        "task",
        "Retry task",
        "Send the task again, with a fresh budget of attempts. Its earlier results "
        "and errors stay. A task whose parents are not all done is blocked until they are.",
        "Task {target} is {state} again on queue {queue}.",
        "/tasks/{target}",
    ),
    "cancel": Action(
        "task",
        "Cancel task",
        "The task fails with a Cancelled error and is not retried; a client waiting "
        "for it is told, and the tasks blocked on it fail too. A running task is "
        "stopped by its worker.",
        "Task {target} cancelled.",
        "/tasks/{target}",
    ),
    "remove": Action(
        "task",
        "Remove task",
        "Delete the task and its results, for good.",
        "Task {target} removed.",
        "/tasks/{target}",
        back_done="/tasks",
    ),
    "pause": Action(
        "queue",
        "Pause queue",
        "The queue still takes tasks, but no worker claims them until it is resumed. "
        "Tasks already running go on.",
        "Queue {target} paused: no worker claims its tasks until it is resumed.",
        "/",
    ),
    "resume": Action(
        "queue",
        "Resume queue",
        "Workers take the queue's tasks again, woken at once.",
        "Queue {target} resumed.",
        "/",
    ),
    "pause_schedule": Action(
        "schedule",
        "Pause schedule",
        "The schedule sends nothing until it is resumed; the ticks that pass meanwhile "
        "are skipped, not made up. Tasks it sent already go on.",
        "Schedule {target} paused.",
        "/schedules",
    ),
    "resume_schedule": Action(
        "schedule",
        "Resume schedule",
        "The schedule sends again from its next tick after now.",
        "Schedule {target} resumed.",
        "/schedules",
    ),
    "unschedule": Action(
        "schedule",
        "Remove schedule",
        "Delete the schedule: no tick of it is sent any more. The tasks it sent stay. "
        "A schedule of a task function (@app.task(cron=...)) comes back when its "
        "workers start again: pause it instead, or take cron= out of the code.",
        "Schedule {target} removed.",
        "/schedules",
    ),
    # set_limits(queue) with no limit clears them (fleet-wide limits).
    "set_limits": Action(
        "queue",
        "Clear limits",
        "Remove the queue's fleet-wide limits: workers claim its tasks as fast as "
        "they run them. Set limits again with job-machine limits set or Admin.set_limits().",
        "Queue {target} has no limits now.",
        "/limits",
    ),
    "stop": Action(
        "worker",
        "Stop worker",
        "The worker finishes the task in hand and exits, as on SIGTERM. It reads "
        "the request with its next heartbeat, within a few seconds.",
        "Worker {target} was asked to stop: it finishes the task in hand, then exits.",
        "/workers",
    ),
}


async def _run(admin: AsyncAdmin, name: str, target: Any) -> str:
    """Do action ``name`` on ``target``; the message saying what was done.

    :raises ValueError: the state of the target forbids it, or there is no such target.
    :raises UnknownTask: there is no such task.
    """
    action = ACTIONS[name]
    facts = {"target": target}
    if name == "stop":
        if not await admin.stop_workers(target):
            raise ValueError(f"there is no worker {target}")
    else:
        await getattr(admin, name)(target)
    if name == "retry":
        info = (await task_page(admin, target, children=0, results=0)).info
        facts |= {"state": info.state, "queue": info.queue}
    return action.done.format(**facts)


def _action(request: Request) -> tuple[str, Action]:
    if _config(request).read_only:
        raise HTTPException(403, "This dashboard is read-only: it takes no actions.")
    if _db(request).server_read_only:
        raise HTTPException(
            403, "This database is a standby (a read-only replica): it takes no actions."
        )
    name = request.path_params["action"]
    action = ACTIONS.get(name)
    if action is None:
        raise HTTPException(404, f"There is no action {name!r}.")
    return name, action


def _target(action: Action, raw: object) -> Any:
    """The action's target from the query or form: an id, or a queue name."""
    if not isinstance(raw, str) or not raw:
        raise HTTPException(400, "No target given.")
    if action.kind in ("queue", "schedule"):
        return raw
    if raw.isascii() and raw.isdigit() and 0 < int(raw) <= MAX_ID:
        return int(raw)
    raise HTTPException(400, f"{raw!r} is not a {action.kind} id.")


async def confirm(request: Request) -> Response:
    """The page that asks before an action (a form that POSTs, no JS needed)."""
    name, action = _action(request)
    target = _target(action, request.query_params.get("target"))
    subject: Any = None
    async with _db(request).use() as admin:
        if action.kind == "task":
            subject = (await task_page(admin, target, children=0, results=0)).info
        elif action.kind == "worker":
            subject = next((w for w in await admin.workers() if w.id == target), None)
            if subject is None:
                raise HTTPException(404, f"There is no worker {target}.")
        elif action.kind == "schedule":
            subject = next((s for s in await admin.schedules() if s.name == target), None)
            if subject is None:
                raise HTTPException(404, f"There is no schedule {target!r}.")
    back = action.back.format(target=target)
    return _page(
        request, "confirm.html", name=name, action=action, target=target, subject=subject, back=back
    )


async def _form(request: Request) -> Mapping[str, Any]:
    """The posted form, once its CSRF token matched this browser's cookie."""
    form = await request.form()
    given = form.get(CSRF_FIELD)
    if not isinstance(given, str) or not same(given, request.state.csrf):
        raise HTTPException(403, "The form's security token is missing or stale: reload the page.")
    return form


async def act(request: Request) -> Response:
    """Do an action (POST from the confirmation page) and redirect."""
    name, action = _action(request)
    form = await _form(request)
    target = _target(action, form.get("target"))
    client = request.client.host if request.client else "?"
    back = action.back.format(target=target)
    try:
        async with _db(request).use() as admin:
            message = await _run(admin, name, target)
    except (ValueError, UnknownTask) as ex:  # the state forbids it, no such thing
        message = f"{action.label} {target}: {ex}"
        logger.info("refused: %s (from %s)", printable(message), client)
        return _redirect(request, back, "error", message)
    logger.info("%s (from %s)", printable(message), client)
    return _redirect(request, action.back_done or back, "ok", message)


# -- login ------------------------------------------------------------------------------


async def login(request: Request) -> Response:
    """The token form (token access only); POST checks it and sets the session."""
    config = _config(request)
    if not config.token:
        return RedirectResponse("/", status_code=303)
    if request.method == "GET":
        target = safe_next(request.query_params.get("next"))
        given: object = request.query_params.get("token")
        if given is None:  # the form
            return _page(request, "login.html", next=target)
        # The URL `job-machine web` prints (as Jupyter does): log in, and
        # go on to a URL without the token.
    else:
        form = await _form(request)
        given = form.get("token")
        target = safe_next(str(form.get("next") or "/"))
    if not isinstance(given, str) or not same(given.strip(), config.token):
        await asyncio.sleep(FAILURE_DELAY)  # slows guessing down
        return _page(request, "login.html", 401, next=target, failed=True)
    access = _access(request)
    response = RedirectResponse(target, status_code=303)
    session = cookie(SESSION_COOKIE, access.session_value(), request, max_age=access.lifetime)
    response.headers.append("Set-Cookie", session)
    return response


async def logout(request: Request) -> Response:
    """Drop the browser's session cookie, and refuse any copy of it from now on."""
    await _form(request)
    _access(request).revoke(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# -- errors ---------------------------------------------------------------------------


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    titles = {400: "Bad request", 403: "Forbidden", 404: "Not found", 405: "Not allowed"}
    return _error(request, exc.status_code, titles.get(exc.status_code, "Error"), exc.detail)


async def _busy(request: Request, exc: Exception) -> Response:
    """503 to a request that waited too long for the database connection."""
    response = _error(
        request,
        503,
        "Busy",
        "The dashboard is busy with other requests to the database: try again shortly.",
    )
    response.headers["Retry-After"] = "5"
    return response


async def _machine_error(request: Request, exc: Exception) -> Response:
    """job_machine's and the database's errors: unknown task (404), bad
    queue name (400), the database unreachable or without schema (503), a
    statement beyond statement_timeout (503); any other is a 500 with a
    message that says nothing of it, logged with its traceback. Messages
    never hold the DSN's password (scrubbed again here all the same)."""
    scrub: Scrubber = request.app.state.scrub
    message = scrub(str(exc))
    if isinstance(exc, UnknownTask):
        return _error(request, 404, "Not found", message)
    if isinstance(exc, InvalidQueueName):
        return _error(request, 400, "Bad request", message)
    if isinstance(exc, ConnectionFailed | SchemaMissing):
        logger.error("%s %s: %s", request.method, request.url.path, printable(message))
        return _error(request, 503, "The database is not available", message)
    if isinstance(exc, psycopg.errors.QueryCanceled | StatementTimeout):
        logger.error("%s %s: %s", request.method, request.url.path, printable(message))
        return _error(
            request,
            503,
            "The database is too slow",
            f"A query took longer than the dashboard's statement timeout "
            f"({_config(request).statement_timeout:g} s). Try a narrower filter, or later.",
        )
    log_failure(scrub, request.scope, exc)
    return _error(request, 500, "Internal error", "The request failed: see the dashboard's log.")


# -- the app --------------------------------------------------------------------------


def create_app(config: DashboardConfig) -> Starlette:
    """The dashboard as an ASGI app (serve it with uvicorn, or use
    :func:`job_machine.web.serve`). It opens its database connection on
    the first request, in the event loop that serves it, and closes it at
    shutdown (the ASGI lifespan)."""
    access = Access(
        config.token,
        config.user,
        config.password,
        secret=config.secret,
        lifetime=config.session_lifetime,
    )
    scrub = Scrubber(config.dsn, [config.token, config.password, config.secret])

    db = _Database(config.dsn, config.statement_timeout, config.connection_wait)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await db.close()

    app = Starlette(
        routes=[
            Route("/", overview),
            Route("/tasks", tasks),
            Route("/tasks/{task_id:int}", task),
            Route("/tasks/{task_id:int}/results/{result_id:int}", task_result),
            Route("/workers", workers),
            Route("/locks", locks),
            Route("/schedules", schedules),
            Route("/limits", limits),
            Route("/metrics", metrics),
            Route("/confirm/{action}", confirm),
            Route("/do/{action}", act, methods=["POST"]),
            Route("/login", login, methods=["GET", "POST"]),
            Route("/logout", logout, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=[Middleware(Guard, access=access, scrub=scrub, hosts=config.allowed_hosts)],
        exception_handlers={
            HTTPException: _http_error,
            Busy: _busy,
            JobMachineError: _machine_error,
            psycopg.Error: _machine_error,
        },
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.db = db
    app.state.access = access
    app.state.scrub = scrub
    return app
