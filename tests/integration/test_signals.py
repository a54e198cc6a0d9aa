"""Stopping a worker process with signals, and its startup hook.

Every worker here is a real child process (``python -m tests.support.procs worker``),
sync or asyncio, signalled with os.kill from the test.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

import job_machine as jm
from tests.support.procs import (
    Child,
    expected_reply,
    start_worker,
    started_count,
    wait_until,
)
from tests.support.rows import processed, result_rows, task_state

QUEUE = "sig.test"
KINDS = ["sync", "async"]


def _start_ready_worker(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path, kind: str, **options: Any
) -> Child:
    """Start a worker process and return once its startup() ran (it is listening)."""
    child = start_worker(dsn, QUEUE, tmp_path, f"worker-{kind}", kind=kind, **options)
    try:
        wait_until(lambda: started_count(db) >= 1, 30, "the worker's startup()", [child])
    except BaseException:
        child.kill()
        raise
    return child


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_idle_worker_exits_0_on_signal(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path, kind: str, sig: signal.Signals
) -> None:
    child = _start_ready_worker(dsn, db, tmp_path, kind, timeout=60)
    try:
        child.wait_idle()  # in its wait for notifications
        assert child.alive(), child.describe()
        t0 = time.monotonic()
        child.signal(sig)
        code = child.wait_exit(2.0)
        elapsed = time.monotonic() - t0
        assert code == 0, (
            f"exit code {code} ({elapsed:.2f} s after {sig.name}, None = still running)\n"
            + child.describe()
        )
        assert "receive() returned" in child.log(), child.describe()
    finally:
        child.kill()


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_during_task_finishes_it_then_exits_without_taking_the_next(
    dsn: str, db: psycopg.Connection[Any], client: jm.Client, tmp_path: Path, kind: str
) -> None:
    child = _start_ready_worker(dsn, db, tmp_path, kind, timeout=60, sleep=1.5)
    try:
        first = client.send({"seq": 1}, queue=QUEUE)
        second = client.send({"seq": 2}, queue=QUEUE)
        wait_until(lambda: processed(db), 10, "the slow task's 'started' marker", [child])
        assert [tid for tid, _ in processed(db)] == [first]
        assert task_state(db, first) == (jm.Status.STARTED, 1)

        t0 = time.monotonic()
        child.signal(signal.SIGTERM)
        code = child.wait_exit(1.5 + 3.0)
        elapsed = time.monotonic() - t0
        assert code == 0, (
            f"exit code {code} after {elapsed:.2f} s (None = still running)\n{child.describe()}"
        )

        # The task in hand was finished and answered ...
        assert task_state(db, first) == (jm.Status.FINISHED, 1), child.describe()
        results = result_rows(db, first)
        assert len(results) == 1, results
        assert client.receive(first) == expected_reply(1)
        # ... and the next one was left alone.
        assert task_state(db, second) == (jm.Status.WAITING, 0), child.describe()
        assert result_rows(db, second) == []
        assert [tid for tid, _ in processed(db)] == [first]
    finally:
        child.kill()


@pytest.mark.parametrize("kind", KINDS)
def test_second_sigterm_during_task_exits_promptly_and_leaves_it_started(
    dsn: str, db: psycopg.Connection[Any], client: jm.Client, tmp_path: Path, kind: str
) -> None:
    # A task far longer than the time allowed to exit, so finishing it first
    # cannot pass for a prompt exit.
    slow = 15.0
    child = _start_ready_worker(dsn, db, tmp_path, kind, timeout=60, sleep=slow)
    try:
        tid = client.send({"seq": 7}, queue=QUEUE)
        wait_until(lambda: processed(db), 10, "the slow task's 'started' marker", [child])
        t0 = time.monotonic()
        child.signal(signal.SIGTERM)
        # Its handler ran (a worker that stopped on it anyway would not exit
        # 128 + SIGTERM on the second one, below).
        wait_until(
            lambda: "SIGTERM: finishing the task in hand" in child.log(),
            5,
            "the first SIGTERM's handler",
            [child],
        )
        assert child.alive(), (
            f"the first SIGTERM alone stopped the worker mid-task\n{child.describe()}"
        )
        child.signal(signal.SIGTERM)
        code = child.wait_exit(3.0)
        elapsed = time.monotonic() - t0
        assert code is not None, (
            f"still running {elapsed:.2f} s after the second SIGTERM\n{child.describe()}"
        )
        assert elapsed < slow - 5, elapsed
        # Exits as a shell reports death by SIGTERM: 128 + 15.
        assert code == 128 + signal.SIGTERM, child.describe()

        # Never marked done: on its way out the worker handed the task back
        # (waiting again, the attempt counted, an error saying why).
        assert task_state(db, tid) == (jm.Status.WAITING, 1), child.describe()
        assert [(rtype, json.loads(body)["type"]) for body, rtype in result_rows(db, tid)] == [
            ("error", "WorkerStopped")
        ], child.describe()
        assert not client.check(tid)
        assert client.receive(tid) is None
    finally:
        child.kill()


@pytest.mark.parametrize("kind", KINDS)
def test_startup_runs_once_in_the_child_before_the_first_task(
    dsn: str, db: psycopg.Connection[Any], client: jm.Client, tmp_path: Path, kind: str
) -> None:
    child = _start_ready_worker(dsn, db, tmp_path, kind, timeout=60)
    try:
        tids = [client.send({"seq": n}, queue=QUEUE) for n in range(5)]
        for n, tid in enumerate(tids):
            assert client.wait(tid, timeout=10) == expected_reply(n), child.describe()
        startups = db.execute("SELECT pid, at FROM worker_started").fetchall()
        assert [pid for pid, _ in startups] == [child.pid], startups
        first_task_at = db.execute("SELECT min(started_at) FROM processed").fetchone()
        assert first_task_at is not None
        assert startups[0][1] < first_task_at[0]
        pids = {pid for _, pid in processed(db)}
        assert pids == {child.pid}
        assert child.log().count("startup done") == 1, child.describe()

        child.signal(signal.SIGTERM)
        assert child.wait_exit(2.0) == 0, child.describe()
        assert db.execute("SELECT count(*) FROM worker_started").fetchone() == (1,)
    finally:
        child.kill()


@pytest.mark.parametrize("kind", KINDS)
def test_task_of_a_killed_worker_is_revived_and_done_by_another_worker(
    dsn: str, db: psycopg.Connection[Any], client: jm.Client, tmp_path: Path, kind: str
) -> None:
    # A worker dies (SIGKILL) in the middle of a slow task: the task stays started.
    dying = start_worker(dsn, QUEUE, tmp_path, "dying", kind=kind, timeout=60, sleep=30)
    rescuer: Child | None = None
    try:
        wait_until(lambda: started_count(db) >= 1, 30, "the first worker's startup()", [dying])
        tid = client.send({"seq": 9}, queue=QUEUE)
        wait_until(lambda: processed(db), 10, "the slow task's 'started' marker", [dying])
        dying.signal(signal.SIGKILL)
        assert dying.wait_exit(5) == -signal.SIGKILL
        assert task_state(db, tid) == (jm.Status.STARTED, 1)

        # Another worker process, with the default dead_after (15 s): its
        # liveness thread sees the dead worker's lock gone and puts the task
        # back, and the worker does it, within the bound.
        rescuer = start_worker(dsn, QUEUE, tmp_path, "rescuer", kind=kind, timeout=60)
        wait_until(
            lambda: task_state(db, tid)[0] == jm.Status.FINISHED,
            15 + 3,
            "the task to be revived and done within dead_after",
            [rescuer],
        )
        assert client.wait(tid, timeout=1) == expected_reply(9), rescuer.describe()
        assert task_state(db, tid) == (jm.Status.FINISHED, 2), rescuer.describe()
        assert [pid for _, pid in processed(db)] == [dying.pid, rescuer.pid]
        # The rescue left an error saying why attempt 1 ended, then the reply.
        (died, _), (_, reply_type) = result_rows(db, tid)
        assert json.loads(died)["type"] == "WorkerDied"
        assert reply_type == "json"
        rescuer.signal(signal.SIGTERM)
        assert rescuer.wait_exit(2.0) == 0, rescuer.describe()
    finally:
        dying.kill()
        if rescuer is not None:
            rescuer.kill()
