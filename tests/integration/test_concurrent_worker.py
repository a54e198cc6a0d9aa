"""A worker processing several tasks at once: asyncio tasks for AsyncWorker,
threads for Worker. The tasks really overlap, each is claimed once, each
reply goes to its own task, and a graceful stop waits for all in hand."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest

import job_machine as jm
from job_machine.task import DONE, TaskEnd
from tests.support.procs import wait_until
from tests.support.workers import serving


class Overlap:
    """Counts how many process() calls run at the same moment."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.seen: list[int] = []

    def enter(self, task: jm.Task) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.seen.append(task.id)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


class SlowThreads(jm.Worker):
    handle_signals = False
    queue = "conc.q"
    pause = 0.4

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.ready = threading.Event()
        self.overlap = Overlap()

    def startup(self) -> None:
        self.ready.set()

    def process(self, task: jm.Task) -> None:
        self.overlap.enter(task)
        try:
            time.sleep(self.pause)
            # self.task is this thread's task, not another one's.
            self.reply({"id": self.task.id, "data": task.data})
        finally:
            self.overlap.leave()


class SlowTasks(jm.AsyncWorker):
    handle_signals = False
    queue = "conc.q"
    pause = 0.4

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.overlap = Overlap()

    async def process(self, task: jm.Task) -> None:
        self.overlap.enter(task)
        try:
            await asyncio.sleep(self.pause)
            await self.reply({"id": self.task.id, "data": task.data})
        finally:
            self.overlap.leave()


def _claims(conn: psycopg.Connection[Any]) -> list[tuple[int, int]]:
    return [
        (r[0], r[1])
        for r in conn.execute("SELECT status, attempts FROM jobmachine.task ORDER BY task_id")
    ]


