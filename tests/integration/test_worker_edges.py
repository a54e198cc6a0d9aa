"""The worker's smaller edges (issue 14, item 9): what reply() reports after
a lost connection, max_runtime counted from process(), a task given up
while it waited in the prefetch buffer, and the listening connection read
while a long task runs."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

import job_machine as jm
from tests.procs import wait_until
from tests.workers import Base, serving


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
    w = GivenUpWhileReplying(dsn, reconnect_backoff=0.01, reconnect_backoff_cap=0.05)
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


_ = threading  # used by later tests
