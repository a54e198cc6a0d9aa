"""The worker's smaller edges (issue 14, item 9): what reply() reports after
a lost connection, max_runtime counted from process(), a task given up
while it waited in the prefetch buffer, and the listening connection read
while a long task runs."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import psycopg

import job_machine as jm
from job_machine._sync.housekeeper import Housekeeper
from tests.support.procs import wait_until
from tests.support.workers import Base, serving


def _terminate_own_connection(w: jm.Worker) -> None:
    """Kill the worker's work connection from the server side: its next
    statement finds it broken (ConnectionLost) and reconnects."""
    own = w._connector.opened
    assert own is not None
    pid = own.info.backend_pid
    with psycopg.connect(w._connector.conninfo, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", (pid,))


class GivenUpWhileReplying(Base):
    """The task's connection dies and the task is given up (its last
    attempt: failed) before the reply reaches the database."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.outcome: list[str] = []
        self.giver = jm.Worker(args[0], queue="job.task", max_runtime=0.001, retries=0)

    def handle(self, task: jm.Task) -> None:
        _terminate_own_connection(self)
        assert self.giver.housekeeping().failed == 1
        try:
            self.reply("late")
        except jm.TaskNotHeld:
            self.outcome.append("refused")
            raise
        self.outcome.append("stored")


