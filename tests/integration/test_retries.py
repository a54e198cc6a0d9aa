"""Retries: exponential backoff with jitter, Retry(after=...), the failed end
state, and what a client sees of it all (task_info, TaskFailed)."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

import job_machine as jm
from tests.support.procs import wait_until
from tests.support.workers import Base, serving


class AlwaysFails(Base):
    def handle(self, task: jm.Task) -> None:
        raise ValueError(f"bad input, attempt {task.attempt}")


def _due_in(conn: psycopg.Connection[Any], tid: int) -> float:
    """Seconds from the task's last failure to when it is due again (retry_at)."""
    row = conn.execute(
        "SELECT extract(epoch FROM retry_at - modified) FROM jobmachine.task WHERE task_id = %s",
        (tid,),
    ).fetchone()
    assert row is not None and row[0] is not None
    return float(row[0])


def _wait_due(conn: psycopg.Connection[Any], tid: int) -> None:
    """Wait until the database's clock passes the task's retry_at."""

    def due() -> bool:
        row = conn.execute(
            "SELECT retry_at > now() FROM jobmachine.task WHERE task_id = %s", (tid,)
        ).fetchone()
        assert row is not None, f"task {tid} is gone"
        return not row[0]

    wait_until(due, 5, f"task {tid} to fall due")


def test_failed_attempts_back_off_exponentially_then_the_task_fails(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send({"n": 1})
    with AlwaysFails(dsn, retries=2, retry_backoff=0.4, retry_backoff_cap=10) as w:
        assert w.work_once()  # attempt 1 raises
        first = _due_in(conn, tid)
        assert 0.2 <= first <= 0.4 + 0.01, first
        info = client.task_info(tid)
        assert (info.state, info.attempts, len(info.errors)) == ("waiting", 1, 1)
        assert info.last_error["type"] == "ValueError"
        assert info.last_error["attempt"] == 1
        # Not due yet: nobody may take it.
        assert w.work_once() is False

        _wait_due(conn, tid)
        assert w.work_once()  # attempt 2 raises: twice the backoff
        second = _due_in(conn, tid)
        assert 0.4 <= second <= 0.8 + 0.01, second

        _wait_due(conn, tid)
        assert w.work_once()  # attempt 3, the last (retries=2): fails for good
    info = client.task_info(tid)
    assert (info.state, info.status, info.attempts) == ("failed", jm.Status.FAILED, 3)
    assert [e["attempt"] for e in info.errors] == [1, 2, 3]
    assert [e["message"] for e in info.errors] == [f"bad input, attempt {n}" for n in (1, 2, 3)]
    assert all("Traceback" in e["traceback"] for e in info.errors)
    assert client.check(tid) is True
    with pytest.raises(jm.TaskFailed, match="bad input, attempt 3") as failed:
        client.receive(tid)
    assert failed.value.error["attempt"] == 3


def test_a_serving_worker_retries_when_the_backoff_ends_not_at_its_timeout(
    dsn: str, client: jm.Client
) -> None:
    """No notification announces a retry: the worker sleeps until the next due
    task, so the retry runs after its backoff, not after `timeout` (30 s)."""

    class FailsOnce(Base):
        def handle(self, task: jm.Task) -> None:
            if task.attempt == 1:
                raise RuntimeError("transient")
            self.reply({"attempt": task.attempt})

    w = FailsOnce(dsn, timeout=30, retry_backoff=0.5)
    with serving(w):
        t0 = time.monotonic()
        tid = client.send("flaky")
        assert client.wait(tid, timeout=10) == {"attempt": 2}
        elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < 5, elapsed
    info = client.task_info(tid)
    assert (info.state, info.attempts, [e["type"] for e in info.errors]) == (
        "done",
        2,
        ["RuntimeError"],
    )


def test_raise_retry_chooses_the_delay_and_counts_the_attempt(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    class Later(Base):
        def handle(self, task: jm.Task) -> None:
            raise jm.Retry(after=7.5, reason="the bank is closed")

    tid = client.send("pay")
    with Later(dsn, retries=5) as w:
        assert w.work_once()
    assert abs(_due_in(conn, tid) - 7.5) < 0.01
    info = client.task_info(tid)
    assert (info.state, info.attempts) == ("waiting", 1)
    assert info.last_error["type"] == "Retry"
    assert info.last_error["message"] == "the bank is closed"


def test_retry_delay_can_be_overridden(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    class Linear(AlwaysFails):
        def retry_delay(self, task: jm.Task, error: BaseException) -> float:
            return 100.0 * task.attempt

    tid = client.send("x")
    with Linear(dsn) as w:
        assert w.work_once()
    assert abs(_due_in(conn, tid) - 100.0) < 0.01


@pytest.mark.parametrize("after", [-1, float("nan"), "soon", True])
def test_retry_rejects_a_bad_delay(after: Any) -> None:
    with pytest.raises(ValueError, match="Retry"):
        jm.Retry(after=after)


@pytest.mark.parametrize(
    ("name", "value"),
    [("retry_backoff", -1), ("retry_backoff_cap", "1"), ("dead_after", 0), ("shutdown_grace", -5)],
)
def test_worker_rejects_bad_backoff_and_liveness_settings(dsn: str, name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name):
        Base(dsn, **{name: value})


def test_a_retried_done_task_is_not_answered_by_its_previous_reply(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """Admin.retry of a done task: its old reply stays for the record, but
    it is not the answer of the new run: check() is False until the re-run
    ends, and wait() returns the new reply."""
    answers = iter(["A", "B"])

    class Answering(Base):
        def handle(self, task: jm.Task) -> None:
            self.reply(next(answers))

    tid = client.send("x")
    with Answering(dsn) as w:
        assert w.work_once()
    assert client.wait(tid, timeout=5) == "A"
    with jm.Admin(dsn) as admin:
        admin.retry(tid)
    assert not client.check(tid)
    with jm.Client(dsn) as other:
        assert not other.check(tid)
        with pytest.raises(jm.WaitTimeout):
            other.wait(tid, timeout=0.3)
    with serving(Answering(dsn)):
        assert client.wait(tid, timeout=10) == "B"
    assert client.check(tid)
    assert client.receive(tid) == "B"
    rows = conn.execute(
        "SELECT result FROM jobmachine.result WHERE task_id = %s ORDER BY result_id", (tid,)
    ).fetchall()
    assert [r[0] for r in rows] == ['"A"', '"B"']  # the old reply kept for the record
