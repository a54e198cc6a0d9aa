"""Dead and live workers: the registry, rescue of a dead worker's tasks, no
rescue of a live worker's, max_runtime as an explicit limit, the shutdown
grace period, and reconnecting after the database cut a connection.

Crash tests use real worker processes (tests/support/procs.py); the rest run the
worker in a thread of the test process.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

import job_machine as jm
from job_machine._lock_keys import WORKER_KEY
from tests.support.appconns import count, terminate
from tests.support.procs import (
    Child,
    expected_reply,
    start_worker,
    started_count,
    wait_until,
)
from tests.support.rows import error_types, processed_by, task_state
from tests.support.workers import Base, serving

QUEUE = "live.test"
KINDS = ["sync", "async"]


def _ready(db: psycopg.Connection[Any], n: int, children: list[Child]) -> None:
    wait_until(lambda: started_count(db) >= n, 30, f"{n} worker(s) to start", children)


# -- the registry -----------------------------------------------------------


def test_a_serving_worker_is_registered_and_holds_its_liveness_lock(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    w = Base(dsn, queue=["reg.a", "reg.b"])
    with serving(w):
        assert w.worker_id is not None
        row = conn.execute(
            "SELECT host, pid, queues, started <= seen FROM jobmachine.worker WHERE worker_id = %s",
            (w.worker_id,),
        ).fetchone()
        assert row == (socket.gethostname(), os.getpid(), ["reg.a", "reg.b"], True)
        # The lock PostgreSQL will release when the worker's session ends.
        held = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = %s::oid AND objid = %s AND objsubid = 2"
            # pg_locks is the cluster's: other tests' databases have a worker 1 too.
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (WORKER_KEY, w.worker_id),
        ).fetchone()
        assert held == (1,)
        worker_id = w.worker_id
    # A clean stop removes the registration.
    assert conn.execute(
        "SELECT count(*) FROM jobmachine.worker WHERE worker_id = %s", (worker_id,)
    ).fetchone() == (0,)
    assert w.worker_id is None


def test_the_registry_heartbeat_moves_seen_forward(dsn: str, conn: psycopg.Connection[Any]) -> None:
    w = Base(dsn, dead_after=0.4)  # a heartbeat every 0.1 s
    with serving(w):

        def seen() -> Any:
            row = conn.execute(
                "SELECT seen FROM jobmachine.worker WHERE worker_id = %s", (w.worker_id,)
            ).fetchone()
            assert row is not None
            return row[0]

        first = seen()
        assert wait_until(lambda: seen() > first, 5, "a heartbeat")


def test_task_info_names_the_worker_that_holds_a_running_task(dsn: str, client: jm.Client) -> None:
    started, release = threading.Event(), threading.Event()

    class Slow(Base):
        def handle(self, task: jm.Task) -> None:
            started.set()
            release.wait(10)
            self.reply("ok")

    w = Slow(dsn)
    with serving(w):
        tid = client.send("hold me")
        assert started.wait(5)
        info = client.task_info(tid)
        assert (info.state, info.attempts, info.errors) == ("running", 1, [])
        assert info.worker == (w.worker_id, socket.gethostname(), os.getpid())
        assert info.started is not None
        release.set()
        assert client.wait(tid, timeout=5) == "ok"
    info = client.task_info(tid)
    assert (info.state, info.reply, info.worker) == ("done", "ok", None)


# -- dead workers and live ones -----------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_live_workers_long_task_is_never_taken_from_it(
    dsn: str, db: psycopg.Connection[Any], client: jm.Client, tmp_path: Path, kind: str
) -> None:
    """A task that runs eight times dead_after (and longer than any timeout)
    while its worker lives is processed once, by that worker, even with an
    idle second worker (the fleet's housekeeper, perhaps) watching."""
    busy = start_worker(dsn, QUEUE, tmp_path, "busy", kind=kind, dead_after=0.5, sleep=4)
    children = [busy]
    try:
        _ready(db, 1, children)
        tid = client.send({"seq": 1}, queue=QUEUE)
        wait_until(lambda: processed_by(db, tid), 10, "the task to start", children)
        idle = start_worker(dsn, QUEUE, tmp_path, "idle", kind=kind, dead_after=0.5, timeout=0.2)
        children.append(idle)
        assert client.wait(tid, timeout=15) == expected_reply(1), busy.describe()
        assert processed_by(db, tid) == [busy.pid], idle.describe()
        assert task_state(db, tid) == (jm.Status.FINISHED, 1)
        assert error_types(db, tid) == []
    finally:
        for child in children:
            child.kill()


@pytest.mark.parametrize("kind", KINDS)
def test_the_task_of_a_sigkilled_worker_is_done_by_another_within_dead_after(
    dsn: str, db: psycopg.Connection[Any], client: jm.Client, tmp_path: Path, kind: str
) -> None:
    dead_after = 3.0
    dying = start_worker(dsn, QUEUE, tmp_path, "dying", kind=kind, dead_after=dead_after, sleep=60)
    children = [dying]
    try:
        _ready(db, 1, children)
        tid = client.send({"seq": 5}, queue=QUEUE)
        wait_until(lambda: processed_by(db, tid), 10, "the task to start", children)
        rescuer = start_worker(dsn, QUEUE, tmp_path, "rescuer", kind=kind, dead_after=dead_after)
        children.append(rescuer)
        _ready(db, 2, children)
        dying.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        assert dying.wait_exit(5) == -signal.SIGKILL
        wait_until(
            lambda: task_state(db, tid)[0] == jm.Status.FINISHED,
            dead_after + 5,
            "the dead worker's task to be done by the other",
            [rescuer],
        )
        elapsed = time.monotonic() - killed_at
        assert elapsed < dead_after + 2, elapsed
        assert processed_by(db, tid) == [dying.pid, rescuer.pid]
        assert task_state(db, tid) == (jm.Status.FINISHED, 2)
        assert error_types(db, tid) == ["WorkerDied"]
        assert client.wait(tid, timeout=1) == expected_reply(5)
        # The dead worker's registration is gone; the live one's stays.
        rows = db.execute("SELECT pid FROM jobmachine.worker").fetchall()
        assert rows == [(rescuer.pid,)]
    finally:
        for child in children:
            child.kill()


def test_max_runtime_gives_up_on_a_live_workers_task(
    dsn: str, db: psycopg.Connection[Any], client: jm.Client, tmp_path: Path
) -> None:
    """With max_runtime set, a task still running after it is given up on: an
    error says why, another worker does it, and the slow worker's late reply
    is refused (TaskNotHeld), so the task has exactly one reply."""
    slow = start_worker(dsn, QUEUE, tmp_path, "slow", dead_after=1, max_runtime=1, sleep=4)
    children = [slow]
    try:
        _ready(db, 1, children)
        tid = client.send({"seq": 3}, queue=QUEUE)
        wait_until(lambda: processed_by(db, tid), 10, "the task to start", children)
        fast = start_worker(dsn, QUEUE, tmp_path, "fast", dead_after=1, max_runtime=1)
        children.append(fast)
        assert client.wait(tid, timeout=10) == expected_reply(3), slow.describe()
        assert processed_by(db, tid) == [slow.pid, fast.pid]
        assert error_types(db, tid) == ["MaxRuntimeExceeded"]
        wait_until(
            lambda: "no longer held" in slow.log(), 10, "the slow worker's refused reply", children
        )
        replies = db.execute(
            "SELECT count(*) FROM jobmachine.result WHERE task_id = %s AND resulttype = 'json'",
            (tid,),
        ).fetchone()
        assert replies == (1,)
    finally:
        for child in children:
            child.kill()


# -- shutdown -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_lets_the_task_in_hand_finish_within_the_grace_period(
    dsn: str, db: psycopg.Connection[Any], client: jm.Client, tmp_path: Path, kind: str
) -> None:
    child = start_worker(dsn, QUEUE, tmp_path, "w", kind=kind, sleep=1.5, shutdown_grace=10)
    try:
        _ready(db, 1, [child])
        tid = client.send({"seq": 2}, queue=QUEUE)
        later = client.send({"seq": 3}, queue=QUEUE)
        wait_until(lambda: processed_by(db, tid), 10, "the task to start", [child])
        child.signal(signal.SIGTERM)
        assert child.wait_exit(10) == 0, child.describe()
        assert task_state(db, tid) == (jm.Status.FINISHED, 1)
        # It stopped claiming: the next task is still waiting, untouched.
        assert task_state(db, later) == (jm.Status.WAITING, 0)
    finally:
        child.kill()


