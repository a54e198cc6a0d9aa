"""Rendering: the Jinja2 environment and its filters (times, durations,
JSON), and what every page and action shares: the request's config, access
and database, a page with its flash message and CSRF token, the error page,
query parameters, redirects and the posted form."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from .. import __version__
from .._async.admin import STATES
from .._dsn import describe_target
from .._format import local_time
from .config import DashboardConfig
from .database import _Database
from .security import (
    CSRF_FIELD,
    FLASH_COOKIE,
    Access,
    cookie,
    same,
)

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

logger = logging.getLogger("job_machine.web")

#: The most characters of JSON shown for one value on a task's page.
MAX_JSON = 100_000
#: The largest task id (a bigint).
MAX_ID = 2**63 - 1
# -- formatting for the templates ---------------------------------------------


def _local(value: datetime | None) -> str:
    """A timestamp in the server's zone (static/app.js shows the browser's)."""
    return local_time(value, zone=True)


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


async def _form(request: Request) -> Mapping[str, Any]:
    """The posted form, once its CSRF token matched this browser's cookie."""
    form = await request.form()
    given = form.get(CSRF_FIELD)
    if not isinstance(given, str) or not same(given, request.state.csrf):
        raise HTTPException(403, "The form's security token is missing or stale: reload the page.")
    return form
