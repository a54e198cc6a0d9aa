"""Perl Job::Machine 0.19 workers on the same database as job_machine's,
driven by Perl's own statements (as tests/integration/test_perl_compat.py):

- every transition back to waiting clears ``worker_id`` and ``started``, so
  a task a Perl worker runs names no job_machine worker, whose rescue or
  hand-back would take it from under the Perl worker;
- a Perl claim counts as an attempt (the fencing token grows), so a
  job_machine zombie cannot answer for a Perl worker's attempt;
- job_machine's retry backoff stays out of ``run_after``, which Perl 0.19's
  claim misreads (it takes a task of *any* queue whose ``run_after`` is in
  the future, and never one whose ``run_after`` has passed).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest

import job_machine as jm
from job_machine._codec import encode
from job_machine._sync.connection import Connector
from job_machine._sync.housekeeper import Housekeeper
from job_machine._sync.store import Store
from tests.integration.test_perl_compat import Perl
from tests.support.rows import error_types, task_state
from tests.support.workers import Base, Holding, serving

QUEUE = "py.reports"
PERL_QUEUE = "perl.mail"

# Job::Machine::DB->revive_tasks (its default max_runtime, 1800 s), as Perl runs it.
PERL_FIND_STALE = (
    'SELECT task_id FROM "jobmachine".task WHERE status=$1'
    " AND modified < now() - INTERVAL '1800 seconds'"
)
PERL_REVIVE = 'UPDATE "jobmachine".task SET status=0 WHERE task_id IN ({ids})'


def perl_revive(perl: Perl) -> list[int]:
    """Perl's housekeeping: started tasks untouched for 1800 s wait again."""
    ids = [int(r["task_id"]) for r in perl._run(PERL_FIND_STALE, 100)]
    if ids:
        perl.conn.execute(PERL_REVIVE.format(ids=",".join(map(str, ids))))
    return ids


@pytest.fixture
def store(dsn: str) -> Iterator[Store]:
    connector = Connector(dsn=dsn)
    yield Store(connector)
    connector.close()


def holder(conn: psycopg.Connection[Any], tid: int) -> tuple[int | None, datetime | None]:
    """(worker_id, started) of a task."""
    row = conn.execute(
        "SELECT worker_id, started FROM jobmachine.task WHERE task_id = %s", (tid,)
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def age(conn: psycopg.Connection[Any], tid: int, interval: str) -> None:
    """Make a task look untouched (and started) ``interval`` ago."""
    conn.execute(
        "UPDATE jobmachine.task SET modified = now() - %s::interval,"
        " started = CASE WHEN started IS NOT NULL THEN now() - %s::interval END"
        " WHERE task_id = %s",
        (interval, interval, tid),
    )


# -- every way back to waiting ----------------------------------------------------


def _claimed(store: Store, client: jm.Client, worker_id: int = 4242) -> jm.Task:
    client.send("x", queue=QUEUE)
    (task,) = store.task_claim([QUEUE], worker_id=worker_id)
    return task


ERROR = encode({"type": "E", "message": "m"}, "error")


def _perl_revive(dsn: str) -> None:
    perl = Perl(dsn)
    try:
        perl_revive(perl)
    finally:
        perl.close()


def _chores(store: Store, max_runtime: float | None, orphan_after: float) -> None:
    Housekeeper(store).run(
        retries=3,
        remove_after_days=30,
        grace=1,
        max_runtime=max_runtime,
        orphan_after=orphan_after,
    )


Transition = Any  # (store, conn, task, dsn) -> None

TRANSITIONS: dict[str, Transition] = {
    "task_fail_attempt": lambda s, c, t, d: s.task_fail_attempt(t.id, t.attempt, ERROR, 3, 60),
    "worker_reap": lambda s, c, t, d: (age(c, t.id, "1 hour"), s.worker_reap(grace=1, retries=3)),
    "task_release_held": lambda s, c, t, d: s.task_release_held(4242),
    "task_unclaim": lambda s, c, t, d: s.task_unclaim([t.id], 4242),
    "task_give_up": lambda s, c, t, d: (
        c.execute(
            "UPDATE jobmachine.task SET started = now() - interval '1 hour' WHERE task_id = %s",
            (t.id,),
        ),
        _chores(s, max_runtime=60, orphan_after=1e6),
    ),
    "task_revive (a task no worker holds)": lambda s, c, t, d: (
        c.execute("UPDATE jobmachine.task SET worker_id = NULL WHERE task_id = %s", (t.id,)),
        age(c, t.id, "1 hour"),
        _chores(s, max_runtime=None, orphan_after=60),
    ),
    "Perl's revive_tasks": lambda s, c, t, d: (age(c, t.id, "1 hour"), _perl_revive(d)),
}


@pytest.mark.parametrize("name", list(TRANSITIONS))
def test_every_way_back_to_waiting_clears_the_worker_and_started(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any], store: Store, name: str
) -> None:
    task = _claimed(store, client)
    assert holder(conn, task.id)[0] == 4242
    TRANSITIONS[name](store, conn, task, dsn)
    assert task_state(conn, task.id)[0] == jm.Status.WAITING
    assert holder(conn, task.id) == (None, None)


