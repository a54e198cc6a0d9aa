"""Housekeeping policy belongs to the task, not to whichever worker leads.

Two worker processes serve two queues with opposite settings: ``strict``
(max_runtime 1 s, no retries, finished tasks kept 2 s, orphans revived
after 1 s) and ``lenient`` (no max_runtime, 5 retries, 30 days, 30 min).
One of them is the fleet's housekeeper (it holds the housekeeper lock
first); each test runs in both orders, and each queue's tasks must be
judged by their own queue's settings whichever worker leads.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import job_machine as jm
from job_machine._queries import queries
from tests.integration.test_claim_plan import _explain, _nodes, _seq_scans_of_task
from tests.support.procs import (
    Child,
    expected_reply,
    kill_all,
    start_worker,
    started_count,
    wait_until,
)
from tests.support.rows import error_types, processed_by, task_state

#: The fleet's housekeeper lock (job_machine._async.store.CHORE_LOCK_KEY).
LEADER_KEY = 0x6A6D_686B

STRICT = "policy.strict"
LENIENT = "policy.lenient"

#: Each queue's worker settings (remove_after in days).
SETTINGS: dict[str, dict[str, Any]] = {
    STRICT: {"max_runtime": 1.0, "retries": 0, "remove_after": 2 / 86400, "orphan_after": 1.0},
    LENIENT: {"max_runtime": None, "retries": 5, "remove_after": 30.0, "orphan_after": 1800.0},
}
ORDERS = [
    pytest.param((STRICT, LENIENT), id="strict leads"),
    pytest.param((LENIENT, STRICT), id="lenient leads"),
]


def _leader(db: psycopg.Connection[Any]) -> list[str]:
    """application_name of the session that holds the housekeeper lock."""
    rows = db.execute(
        """SELECT a.application_name FROM pg_locks l
             JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
              AND l.classid = 0 AND l.objid = %s::oid""",
        (LEADER_KEY,),
    ).fetchall()
    return [str(name) for (name,) in rows]


def _app(queue: str) -> str:
    return "jm_" + queue.replace(".", "_")


def _start_fleet(
    dsn: str,
    db: psycopg.Connection[Any],
    tmp_path: Path,
    order: tuple[str, str],
    children: dict[str, Child],
    overrides: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Start the two workers into ``children``, the first of ``order`` the
    housekeeper: it holds the housekeeper lock before the other starts.
    ``overrides``: settings of a queue's worker instead of SETTINGS'."""
    for n, queue in enumerate(order, 1):
        children[queue] = start_worker(
            make_conninfo(dsn, application_name=_app(queue)),
            queue,
            tmp_path,
            queue,
            **{
                "dead_after": 1.0,
                "housekeeping_interval": 0.2,
                "timeout": 5,
                **SETTINGS[queue],
                **(overrides or {}).get(queue, {}),
            },
        )
        wait_until(
            lambda n=n: started_count(db) == n,  # type: ignore[misc]
            30,
            f"{queue} to start",
            [*children.values()],
        )
        if n == 1:
            wait_until(
                lambda: _leader(db) == [_app(queue)],
                30,
                f"{queue} to be the housekeeper",
                [*children.values()],
            )


