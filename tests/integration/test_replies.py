"""The reply path: one reply listener per process, no lost wake-ups.

Every test here sets the waiter's safety re-read (``RECHECK``) to a minute,
so a wake-up that is lost shows as a wait that runs into its timeout (or
the test's own bound), never as a pass thanks to the re-read.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import job_machine as jm
from job_machine.replies import ReplyListener
from tests.support.procs import expected_reply, kill_all, start_worker, started_count, wait_until
from tests.support.workers import Base, serving

QUEUE = "rr.q"


@pytest.fixture(autouse=True)
def no_safety_reread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("job_machine._async.waiter.RECHECK", 60.0)
    monkeypatch.setattr("job_machine._sync.waiter.RECHECK", 60.0)


def callers_dsn(dsn: str) -> str:
    return make_conninfo(dsn, application_name="rr-callers")


class Peak:
    """Samples, in a thread, how many server connections carry an
    application_name; ``peak`` is the most seen at once."""

    def __init__(self, dsn: str, app: str = "rr-callers") -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._conn = psycopg.connect(dsn, autocommit=True)
        self._app = app
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            row = self._conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (self._app,)
            ).fetchone()
            assert row is not None
            self.peak = max(self.peak, int(row[0]))

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._conn.close()


@pytest.fixture
def two_workers(dsn: str, db: psycopg.Connection[Any], tmp_path: Path) -> Iterator[None]:
    """Two real worker processes on QUEUE that reply at once."""
    workers = [start_worker(dsn, QUEUE, tmp_path, f"worker{i}") for i in range(2)]
    try:
        wait_until(lambda: started_count(db) >= 2, 30, "two workers listening", workers)
        yield
    finally:
        kill_all(workers)


async def test_1000_concurrent_waits_on_one_async_client(dsn: str, two_workers: None) -> None:
    async with jm.AsyncClient(callers_dsn(dsn), queue=QUEUE) as client:

        async def call(seq: int) -> tuple[Any, float]:
            started = time.monotonic()
            tid = await client.send({"seq": seq})
            return await client.wait(tid, timeout=30), time.monotonic() - started

        with Peak(dsn) as peak:
            results = await asyncio.gather(*(call(seq) for seq in range(1000)))
    assert [reply for reply, _ in results] == [expected_reply(seq) for seq in range(1000)]
    slowest = max(took for _, took in results)
    assert slowest < 20, f"a wait took {slowest:.1f} s: a lost wake-up"
    # The client's own connection, opened once for 1000 callers arriving
    # at once, and the process's one reply listener.
    assert 1 <= peak.peak <= 2, peak.peak


def test_100_threads_wait_on_one_client(dsn: str, two_workers: None) -> None:
    with jm.Client(callers_dsn(dsn), queue=QUEUE) as client:

        def calls(first: int) -> list[tuple[Any, float]]:
            out = []
            for seq in range(first, first + 3):
                started = time.monotonic()
                tid = client.send({"seq": seq})
                out.append((client.wait(tid, timeout=30), time.monotonic() - started))
            return out

        with Peak(dsn) as peak, ThreadPoolExecutor(100) as pool:
            results = [r for rs in pool.map(calls, range(0, 300, 3)) for r in rs]
    assert [reply for reply, _ in results] == [expected_reply(seq) for seq in range(300)]
    slowest = max(took for _, took in results)
    assert slowest < 20, f"a wait took {slowest:.1f} s: a lost wake-up"
    assert 1 <= peak.peak <= 2, peak.peak


async def test_waits_on_a_pool_client_hold_no_pooled_connection(
    dsn: str, two_workers: None
) -> None:
    """50 waits at once through a pool of 2: waiting holds no pooled
    connection, so every one is answered (the pool is not exhausted)."""
    from psycopg_pool import AsyncConnectionPool  # noqa: PLC0415

    async with AsyncConnectionPool(
        callers_dsn(dsn), min_size=1, max_size=2, kwargs={"autocommit": True}, timeout=10
    ) as pool:
        client = jm.AsyncClient(pool=pool, queue=QUEUE)

        async def call(seq: int) -> Any:
            return await client.wait(await client.send({"seq": seq}), timeout=30)

        with Peak(dsn) as peak:
            replies = await asyncio.gather(*(call(seq) for seq in range(50)))
    assert replies == [expected_reply(seq) for seq in range(50)]
    assert peak.peak <= 3, peak.peak  # the pool's 2 and the reply listener


class Ends(Base):
    """Ends each task the way its data says, once ``release`` is set."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.release = threading.Event()

    def handle(self, task: jm.Task) -> None:
        assert self.release.wait(30)
        end = task.data["end"]
        if end == "reply":
            self.reply("replied")
        elif end == "result":
            self.result("stored")
        elif end == "raise":
            raise RuntimeError("it broke")
        # "return": done without an answer


