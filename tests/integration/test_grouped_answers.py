"""Answers committed in groups: the worker's completer.

While a worker has more tasks of a batch in hand, what its tasks end with
(replies, results, errors, done marks) is written together in one
statement and one commit, each task still fenced by its attempt; an idle
worker's lone task is answered at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

import job_machine as jm
from job_machine.task import TaskEnd
from tests.support.procs import (
    expected_reply,
    kill_all,
    start_worker,
    started_count,
    wait_until,
)
from tests.support.workers import Base, serving

QUEUE = "group.q"


def _status(conn: psycopg.Connection[Any], tid: int) -> int:
    row = conn.execute("SELECT status FROM jobmachine.task WHERE task_id = %s", (tid,)).fetchone()
    assert row is not None
    return int(row[0])


def test_replies_of_a_batch_are_committed_together(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """reply() inside a batch returns with the answer queued (another session
    still sees the task running); the batch's end commits them all. The first
    task, claimed alone (no run time known yet), is answered at once."""
    seen: dict[int, int] = {}

    class Recording(Base):
        def handle(self, task: jm.Task) -> None:
            self.reply({"n": task.data})
            seen[task.data] = _status(conn, task.id)  # what another session sees now

    tids = client.send_many(list(range(80)), queue=QUEUE)
    with serving(Recording(dsn, queue=QUEUE, prefetch_seconds=5)):
        assert client.wait_all(tids, timeout=30) == [{"n": n} for n in range(80)]
    assert seen[0] == jm.Status.FINISHED
    queued = [n for n in range(1, 80) if seen[n] == jm.Status.STARTED]
    assert len(queued) >= 70, seen


def test_a_revived_tasks_late_grouped_reply_is_refused(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Fencing holds for grouped answers: the first worker's reply to task A
    is queued in its group; meanwhile A is revived and claimed again (attempt
    2, still running) by another worker; when the group is written, the stale
    reply is refused, and the live attempt's answer is accepted after it."""
    first, second = client.send_many(["a", "b"], queue=QUEUE)
    other = Base(dsn, queue=QUEUE)
    taken: list[jm.Task] = []

    class Slow(Base):
        def handle(self, task: jm.Task) -> None:
            self.reply("stale")
            if task.id == first:
                # Revived behind this worker's back (as housekeeping does),
                # then claimed by another worker.
                conn.execute(
                    "UPDATE jobmachine.task SET status = 0, worker_id = NULL WHERE task_id = %s",
                    (task.id,),
                )
                taken.extend(other._claim(1))

    w = Slow(dsn, queue=QUEUE)
    w._producer.budget.avg_runtime = 0.001  # as if it had run short tasks: claim both in one batch
    with serving(w):
        assert client.wait(second, timeout=30) == "stale"
    assert [(t.id, t.attempt) for t in taken] == [(first, 2)]
    assert not client.check(first)  # the stale reply did not land
    assert f"task {first}: its reply was not stored" in caplog.text
    with other:
        other.handle = lambda t: other.reply("live")  # type: ignore[method-assign]
        other._run(taken[0])
    assert client.wait(first, timeout=10) == "live"
    rows = conn.execute(
        "SELECT result FROM jobmachine.result WHERE task_id = %s AND resulttype = 'json'",
        (first,),
    ).fetchall()
    assert [r[0] for r in rows] == ['"live"']