@pytest.fixture
def fleet(
    request: pytest.FixtureRequest, dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> Iterator[dict[str, Child]]:
    """The two workers, the first of ``request.param`` the housekeeper."""
    children: dict[str, Child] = {}
    try:
        _start_fleet(dsn, db, tmp_path, request.param, children)
        yield children
    finally:
        kill_all(children.values())


def _status(db: psycopg.Connection[Any], tid: int) -> int | None:
    row = db.execute("SELECT status FROM jobmachine.task WHERE task_id = %s", (tid,)).fetchone()
    return None if row is None else int(row[0])


@pytest.mark.parametrize("fleet", ORDERS, indirect=True)
def test_each_queue_keeps_its_own_max_runtime_retries_and_retention(
    fleet: dict[str, Child], db: psycopg.Connection[Any], client: jm.Client
) -> None:
    children = list(fleet.values())
    # Retention: one finished task of each queue, the lenient one first.
    kept = client.send({"seq": 1}, queue=LENIENT)
    assert client.wait(kept, timeout=10) == expected_reply(1)
    brief = client.send({"seq": 2}, queue=STRICT)
    assert client.wait(brief, timeout=10) == expected_reply(2)

    # Long tasks of both queues, 3 s: longer than the strict max_runtime.
    strict_long = client.send({"seq": 3, "sleep": 3}, queue=STRICT)
    lenient_long = client.send({"seq": 4, "sleep": 3}, queue=LENIENT)
    # The strict queue's own task is given up on after its 1 s, and fails
    # at once: its own budget is one attempt, whoever leads.
    wait_until(
        lambda: _status(db, strict_long) == jm.Status.FAILED,
        15,
        "the strict queue's long task to be given up and failed",
        children,
    )
    assert error_types(db, strict_long) == ["MaxRuntimeExceeded"]
    assert task_state(db, strict_long) == (jm.Status.FAILED, 1)
    # The lenient queue's long task runs to its end, once, untouched.
    assert client.wait(lenient_long, timeout=15) == expected_reply(4)
    assert processed_by(db, lenient_long) == [fleet[LENIENT].pid]
    assert error_types(db, lenient_long) == []
    assert client.task_info(lenient_long).max_attempts == 6

    # The strict queue's finished task goes after its 2 s; the lenient
    # one, finished before it, stays (30 days).
    wait_until(
        lambda: _status(db, brief) is None,
        15,
        "the strict queue's finished task to be removed",
        children,
    )
    assert _status(db, kept) == jm.Status.FINISHED


@pytest.mark.parametrize("fleet", ORDERS, indirect=True)
def test_a_dead_workers_task_is_judged_by_its_own_queues_attempts(
    fleet: dict[str, Child], db: psycopg.Connection[Any], client: jm.Client
) -> None:
    """The worker that is not the housekeeper dies (SIGKILL) in a task; the
    housekeeper rescues the task within its budget of attempts, the one its
    own worker stamped on it: the strict task fails (one attempt), the
    lenient one waits again (six)."""
    leader, victim = fleet
    tid = client.send({"seq": 5, "sleep": 60}, queue=victim)
    wait_until(lambda: processed_by(db, tid), 10, "the task to start", [*fleet.values()])
    fleet[victim].signal(signal.SIGKILL)
    assert fleet[victim].wait_exit(5) == -signal.SIGKILL
    wait_until(
        lambda: error_types(db, tid) == ["WorkerDied"],
        15,
        "the dead worker's task to be rescued",
        [fleet[leader]],
    )
    expected = jm.Status.FAILED if victim == STRICT else jm.Status.WAITING
    assert task_state(db, tid) == (expected, 1)


class _Blocking(jm.Worker):
    """Holds the task it claims until ``release`` is set."""

    handle_signals = False

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.started = threading.Event()
        self.release = threading.Event()

    def process(self, task: jm.Task) -> None:
        self.started.set()
        self.release.wait(30)
        self.reply("late")


@pytest.mark.parametrize("fleet", ORDERS, indirect=True)
def test_a_task_claimed_outside_receive_is_revived_after_its_own_orphan_after(
    fleet: dict[str, Child], db: psycopg.Connection[Any], dsn: str, client: jm.Client
) -> None:
    """work_once() registers no worker: its task is revived once untouched
    for the orphan_after of the worker that claimed it (1 s, or 30 min),
    not for the housekeeper's."""
    runs: list[tuple[_Blocking, threading.Thread, int]] = []
    try:
        for queue in (f"{LENIENT}.once", f"{STRICT}.once"):
            tid = client.send("hold", queue=queue)
            w = _Blocking(dsn, queue=queue, orphan_after=SETTINGS[queue[:-5]]["orphan_after"])
            t = threading.Thread(target=w.work_once, daemon=True)
            t.start()
            runs.append((w, t, tid))
            assert w.started.wait(10), f"{queue}: work_once() claimed nothing"
        (_, _, lenient_tid), (_, _, strict_tid) = runs
        wait_until(
            lambda: _status(db, strict_tid) != jm.Status.STARTED,
            15,
            "the strict worker's orphan to be revived",
            [*fleet.values()],
        )
        # Back to waiting: within the budget of its own worker (4 attempts),
        # not the strict housekeeper's (1).
        assert task_state(db, strict_tid) == (jm.Status.WAITING, 1)
        # Claimed before it, and still held.
        assert task_state(db, lenient_tid) == (jm.Status.STARTED, 1)
    finally:
        for w, t, _ in runs:
            w.release.set()
            t.join(10)
            w.close()


def _db_now(db: psycopg.Connection[Any]) -> Any:
    return db.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]


