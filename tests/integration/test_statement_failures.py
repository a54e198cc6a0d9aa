"""A statement that fails on a live connection strands no task (issue 14, item 4).

A statement or lock timeout, ``pg_cancel_backend()`` or a shared pool with
no connection free, part-way through a prefetched batch: the worker keeps
the outcomes it holds and writes them again with backoff, keeps the tasks it
claimed ahead and runs them, and does not reconnect (the connection is fine).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

import job_machine as jm
from tests.support.procs import wait_until
from tests.support.workers import Base, serving

BATCH = 10


class _Heard(logging.Handler):
    """Sets ``event`` when job_machine logs a warning that contains ``needle``."""

    def __init__(self, needle: str) -> None:
        super().__init__(logging.WARNING)
        self.needle = needle
        self.event = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        if self.needle in message:
            self.event.set()


@contextmanager
def _heard(needle: str) -> Iterator[_Heard]:
    handler = _Heard(needle)
    logger = logging.getLogger("job_machine")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


class MidBatch(Base):
    """Replies to each task. The second task of a batch calls ``fault`` and
    lasts prefetch_seconds, so the answers of the batch's first two tasks are
    written right after it, while eight tasks wait claimed ahead."""

    def __init__(self, *args: Any, fault: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.fault = fault
        self.batch_seen = 0

    def handle(self, task: jm.Task) -> None:
        if task.data == "batch":
            self.batch_seen += 1
            if self.batch_seen == 2:
                self.fault(self.seen[-2].id)
                threading.Event().wait(self.prefetch_seconds)  # the task's own work
        self.reply("ok")


def _lock_row(blocker: psycopg.Connection[Any], task_id: int) -> None:
    """Hold the row of ``task_id`` (in ``blocker``'s open transaction): the
    worker's write of its answer waits for it."""
    blocker.execute("SELECT 1 FROM jobmachine.task WHERE task_id = %s FOR UPDATE", (task_id,))


def _blocked_pid(conn: psycopg.Connection[Any]) -> int | None:
    row = conn.execute(
        "SELECT pid FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ).fetchone()
    return None if row is None else int(row[0])


def _run_batch(
    w: MidBatch, client: jm.Client, conn: psycopg.Connection[Any], heard: _Heard
) -> None:
    """A first task (so the worker knows tasks are short), then a batch of
    ten; every task ends finished, each processed once, without a reconnect."""
    client.send("warm-up")
    with serving(w):
        wait_until(lambda: len(w.seen) == 1, 10, "the warm-up task")
        client.send_many(["batch"] * BATCH)
        wait_until(
            lambda: (
                conn.execute(
                    "SELECT count(*) = 0 FROM jobmachine.task WHERE status <> %s",
                    (jm.Status.FINISHED,),
                ).fetchone()
                == (True,)
            ),
            20,
            "every task finished",
        )
    assert heard.event.is_set(), heard.messages
    ids = [t.id for t in w.seen]
    assert len(ids) == len(set(ids)) == BATCH + 1, ids
    assert not [m for m in heard.messages if "connection lost" in m], heard.messages
    replies = conn.execute(
        "SELECT count(*) FROM jobmachine.result WHERE resulttype = 'json'"
    ).fetchone()
    assert replies == (BATCH + 1,)


@pytest.mark.parametrize("cause", ["statement_timeout", "pg_cancel_backend"])
def test_a_canceled_write_mid_batch_strands_no_task(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any], cause: str
) -> None:
    blocker = psycopg.connect(dsn)  # not autocommit: its row lock stays until rollback
    released = threading.Event()

    def fault(task_id: int) -> None:
        _lock_row(blocker, task_id)

        def cancel_then_release() -> None:
            pid = wait_until(lambda: _blocked_pid(conn), 10, "the worker waiting on the row")
            if cause == "pg_cancel_backend":
                conn.execute("SELECT pg_cancel_backend(%s)", (pid,))
            wait_until(heard.event.is_set, 10, "the worker told of the canceled statement")
            blocker.rollback()
            released.set()

        threading.Thread(target=cancel_then_release, daemon=True).start()

    needle = "statement timeout" if cause == "statement_timeout" else "user request"
    options = "-c statement_timeout=300" if cause == "statement_timeout" else ""
    work_dsn = make_conninfo(dsn, options=options) if options else dsn
    w = MidBatch(
        work_dsn,
        fault=fault,
        prefetch=BATCH,
        prefetch_seconds=0.05,
        reconnect_backoff=0.05,
        reconnect_backoff_cap=0.2,
    )
    try:
        with _heard(needle) as heard:
            _run_batch(w, client, conn, heard)
        assert released.is_set()
    finally:
        blocker.close()


def test_an_exhausted_shared_pool_mid_batch_strands_no_task(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """The pool's only connection is taken by someone else while the batch
    runs: the worker's write waits ``timeout`` for it, gets PoolTimeout,
    and writes again once the connection is back."""
    pool = ConnectionPool(
        dsn, min_size=1, max_size=1, timeout=0.3, kwargs={"autocommit": True}, open=True
    )
    taken: list[psycopg.Connection[Any]] = []

    def fault(task_id: int) -> None:
        taken.append(pool.getconn())

        def give_back() -> None:
            wait_until(heard.event.is_set, 10, "the worker told of the pool timeout")
            pool.putconn(taken.pop())

        threading.Thread(target=give_back, daemon=True).start()

    w = MidBatch(
        pool=pool,
        fault=fault,
        prefetch=BATCH,
        prefetch_seconds=0.05,
        reconnect_backoff=0.05,
        reconnect_backoff_cap=0.2,
    )
    try:
        with _heard("couldn't get a connection") as heard:
            _run_batch(w, client, conn, heard)
        assert not taken
    finally:
        pool.close()


class Counting(Base):
    """Replies to each task; counts the runs of each task."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.runs: dict[int, int] = {}
        self.lock = threading.Lock()

    def handle(self, task: jm.Task) -> None:
        with self.lock:
            self.runs[task.id] = self.runs.get(task.id, 0) + 1
        self.reply(task.data)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_answers_held_up_by_a_table_lock_are_written_once_it_goes(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any], concurrency: int
) -> None:
    """An operator's lock on jobmachine.result holds up every answer's write
    past the worker's statement_timeout, again and again, while tasks keep
    coming: the worker keeps its answers and tasks, writes them once the
    lock goes, runs each task once, and never reconnects."""
    blocker = psycopg.connect(dsn)  # its lock lasts until rollback
    w = Counting(
        make_conninfo(dsn, options="-c statement_timeout=200"),
        concurrency=concurrency,
        prefetch=10,
        reconnect_backoff=0.05,
        reconnect_backoff_cap=0.2,
    )
    try:
        with _heard("statement timeout") as heard, serving(w):
            client.send("warm-up")
            wait_until(lambda: w.runs, 10, "the warm-up task")
            blocker.execute("LOCK TABLE jobmachine.result IN ACCESS EXCLUSIVE MODE")
            ids = client.send_many(list(range(30)))
            wait_until(heard.event.is_set, 20, "an answer's write timed out")
            blocker.rollback()
            wait_until(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM jobmachine.task WHERE status <> %s",
                        (jm.Status.FINISHED,),
                    ).fetchone()
                    == (0,)
                ),
                20,
                "every task finished",
            )
        assert sorted(w.runs) == sorted([*ids, min(w.runs)])
        assert set(w.runs.values()) == {1}, w.runs
        assert not [m for m in heard.messages if "connection lost" in m], heard.messages
        assert [client.receive(i) for i in ids] == list(range(30))
    finally:
        blocker.close()


async def test_an_async_worker_keeps_answers_held_up_by_a_table_lock(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """The same with an AsyncWorker at concurrency 3."""
    runs: dict[int, int] = {}

    class AsyncCounting(jm.AsyncWorker):
        handle_signals = False

        async def process(self, task: jm.Task) -> None:
            runs[task.id] = runs.get(task.id, 0) + 1
            await self.reply(task.data)

    def not_finished() -> int:
        row = conn.execute(
            "SELECT count(*) FROM jobmachine.task WHERE status <> %s", (jm.Status.FINISHED,)
        ).fetchone()
        assert row is not None
        return int(row[0])

    w = AsyncCounting(
        make_conninfo(dsn, options="-c statement_timeout=200"),
        queue="job.task",
        concurrency=3,
        prefetch=10,
        reconnect_backoff=0.05,
        reconnect_backoff_cap=0.2,
    )
    blocker = await psycopg.AsyncConnection.connect(dsn)
    serving_ = asyncio.create_task(w.receive())
    try:
        with _heard("statement timeout") as heard:
            async with jm.AsyncClient(dsn, queue="job.task") as client:
                await blocker.execute("LOCK TABLE jobmachine.result IN ACCESS EXCLUSIVE MODE")
                ids = await client.send_many(list(range(30)))
                await asyncio.to_thread(
                    wait_until, heard.event.is_set, 20, "an answer's write timed out"
                )
                await blocker.rollback()
                await asyncio.to_thread(
                    wait_until, lambda: not_finished() == 0, 20, "every task finished"
                )
                assert [await client.receive(i) for i in ids] == list(range(30))
        assert sorted(runs) == sorted(ids)
        assert set(runs.values()) == {1}, runs
        assert not [m for m in heard.messages if "connection lost" in m], heard.messages
    finally:
        w.stop()
        await asyncio.wait_for(serving_, 10)
        await blocker.close()
