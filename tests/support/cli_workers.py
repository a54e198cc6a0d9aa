"""Workers for tests/integration/test_cli.py, run by the ``worker`` command as
``job-machine worker cli_workers:Echo`` from tests/support (or
``tests.support.cli_workers:AsyncEcho`` from the repository root).

Both reply ``{"echo": data, "pid": pid, "kind": "sync"|"async"}``, and raise
``RuntimeError(message)`` for data ``{"fail": message}``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import job_machine as jm


def _answer(task: jm.Task, kind: str) -> dict[str, Any]:
    if isinstance(task.data, dict) and "fail" in task.data:
        raise RuntimeError(task.data["fail"])
    return {"echo": task.data, "pid": os.getpid(), "kind": kind}


class Echo(jm.Worker):
    """A sync worker with a default queue of its own."""

    queue = "cli.echo"

    def process(self, task: jm.Task) -> None:
        self.reply(_answer(task, "sync"))


class AsyncEcho(jm.AsyncWorker):
    """An asyncio worker; its queues come from --queue."""

    async def process(self, task: jm.Task) -> None:
        await self.reply(_answer(task, "async"))


class NoQueue(jm.Worker):
    """A worker without a default queue (the command needs --queue)."""

    def process(self, task: jm.Task) -> None:
        self.reply(None)


class Lazy(jm.Worker):
    """A Worker subclass that forgot to override process()."""

    queue = "cli.lazy"


class NotAWorker:
    """A class that is not a Worker."""


def not_a_class() -> None:
    """A function, not a class."""


class Slow(jm.Worker):
    """Sleeps ``data["sleep"]`` seconds in a task's first attempt, then
    replies ``{"pid": pid, "attempt": n}`` (for the worker processes of
    ``--processes``)."""

    def process(self, task: jm.Task) -> None:
        if task.attempt == 1 and isinstance(task.data, dict):
            time.sleep(float(task.data.get("sleep", 0)))
        self.reply({"pid": os.getpid(), "attempt": task.attempt})


class BrokenStartup(jm.Worker):
    """A worker whose startup() always raises: a crash loop under --processes."""

    queue = "cli.broken"

    def startup(self) -> None:
        raise RuntimeError("startup failed on purpose")

    def process(self, task: jm.Task) -> None:
        self.reply(None)