def _seen(db: psycopg.Connection[Any], pid: int) -> Any:
    """The heartbeat of the worker process ``pid``; None once it is reaped."""
    row = db.execute("SELECT seen FROM jobmachine.worker WHERE pid = %s", (pid,)).fetchone()
    return None if row is None else row[0]


@pytest.mark.parametrize(
    "order", [p.values[0] for p in ORDERS], ids=["strict leads", "lenient leads"]
)
def test_each_worker_gets_its_own_reconnect_grace(
    dsn: str, db: psycopg.Connection[Any], client: jm.Client, tmp_path: Path, order: tuple[str, str]
) -> None:
    """A worker that loses its registry session is judged dead after its own
    grace (dead_after / 2), not the housekeeper's: the strict worker's
    (dead_after 1 s) after half a second, the lenient one's (dead_after
    20 s) not in the seconds a housekeeper with a short grace takes. The
    worker that is not the housekeeper is frozen (SIGSTOP) and its sessions
    terminated, so its liveness lock is free and its heartbeat stops."""
    dead_after = {STRICT: 1.0, LENIENT: 20.0}
    leader, victim = order
    children: dict[str, Child] = {}
    try:
        # No max_runtime: the task is to outlive the freeze.
        overrides = {q: {"dead_after": dead_after[q], "max_runtime": None} for q in dead_after}
        _start_fleet(dsn, db, tmp_path, order, children, overrides)
        leader_pid, victim_pid = children[leader].pid, children[victim].pid
        # The housekeeper judges nobody until it has been connected for its
        # own grace (docs/liveness.md, outages). The task is sent after
        # that, so that it still runs when its worker is frozen: sent
        # before, an 8 s task ended first whenever the housekeeper took its
        # lock at once (10.5 s for the lenient one).
        wait_until(
            lambda: (
                db.execute(
                    "SELECT started < clock_timestamp() - make_interval(secs => %s)"
                    " FROM jobmachine.worker WHERE pid = %s",
                    (dead_after[leader] / 2 + 0.5, leader_pid),
                ).fetchone()
                == (True,)
            ),
            30,
            "the housekeeper to judge",
            [*children.values()],
        )
        tid = client.send({"seq": 6, "sleep": 8}, queue=victim)
        wait_until(lambda: processed_by(db, tid), 10, "the task to start", [*children.values()])
        children[victim].signal(signal.SIGSTOP)
        last_seen = _seen(db, victim_pid)
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (_app(victim),),
        )
        frozen_at = _db_now(db)
        if victim == LENIENT:
            # Two heartbeats of the strict housekeeper after the lenient
            # worker was unseen for well over the housekeeper's grace (0.5 s):
            # rounds that would have reaped it by the housekeeper's grace.
            wait_until(
                lambda: (_seen(db, leader_pid) - frozen_at).total_seconds() > 3,
                15,
                "the housekeeper to run rounds",
                [children[leader]],
            )
            assert _seen(db, victim_pid) == last_seen, "the frozen worker was reaped"
            assert task_state(db, tid) == (jm.Status.STARTED, 1)
            children[victim].signal(signal.SIGCONT)
            assert client.wait(tid, timeout=20) == expected_reply(6)
            assert processed_by(db, tid) == [victim_pid]
            assert error_types(db, tid) == []
        else:
            # Reaped by its own grace (0.5 s), within one round of the
            # lenient housekeeper (every 5 s), not after the housekeeper's
            # grace (10 s).
            seen = last_seen
            while (now_seen := _seen(db, victim_pid)) is not None:
                seen = now_seen
                assert (_db_now(db) - seen).total_seconds() < 20, describe(children)
            reaped_after = (_db_now(db) - seen).total_seconds()
            assert reaped_after < 8, reaped_after
            try:
                wait_until(lambda: error_types(db, tid) == ["WorkerDied"], 5, "the rescue", [])
            except AssertionError as ex:
                raise AssertionError(
                    f"{ex}: task {tid} is {task_state(db, tid)} with errors "
                    f"{error_types(db, tid)}, its worker reaped {reaped_after:.1f} s after "
                    f"it was last seen\n{describe(children)}"
                ) from None
            assert task_state(db, tid) == (jm.Status.FAILED, 1)  # one attempt, its own
    finally:
        for child in children.values():
            if child.alive():
                child.signal(signal.SIGCONT)
        kill_all(children.values())


