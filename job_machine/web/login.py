"""Login (the token form, or the URL with the token) and logout."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from .render import _access, _config, _form, _page
from .security import (
    FAILURE_DELAY,
    SESSION_COOKIE,
    cookie,
    safe_next,
    same,
)


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