@pytest.mark.parametrize("kind", KINDS)
def test_the_end_of_the_grace_period_hands_the_task_back(
    dsn: str, db: psycopg.Connection[Any], client: jm.Client, tmp_path: Path, kind: str
) -> None:
    child = start_worker(dsn, QUEUE, tmp_path, "w", kind=kind, sleep=60, shutdown_grace=1)
    try:
        _ready(db, 1, [child])
        tid = client.send({"seq": 4}, queue=QUEUE)
        wait_until(lambda: processed_by(db, tid), 10, "the task to start", [child])
        t0 = time.monotonic()
        child.signal(signal.SIGTERM)
        code = child.wait_exit(10)
        elapsed = time.monotonic() - t0
        assert code == 128 + signal.SIGTERM, child.describe()
        assert 0.9 < elapsed < 5, elapsed
        assert "grace period is over" in child.log(), child.describe()
        # Never marked done: back to waiting at once, with an error saying why.
        assert task_state(db, tid) == (jm.Status.WAITING, 1)
        assert error_types(db, tid) == ["WorkerStopped"]
        assert db.execute("SELECT count(*) FROM jobmachine.worker").fetchone() == (0,)
    finally:
        child.kill()


# -- database faults ------------------------------------------------------------


def _terminate_backends_of(conn: psycopg.Connection[Any], pid: int) -> int:
    """pg_terminate_backend on every session of this test's database opened by
    the client process ``pid`` (in-process workers: the test's own pid)."""
    return terminate(conn, f"jm-victim-{pid}")