def describe(children: dict[str, Child]) -> str:
    return "\n".join(child.describe() for child in children.values())


def test_retention_by_each_tasks_own_keep_reads_only_the_tasks_due(
    conn: psycopg.Connection[Any],
) -> None:
    """Every claimed task now has a keep_for (its worker's remove_after):
    retention reads an index range per distinct keep_for, the tasks due and
    no more, never the history. 20,000 finished tasks of two queues,
    finished over the last 20 days, one kept 30 days: when the other is kept
    25 days, none is due and the round reads next to nothing; when it is
    kept 1 day, the round reads about the batch it deletes."""
    conn.execute("INSERT INTO jobmachine.class (name) VALUES ('keep.month'), ('keep.day')")
    conn.execute(
        "INSERT INTO jobmachine.task (class_id, parameters, status, attempts, modified, keep_for)"
        " SELECT c.class_id, '1', 200, 1, now() - (g / 20000.0) * interval '20 days',"
        "        CASE c.name WHEN 'keep.month' THEN interval '30 days' ELSE interval '1 day' END"
        "   FROM generate_series(1, 20000) g"
        "   JOIN jobmachine.class c ON c.name = CASE WHEN g % 2 = 0 THEN 'keep.month'"
        "                                            ELSE 'keep.day' END"
    )
    conn.execute("VACUUM ANALYZE jobmachine.task")
    query = queries()["task_remove_old"]

    def rows_read(plan: dict[str, Any]) -> int:
        return sum(
            int(n.get("Actual Rows", 0)) * int(n.get("Actual Loops", 1))
            + int(n.get("Rows Removed by Filter", 0)) * int(n.get("Actual Loops", 1))
            for n in _nodes(plan)
            if n.get("Relation Name") == "task" or "Index Name" in n
        )

    params = {"remove_after_days": 30, "limit": 100, "now": None}
    conn.execute(
        "UPDATE jobmachine.task SET keep_for = interval '25 days' WHERE keep_for = interval '1 day'"
    )
    conn.execute("VACUUM ANALYZE jobmachine.task")
    plan = _explain(conn, query, params)
    assert _seq_scans_of_task(plan) == [], plan
    assert plan["Actual Rows"] == 0
    assert rows_read(plan) <= 10, plan
    # Kept a day: 9,500 are due; a batch of 100 reads about 100.
    conn.execute(
        "UPDATE jobmachine.task SET keep_for = interval '1 day' WHERE keep_for = interval '25 days'"
    )
    conn.execute("VACUUM ANALYZE jobmachine.task")
    plan = _explain(conn, query, params)
    assert _seq_scans_of_task(plan) == [], plan
    assert plan["Actual Rows"] == 100
    assert rows_read(plan) <= 120, plan