def test_admin_retry_clears_the_worker_and_started(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any], store: Store
) -> None:
    task = _claimed(store, client)
    assert store.task_fail_attempt(task.id, task.attempt, ERROR, 0) == jm.Status.FAILED
    with jm.Admin(dsn) as admin:
        admin.retry(task.id)
    assert task_state(conn, task.id)[0] == jm.Status.WAITING
    assert holder(conn, task.id) == (None, None)


def test_a_task_a_perl_worker_runs_is_not_rescued_from_under_it(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """A job_machine worker's attempt fails (retry backoff), the worker
    stops; a Perl worker takes the task. The fleet's rescue of the gone
    worker's tasks must not take it from the Perl worker."""

    class FailsOnce(Base):
        failing = threading.Event()

        def handle(self, task: jm.Task) -> None:
            if task.attempt == 1:
                self.failing.set()
                self.stop()
                raise ValueError("first attempt fails")
            self.reply("ok")

    tid = client.send({"data": "report"}, queue=QUEUE)
    w = FailsOnce(dsn, queue=QUEUE, retry_backoff=600)
    with serving(w):
        assert w.failing.wait(10)  # the stop lets it record the failure first
    assert task_state(conn, tid) == (jm.Status.WAITING, 1)
    perl = Perl(dsn)
    try:
        claimed = perl.claim(QUEUE)
        assert claimed is not None and claimed["task_id"] == tid
        # Past the gone worker's grace, not yet Perl's or job_machine's orphan age.
        age(conn, tid, "5 minutes")
        with Base(dsn, queue=QUEUE) as keeper:
            keeper.housekeeping()
        assert task_state(conn, tid)[0] == jm.Status.STARTED
        assert error_types(conn, tid) == ["ValueError"]  # no WorkerDied
        perl.reply(tid, {"data": "from perl"})
        assert client.receive(tid) == {"data": "from perl"}
    finally:
        perl.close()


def test_a_zombie_cannot_answer_for_a_perl_workers_attempt(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    class Zombie(Holding):
        refused = 0

        def handle(self, task: jm.Task) -> None:
            self.started.set()
            self.release.wait(self.hold)
            try:
                self.reply({"data": "zombie"})
            except jm.TaskNotHeld:
                self.refused += 1
                raise

    tid = client.send("x", queue=QUEUE)
    zombie = Zombie(dsn, queue=QUEUE)
    t = threading.Thread(target=zombie.work_once, daemon=True)
    t.start()
    assert zombie.started.wait(10)
    perl = Perl(dsn)
    try:
        # Perl's housekeeping revives the long-untouched task; a Perl worker takes it.
        age(conn, tid, "1 hour")
        assert perl_revive(perl) == [tid]
        claimed = perl.claim(QUEUE)
        assert claimed is not None and claimed["task_id"] == tid
        assert task_state(conn, tid) == (jm.Status.STARTED, 2)  # Perl's claim counted
        zombie.release.set()
        t.join(10)
        assert zombie.refused == 1
        perl.reply(tid, {"data": "perl"})
        assert client.receive(tid) == {"data": "perl"}
    finally:
        perl.close()
        zombie.close()


# -- Perl 0.19's claim and run_after -------------------------------------------------


def test_a_retry_in_backoff_is_not_taken_by_a_perl_worker_of_another_queue(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    class Fails(Base):
        def handle(self, task: jm.Task) -> None:
            raise ValueError("try again later")

    tid = client.send("report", queue=QUEUE)
    with Fails(dsn, queue=QUEUE, retry_backoff=600) as w:
        assert w.work_once()
    info = client.task_info(tid)
    assert info.state == "waiting"
    assert info.run_after is not None  # the backoff is still shown and honoured
    with Base(dsn, queue=QUEUE) as py:
        assert not py.work_once()
    perl = Perl(dsn)
    try:
        mail = perl.send(PERL_QUEUE, {"data": "mail"})
        # Perl 0.19's claim takes a task of any queue whose run_after is in
        # the future: job_machine's backoff is not there, so it takes its own.
        claimed = perl.claim(PERL_QUEUE)
        assert claimed is not None and claimed["task_id"] == mail
        assert perl.claim(PERL_QUEUE) is None
        assert task_state(conn, tid) == (jm.Status.WAITING, 1)
    finally:
        perl.close()


def test_a_delayed_task_is_still_visible_to_perl_0_19_as_documented(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """send(delay=) writes Perl's own run_after column (a later Perl reads it
    right); Perl 0.19's claim takes such a task from any queue: the README
    says not to delay tasks in a database where 0.19 workers run."""
    tid = client.send("later", queue=QUEUE, delay=3600)
    perl = Perl(dsn)
    try:
        claimed = perl.claim(PERL_QUEUE)
        assert claimed is not None and claimed["task_id"] == tid
    finally:
        perl.close()