def test_a_sync_worker_runs_tasks_in_threads_at_once(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    w = SlowThreads(dsn, concurrency=3)
    with jm.Client(dsn, queue="conc.q") as client:
        tids = [client.send(n) for n in range(9)]
        t0 = time.monotonic()
        with serving(w):
            replies = [client.wait(tid, timeout=10) for tid in tids]
        elapsed = time.monotonic() - t0
    assert replies == [{"id": tid, "data": n} for n, tid in enumerate(tids)]
    assert w.overlap.most == 3
    assert sorted(w.overlap.seen) == tids  # each once
    assert _claims(conn) == [(jm.Status.FINISHED, 1)] * 9
    assert elapsed < 9 * SlowThreads.pause  # not one after the other


async def test_an_async_worker_runs_tasks_at_once(dsn: str, conn: psycopg.Connection[Any]) -> None:
    w = SlowTasks(dsn, concurrency=4)
    async with jm.AsyncClient(dsn, queue="conc.q") as client:
        tids = [await client.send(n) for n in range(12)]
        serving = asyncio.create_task(w.receive())
        try:
            t0 = time.monotonic()
            replies = [await client.wait(tid, timeout=10) for tid in tids]
            elapsed = time.monotonic() - t0
        finally:
            w.stop()
            await asyncio.wait_for(serving, 10)
    assert replies == [{"id": tid, "data": n} for n, tid in enumerate(tids)]
    assert w.overlap.most == 4
    assert sorted(w.overlap.seen) == tids
    assert _claims(conn) == [(jm.Status.FINISHED, 1)] * 12
    assert elapsed < 12 * SlowTasks.pause / 2


async def test_a_graceful_stop_waits_for_every_task_in_hand(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    w = SlowTasks(dsn, concurrency=3)
    w.pause = 1.0
    async with jm.AsyncClient(dsn, queue="conc.q") as client:
        tids = [await client.send(n) for n in range(5)]
        serving = asyncio.create_task(w.receive())
        await asyncio.to_thread(wait_until, lambda: w.overlap.now >= 3, 10, "three tasks in hand")
        w.stop()
        await asyncio.wait_for(serving, 10)
    states = _claims(conn)
    # The three in hand finished; the other two were never claimed.
    assert states == [(jm.Status.FINISHED, 1)] * 3 + [(jm.Status.WAITING, 0)] * 2, tids
    assert w.overlap.now == 0


def test_a_sync_worker_with_a_pool_and_concurrency(dsn: str, conn: psycopg.Connection[Any]) -> None:
    from psycopg_pool import ConnectionPool  # noqa: PLC0415

    with ConnectionPool(dsn, min_size=1, max_size=4, open=True) as pool:
        w = SlowThreads(pool=pool, concurrency=4)
        w.pause = 0.2
        with jm.Client(pool=pool, queue="conc.q") as client:
            tids = [client.send(n) for n in range(8)]
            with serving(w):
                assert [client.wait(t, timeout=10)["data"] for t in tids] == list(range(8))
    assert w.overlap.most == 4


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_concurrency_must_be_a_whole_number_from_one(dsn: str, value: Any) -> None:
    with pytest.raises(ValueError, match="concurrency must be a whole number >= 1"):
        SlowThreads(dsn, concurrency=value)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_many_instant_tasks_never_leave_a_slot_taken(
    dsn: str, conn: psycopg.Connection[Any], kind: str
) -> None:
    """Tasks that finish before the worker has even recorded them (threads)
    must still free their slot: a leak here stalled the drain after a few
    hundred tasks, with every slot held by a thread long gone."""

    class Instant(jm.Worker):
        handle_signals = False
        queue = "conc.q"

        def process(self, task: jm.Task) -> None:
            pass

    class AsyncInstant(jm.AsyncWorker):
        handle_signals = False
        queue = "conc.q"

        async def process(self, task: jm.Task) -> None:
            pass

    with jm.Client(dsn, queue="conc.q") as client:
        client.send_many(range(2000))
    w: Any = Instant(dsn, concurrency=8) if kind == "sync" else AsyncInstant(dsn, concurrency=8)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            w.receive() if kind == "sync" else asyncio.run(w.receive())
        except BaseException as ex:
            errors.append(ex)

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def all_done() -> bool:
        assert not errors, errors
        row = conn.execute("SELECT count(*) FROM jobmachine.task WHERE status <> 200").fetchone()
        return row == (0,)

    try:
        try:
            wait_until(all_done, 60, "every task done", interval=0.05)
        except AssertionError as ex:
            raise AssertionError(f"{ex}; slots held: {w._slots.ids()}") from None
    finally:
        w.stop()
        t.join(10)
    assert not errors, errors
    assert w._slots.running == {}


class StopsAfter:
    """A concurrency-4 worker (sync or async) whose tasks return at once
    without answering, which stops itself after ``count`` tasks; ``run()``
    serves in a thread until it returns."""

    def __init__(self, dsn: str, kind: str, count: int) -> None:
        self.seen: list[int] = []
        lock = threading.Lock()

        def record(w: Any, task: jm.Task) -> None:
            with lock:
                self.seen.append(task.id)
                if len(self.seen) == count:
                    w.stop()  # the marks of the last tasks are not written yet

        class Quick(jm.Worker):
            handle_signals = False
            queue = "conc.q"

            def process(self, task: jm.Task) -> None:
                record(self, task)

        class AsyncQuick(jm.AsyncWorker):
            handle_signals = False
            queue = "conc.q"

            async def process(self, task: jm.Task) -> None:
                record(self, task)

        self.kind = kind
        self.worker: Any = (Quick if kind == "sync" else AsyncQuick)(dsn, concurrency=4)

    def run(self) -> None:
        w = self.worker
        runner = threading.Thread(
            target=w.receive if self.kind == "sync" else lambda: asyncio.run(w.receive()),
            daemon=True,
        )
        runner.start()
        runner.join(60)
        assert not runner.is_alive()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_stop_right_after_the_last_task_still_marks_every_task_done(
    dsn: str, conn: psycopg.Connection[Any], kind: str
) -> None:
    """With concurrency, tasks that return without answering are marked done
    together by the serving loop; a stop must write the marks still pending,
    or the hand-back at exit would run those tasks a second time."""
    count = 200
    with jm.Client(dsn, queue="conc.q") as client:
        client.send_many(range(count))
    quick = StopsAfter(dsn, kind, count)
    quick.run()
    assert len(quick.seen) == count
    assert _claims(conn) == [(jm.Status.FINISHED, 1)] * count


def test_work_once_marks_its_task_done_with_concurrency(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    class Quiet(jm.Worker):
        handle_signals = False
        queue = "conc.q"

        def process(self, task: jm.Task) -> None:
            pass

    with jm.Client(dsn, queue="conc.q") as client:
        client.send(1)
    with Quiet(dsn, concurrency=4) as w:
        assert w.work_once()
        assert _claims(conn) == [(jm.Status.FINISHED, 1)]
        assert not w.work_once()


def test_a_worker_with_concurrency_serves_again_after_a_stop(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """receive() closes the pool it made for its slots; a second receive()
    must get a working one (a closed pool cannot be reopened)."""
    w = SlowThreads(dsn, concurrency=2)
    w.pause = 0.0
    with jm.Client(dsn, queue="conc.q") as client:
        for round_ in range(2):
            tid = client.send(round_)
            with serving(w):
                assert client.wait(tid, timeout=10) == {"id": tid, "data": round_}
    assert _claims(conn) == [(jm.Status.FINISHED, 1)] * 2


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_tasks_claimed_ahead_go_back_as_never_claimed_on_a_stop(
    dsn: str, conn: psycopg.Connection[Any], kind: str
) -> None:
    """Short tasks are claimed ahead of the free slots; a stop midway hands
    the ones not started back as if never claimed, and marks the rest done."""
    with jm.Client(dsn, queue="conc.q") as client:
        client.send_many(range(2000))
    quick = StopsAfter(dsn, kind, 300)
    w = quick.worker
    claims: list[int] = []
    claim = w._claim

    def counting_claim(limit: int) -> Any:
        claims.append(limit)
        return claim(limit)

    async def acounting_claim(limit: int) -> Any:
        claims.append(limit)
        return await claim(limit)

    w._claim = counting_claim if kind == "sync" else acounting_claim
    quick.run()
    assert max(claims) > 4, claims  # claimed beyond the free slots
    rows = _claims(conn)
    done = [r for r in rows if r == (jm.Status.FINISHED, 1)]
    assert len(done) == len(quick.seen) >= 300
    # Handed back: waiting, the claim not counted against the budget (its
    # attempt number stays used: the fencing token only grows).
    back = conn.execute(
        "SELECT count(*) FROM jobmachine.task WHERE status = 0"
        " AND attempts - uncounted_attempts = 0"
    ).fetchone()
    assert back is not None
    assert len(done) + back[0] == 2000, set(rows)


def test_pending_done_marks_bound_the_wait_and_are_written_when_due(dsn: str) -> None:
    """The policy of the completer's grouped ends (concurrency > 1), step by
    step: written before a claim, at one per slot, or once the oldest has
    waited prefetch_seconds; while every slot is busy with ends pending, the
    serving loop sleeps at most prefetch_seconds, not its timeout (no slot
    may free for a long while to wake it)."""
    w = jm.Worker(dsn, queue="conc.q", concurrency=2, prefetch_seconds=0.2, timeout=30)
    try:
        completer = w._completer
        end = TaskEnd(1, 1, DONE)
        task = jm.Task(id=1, queue="conc.q", data=None, attempt=1, created=None, parameters="")
        w._producer.ahead = [task]  # a task claimed ahead: no claim is due
        assert not completer.due(bool(w._producer.ahead), w.concurrency)
        w._slots.running = {7: threading.Thread(), 8: threading.Thread()}  # every slot busy
        assert w._next_wait() == 30  # nothing pending: the timeout

        assert completer.add(end)
        assert not completer.due(True, 2)  # one end, young, a task ahead
        assert w._next_wait() == 0.2  # but the sleep is bounded by it
        completer._since -= 0.2
        assert completer.due(True, 2)  # aged

        completer._since += 0.2
        assert completer.add(end)
        assert completer.due(True, 2)  # one per slot
        completer.take()
        assert completer.add(end)
        assert completer.due(False, 2)  # about to claim
    finally:
        w.close()
