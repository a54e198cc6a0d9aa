"""Prefetch: a one-at-a-time worker claims several short tasks per statement,
long ones one by one, and gives back what it claimed ahead when it stops."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

import job_machine as jm
from tests.support.procs import wait_until
from tests.support.workers import Base, serving


class Recording(Base):
    """Records, at the start of each task, how many tasks this worker holds."""

    pause = 0.0

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.held: list[int] = []
        self.look = psycopg.connect(args[0], autocommit=True)

    def handle(self, task: jm.Task) -> None:
        row = self.look.execute(
            "SELECT count(*) FROM jobmachine.task WHERE status = 100 AND worker_id = %s",
            (self.worker_id,),
        ).fetchone()
        assert row is not None
        self.held.append(row[0])
        time.sleep(self.pause)


def _drain(dsn: str, w: Recording, client: jm.Client, n: int) -> None:
    client.send_many(range(n))
    with serving(w):
        wait_until(lambda: len(w.held) >= n, 30, f"{n} tasks held")
    w.look.close()


def test_short_tasks_are_claimed_several_at_a_time(dsn: str, client: jm.Client) -> None:
    w = Recording(dsn, prefetch=10)
    _drain(dsn, w, client, 60)
    assert w.held[0] == 1  # nothing known about run times yet: one
    assert max(w.held) == 10  # then batches of up to 10
    assert all(h <= 10 for h in w.held)


def test_long_tasks_are_claimed_one_by_one(dsn: str, client: jm.Client) -> None:
    w = Recording(dsn, prefetch=10, prefetch_seconds=0.02)
    w.pause = 0.05
    _drain(dsn, w, client, 8)
    assert w.held == [1] * 8


def test_a_batch_holds_about_prefetch_seconds_of_work(dsn: str, client: jm.Client) -> None:
    """Tasks of about 20 ms with 0.1 s of work allowed ahead: batches of at
    most five (fewer while the average still counts the slower first task)."""
    w = Recording(dsn, prefetch=100, prefetch_seconds=0.1)
    w.pause = 0.02
    _drain(dsn, w, client, 40)
    assert w.held[0] == 1
    assert 1 < max(w.held) <= 5, w.held


def test_tiny_tasks_are_claimed_up_to_prefetch_at_once(dsn: str, client: jm.Client) -> None:
    w = Recording(dsn)  # the defaults: 100 tasks, 0.2 s of work
    _drain(dsn, w, client, 300)
    assert max(w.held) == 100, w.held


def test_prefetch_1_claims_one_at_a_time(dsn: str, client: jm.Client) -> None:
    w = Recording(dsn, prefetch=1)
    _drain(dsn, w, client, 30)
    assert w.held == [1] * 30


def test_a_stop_gives_back_the_tasks_claimed_ahead_as_never_claimed(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    stop_at = threading.Event()

    class StopsItself(Base):
        count = 0

        def handle(self, task: jm.Task) -> None:
            self.count += 1
            if self.count == 15:  # well into a batch of ten
                stop_at.set()
                self.stop()
            self.reply("ok")

    ids = client.send_many(range(40))
    w = StopsItself(dsn, prefetch=10)
    with serving(w):
        assert stop_at.wait(10)
    rows = conn.execute(
        "SELECT status, attempts, worker_id IS NULL FROM jobmachine.task ORDER BY task_id"
    ).fetchall()
    done = [r for r in rows if r[0] == jm.Status.FINISHED]
    assert len(done) == 15
    # Everything else waits: no attempt counted against the budget (a claim
    # handed back keeps its number: the fencing token only grows), no error.
    assert {r[0] for r in rows[15:]} == {jm.Status.WAITING}
    assert conn.execute(
        "SELECT DISTINCT attempts - uncounted_attempts FROM jobmachine.task WHERE status = 0"
    ).fetchall() == [(0,)]
    errors = conn.execute(
        "SELECT count(*) FROM jobmachine.result WHERE resulttype = 'error'"
    ).fetchone()
    assert errors == (0,)
    assert ids == sorted(ids)


def test_prefetch_must_be_a_whole_number_from_one(dsn: str) -> None:
    with pytest.raises(ValueError, match="prefetch must be a whole number >= 1"):
        Base(dsn, prefetch=0)


@pytest.mark.parametrize("value", [0, -1, "0.2"])
def test_prefetch_seconds_must_be_a_positive_number(dsn: str, value: Any) -> None:
    with pytest.raises(ValueError, match="prefetch_seconds"):
        Base(dsn, prefetch_seconds=value)


def test_a_batch_of_short_tasks_is_marked_done_in_one_statement(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """Tasks of a prefetched batch that return without answering are marked
    done together at the end of the batch: one transaction for the batch."""

    class Quiet(Base):
        def handle(self, task: jm.Task) -> None:
            pass  # no reply: marked done by the worker

    client.send_many(range(40))
    w = Quiet(dsn, prefetch=10)
    undone = "SELECT count(*) FROM jobmachine.task WHERE status <> 200"
    with serving(w):
        wait_until(lambda: conn.execute(undone).fetchone() == (0,), 20, "every task done")
    # xmin is the transaction that wrote the done mark: after the first
    # task, batches of ten share one.
    rows = conn.execute("SELECT xmin::text FROM jobmachine.task ORDER BY task_id").fetchall()
    assert len({r[0] for r in rows}) < 40 / 2, rows
    assert conn.execute("SELECT count(*) FROM jobmachine.result").fetchone() == (0,)


def test_a_stop_mid_batch_still_marks_the_finished_ones_done(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    class StopsAtFive(Base):
        count = 0

        def handle(self, task: jm.Task) -> None:
            self.count += 1
            if self.count == 5 + 10:  # the fifth task of the second batch
                self.stop()

    client.send_many(range(60))
    with serving(StopsAtFive(dsn, prefetch=10)) as t:
        t.join(10)  # it stops itself, mid-batch
        assert not t.is_alive(), "the worker did not stop itself"
    counts = dict(
        conn.execute("SELECT status, count(*) FROM jobmachine.task GROUP BY status").fetchall()
    )
    assert counts[jm.Status.FINISHED] + counts[jm.Status.WAITING] == 60, counts
    assert jm.Status.STARTED not in counts
    assert 15 <= counts[jm.Status.FINISHED] < 60