def test_an_idle_worker_whose_connections_are_killed_reconnects_and_drains(
    dsn: str, conn: psycopg.Connection[Any], client: jm.Client
) -> None:
    victim = psycopg.conninfo.make_conninfo(dsn, application_name=f"jm-victim-{os.getpid()}")
    w = Base(victim, dead_after=1, reconnect_backoff=0.05, reconnect_backoff_cap=0.5)
    with serving(w) as t:
        assert client.wait(client.send("before"), timeout=5) == {"echo": "before"}
        assert _terminate_backends_of(conn, os.getpid()) >= 2  # listening + registry
        # Sent while the worker is cut off: its notification may be lost, so
        # only the drain after the reconnect can find it.
        tid = client.send("while away")
        assert client.wait(tid, timeout=10) == {"echo": "while away"}
        assert t.is_alive()
        assert client.wait(client.send("after"), timeout=5) == {"echo": "after"}
    assert [task.attempt for task in w.seen] == [1, 1, 1]


def test_a_reply_survives_the_connection_dying_inside_process(
    dsn: str, conn: psycopg.Connection[Any], client: jm.Client
) -> None:
    """The worker's connection dies while process() runs: reply() reconnects
    and stores the answer (the task stays held meanwhile), so the work is
    neither lost nor done twice."""
    victim_app = f"jm-victim-{os.getpid()}"
    victim = psycopg.conninfo.make_conninfo(dsn, application_name=victim_app)

    class CutOff(Base):
        def handle(self, task: jm.Task) -> None:
            assert _terminate_backends_of(conn, os.getpid()) >= 2  # work + registry
            wait_until(lambda: count(conn, victim_app) == 0, 5, "the sessions to end")
            self.reply({"survived": task.data})

    w = CutOff(victim, dead_after=1, reconnect_backoff=0.05, reconnect_backoff_cap=0.5)
    with serving(w):
        tid = client.send("cut")
        assert client.wait(tid, timeout=10) == {"survived": "cut"}
    assert [task.attempt for task in w.seen] == [1]
    assert task_state(conn, tid) == (jm.Status.FINISHED, 1)


