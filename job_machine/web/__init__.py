"""The admin dashboard, ``job-machine web``: a small Starlette app over
:class:`job_machine.AsyncAdmin`, with server-rendered pages, served by
uvicorn. It needs the ``web`` extra: ``pip install 'job_machine[web]'``.
See docs/dashboard.md.

    from job_machine.web import DashboardConfig, create_app, serve
    serve(DashboardConfig(dsn, read_only=True))            # 127.0.0.1:8080
    app = create_app(DashboardConfig(dsn, token=token))   # for your own ASGI server
"""

from __future__ import annotations

from .actions import ACTIONS
from .app import create_app
from .config import DashboardConfig
from .server import ExposureError, check_exposure, serve

__all__ = ["ACTIONS", "DashboardConfig", "ExposureError", "check_exposure", "create_app", "serve"]