def _listener(client: jm.AsyncClient) -> ReplyListener:
    return client._listener()


async def _until_listening(client: jm.AsyncClient, tid: int) -> None:
    listener = _listener(client)
    await asyncio.to_thread(
        wait_until,
        lambda: listener.listening_to(tid),
        10,
        f"the reply listener to LISTEN for task {tid}",
        interval=0.01,
    )


@pytest.mark.parametrize(
    ("end", "expect"),
    [
        ("reply", "replied"),
        ("result", "stored"),
        ("return", None),
        ("raise", jm.TaskFailed),
    ],
)
async def test_every_way_a_worker_ends_a_task_wakes_a_wait_forever(
    dsn: str, end: str, expect: Any
) -> None:
    worker = Ends(dsn, queue=QUEUE, retries=0)
    async with jm.AsyncClient(dsn, queue=QUEUE) as client:
        tid = await client.send({"end": end})
        waiting = asyncio.create_task(client.wait(tid, timeout=None))
        await _until_listening(client, tid)
        with serving(worker):
            started = time.monotonic()
            worker.release.set()
            if isinstance(expect, type):
                with pytest.raises(expect):
                    await asyncio.wait_for(waiting, 10)
            else:
                assert await asyncio.wait_for(waiting, 10) == expect
            assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("action", "expect"), [("cancel", jm.TaskFailed), ("remove", jm.UnknownTask)]
)
async def test_cancel_and_remove_wake_a_wait_forever(
    dsn: str, action: str, expect: type[Exception]
) -> None:
    async with jm.AsyncClient(dsn, queue=QUEUE) as client, jm.AsyncAdmin(dsn) as admin:
        tid = await client.send({"end": action})
        waiting = asyncio.create_task(client.wait(tid, timeout=None))
        await _until_listening(client, tid)
        started = time.monotonic()
        act: Callable[[int], Any] = getattr(admin, action)
        await act(tid)
        with pytest.raises(expect):
            await asyncio.wait_for(waiting, 10)
        assert time.monotonic() - started < 5


async def test_the_listener_killed_with_100_waits_pending(dsn: str) -> None:
    """pg_terminate_backend on the reply listener while 100 waits are
    pending: it reconnects, LISTENs again, every wait is answered."""
    worker = Base(dsn, queue=QUEUE)
    async with jm.AsyncClient(dsn, queue=QUEUE) as client:
        tids = await client.send_many([{"n": n} for n in range(100)])
        waits = [asyncio.create_task(client.wait(t, timeout=30)) for t in tids]
        for tid in tids:
            await _until_listening(client, tid)
        listener = _listener(client)
        connects = listener.connects
        pid = listener.backend_pid
        assert pid is not None
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with serving(worker):
            started = time.monotonic()
            replies = await asyncio.wait_for(asyncio.gather(*waits), 20)
            assert time.monotonic() - started < 15
    assert replies == [{"echo": {"n": n}} for n in range(100)]
    assert listener.connects > connects


def test_wait_all_and_as_completed(dsn: str) -> None:
    class Mixed(Base):
        def handle(self, task: jm.Task) -> None:
            if task.data == "bad":
                raise RuntimeError("bad one")
            self.reply(task.data * 2)

    worker = Mixed(dsn, queue=QUEUE, retries=0)
    with jm.Client(dsn, queue=QUEUE) as client, serving(worker):
        tids = [client.send(n) for n in range(5)]
        assert client.wait_all(tids, timeout=10) == [0, 2, 4, 6, 8]
        more = [client.send(n) for n in (10, 11)] + [client.send("bad")]
        seen = {a.task_id: a for a in client.as_completed(more, timeout=10)}
        assert set(seen) == set(more)
        assert [seen[t].value() for t in more[:2]] == [20, 22]
        assert seen[more[2]].failed
        with pytest.raises(jm.TaskFailed, match="bad one"):
            seen[more[2]].value()
        with pytest.raises(jm.TaskFailed, match="bad one"):
            client.wait_all(more, timeout=10)
        with pytest.raises(jm.UnknownTask):
            client.wait_all([tids[0], 10**12], timeout=10)


