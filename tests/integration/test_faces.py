"""The same test cases for both faces: Client/Worker/Admin and their asyncio
twins must behave the same, since one is generated from the other.
(Concurrency is in test_concurrent_worker.py: threads and asyncio tasks
overlap in different ways.)"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

import job_machine as jm

FACES = ["sync", "async"]


async def maybe(value: Any) -> Any:
    """The value, awaited if the async face returned an awaitable."""
    return await value if inspect.isawaitable(value) else value


def make_client(face: str, dsn: str, **kw: Any) -> Any:
    return jm.Client(dsn, **kw) if face == "sync" else jm.AsyncClient(dsn, **kw)


def make_admin(face: str, dsn: str) -> Any:
    return jm.Admin(dsn) if face == "sync" else jm.AsyncAdmin(dsn)


def make_worker(face: str, dsn: str, handle: Any, **kw: Any) -> Any:
    """A worker of the face whose process() calls ``handle(task)`` (sync) and
    replies with what it returns."""
    kw.setdefault("queue", "faces.q")
    kw.setdefault("handle_signals", False)
    if face == "sync":

        class SyncW(jm.Worker):
            def process(self, task: jm.Task) -> None:
                self.reply(handle(task))

        return SyncW(dsn, **kw)

    class AsyncW(jm.AsyncWorker):
        async def process(self, task: jm.Task) -> None:
            await asyncio.sleep(0)
            await self.reply(handle(task))

    return AsyncW(dsn, **kw)


@asynccontextmanager
async def running(face: str, worker: Any) -> AsyncIterator[None]:
    """Run the worker's receive() for the length of the block."""
    if face == "sync":
        errors: list[BaseException] = []

        def run() -> None:
            try:
                worker.receive()
            except BaseException as ex:
                errors.append(ex)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        try:
            yield
        finally:
            worker.stop()
            await asyncio.to_thread(t.join, 10)
        assert not errors, errors
    else:
        task = asyncio.create_task(worker.receive())
        try:
            yield
        finally:
            worker.stop()
            await asyncio.wait_for(task, 10)


@pytest.mark.parametrize("face", FACES)
async def test_send_wait_check_receive_and_task_info(dsn: str, face: str) -> None:
    client = make_client(face, dsn, queue="faces.q")
    worker = make_worker(face, dsn, lambda t: {"double": t.data * 2})
    try:
        tid = await maybe(client.send(21))
        info = await maybe(client.task_info(tid))
        assert (info.state, info.attempts, info.reply) == ("waiting", 0, None)
        assert await maybe(client.check(tid)) is False
        async with running(face, worker):
            reply = await maybe(client.wait(tid, timeout=10))
        assert reply == {"double": 42}
        assert await maybe(client.check("reply")) is True
        assert await maybe(client.receive()) == {"double": 42}
        info = await maybe(client.task_info(tid))
        assert (info.state, info.attempts, info.errors) == ("done", 1, [])
    finally:
        await maybe(client.close())


@pytest.mark.parametrize("face", FACES)
async def test_failure_retries_then_fails_with_every_error(dsn: str, face: str) -> None:
    def boom(task: jm.Task) -> Any:
        raise RuntimeError(f"boom {task.attempt}")

    client = make_client(face, dsn, queue="faces.q")
    worker = make_worker(face, dsn, boom, retries=1, retry_backoff=0)
    try:
        tid = await maybe(client.send("x"))
        async with running(face, worker):
            with pytest.raises(jm.TaskFailed, match="boom 2"):
                await maybe(client.wait(tid, timeout=10))
        info = await maybe(client.task_info(tid))
        assert info.state == "failed"
        assert [e["message"] for e in info.errors] == ["boom 1", "boom 2"]
    finally:
        await maybe(client.close())


@pytest.mark.parametrize("face", FACES)
async def test_admin_sees_and_changes_the_same(dsn: str, face: str) -> None:
    client = make_client(face, dsn, queue="faces.q")
    admin = make_admin(face, dsn)
    try:
        first = await maybe(client.send(1))
        second = await maybe(client.send(2))
        await maybe(admin.cancel(first))
        assert await maybe(admin.status_string()) == "W=1 D=0 B=0 R=0 F=1 done=0 workers=0/0"
        listed = await maybe(admin.list_tasks())
        assert [(t.id, t.state) for t in listed] == [(second, "waiting"), (first, "failed")]
        await maybe(admin.retry(first))
        assert (await maybe(admin.task_info(first))).state == "waiting"
    finally:
        await maybe(client.close())
        await maybe(admin.close())
