"""The dashboard as a Starlette app over :class:`AsyncAdmin`: the routes,
the middleware and the error handlers, put together from the modules of
this package (config, database, render, chart, pages, actions, login,
errors). A new page goes in pages.py and a route here; a new action is
an entry of :data:`job_machine.web.actions.ACTIONS`.

Pages are rendered on the server (Jinja2, autoescaped) and work without
JavaScript; static/app.js only shows times in the browser's zone and
submits filter menus on change. Every action is a GET confirmation page
whose form POSTs (with the CSRF token) to ``/do/<action>``, which acts,
then redirects with a one-time message. See docs/dashboard.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import JobMachineError
from .actions import act, confirm
from .config import DashboardConfig
from .database import Busy, _Database
from .errors import _busy, _http_error, _machine_error
from .login import login, logout
from .pages import limits, locks, metrics, overview, schedules, task, task_result, tasks, workers
from .render import STATIC_DIR
from .security import Access, Guard, Scrubber


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
        },
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.db = db
    app.state.access = access
    app.state.scrub = scrub
    return app