async def test_async_wait_all_and_as_completed(dsn: str) -> None:
    worker = Base(dsn, queue=QUEUE)
    async with jm.AsyncClient(dsn, queue=QUEUE) as client:
        tids = await client.send_many([{"n": n} for n in range(20)])
        with serving(worker):
            order = [a.task_id async for a in client.as_completed(tids, timeout=10)]
            assert sorted(order) == tids
            assert await client.wait_all(tids, timeout=10) == [
                {"echo": {"n": n}} for n in range(20)
            ]


async def test_a_wait_that_times_out_names_what_is_missing(dsn: str) -> None:
    async with jm.AsyncClient(dsn, queue=QUEUE) as client:
        tids = await client.send_many([1, 2])
        with pytest.raises(jm.WaitTimeout, match=f"{tids[0]}, {tids[1]}"):
            await client.wait_all(tids, timeout=0.3)
        assert _listener(client).waiting == 0  # unsubscribed on the way out


def _app_connections(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rr-callers'"
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_one_listener_for_every_client_closed_with_the_last(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """Two clients of one database in one process share one listening
    connection; it stays while either is open and closes with the last."""
    a = jm.Client(callers_dsn(dsn), queue=QUEUE)
    b = jm.Client(callers_dsn(dsn), queue=QUEUE)
    try:
        for client in (a, b):
            with pytest.raises(jm.WaitTimeout):
                client.wait(client.send(1), timeout=0.1)
        assert a._listener() is b._listener()
        assert _app_connections(conn) == 3  # a's, b's, and the one listener
        a.close()
        assert _app_connections(conn) == 2
    finally:
        a.close()
        b.close()
    wait_until(lambda: _app_connections(conn) == 0, 10, "the listener closing with its last client")


async def test_waiters_woken_together_read_together(dsn: str) -> None:
    """200 waits on one client, answered in one burst: their reads of the
    table are coalesced (one statement serves every waiter queued at the
    time), not one statement per waiter and wake-up."""
    async with jm.AsyncClient(dsn, queue=QUEUE) as client:
        reads: list[int] = []
        store_read = client._store.task_answers

        async def counting(ids: Any) -> Any:
            reads.append(len(ids))
            return await store_read(ids)

        client._store.task_answers = counting  # type: ignore[method-assign]
        tids = await client.send_many([{"n": n} for n in range(200)])
        waits = [asyncio.create_task(client.wait(t, timeout=30)) for t in tids]
        for tid in tids:
            await _until_listening(client, tid)
        with serving(Base(dsn, queue=QUEUE)):
            replies = await asyncio.wait_for(asyncio.gather(*waits), 20)
    assert replies == [{"echo": {"n": n}} for n in range(200)]
    assert sum(reads) >= 400  # every waiter read at least twice: on listening, once answered
    assert len(reads) <= 100, reads


def test_a_wait_right_after_another_on_the_same_task_is_still_woken(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """A wait that gives up leaves its channel to be UNLISTENed; a new wait
    on the same task arriving meanwhile must not take it for listened (its
    answer would then go unheard until the re-read)."""
    with jm.Client(dsn, queue=QUEUE) as client:
        for n in range(30):
            tid = client.send(n)
            with pytest.raises(jm.WaitTimeout):
                client.wait(tid, timeout=0.005)
            got: list[Any] = []
            waiter = threading.Thread(target=lambda t=tid: got.append(client.wait(t, timeout=20)))
            waiter.start()
            wait_until(lambda t=tid: client._listener().listening_to(t), 10, "listening")
            # Answered as a Perl worker would: the row, then the notification.
            conn.execute(
                "WITH done AS (UPDATE jobmachine.task SET status = 200 WHERE task_id = %s"
                " RETURNING task_id), stored AS (INSERT INTO jobmachine.result (task_id, result)"
                " SELECT task_id, %s FROM done) SELECT pg_notify('jmr:' || %s, 'reply')",
                (tid, f'"answer {n}"', tid),
            )
            waiter.join(5)
            assert got == [f"answer {n}"], f"round {n}: a wake-up was lost"
