"""Deadlines and cancelling a running task (docs/deadlines.md): a task's
time limit, its expiry, and Admin.cancel / Client.cancel of a task that
runs, in the async worker (in this process), the sync worker and the worker
processes of ``--processes`` (real processes: ``python -m job_machine.cli
worker tests.support.deadline_workers:...``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import job_machine as jm
from tests.support.procs import wait_until
from tests.support.supervisor import supervisor
from tests.support.workers import Base, serving

QUEUE = "deadline.q"


@pytest.fixture
def client(dsn: str) -> Iterator[jm.Client]:
    with jm.Client(dsn, queue=QUEUE) as c:
        yield c


@pytest.fixture
def admin(dsn: str) -> Iterator[jm.Admin]:
    with jm.Admin(dsn) as a:
        yield a


class Sleeper(jm.AsyncWorker):
    """Sleeps a minute on each task (data ``"quick"``: replies at once) and
    records the tasks it started and those whose coroutine was cancelled."""

    handle_signals = False

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("queue", QUEUE)
        super().__init__(*args, **kw)
        self.ready = asyncio.Event()
        self.started: list[int] = []
        self.cancelled: list[int] = []

    async def startup(self) -> None:
        self.ready.set()

    async def process(self, task: jm.Task) -> None:
        self.started.append(task.id)
        if task.data == "quick":
            await self.reply("quick")
            return
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled.append(task.id)
            raise
        await self.reply("slept")


@asynccontextmanager
async def _serving(w: Sleeper) -> AsyncIterator[Sleeper]:
    """``w.receive()`` in an asyncio task for the block, once it is ready."""
    serving_task = asyncio.create_task(w.receive())
    try:
        await asyncio.wait_for(w.ready.wait(), 10)
        yield w
    finally:
        w.stop()
        await asyncio.wait_for(serving_task, 15)


def _error_types(info: jm.TaskInfo) -> list[str]:
    return [e["type"] for e in info.errors]


# -- time limits ---------------------------------------------------------------


async def test_async_worker_cancels_an_attempt_past_its_time_limit_retries_then_fails(
    dsn: str,
) -> None:
    async with (
        _serving(Sleeper(dsn, retry_backoff=0, dead_after=2)) as w,
        jm.AsyncClient(dsn, queue=QUEUE) as client,
    ):
        begun = time.monotonic()
        tid = await client.send("slow", time_limit=0.3, attempts=2)
        with pytest.raises(jm.TaskFailed) as raised:
            await client.wait(tid, timeout=30)
        assert time.monotonic() - begun < 10  # two limits, not two sleeps of a minute
        assert raised.value.error["type"] == "TimeLimitExceeded"
        assert not isinstance(raised.value, jm.TaskCancelled)
        info = await client.task_info(tid)
        assert (info.state, info.attempts) == ("failed", 2)
        assert _error_types(info) == ["TimeLimitExceeded", "TimeLimitExceeded"]
        assert "time limit (0.3 s)" in info.errors[0]["message"]
        await asyncio.to_thread(
            wait_until, lambda: w.cancelled == [tid, tid], 15, "w.cancelled == [tid, tid]"
        )
        # The worker's own time_limit applies to a task sent without one.
        w.time_limit = 0.3
        other = await client.send("slow", attempts=1)
        with pytest.raises(jm.TaskFailed, match="time limit"):
            await client.wait(other, timeout=30)
        # And the worker goes on serving.
        quick = await client.send("quick")
        assert await client.wait(quick, timeout=10) == "quick"


def test_sync_worker_task_sees_its_time_limit_cooperatively(
    dsn: str, client: jm.Client, admin: jm.Admin, tmp_path: Path
) -> None:
    args = ("tests.support.deadline_workers:Cooperative", "--queue", QUEUE, "--retry-backoff", "0")
    with supervisor(dsn, tmp_path, *args) as s:
        s.wait_children(admin, 1)
        begun = time.monotonic()
        tid = client.send("long", time_limit=0.5, attempts=2)
        with pytest.raises(jm.TaskFailed) as raised:
            client.wait(tid, timeout=30)
        assert time.monotonic() - begun < 15, s.log()
        assert raised.value.error["type"] == "TimeLimitExceeded"
        info = client.task_info(tid)
        assert (info.state, info.attempts) == ("failed", 2)
        assert _error_types(info) == ["TimeLimitExceeded", "TimeLimitExceeded"]
        wait_until(
            lambda: client.task_info(tid).notes.get("stopped_by") == "TimeLimitExceeded",
            15,
            "the time limit noted",
        )


def test_a_late_answer_of_a_timed_out_attempt_is_refused(
    dsn: str, client: jm.Client, admin: jm.Admin, tmp_path: Path
) -> None:
    """A thread that never looks at task.cancelled: its attempt is ended (and
    its client told) at the limit, and its reply, when it comes, is refused."""
    args = ("tests.support.deadline_workers:Oblivious", "--queue", QUEUE, "--time-limit", "0.5")
    with supervisor(dsn, tmp_path, *args) as s:
        s.wait_children(admin, 1)
        begun = time.monotonic()
        tid = client.send({"sleep": 4}, attempts=1)
        with pytest.raises(jm.TaskFailed, match="time limit"):
            client.wait(tid, timeout=30)
        assert time.monotonic() - begun < 3.5, s.log()  # at the limit, not when it returned
        wait_until(
            lambda: client.task_info(tid).notes.get("refused") is True, 15, "the refusal noted"
        )
        info = client.task_info(tid)
        assert (info.state, info.results) == ("failed", [])
        assert _error_types(info) == ["TimeLimitExceeded"]


def test_process_mode_ends_the_child_past_the_time_limit_and_a_fresh_one_serves(
    dsn: str, client: jm.Client, admin: jm.Admin, tmp_path: Path
) -> None:
    """A CPU-bound task that never looks: the worker process running it ends
    itself, and the supervisor starts a fresh one at once."""
    args = ("tests.support.deadline_workers:Spin", "--queue", QUEUE, "--processes", "1")
    with supervisor(dsn, tmp_path, *args) as s:
        [old] = s.wait_children(admin, 1)
        tid = client.send("spin", time_limit=0.5, attempts=1)
        with pytest.raises(jm.TaskFailed, match="time limit"):
            client.wait(tid, timeout=30)
        assert client.task_info(tid).notes["pid"] == old
        [new] = s.wait_children(admin, 1, without=old)
        quick = client.send({"quick": True})
        assert client.wait(quick, timeout=20) == {"pid": new}
        assert "ended to stop a task" in s.log()
        assert s.proc.poll() is None  # not taken for a crash


# -- expiry --------------------------------------------------------------------


def test_an_expired_task_never_runs_and_its_waiting_client_hears_at_once(
    dsn: str, client: jm.Client
) -> None:
    """Due only after it expires: no worker runs it, the housekeeper (the
    one worker, heartbeat every 0.5 s) fails it, and the waiting client gets
    TaskExpired within about a heartbeat, not at its timeout; its blocked
    child fails too."""
    with Base(dsn, queue=QUEUE, dead_after=2) as w, serving(w):
        begun = time.monotonic()
        tid = client.send("stale", delay=1.5, expire_after=0.5)
        child = client.send("after", parents=[tid])
        with pytest.raises(jm.TaskExpired) as raised:
            client.wait(tid, timeout=60)
        assert time.monotonic() - begun < 10
        assert raised.value.error["type"] == "TaskExpired"
        with pytest.raises(jm.TaskFailed) as parent_failed:
            client.wait(child, timeout=10)
        assert parent_failed.value.error["type"] == "ParentFailed"
        assert w.seen == []
        assert client.task_info(tid).attempts == 0


def test_the_claim_skips_an_expired_task_and_housekeeping_fails_it(
    dsn: str, client: jm.Client, admin: jm.Admin, conn: psycopg.Connection[Any]
) -> None:
    past = client.send("too late", expires_at=datetime.now(UTC) + timedelta(hours=1))
    conn.execute(
        "UPDATE jobmachine.task SET expires_at = now() - interval '1 second' WHERE task_id = %s",
        (past,),
    )
    fresh = client.send("in time", expire_after=3600, time_limit=2.5)
    info = client.task_info(fresh)
    assert info.time_limit == 2.5 and info.expires_at is not None and info.cancelled_at is None
    with Base(dsn, queue=QUEUE) as w:
        assert w.work_once()
        assert [t.id for t in w.seen] == [fresh]
        assert not w.work_once()
        assert w.housekeeping().expired == 1
    assert client.task_info(past).state == "failed"
    with pytest.raises(jm.TaskExpired):
        client.receive(past)
    # Sent again by hand, it has no deadline any more and runs.
    admin.retry(past)
    with Base(dsn, queue=QUEUE) as w:
        assert w.work_once()
    assert client.receive(past) == {"echo": "too late"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"time_limit": 0}, "time_limit must be more than 0"),
        ({"time_limit": -1}, "time_limit must be a number"),
        ({"expire_after": "soon"}, "expire_after must be a number"),
        ({"expires_at": datetime(2030, 1, 1)}, "expires_at must be timezone-aware"),
        ({"expire_after": 1, "expires_at": datetime.now(UTC)}, "expire_after or expires_at"),
    ],
)
def test_bad_deadlines_are_refused(client: jm.Client, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        client.send("x", **kwargs)


# -- cancelling a running task --------------------------------------------------


async def test_cancel_of_a_running_async_task_cancels_its_coroutine(dsn: str) -> None:
    async with (
        _serving(Sleeper(dsn, dead_after=2)) as w,
        jm.AsyncClient(dsn, queue=QUEUE) as client,
    ):
        tid = await client.send("slow", attempts=3)
        child = await client.send("after", parents=[tid])
        await asyncio.to_thread(wait_until, lambda: w.started == [tid], 15, "w.started == [tid]")
        begun = time.monotonic()
        assert await client.cancel(tid)
        with pytest.raises(jm.TaskCancelled):
            await client.wait(tid, timeout=30)
        await asyncio.to_thread(
            wait_until, lambda: w.cancelled == [tid], 15, "w.cancelled == [tid]"
        )
        assert time.monotonic() - begun < 0.4  # the notification, not the heartbeat
        info = await client.task_info(tid)
        assert (info.state, info.attempts, _error_types(info)) == ("failed", 1, ["Cancelled"])
        assert info.cancelled_at is not None
        with pytest.raises(jm.TaskFailed) as raised:
            await client.wait(child, timeout=10)
        assert raised.value.error["type"] == "ParentFailed"
        assert not await client.cancel(tid)  # finished: nothing to cancel
        quick = await client.send("quick")
        assert await client.wait(quick, timeout=10) == "quick"
        assert w.started == [tid, quick]  # not retried


async def test_cancel_stops_only_its_own_task_among_concurrent_ones(dsn: str) -> None:
    async with (
        _serving(Sleeper(dsn, concurrency=2)) as w,
        jm.AsyncClient(dsn, queue=QUEUE) as client,
    ):
        a = await client.send("slow")
        b = await client.send("slow")
        await asyncio.to_thread(
            wait_until, lambda: sorted(w.started) == [a, b], 15, "sorted(w.started) == [a, b]"
        )
        assert await client.cancel(a)
        await asyncio.to_thread(wait_until, lambda: w.cancelled == [a], 15, "w.cancelled == [a]")
        assert (await client.task_info(b)).state == "running"
        quick = await client.send("quick")  # a's slot is free again
        assert await client.wait(quick, timeout=10) == "quick"
        assert w.cancelled == [a]
        assert await client.cancel(b)
        await asyncio.to_thread(
            wait_until, lambda: w.cancelled == [a, b], 15, "w.cancelled == [a, b]"
        )


async def test_a_lost_cancel_notification_is_made_up_for_by_the_heartbeat(dsn: str) -> None:
    async with (
        _serving(Sleeper(dsn, dead_after=2)) as w,
        jm.AsyncClient(dsn, queue=QUEUE) as client,
    ):
        tid = await client.send("slow")
        await asyncio.to_thread(wait_until, lambda: w.started == [tid], 15, "w.started == [tid]")
        # Cancelled without the notification (as if it were lost).
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
            await c.execute(
                "UPDATE jobmachine.task SET status = 900, cancelled_at = now() WHERE task_id = %s",
                (tid,),
            )
        await asyncio.to_thread(
            wait_until, lambda: w.cancelled == [tid], 10, "w.cancelled == [tid]"
        )


def test_cancel_of_a_running_sync_task_is_seen_by_the_task(
    dsn: str, client: jm.Client, admin: jm.Admin, tmp_path: Path
) -> None:
    args = ("tests.support.deadline_workers:Cooperative", "--queue", QUEUE)
    with supervisor(dsn, tmp_path, *args) as s:
        [pid] = s.wait_children(admin, 1)
        tid = client.send("long", attempts=3)
        child = client.send("after", parents=[tid])
        wait_until(lambda: client.task_info(tid).state == "running", 15, "the task to run")
        admin.cancel(tid)
        with pytest.raises(jm.TaskCancelled):
            client.wait(tid, timeout=10)
        wait_until(
            lambda: client.task_info(tid).notes.get("stopped_by") == "Cancelled",
            15,
            "the cancel noted",
        )
        info = client.task_info(tid)
        assert (info.state, info.attempts, _error_types(info)) == ("failed", 1, ["Cancelled"])
        with pytest.raises(jm.TaskFailed, match="parent task"):
            client.wait(child, timeout=10)
        quick = client.send({"quick": True})
        assert client.wait(quick, timeout=20) == {"pid": pid}  # the same process goes on


def test_cancel_in_process_mode_ends_the_child_and_a_fresh_one_serves(
    dsn: str, client: jm.Client, admin: jm.Admin, tmp_path: Path
) -> None:
    args = ("tests.support.deadline_workers:Spin", "--queue", QUEUE, "--processes", "1")
    with supervisor(dsn, tmp_path, *args) as s:
        [old] = s.wait_children(admin, 1)
        tid = client.send("spin", attempts=3)
        child = client.send("after", parents=[tid])
        wait_until(
            lambda: client.task_info(tid).notes.get("pid") == old,
            15,
            "the old worker to start the task",
        )
        admin.cancel(tid)
        with pytest.raises(jm.TaskCancelled):
            client.wait(tid, timeout=10)
        with pytest.raises(jm.TaskFailed, match="parent task"):
            client.wait(child, timeout=10)
        [new] = s.wait_children(admin, 1, without=old)
        quick = client.send({"quick": True})
        assert client.wait(quick, timeout=20) == {"pid": new}
        info = client.task_info(tid)
        assert (info.state, info.attempts, _error_types(info)) == ("failed", 1, ["Cancelled"])
        assert "ended to stop a task" in s.log()
