"""Error mapping: HTTP errors, a busy connection, and job_machine's and the
database's errors, each to an error page with the right status."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .._printable import printable
from ..errors import (
    ConnectionFailed,
    InvalidQueueName,
    SchemaMissing,
    StatementTimeout,
    UnknownTask,
)
from .render import _config, _error, logger
from .security import Scrubber, log_failure


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
    if isinstance(exc, StatementTimeout):
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