def test_a_reply_after_a_lost_connection_is_stored_only_if_this_attempt_wrote_it(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """The retried write finds the task no longer held: the task failed by
    max_runtime meanwhile, with this very attempt number and this worker's
    id; that is not this attempt's answer, so reply() raises TaskNotHeld."""
    tid = client.send("x")
    # The task carries its worker's max_runtime and attempts (the giver's
    # housekeeping judges it by them).
    w = GivenUpWhileReplying(
        dsn, reconnect_backoff=0.01, reconnect_backoff_cap=0.05, max_runtime=0.001, retries=0
    )
    try:
        with serving(w):
            wait_until(lambda: w.outcome, 20, "the reply's outcome")
    finally:
        w.giver.close()
    assert w.outcome == ["refused"]
    assert client.task_info(tid).status == jm.Status.FAILED
    assert conn.execute(
        "SELECT count(*) FROM jobmachine.result WHERE resulttype = 'json'"
    ).fetchone() == (0,)


class FailsAfterALostConnection(Base):
    """Raises after its connection died: the failure's write is lost with
    the connection once, then committed on the retry."""

    def handle(self, task: jm.Task) -> None:
        _terminate_own_connection(self)
        raise RuntimeError("boom")


def test_a_failure_written_through_a_lost_connection_is_recorded_once(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send("x")
    w = FailsAfterALostConnection(
        dsn, retries=0, reconnect_backoff=0.01, reconnect_backoff_cap=0.05
    )
    with serving(w):
        wait_until(lambda: client.task_info(tid).status == jm.Status.FAILED, 20, "the task failed")
    errors = client.task_info(tid).errors
    assert [e["message"] for e in errors] == ["boom"], errors


# -- the prefetch buffer ------------------------------------------------------


def _give_up_as_of(w: jm.Worker, conn: psycopg.Connection[Any], later: float, limit: float) -> int:
    """Run the give-up chore as if ``later`` seconds had passed; how many
    tasks failed. The tasks carry their worker's ``max_runtime``, which must
    be ``limit``, and attempts (the chore's own settings apply to none)."""
    assert w.max_runtime == limit
    row = conn.execute("SELECT now() + make_interval(secs => %s)", (later,)).fetchone()
    assert row is not None
    counts = Housekeeper(w._store).run(
        retries=0,
        remove_after_days=30,
        grace=60,
        max_runtime=limit,
        orphan_after=3600,
        now=row[0],
    )
    return counts.failed


class Batch(Base):
    """Records (task id, attempt) at the start of each task; a task whose
    data names a hook calls it, and "slow" tasks work ``slow`` seconds."""

    slow = 0.0

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.look = psycopg.connect(args[0], autocommit=True)
        self.ran: list[tuple[str, int]] = []
        self.refused: list[str] = []

    def handle(self, task: jm.Task) -> None:
        self.ran.append((task.data, task.attempt))
        hook = getattr(self, f"on_{task.data}", None)
        if hook is not None:
            hook(task)
        try:
            self.reply("ok")
        except jm.TaskNotHeld:
            self.refused.append(task.data)


def _batch_of(w: Batch, client: jm.Client, names: list[str]) -> None:
    """A warm-up task (so the worker claims ahead), then ``names`` in one
    batch, then a task "after", claimed once the batch is through; serve
    until "after" has run."""
    client.send("warm-up")
    with serving(w):
        wait_until(lambda: w.ran, 10, "the warm-up task")
        client.send_many(names)
        wait_until(lambda: names[0] in dict(w.ran), 10, "the batch started")
        client.send("after")
        wait_until(lambda: "after" in dict(w.ran), 20, "the task after the batch")
    w.look.close()


def _statuses(conn: psycopg.Connection[Any]) -> dict[str, jm.Status]:
    rows = conn.execute("SELECT parameters, status FROM jobmachine.task").fetchall()
    return {json.loads(p): jm.Status(s) for p, s in rows}


def test_max_runtime_counts_from_when_process_starts(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """Task "second" waits 0.4 s in the worker's buffer behind task "first",
    then runs. Half a second into it, with max_runtime 0.7 s, it is not
    given up: 0.9 s since its claim, but 0.5 s since process() began
    ("first", whose answer is queued for the batch's commit, is: it has
    run 0.9 s by then)."""
    given_up: list[int] = []

    class Timed(Batch):
        def on_first(self, task: jm.Task) -> None:
            threading.Event().wait(0.4)  # the task's own work

        def on_second(self, task: jm.Task) -> None:
            given_up.append(_give_up_as_of(self, self.look, later=0.5, limit=0.7))

    w = Timed(dsn, prefetch=2, prefetch_seconds=0.1, retries=0, max_runtime=0.7)
    _batch_of(w, client, ["first", "second"])
    assert _statuses(conn) == {
        "warm-up": jm.Status.FINISHED,
        "first": jm.Status.FAILED,
        "second": jm.Status.FINISHED,
        "after": jm.Status.FINISHED,
    }
    assert given_up == [1]


def test_a_task_given_up_while_in_the_prefetch_buffer_is_not_run(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """While task "first" runs, both it and task "second" (claimed with it,
    waiting in the worker's buffer) are given up on their last attempt:
    "second" must not run from the buffer."""
    given_up: list[int] = []

    class GivesUp(Batch):
        def on_first(self, task: jm.Task) -> None:
            given_up.append(_give_up_as_of(self, self.look, later=5, limit=1))
            threading.Event().wait(2 * self.prefetch_seconds)  # the task's own work

    w = GivesUp(dsn, prefetch=2, prefetch_seconds=0.05, retries=0, max_runtime=1)
    _batch_of(w, client, ["first", "second"])
    assert given_up == [2]
    assert "second" not in [name for name, _ in w.ran], w.ran
    assert _statuses(conn) == {
        "warm-up": jm.Status.FINISHED,
        "first": jm.Status.FAILED,
        "second": jm.Status.FAILED,
        "after": jm.Status.FINISHED,
    }


# -- notifications read while a long task runs ---------------------------------


def test_a_long_task_does_not_stop_the_worker_reading_its_notifications(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """With dsn= and concurrency 1 the listening connection is the work
    connection. While one task runs, 40 MB of notifications arrive on the
    worker's channel: more than the sockets buffer, so a backend whose client
    reads nothing blocks writing them (wait event ClientWrite) and holds the
    cluster's NOTIFY queue tail. The worker reads them while the task runs:
    its backend is idle again (ClientRead) before the task ends."""
    w = LongTask(dsn)
    client.send("long")
    with serving(w):
        assert w.started.wait(10)
        own = w._connector.opened
        assert own is not None
        try:
            _flood_then_wait_for_reads(conn, own.info.backend_pid)
        finally:
            w.release.set()
        wait_until(lambda: w.replied, 10, "the long task answered")


def _flood_then_wait_for_reads(conn: psycopg.Connection[Any], pid: int) -> None:
    """40 MB of notifications on the worker's channel, then wait until the
    backend ``pid`` has written them all to its client (idle: ClientRead)."""
    conn.execute(
        "SELECT pg_notify('jm:job.task', lpad(i::text, 7990, 'x'))"
        " FROM generate_series(1, 5000) AS i"
    )

    def backend_reads() -> bool:
        row = conn.execute("SELECT wait_event FROM pg_stat_activity WHERE pid = %s", (pid,))
        return row.fetchone() == ("ClientRead",)

    wait_until(backend_reads, 20, "the worker's backend done writing its notifications")


async def test_a_long_async_task_does_not_stop_the_worker_reading_its_notifications(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """The same with an AsyncWorker, whose reads run as an asyncio task."""
    started, release = asyncio.Event(), asyncio.Event()

    class LongAsync(jm.AsyncWorker):
        handle_signals = False

        async def process(self, task: jm.Task) -> None:
            started.set()
            await asyncio.wait_for(release.wait(), 60)
            await self.reply("ok")

    w = LongAsync(dsn, queue="job.task")
    serving_ = asyncio.create_task(w.receive())
    try:
        async with jm.AsyncClient(dsn, queue="job.task") as client:
            tid = await client.send("long")
            await asyncio.wait_for(started.wait(), 10)
            own = w._connector.opened
            assert own is not None
            try:
                await asyncio.to_thread(_flood_then_wait_for_reads, conn, own.info.backend_pid)
            finally:
                release.set()
            assert await client.wait(tid, timeout=10) == "ok"
    finally:
        w.stop()
        await asyncio.wait_for(serving_, 10)


class LongTask(Base):
    """Holds its task until ``release`` is set."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.started = threading.Event()
        self.release = threading.Event()
        self.replied = False

    def handle(self, task: jm.Task) -> None:
        self.started.set()
        self.release.wait(60)
        self.reply("ok")
        self.replied = True