def test_a_task_whose_notification_was_lost_is_found_within_the_timeout(
    dsn: str, conn: psycopg.Connection[Any], client: jm.Client
) -> None:
    w = Base(dsn, timeout=0.5)
    with serving(w):
        w.wait_idle(after=0)
        # A task inserted with no pg_notify at all, as if the notification were lost.
        row = conn.execute(
            "INSERT INTO jobmachine.task (class_id, parameters, status)"
            " SELECT class_id, '\"quiet\"', 0 FROM jobmachine.class WHERE name = 'job.task'"
            " RETURNING task_id"
        ).fetchone()
        if row is None:  # the queue's class row does not exist yet
            client.wait(client.send("make the class"), timeout=5)
            row = conn.execute(
                "INSERT INTO jobmachine.task (class_id, parameters, status)"
                " SELECT class_id, '\"quiet\"', 0 FROM jobmachine.class WHERE name = 'job.task'"
                " RETURNING task_id"
            ).fetchone()
        assert row is not None
        t0 = time.monotonic()
        assert client.wait(row[0], timeout=5) == {"echo": "quiet"}
        assert time.monotonic() - t0 < 0.5 + 0.5


def test_a_client_whose_connection_died_raises_connection_lost_then_works_again(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    victim_app = f"jm-victim-{os.getpid()}"
    victim = psycopg.conninfo.make_conninfo(dsn, application_name=victim_app)
    with jm.Client(victim, queue="job.task") as c:
        tid = c.send("one")
        assert _terminate_backends_of(conn, os.getpid()) == 1
        wait_until(lambda: count(conn, victim_app) == 0, 5, "the session to end")
        with pytest.raises(jm.ConnectionLost, match="connection to PostgreSQL was lost"):
            c.check(tid)
        assert c.check(tid) is False  # reconnected by itself
        assert c.send("two") > tid


def test_a_running_tasks_modified_time_is_kept_fresh_for_perl_workers(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """A Perl worker revives started tasks untouched for its max_runtime; the
    registry heartbeat keeps a live job_machine task's modified time fresh,
    so that never happens to it."""
    started, release = threading.Event(), threading.Event()

    class Slow(Base):
        def handle(self, task: jm.Task) -> None:
            started.set()
            release.wait(10)
            self.reply("ok")

    w = Slow(dsn, dead_after=0.4)
    with serving(w):
        tid = client.send("long")
        assert started.wait(5)
        conn.execute(
            "UPDATE jobmachine.task SET modified = now() - interval '1 hour' WHERE task_id = %s",
            (tid,),
        )

        def fresh() -> bool:
            row = conn.execute(
                "SELECT modified > now() - interval '1 minute' FROM jobmachine.task"
                " WHERE task_id = %s",
                (tid,),
            ).fetchone()
            return bool(row and row[0])

        assert wait_until(fresh, 5, "the heartbeat to touch the running task")
        # What Perl's revive statement would do now takes nothing.
        revived = conn.execute(
            "UPDATE jobmachine.task SET status = 0 WHERE status = 100"
            " AND modified < now() - interval '1800 seconds' RETURNING task_id"
        ).fetchall()
        assert revived == []
        release.set()
        assert client.wait(tid, timeout=5) == "ok"
