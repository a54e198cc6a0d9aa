"""The fencing token (a task's ``attempts``) never goes back.

Each claim of a task gets the next attempt number, and only the attempt
that holds the task can store its outcome. Admin.retry gives the task a
fresh budget of attempts, and a worker hands back tasks it claimed ahead
and never started without counting them, but neither reuses a number: a
zombie attempt (one whose task was taken from it) can never answer for a
later one."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

import job_machine as jm
from tests.support.rows import result_rows, task_state
from tests.support.workers import Base, Holding, serving

QUEUE = "job.task"


class Answers(Holding):
    """Holds its task until released, then replies with its own name and
    the attempt it was given."""

    def __init__(self, name: str, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.name = name
        self.refused: list[str] = []

    def handle(self, task: jm.Task) -> None:
        self.started.set()
        self.release.wait(self.hold)
        try:
            self.reply({"by": self.name, "attempt": task.attempt})
        except jm.TaskNotHeld as ex:
            self.refused.append(str(ex))
            raise


def _in_thread(w: jm.Worker) -> threading.Thread:
    t = threading.Thread(target=w.work_once, daemon=True)
    t.start()
    return t


def test_after_a_retry_the_zombies_late_reply_is_refused_and_the_live_one_accepted(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send("work", attempts=1)
    zombie = Answers("zombie", dsn)
    zt = _in_thread(zombie)
    assert zombie.started.wait(10)
    # Its attempt outlives orphan_after: housekeeping takes the task from it,
    # and with no attempt left the task fails.
    conn.execute(
        "UPDATE jobmachine.task SET modified = now() - interval '1 hour' WHERE task_id = %s",
        (tid,),
    )
    with Base(dsn, orphan_after=60) as keeper:
        assert keeper.housekeeping().failed == 1
    assert task_state(conn, tid)[0] == jm.Status.FAILED
    # An operator sends it again; a live worker takes it.
    with jm.Admin(dsn) as admin:
        admin.retry(tid)
    live = Answers("live", dsn)
    lt = _in_thread(live)
    assert live.started.wait(10)
    assert client.task_info(tid).state == "running"

    zombie.release.set()  # the zombie wakes up and answers late: refused
    zt.join(10)
    assert not zt.is_alive()
    assert len(zombie.refused) == 1
    assert client.task_info(tid).state == "running"  # still the live attempt's

    live.release.set()
    lt.join(10)
    assert not lt.is_alive()
    assert live.refused == []
    assert client.receive(tid)["by"] == "live"
    replies = [body for body, kind in result_rows(conn, tid) if kind != "error"]
    assert len(replies) == 1
    zombie.close()
    live.close()


def test_a_retried_task_gets_a_fresh_budget_of_attempts(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    class Fails(Base):
        def handle(self, task: jm.Task) -> None:
            raise ValueError(f"attempt {task.attempt}")

    tid = client.send("x", attempts=2)
    with Fails(dsn, retry_backoff=0.001) as w:
        assert w.work_once()
        conn.execute("UPDATE jobmachine.task SET retry_at = NULL WHERE task_id = %s", (tid,))
        assert w.work_once()
    assert task_state(conn, tid) == (jm.Status.FAILED, 2)
    with jm.Admin(dsn) as admin:
        admin.retry(tid)
    # Two more attempts, numbered on from the earlier ones.
    with Fails(dsn, retry_backoff=0.001) as w:
        assert w.work_once()
        assert task_state(conn, tid) == (jm.Status.WAITING, 3)
        conn.execute("UPDATE jobmachine.task SET retry_at = NULL WHERE task_id = %s", (tid,))
        assert w.work_once()
    assert task_state(conn, tid) == (jm.Status.FAILED, 4)
    info = client.task_info(tid)
    assert [e["attempt"] for e in info.errors] == [1, 2, 3, 4]


def test_tasks_handed_back_unstarted_keep_their_attempt_numbers_but_not_the_budget(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    stopped = threading.Event()

    class StopsMidBatch(Base):
        def handle(self, task: jm.Task) -> None:
            if len(self.seen) == 15:  # well into a batch of ten
                self.stop()
                stopped.set()
            self.reply("ok")

    client.send_many(range(40), attempts=1)
    w = StopsMidBatch(dsn, prefetch=10)
    with serving(w):
        assert stopped.wait(10)
    handed_back = [
        tid
        for tid, status, attempts in conn.execute(
            "SELECT task_id, status, attempts FROM jobmachine.task ORDER BY task_id"
        )
        if status == jm.Status.WAITING and attempts == 1
    ]
    # The tasks claimed ahead went back unstarted: their claim is not taken
    # back (its number stays used), nor counted against attempts=1.
    assert handed_back
    with Base(dsn) as again:
        while again.work_once():
            pass
    assert {t.attempt for t in again.seen if t.id in handed_back} == {2}
    assert conn.execute("SELECT count(*) FROM jobmachine.task WHERE status <> 200").fetchone() == (
        0,
    )


def test_a_claim_lost_with_the_connection_uses_no_attempt(
    client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """A claim that committed while its answer was lost with the connection
    is handed back on reconnect (task_release_held) like a task claimed
    ahead and never started: its number stays used, its attempt is not
    counted. A task sent with attempts=2 whose first claim was lost so
    still has a retry after its first real run fails."""
    store = client._store
    tid = client.send("lost", queue=QUEUE, attempts=2)
    [lost] = store.task_claim([QUEUE], worker_id=4242)
    assert (lost.id, lost.attempt) == (tid, 1)
    assert store.task_release_held(4242) == 1  # on reconnect: held, unknown to the worker
    [run] = store.task_claim([QUEUE], worker_id=4242)
    assert run.attempt == 2  # the fencing token only grows
    status = store.task_fail_attempt(tid, run.attempt, '{"type": "ValueError"}', retries=0)
    assert status == jm.Status.WAITING, "the lost claim used up an attempt"
    [last] = store.task_claim([QUEUE], worker_id=4242)
    assert last.attempt == 3
    status = store.task_fail_attempt(tid, last.attempt, '{"type": "ValueError"}', retries=0)
    assert status == jm.Status.FAILED  # two runs: its budget
    assert task_state(conn, tid) == (jm.Status.FAILED, 3)
