"""The task functions of the test project."""

from __future__ import annotations

import os
from typing import Any

from django.db import connection

from job_machine.contrib.django._compat import TaskContext

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task


class Boom(Exception):
    """Raised by :func:`fail`."""


@task
def add(a: int, b: int) -> int:
    return a + b


@task(queue_name="emails", priority=10)
def shout(text: str, *, times: int = 1) -> dict[str, Any]:
    return {"text": text.upper() * times, "pid": os.getpid()}


@task
def fail(message: str) -> None:
    raise Boom(message)


@task(takes_context=True)
def whoami(context: TaskContext, x: int) -> dict[str, Any]:
    return {"id": context.task_result.id, "attempt": context.attempt, "x": x}


@task
async def double(x: int) -> int:
    return 2 * x


@task
def record(word: str) -> int:
    """Writes with the ORM's connection in the worker, and returns the row count."""
    with connection.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS recorded (word text)")
        cur.execute("INSERT INTO recorded VALUES (%s)", [word])
        cur.execute("SELECT count(*) FROM recorded")
        return int(cur.fetchone()[0])


@task(backend="retrying")
def flaky(marker: str) -> str:
    """Fails on its first attempt (the marker table has no row yet), then succeeds."""
    with connection.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS flaky (marker text)")
        cur.execute("SELECT count(*) FROM flaky WHERE marker = %s", [marker])
        seen = cur.fetchone()[0]
        cur.execute("INSERT INTO flaky VALUES (%s)", [marker])
    if not seen:
        raise RuntimeError(f"first attempt of {marker}")
    return marker
