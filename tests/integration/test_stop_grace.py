"""shutdown_grace for every way of stopping a worker, not only SIGTERM.

``worker.stop()`` from another thread, ``Admin.stop_workers()`` (the
``stop`` command) and a worker off the main thread (no signal handlers)
give the task in hand ``shutdown_grace`` seconds, as SIGTERM does; past it
the task is handed back, waiting again with a ``WorkerStopped`` error, and
what its attempt writes afterwards is refused.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

import job_machine as jm
from tests.support.procs import start_worker, started_count, wait_until
from tests.support.rows import error_types, processed_by, task_state
from tests.support.workers import Base


@pytest.mark.parametrize("concurrency", [1, 2])
def test_stop_hands_back_a_task_that_outlives_the_grace(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any], concurrency: int
) -> None:
    """A worker in a thread (no signal handlers), shutdown_grace=1, a task of
    30 s that looks at task.cancelled: stop() makes receive() return within
    about the grace, the task waits again with a WorkerStopped error, and the
    reply the task tries afterwards is refused."""
    started = threading.Event()
    refused: list[BaseException] = []

    class Hung(Base):
        def handle(self, task: jm.Task) -> None:
            started.set()
            deadline = time.monotonic() + 30
            while task.cancelled is None and time.monotonic() < deadline:
                time.sleep(0.02)
            try:
                self.reply("late")
            except jm.TaskNotHeld as ex:
                refused.append(ex)

    w = Hung(dsn, shutdown_grace=1, concurrency=concurrency)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            w.receive()
        except BaseException as ex:  # surfaced below
            errors.append(ex)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert w.ready.wait(10)
        tid = client.send("hang")
        assert started.wait(10)
        t0 = time.monotonic()
        w.stop()
        thread.join(10)
        elapsed = time.monotonic() - t0
    finally:
        w.stop()
        thread.join(30)
    assert not errors, errors
    assert not thread.is_alive()
    assert 0.9 < elapsed < 2.5, elapsed
    assert task_state(conn, tid) == (jm.Status.WAITING, 1)
    assert error_types(conn, tid) == ["WorkerStopped"]
    assert len(refused) == 1
    assert not client.check(tid)


async def test_async_stop_cancels_and_hands_back_a_task_past_the_grace(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """The asyncio worker: past the grace its coroutine is cancelled and the
    task handed back; receive() returns."""
    started = asyncio.Event()

    class Hung(jm.AsyncWorker):
        async def process(self, task: jm.Task) -> None:
            started.set()
            await asyncio.sleep(30)
            await self.reply("late")

    w = Hung(dsn, queue="grace.async", shutdown_grace=1, handle_signals=False)
    serving = asyncio.create_task(w.receive())
    try:
        async with jm.AsyncClient(dsn, queue="grace.async") as client:
            tid = await client.send("hang")
            await asyncio.wait_for(started.wait(), 10)
            t0 = time.monotonic()
            w.stop()
            await asyncio.wait_for(serving, 10)
            elapsed = time.monotonic() - t0
    finally:
        w.stop()
        if not serving.done():
            serving.cancel()
    assert 0.9 < elapsed < 2.5, elapsed
    assert task_state(conn, tid) == (jm.Status.WAITING, 1)
    assert error_types(conn, tid) == ["WorkerStopped"]


def test_a_stop_within_the_grace_lets_the_task_finish(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """The grace is a bound, not a delay: a task that ends within it is
    answered as usual and nothing is handed back."""
    started = threading.Event()
    release = threading.Event()

    class Short(Base):
        def handle(self, task: jm.Task) -> None:
            started.set()
            release.wait(10)
            self.reply("ok")

    w = Short(dsn, shutdown_grace=30)
    thread = threading.Thread(target=w.receive, daemon=True)
    thread.start()
    try:
        assert w.ready.wait(10)
        tid = client.send("x")
        assert started.wait(10)
        w.stop()
        release.set()
        thread.join(10)
    finally:
        w.stop()
        release.set()
        thread.join(30)
    assert not thread.is_alive()
    assert client.wait(tid, timeout=1) == "ok"
    assert error_types(conn, tid) == []


def test_stop_workers_hands_back_a_worker_process_task_past_the_grace(
    dsn: str, db: psycopg.Connection[Any], client: jm.Client, tmp_path: Path
) -> None:
    """Admin.stop_workers() against a worker process (signal handlers on its
    main thread), shutdown_grace=1, a task of 30 s: the grace ends it as a
    SIGTERM's would (exit 143, the task handed back with WorkerStopped)."""
    worker = start_worker(
        dsn, "grace.q", tmp_path, "w", timeout=30, dead_after=2, shutdown_grace=1, sleep=30
    )
    try:
        wait_until(lambda: started_count(db) >= 1, 30, "the worker to start", [worker])
        tid = client.send({"seq": 1}, queue="grace.q")
        wait_until(lambda: processed_by(db, tid), 10, "the task to start", [worker])
        with jm.Admin(dsn) as admin:
            assert admin.stop_workers() == 1
        t0 = time.monotonic()
        code = worker.wait_exit(10)
        elapsed = time.monotonic() - t0
    finally:
        worker.kill()
    assert code == 143, worker.describe()
    assert elapsed < 5, worker.describe()
    assert task_state(db, tid) == (jm.Status.WAITING, 1)
    assert error_types(db, tid) == ["WorkerStopped"]