def test_a_worker_killed_in_the_middle_of_a_group_loses_no_answer(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """SIGKILL while a group of answers is queued but not committed: those
    tasks are rescued and run again, none is lost, none ends with two
    answers, and every waiting client gets its answer."""
    with jm.Client(dsn, queue=QUEUE) as client:
        tids = client.send_many([{"seq": n} for n in range(400)])
    victim = start_worker(dsn, QUEUE, tmp_path, "victim", dead_after=2, sleep=0.002)
    try:
        wait_until(lambda: started_count(db) >= 1, 30, "the worker listening", [victim])

        # Freeze it until it is caught holding answered-but-unwritten tasks.
        def frozen_with_a_group() -> int:
            victim.signal(signal.SIGSTOP)
            row = db.execute(
                "SELECT count(DISTINCT p.task_id) FROM processed p"
                " JOIN jobmachine.task t USING (task_id) WHERE t.status = 100"
            ).fetchone()
            if row is not None and row[0] >= 2:
                return int(row[0])
            victim.signal(signal.SIGCONT)
            return 0

        caught = wait_until(frozen_with_a_group, 30, "the worker holding a group of answers")
        victim.signal(signal.SIGKILL)  # frozen: its group is never written
        victim.wait_exit(10)
        rescuer = start_worker(dsn, QUEUE, tmp_path, "rescuer", dead_after=2)
        try:
            with jm.Client(dsn) as waiter:
                replies = waiter.wait_all(tids, timeout=60)
        finally:
            kill_all([rescuer])
    finally:
        kill_all([victim])
    assert replies == [expected_reply(n) for n in range(400)]
    twice = db.execute(
        "SELECT task_id FROM jobmachine.result WHERE resulttype = 'json'"
        " GROUP BY task_id HAVING count(*) > 1"
    ).fetchall()
    assert twice == []
    rerun = db.execute(
        "SELECT count(*) FROM (SELECT task_id FROM processed GROUP BY task_id"
        " HAVING count(DISTINCT attempt) > 1) r"
    ).fetchone()
    assert rerun is not None and rerun[0] >= caught


# -- the bound: at most prefetch_seconds after the first, however long the next task -----


def _send_short_long_short(dsn: str) -> list[int]:
    with jm.Client(dsn, queue=QUEUE) as sender:
        return sender.send_many(["short", "long", "short2"])


def test_a_grouped_reply_is_committed_while_a_long_task_of_the_group_runs(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """Concurrency 1, a batch of three: "short" replies, then "long" runs for
    seconds. The reply of "short" is committed within prefetch_seconds (the
    worker's side loop writes it on a connection of its own), not when
    "long" ends: its client has it at once and another session sees it done."""
    release = threading.Event()
    long_started = threading.Event()

    class Mixed(Base):
        def handle(self, task: jm.Task) -> None:
            if task.data == "long":
                long_started.set()
                release.wait(5)
            self.reply(task.data)

    w = Mixed(dsn, queue=QUEUE, prefetch_seconds=0.2)
    w._producer.budget.avg_runtime = 0.001  # warmed up: short tasks, claimed in batches
    with serving(w):
        short, long, short2 = _send_short_long_short(dsn)
        t0 = time.monotonic()
        assert client.wait(short, timeout=5) == "short"
        assert time.monotonic() - t0 < 1.0
        assert long_started.is_set()  # the same batch: "long" runs meanwhile
        assert _status(conn, short) == jm.Status.FINISHED
        assert _status(conn, long) == jm.Status.STARTED
        release.set()
        assert client.wait_all([long, short2], timeout=10) == ["long", "short2"]


async def test_an_async_grouped_reply_is_committed_while_a_long_task_of_the_group_runs(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """The same bound for the asyncio worker (its side loop is an asyncio task)."""
    release = asyncio.Event()

    class Mixed(jm.AsyncWorker):
        async def process(self, task: jm.Task) -> None:
            if task.data == "long":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(release.wait(), 5)
            await self.reply(task.data)

    w = Mixed(dsn, queue=QUEUE, prefetch_seconds=0.2, handle_signals=False)
    w._producer.budget.avg_runtime = 0.001
    serving_task = asyncio.create_task(w.receive())
    try:
        async with jm.AsyncClient(dsn, queue=QUEUE) as client:
            short, long, short2 = await client.send_many(["short", "long", "short2"])
            t0 = time.monotonic()
            assert await client.wait(short, timeout=5) == "short"
            assert time.monotonic() - t0 < 1.0
            assert _status(conn, short) == jm.Status.FINISHED
            assert _status(conn, long) == jm.Status.STARTED
            release.set()
            assert await client.wait_all([long, short2], timeout=10) == ["long", "short2"]
    finally:
        w.stop()
        await asyncio.wait_for(serving_task, 10)


# -- reply() then an exception: the answer stands, batched or not ------------------------


@pytest.mark.parametrize("prefetch", [10, 1])
def test_reply_then_raise_ends_done_with_the_reply_batched_or_not(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any], prefetch: int
) -> None:
    """process() replies, then raises: the task ends done with its reply,
    whether the reply was queued in a group (prefetch 10, warmed up) or
    written at once (prefetch 1). Before, a group got both a reply end and
    an error end for the same attempt, and which one the database applied
    was arbitrary."""

    class ReplyThenRaise(Base):
        def handle(self, task: jm.Task) -> None:
            self.reply({"n": task.data})
            raise RuntimeError("after the reply")

    w = ReplyThenRaise(dsn, queue=QUEUE, prefetch=prefetch, prefetch_seconds=5)
    w._producer.budget.avg_runtime = 0.001
    # What each group statement was given (the database's own join of two
    # ends of one task to its row picks one at random, though often the first).
    groups: list[list[tuple[int, int, str]]] = []
    write = w._store.task_complete_many

    def recording(ends: list[TaskEnd], retries: int) -> dict[int, jm.Status]:
        groups.append([(e.task_id, e.attempt, e.kind) for e in ends])
        return write(ends, retries)

    w._store.task_complete_many = recording  # type: ignore[method-assign]
    with jm.Client(dsn, queue=QUEUE) as sender:
        tids = [sender.send(n, attempts=1) for n in range(20)]
    with serving(w):
        assert client.wait_all(tids, timeout=30) == [{"n": n} for n in range(20)]
    rows = conn.execute(
        "SELECT status, attempts FROM jobmachine.task WHERE task_id = ANY(%s) ORDER BY task_id",
        (tids,),
    ).fetchall()
    assert rows == [(jm.Status.FINISHED, 1)] * 20
    errors = conn.execute(
        "SELECT count(*) FROM jobmachine.result WHERE task_id = ANY(%s) AND resulttype = 'error'",
        (tids,),
    ).fetchone()
    assert errors == (0,)
    if prefetch > 1:
        assert sum(len(g) for g in groups) >= 10, groups  # answers were grouped
    for group in groups:  # one end per attempt: the reply, no error beside it
        assert len({(tid, attempt) for tid, attempt, _ in group}) == len(group), group
        assert {kind for _, _, kind in group} == {"reply"}, group
