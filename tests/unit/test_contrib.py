"""The framework helpers without a database: what they hand the web app,
in which order they run, where they find the DSN."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

from flask import Flask

import job_machine as jm
from job_machine.contrib import fastapi as jm_fastapi
from job_machine.contrib import flask as jm_flask


async def test_fastapi_lifespan_runs_yours_inside_and_closes_the_app() -> None:
    app = jm.App()
    events: list[str] = []

    @asynccontextmanager
    async def mine(asgi: Any) -> AsyncIterator[dict[str, int]]:
        events.append("mine up")
        yield {"answer": 42}
        events.append("mine down")

    async def closing() -> None:
        events.append("app closed")

    app.aclose = closing  # type: ignore[method-assign]
    asgi = SimpleNamespace(state=SimpleNamespace())
    async with jm_fastapi.lifespan(app, dsn="dbname=x", then=mine)(asgi) as state:
        assert state == {"answer": 42}
        assert asgi.state.job_machine is app
        assert app.dsn == "dbname=x"
    assert events == ["mine up", "mine down", "app closed"]


def test_flask_init_app_takes_the_dsn_from_the_config() -> None:
    app = jm.App()
    web = Flask(__name__)
    web.config["JOB_MACHINE_DSN"] = "dbname=from_config"
    assert jm_flask.init_app(web, app) is app
    assert app.dsn == "dbname=from_config"
    with web.app_context():
        assert jm_flask.current_app() is app
    jm_flask.init_app(Flask(__name__), app, dsn="dbname=given")
    assert app.dsn == "dbname=given"
