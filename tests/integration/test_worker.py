"""Worker against a real PostgreSQL: process, reply / result / error_result,
retries, queues, the service loop (LISTEN, stop, keep_running),
housekeeping and fencing of revived tasks."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

import job_machine as jm
from tests.support.procs import wait_until
from tests.support.workers import Base, serving, waiting

# -- helpers ------------------------------------------------------------------


def status(conn: psycopg.Connection[Any], tid: int) -> int | None:
    row = conn.execute("SELECT status FROM jobmachine.task WHERE task_id = %s", [tid]).fetchone()
    return None if row is None else int(row[0])


def attempts(conn: psycopg.Connection[Any], tid: int) -> int:
    row = conn.execute("SELECT attempts FROM jobmachine.task WHERE task_id = %s", [tid]).fetchone()
    assert row is not None
    return int(row[0])


def results(conn: psycopg.Connection[Any], tid: int) -> list[tuple[Any, str | None]]:
    """(decoded result, resulttype) of a task, oldest first."""
    rows = conn.execute(
        "SELECT result, resulttype FROM jobmachine.result WHERE task_id = %s ORDER BY result_id",
        [tid],
    ).fetchall()
    return [(json.loads(r), t) for r, t in rows]


@contextmanager
def listening(dsn: str, channel: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        yield c


def make_stale(
    conn: psycopg.Connection[Any], tid: int, tries: int = 1, age: str = "1 hour"
) -> None:
    """Make a task look claimed ``tries`` times by a worker that went silent ``age`` ago."""
    conn.execute(
        "UPDATE jobmachine.task SET status = 100, attempts = %s,"
        " modified = now() - %s::interval WHERE task_id = %s",
        [tries, age, tid],
    )


# -- process and answering ---------------------------------------------------


def test_process_gets_the_task(dsn: str, client: jm.Client) -> None:
    tid = client.send({"foo": ["bar", 1, None]})
    before = datetime.now().astimezone()
    with Base(dsn) as w:
        assert w.work_once() is True
        assert w.work_once() is False
    (task,) = w.seen
    assert isinstance(task, jm.Task)
    assert task.id == tid
    assert task.queue == "job.task"
    assert task.data == {"foo": ["bar", 1, None]}
    assert task.attempt == 1
    assert isinstance(task.created, datetime)
    assert abs((task.created - before).total_seconds()) < 60
    assert json.loads(task.parameters) == task.data


def test_startup_runs_once_before_the_first_task(dsn: str, client: jm.Client) -> None:
    client.send("a")
    client.send("b")
    w = Base(dsn)
    with serving(w):
        wait_until(lambda: len(w.seen) == 2, 5, "2 tasks seen")
    assert w.events[0] == "startup"
    assert w.events.count("startup") == 1
    # A second run of receive() does not call startup() again.
    w.ready.clear()
    client.send("c")
    with serving(w, wait_ready=False):
        wait_until(lambda: len(w.seen) == 3, 5, "3 tasks seen")
    assert w.events.count("startup") == 1
    assert [e.split()[0] for e in w.events] == ["startup", "process", "process", "process"]


def test_reply_stores_result_marks_done_and_notifies(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send({"n": 1})
    during: list[int | None] = []

    class W(Base):
        def handle(self, task: jm.Task) -> None:
            during.append(status(conn, task.id))
            self.reply({"answer": task.data["n"] + 1})
            during.append(status(conn, task.id))

    with listening(dsn, f"jmr:{tid}") as lc, W(dsn) as w:
        assert w.work_once()
        got = list(lc.notifies(timeout=2, stop_after=1))
    assert [n.channel for n in got] == [f"jmr:{tid}"]
    assert during == [100, 200]
    assert status(conn, tid) == 200
    assert results(conn, tid) == [({"answer": 2}, "json")]
    assert client.receive(tid) == {"answer": 2}


def test_result_stores_and_marks_done_and_tells_a_waiting_client(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """result() is reply() for a client that polls; a waiting one is still
    answered at once: its notification says 'result' instead of 'reply'."""
    tid = client.send({"n": 1})

    class W(Base):
        def handle(self, task: jm.Task) -> None:
            self.result({"quiet": True})

    with listening(dsn, f"jmr:{tid}") as lc, W(dsn) as w:
        assert w.work_once()
        got = list(lc.notifies(timeout=2, stop_after=1))
    assert [(n.channel, n.payload) for n in got] == [(f"jmr:{tid}", "result")]
    assert status(conn, tid) == 200
    assert results(conn, tid) == [({"quiet": True}, "json")]
    assert client.receive(tid) == {"quiet": True}


def test_error_result_keeps_status_then_task_is_done(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send("x")
    during: list[Any] = []

    class W(Base):
        def handle(self, task: jm.Task) -> None:
            self.error_result({"warning": "half done"})
            during.append(status(conn, task.id))
            during.append(results(conn, task.id))

    with listening(dsn, f"jmr:{tid}") as lc, W(dsn) as w:
        assert w.work_once()
        got = list(lc.notifies(timeout=0.3))
    assert during == [100, [({"warning": "half done"}, "error")]]
    # error_result() tells nobody; the plain return that follows does.
    assert [n.payload for n in got] == ["done"]
    assert status(conn, tid) == 200
    assert attempts(conn, tid) == 1
    assert results(conn, tid) == [({"warning": "half done"}, "error")]


def test_error_result_then_reply(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send("x")

    class W(Base):
        def handle(self, task: jm.Task) -> None:
            self.error_result({"warning": 1})
            self.reply({"ok": 2})

    with W(dsn) as w:
        assert w.work_once()
    assert status(conn, tid) == 200
    assert results(conn, tid) == [({"warning": 1}, "error"), ({"ok": 2}, "json")]
    assert client.receive(tid) == {"ok": 2}


def test_returning_without_reply_marks_done_without_result(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send("fire and forget")

    class W(Base):
        def handle(self, task: jm.Task) -> None:
            pass

    with W(dsn) as w:
        assert w.work_once()
    assert status(conn, tid) == 200
    assert results(conn, tid) == []
    assert client.check(tid) is True
    assert client.receive(tid) is None


def test_reply_twice_raises_task_not_held(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send("x")
    raised: list[BaseException] = []

    class W(Base):
        def handle(self, task: jm.Task) -> None:
            self.reply(1)
            try:
                self.reply(2)
            except jm.TaskNotHeld as ex:
                raised.append(ex)

    with W(dsn) as w:
        assert w.work_once()
    assert len(raised) == 1
    assert results(conn, tid) == [(1, "json")]
    assert status(conn, tid) == 200


def test_task_property_outside_process(dsn: str) -> None:
    with Base(dsn) as w:
        with pytest.raises(jm.NoCurrentTask):
            _ = w.task
        with pytest.raises(jm.NoCurrentTask):
            w.reply(1)


# -- failures and retries ---------------------------------------------------


def test_exception_is_recorded_and_retried_then_fails(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send({"x": 1})
    other = client.send({"x": 2})

    class W(Base):
        def handle(self, task: jm.Task) -> None:
            if task.id == tid:
                raise KeyError(f"bad {task.attempt}")
            self.reply("fine")

    with W(dsn, retries=1, retry_backoff=0) as w:
        assert w.work_once()  # attempt 1 of tid raises
        assert status(conn, tid) == 0
        assert attempts(conn, tid) == 1
        (err,) = results(conn, tid)
        assert err[1] == "error"
        assert err[0]["type"] == "KeyError"
        assert err[0]["message"] == "'bad 1'"
        assert "Traceback" in err[0]["traceback"]
        assert "KeyError" in err[0]["traceback"]
        assert "handle" in err[0]["traceback"]
        assert client.check(tid) is False

        # Back to waiting, and still the oldest: attempt 2 raises too, and
        # retries=1 is used up.
        assert w.work_once()
        assert w.seen[-1].id == tid and w.seen[-1].attempt == 2
        assert status(conn, tid) == 900
        assert attempts(conn, tid) == 2
        assert [r[0]["message"] for r in results(conn, tid)] == ["'bad 1'", "'bad 2'"]

        # The worker lives on: the next task is processed normally, and a
        # failed task is never claimed again.
        assert w.work_once()
        assert w.work_once() is False
        assert [(t.id, t.attempt) for t in w.seen] == [(tid, 1), (tid, 2), (other, 1)]
        assert status(conn, other) == 200
    assert client.check(tid) is True
    with pytest.raises(jm.TaskFailed, match="bad 2"):
        client.receive(tid)


def test_retries_zero_fails_on_the_first_exception(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send("x")

    class W(Base):
        def handle(self, task: jm.Task) -> None:
            raise RuntimeError("once is enough")

    with listening(dsn, f"jmr:{tid}") as lc, W(dsn, retries=0) as w:
        assert w.work_once()
        got = list(lc.notifies(timeout=2, stop_after=1))
    assert status(conn, tid) == 900
    assert [n.channel for n in got] == [f"jmr:{tid}"]  # the waiting client hears of it


def test_exception_inside_receive_does_not_stop_the_worker(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    class W(Base):
        def handle(self, task: jm.Task) -> None:
            if task.data == "bad":
                raise ValueError("bad data")
            self.reply("ok")

    w = W(dsn, retries=0, timeout=60)
    with serving(w) as t:
        bad = client.send("bad")
        wait_until(lambda: status(conn, bad) == 900, 5, "the bad task failed")
        good = client.send("good")
        assert client.wait(good, timeout=5) == "ok"
        assert t.is_alive()


# -- queues and order ---------------------------------------------------------


def test_oldest_first_within_a_queue(dsn: str, client: jm.Client) -> None:
    ids = [client.send(i) for i in range(5)]
    with Base(dsn) as w:
        while w.work_once():
            pass
    assert [t.id for t in w.seen] == ids
    assert [t.data for t in w.seen] == list(range(5))


def test_several_queues_oldest_first_across_them(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    a1 = client.send("a1", queue="q.a")
    b1 = client.send("b1", queue="q.b")
    c1 = client.send("c1", queue="q.c")  # not served
    a2 = client.send("a2", queue="q.a")
    b2 = client.send("b2", queue="q.b")
    with Base(dsn, queue=["q.a", "q.b"]) as w:
        assert w.queues == ["q.a", "q.b"]
        while w.work_once():
            pass
    assert [(t.id, t.queue) for t in w.seen] == [
        (a1, "q.a"),
        (b1, "q.b"),
        (a2, "q.a"),
        (b2, "q.b"),
    ]
    assert status(conn, c1) == 0


def test_several_queues_are_all_listened_to(dsn: str, client: jm.Client) -> None:
    w = Base(dsn, queue=["q.one", "q.two"], timeout=60)
    with serving(w):
        t1 = client.send(1, queue="q.one")
        assert client.wait(t1, timeout=5) == {"echo": 1}
        t2 = client.send(2, queue="q.two")
        assert client.wait(t2, timeout=5) == {"echo": 2}


def test_run_after_in_the_future_is_not_claimed(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send("later")
    conn.execute(
        "UPDATE jobmachine.task SET run_after = now() + interval '1 hour' WHERE task_id = %s",
        [tid],
    )
    with Base(dsn) as w:
        assert w.work_once() is False
        conn.execute(
            "UPDATE jobmachine.task SET run_after = now() - interval '1 second' WHERE task_id = %s",
            [tid],
        )
        assert w.work_once() is True
    assert status(conn, tid) == 200


# -- the service loop ---------------------------------------------------------


def test_keep_running_false_makes_receive_return(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    ids = [client.send(i) for i in range(5)]

    class Three(Base):
        def keep_running(self) -> bool:
            return len(self.seen) < 3

    w = Three(dsn, timeout=60)
    with serving(w, wait_ready=False) as t:
        t.join(5)
        assert not t.is_alive(), "receive() kept running"
    assert [t.id for t in w.seen] == ids[:3]
    assert [status(conn, i) for i in ids] == [200, 200, 200, 0, 0]


def test_stop_from_another_thread_while_idle(dsn: str) -> None:
    w = Base(dsn, timeout=60)
    with serving(w) as t:
        w.wait_idle(after=0)
        t0 = time.monotonic()
        w.stop()
        t.join(5)
        elapsed = time.monotonic() - t0
        assert not t.is_alive()
    assert elapsed < 2, elapsed


def test_stop_during_process_finishes_the_task_in_hand(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    in_process = threading.Event()
    go_on = threading.Event()

    class Slow(Base):
        def handle(self, task: jm.Task) -> None:
            in_process.set()
            assert go_on.wait(10)
            self.reply("finished anyway")

    first = client.send(1)
    second = client.send(2)
    w = Slow(dsn, timeout=60)
    with serving(w) as t:
        assert in_process.wait(5)
        w.stop()
        go_on.set()
        t.join(5)
        assert not t.is_alive()
    assert status(conn, first) == 200
    assert client.receive(first) == "finished anyway"
    assert status(conn, second) == 0  # not started after stop()
    assert [t.id for t in w.seen] == [first]


def test_idle_worker_is_woken_by_the_queue_notification(dsn: str, client: jm.Client) -> None:
    picked = threading.Event()

    class W(Base):
        def handle(self, task: jm.Task) -> None:
            picked.set()
            self.reply("quick")

    w = W(dsn, timeout=60)  # housekeeping would not wake it within the test
    with serving(w):
        w.wait_idle(after=0)
        t0 = time.monotonic()
        tid = client.send("wake up")
        assert picked.wait(5)
        elapsed = time.monotonic() - t0
        assert client.wait(tid, timeout=5) == "quick"
    assert elapsed < 1.0, elapsed


def test_worker_with_a_callers_connection(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn) as wc:  # not autocommit
        w = Base(conn=wc, timeout=60)
        tid = client.send("via conn")
        assert w.work_once()
        assert status(conn, tid) == 0  # claimed in the caller's transaction, not committed yet
        wc.commit()
        assert status(conn, tid) == 200
        with serving(w):
            tid2 = client.send("via conn, listening")
            assert client.wait(tid2, timeout=5) == {"echo": "via conn, listening"}
        assert not wc.closed  # the caller's connection is left open
        assert wc.autocommit is False
        assert wc.execute("SELECT count(*) FROM jobmachine.task").fetchone() == (2,)


def test_worker_with_a_pool(dsn: str, client: jm.Client, conn: psycopg.Connection[Any]) -> None:
    with ConnectionPool(dsn, min_size=1, max_size=2, open=True) as pool:
        w = Base(pool=pool, timeout=60)
        tid = client.send("via pool")
        assert w.work_once()
        assert status(conn, tid) == 200
        with serving(w):
            tid2 = client.send("via pool, listening")
            assert client.wait(tid2, timeout=5) == {"echo": "via pool, listening"}
        with pool.connection() as pc:  # the pool is still the caller's, open
            assert pc.execute("SELECT count(*) FROM jobmachine.task").fetchone() == (2,)


# -- housekeeping -------------------------------------------------------------


def test_housekeeping_revives_a_stale_started_task(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    stale = client.send("stale")
    fresh = client.send("fresh")
    make_stale(conn, stale, tries=1, age="1 hour")
    conn.execute(
        "UPDATE jobmachine.task SET status = 100, attempts = 1 WHERE task_id = %s", [fresh]
    )
    with Base(dsn, orphan_after=600, retries=3) as w:
        counts = w.housekeeping()
        assert counts.ran is True
        assert (counts.revived, counts.failed) == (1, 0)
        assert status(conn, stale) == 0
        assert status(conn, fresh) == 100  # still within orphan_after
        assert w.work_once()
    assert w.seen[-1].id == stale
    assert w.seen[-1].attempt == 2
    assert status(conn, stale) == 200


def test_housekeeping_fails_a_stale_task_that_used_its_attempts(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    used_up = client.send("used up")
    one_left = client.send("one left")
    make_stale(conn, used_up, tries=3)  # retries=2: 3 attempts allowed
    make_stale(conn, one_left, tries=2)
    with Base(dsn, orphan_after=600, retries=2) as w:
        counts = w.housekeeping()
    assert (counts.revived, counts.failed) == (1, 1)
    assert status(conn, used_up) == 900
    assert status(conn, one_left) == 0
    assert client.check(used_up) is True
    with pytest.raises(jm.TaskFailed):
        client.receive(used_up)


def test_housekeeping_removes_old_finished_tasks_only(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    done_old = client.send("done old")
    failed_old = client.send("failed old")
    done_new = client.send("done new")
    waiting_old = client.send("waiting old")
    past_remove_after = client.send("remove_after passed")
    with Base(dsn) as w:
        for _ in range(3):
            w.work_once()  # done_old, failed_old, done_new: replied (200)
    conn.execute("UPDATE jobmachine.task SET status = 900 WHERE task_id = %s", [failed_old])
    conn.execute(
        "UPDATE jobmachine.task SET modified = now() - interval '40 days' WHERE task_id = ANY(%s)",
        [[done_old, failed_old, waiting_old]],
    )
    conn.execute(
        "UPDATE jobmachine.task SET status = 200, remove_after = now() - interval '1 minute'"
        " WHERE task_id = %s",
        [past_remove_after],
    )
    assert results(conn, done_old)
    with Base(dsn) as w:
        counts = w.housekeeping()
    assert counts.removed == 3
    left = {r[0] for r in conn.execute("SELECT task_id FROM jobmachine.task")}
    assert left == {done_new, waiting_old}
    gone = conn.execute(
        "SELECT count(*) FROM jobmachine.result WHERE task_id = ANY(%s)",
        [[done_old, failed_old, past_remove_after]],
    ).fetchone()
    assert gone == (0,)
    assert results(conn, done_new)  # a recent one keeps its result
    with pytest.raises(jm.UnknownTask):
        client.check(done_old)


def test_a_serving_worker_does_the_housekeeping_by_itself(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send("stuck")
    make_stale(conn, tid, tries=1)
    # The fleet's housekeeper (the liveness thread of a serving worker) does
    # the chores by itself, every dead_after / 4 seconds.
    w = Base(dsn, timeout=30, dead_after=1, orphan_after=60, retries=3)
    with serving(w):
        wait_until(lambda: status(conn, tid) == 200, 5, "the task done")
    assert [(t.id, t.attempt) for t in w.seen] == [(tid, 2)]


def test_housekeeping_with_default_settings(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """A worker constructed with the defaults (remove_after=30.0 days, a float)
    must be able to do its housekeeping."""
    tid = client.send("stuck")
    make_stale(conn, tid, tries=1, age="2 hours")
    with Base(dsn) as w:
        counts = w.housekeeping()
    assert counts.ran is True
    assert counts.revived == 1
    assert status(conn, tid) == 0


def test_housekeeping_with_fractional_remove_after(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    old = client.send("13 hours ago")
    recent = client.send("11 hours ago")
    # Claimed by a worker that keeps finished tasks 12 hours: they carry it.
    with Base(dsn, remove_after=timedelta(hours=12)) as w:
        assert w.remove_after == 0.5
        w.work_once()
        w.work_once()
    conn.execute(
        "UPDATE jobmachine.task SET modified = now() - interval '13 hours' WHERE task_id = %s",
        [old],
    )
    conn.execute(
        "UPDATE jobmachine.task SET modified = now() - interval '11 hours' WHERE task_id = %s",
        [recent],
    )
    with Base(dsn) as w:
        counts = w.housekeeping()
    assert counts.removed == 1
    assert status(conn, old) is None
    assert status(conn, recent) == 200


def test_idle_worker_with_default_settings_survives_its_housekeeping(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send("stuck")
    make_stale(conn, tid, tries=1)
    w = Base(dsn, timeout=0.3, dead_after=1, orphan_after=60)
    with serving(w) as t:
        wait_until(lambda: status(conn, tid) == 200, 3, "the task done")
        assert t.is_alive()
        tid2 = client.send("after housekeeping")
        assert client.wait(tid2, timeout=5) == {"echo": "after housekeeping"}


def test_housekeeping_that_fails_a_task_wakes_its_waiting_client(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """A task failed by housekeeping (attempts used up) gets no answer ever:
    the waiting client should hear it at once, as it does when the last
    attempt raises (task_fail_attempt notifies jmr:<id>)."""
    tid = client.send("abandoned")
    make_stale(conn, tid, tries=4)

    failed: list[int] = []
    errors: list[BaseException] = []

    def chores() -> None:
        try:
            wait_until(lambda: waiting(client, tid), 10, "the client's wait")
            with Base(dsn, orphan_after=60, retries=3) as w:
                failed.append(w.housekeeping().failed)
        except BaseException as ex:  # raised in the test below
            errors.append(ex)

    t = threading.Thread(target=chores)
    t.start()
    t0 = time.monotonic()
    try:
        with pytest.raises((jm.TaskFailed, jm.WaitTimeout)) as info:
            client.wait(tid, timeout=2.5)
        elapsed = time.monotonic() - t0
    finally:
        t.join(10)
    if errors:
        raise errors[0]
    assert failed == [1]
    assert status(conn, tid) == 900
    assert isinstance(info.value, jm.TaskFailed)
    assert elapsed < 1.5, f"the client learnt of the failure only after {elapsed:.1f} s"


# -- fencing: a revived task is no longer the old worker's ----------------------


def test_reply_to_a_revived_task_raises_task_not_held(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send("x")
    raised: list[BaseException] = []

    class W(Base):
        def handle(self, task: jm.Task) -> None:
            # Housekeeping elsewhere decided this worker was dead.
            conn.execute("UPDATE jobmachine.task SET status = 0 WHERE task_id = %s", [task.id])
            for answer in (self.reply, self.result, self.error_result):
                try:
                    answer({"too": "late"})
                except jm.TaskNotHeld as ex:
                    raised.append(ex)

    with W(dsn) as w:
        assert w.work_once()
    assert len(raised) == 3
    assert all(str(tid) in str(ex) for ex in raised)
    assert status(conn, tid) == 0  # neither the replies nor process' return marked it 200
    assert results(conn, tid) == []


def test_task_not_held_escaping_process_leaves_the_task_alone(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send("x")

    class W(Base):
        def handle(self, task: jm.Task) -> None:
            conn.execute("UPDATE jobmachine.task SET status = 0 WHERE task_id = %s", [task.id])
            self.reply("too late")  # raises TaskNotHeld out of process()

    with W(dsn, retries=0) as w:
        assert w.work_once()
    assert status(conn, tid) == 0  # not failed (900), not done (200)
    assert results(conn, tid) == []


def test_old_attempt_cannot_answer_after_another_worker_took_over(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send("contested")
    outcome: list[str] = []

    class Second(Base):
        def handle(self, task: jm.Task) -> None:
            self.reply({"by": "second", "attempt": task.attempt})

    class First(Base):
        def handle(self, task: jm.Task) -> None:
            # The first worker stalls; housekeeping revives the task and a
            # second worker claims and answers it (attempt 2).
            make_stale(conn, task.id, tries=task.attempt)
            with Base(dsn, orphan_after=60) as hk:
                assert hk.housekeeping().revived == 1
            with Second(dsn) as other:
                assert other.work_once()
            try:
                self.reply({"by": "first"})
            except jm.TaskNotHeld:
                outcome.append("not held")

    with First(dsn) as w:
        assert w.work_once()
    assert outcome == ["not held"]
    assert status(conn, tid) == 200
    assert results(conn, tid) == [({"by": "second", "attempt": 2}, "json")]
    assert client.receive(tid) == {"by": "second", "attempt": 2}


# -- configuration ------------------------------------------------------------


def test_class_attribute_defaults(dsn: str) -> None:
    class Configured(Base):
        queue = "from.class"
        timeout = 7
        max_runtime = 99
        dead_after = 4
        retries = 5
        remove_after = 3

    w = Configured(dsn, queue=None)
    assert w.queues == ["from.class"]
    assert w.timeout == 7
    assert w.max_runtime == 99
    assert w.dead_after == 4
    assert w.retries == 5
    assert w.remove_after == 3
    plain = Base(dsn)
    assert (plain.timeout, plain.max_runtime, plain.retries, plain.remove_after) == (
        30.0,
        None,
        3,
        30.0,
    )
    assert (plain.dead_after, plain.orphan_after, plain.shutdown_grace) == (15.0, 1800.0, 30.0)


def test_constructor_overrides(dsn: str) -> None:
    class Configured(Base):
        queue = "from.class"
        timeout = 7
        retries = 5

    w = Configured(
        dsn,
        queue=["x.one", "x.two"],
        timeout=1.5,
        max_runtime=12,
        retries=0,
        remove_after=timedelta(days=2),
        flavour="vanilla",
    )
    assert w.queues == ["x.one", "x.two"]
    assert w.timeout == 1.5
    assert w.max_runtime == 12
    assert w.retries == 0
    assert w.remove_after == 2.0
    assert w.flavour == "vanilla"  # type: ignore[attr-defined]
    # The class keeps its defaults.
    assert Configured.timeout == 7
    assert Configured(dsn, queue=None).timeout == 7


def test_housekeeping_rescues_a_task_whose_worker_row_is_gone_and_lock_free(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """A task started by a worker that has no registry row any more (it was
    judged dead, then claimed before its heartbeat re-registered it, then
    died) is rescued once that worker's liveness lock is free, not after
    orphan_after."""
    tid = client.send("unregistered")
    conn.execute(
        "UPDATE jobmachine.task SET status = 100, attempts = 1, worker_id = 4242,"
        " modified = now() - interval '1 minute' WHERE task_id = %s",
        [tid],
    )
    with Base(dsn, dead_after=2) as w:
        counts = w.housekeeping()
    assert (counts.revived, counts.failed, counts.reaped) == (1, 0, 0)
    assert status(conn, tid) == 0
    (err,) = results(conn, tid)
    assert err[0]["type"] == "WorkerDied"
    assert "worker 4242 ended during attempt 1" in err[0]["message"]
