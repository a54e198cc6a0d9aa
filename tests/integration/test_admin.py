"""Admin: counts by queue and state, listings, workers, and cancel / retry /
remove / purge by hand, with their refusals."""

from __future__ import annotations

import itertools
import re
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import job_machine as jm
from tests.procs import (
    expected_reply,
    kill_all,
    start_worker,
    started_count,
    terminate_and_check,
    wait_until,
)
from tests.rows import processed_by, task_state
from tests.workers import Base, serving


class Fails(Base):
    def handle(self, task: jm.Task) -> None:
        if task.data == "bad":
            raise ValueError("bad task")
        self.reply("ok")


@pytest.fixture
def admin(dsn: str) -> Any:
    with jm.Admin(dsn) as a:
        yield a


def _mix(dsn: str, client: jm.Client) -> dict[str, int]:
    """One done, one failed, one waiting and one delayed (retry in backoff) task
    on queue job.task, and one waiting on other.q."""
    done = client.send("good")
    failed = client.send("bad")
    with Fails(dsn, retries=0) as w:
        assert w.work_once() and w.work_once()
    delayed = client.send("bad")
    with Fails(dsn, retries=1, retry_backoff=600) as w:
        assert w.work_once()
    waiting = client.send("later")
    other = client.send("elsewhere", queue="other.q")
    return {"done": done, "failed": failed, "delayed": delayed, "waiting": waiting, "other": other}


def test_stats_count_tasks_by_queue_and_state(dsn: str, client: jm.Client, admin: jm.Admin) -> None:
    _mix(dsn, client)
    stats = admin.stats()
    by_queue = {q.queue: q for q in stats.queues}
    assert by_queue["job.task"] == jm.QueueStats(
        "job.task", waiting=1, delayed=1, blocked=0, running=0, failed=1, paused=False
    )
    assert by_queue["other.q"] == jm.QueueStats("other.q", 1, 0, 0, 0, 0, False)
    assert [q.queue for q in stats.queues] == ["job.task", "other.q"]
    assert (stats.done, stats.done_estimated) == (1, False)
    assert (stats.workers, stats.busy, stats.idle) == (0, 0, 0)
    assert [stats.total(s) for s in ("waiting", "delayed", "blocked", "running", "failed")] == [
        2,
        1,
        0,
        0,
        1,
    ]
    assert admin.status_string() == "W=2 D=1 B=0 R=0 F=1 done=1 workers=0/0"


def test_list_tasks_filters_and_pages_newest_first(
    dsn: str, client: jm.Client, admin: jm.Admin
) -> None:
    ids = _mix(dsn, client)
    every = admin.list_tasks()
    assert [t.id for t in every] == sorted(ids.values(), reverse=True)
    assert [t.id for t in admin.list_tasks(state="failed")] == [ids["failed"]]
    assert {t.id for t in admin.list_tasks(state="waiting")} == {
        ids["waiting"],
        ids["delayed"],
        ids["other"],
    }
    assert [t.id for t in admin.list_tasks(queue="other.q")] == [ids["other"]]
    first = admin.list_tasks(limit=2)
    second = admin.list_tasks(limit=2, before_id=first[-1].id)
    assert [t.id for t in first + second] == [t.id for t in every[:4]]
    assert first[0].state == "waiting" and first[0].parameters == '"elsewhere"'


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"state": "lost"}, "state must be one of waiting, blocked, running, done, failed"),
        ({"limit": 0}, "limit must be"),
        ({"limit": 10_001}, "limit must be"),
        ({"offset": -1}, "offset must be"),
        ({"queue": ""}, "queue"),
    ],
)
def test_list_tasks_rejects_bad_filters(
    admin: jm.Admin, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        admin.list_tasks(**kwargs)


def test_cancel_fails_a_waiting_task_and_tells_its_client(
    dsn: str, client: jm.Client, admin: jm.Admin
) -> None:
    tid = client.send("never mind")
    got: list[BaseException] = []

    def wait() -> None:
        with jm.Client(dsn) as c:
            try:
                c.wait(tid, timeout=10)
            except jm.TaskFailed as ex:
                got.append(ex)

    t = threading.Thread(target=wait)
    t.start()
    admin.cancel(tid)
    t.join(10)
    assert len(got) == 1 and got[0].error["type"] == "Cancelled"  # type: ignore[attr-defined]
    assert isinstance(got[0], jm.TaskCancelled)
    assert admin.task_info(tid).state == "failed"
    with pytest.raises(
        ValueError, match="is 'failed': only a waiting, blocked or running task can be cancelled"
    ):
        admin.cancel(tid)
    with pytest.raises(jm.UnknownTask):
        admin.cancel(tid + 1000)


def test_retry_sends_a_failed_task_again_with_fresh_attempts(
    dsn: str, client: jm.Client, admin: jm.Admin, conn: psycopg.Connection[Any]
) -> None:
    ids = _mix(dsn, client)
    admin.retry(ids["failed"], queue="retry.q")
    info = admin.task_info(ids["failed"])
    # A fresh budget of attempts; the attempt count (the fencing token) goes on.
    assert (info.state, info.attempts, info.queue) == ("waiting", 1, "retry.q")
    assert [e["type"] for e in info.errors] == ["ValueError"]  # the record stays

    class Fixed(Base):
        def handle(self, task: jm.Task) -> None:
            self.reply("fixed")

    with Fixed(dsn, queue="retry.q") as w:
        assert w.work_once()
    assert client.receive(ids["failed"]) == "fixed"
    admin.retry(ids["done"])  # done tasks may be sent again too
    assert admin.task_info(ids["done"]).state == "waiting"
    with pytest.raises(ValueError, match="only a done or failed task can be retried"):
        admin.retry(ids["waiting"])


def test_remove_deletes_a_task_with_its_results_but_not_a_running_one(
    dsn: str, client: jm.Client, admin: jm.Admin, conn: psycopg.Connection[Any]
) -> None:
    ids = _mix(dsn, client)
    admin.remove(ids["failed"])
    with pytest.raises(jm.UnknownTask):
        admin.task_info(ids["failed"])
    assert conn.execute(
        "SELECT count(*) FROM jobmachine.result WHERE task_id = %s", (ids["failed"],)
    ).fetchone() == (0,)
    conn.execute("UPDATE jobmachine.task SET status = 100 WHERE task_id = %s", (ids["waiting"],))
    with pytest.raises(ValueError, match="is 'running': a running task cannot be removed"):
        admin.remove(ids["waiting"])


def test_purge_removes_finished_tasks_in_batches(
    dsn: str, client: jm.Client, admin: jm.Admin
) -> None:
    ids = _mix(dsn, client)
    for n in range(5):
        client.send(n)
    with Fails(dsn) as w:
        while w.work_once():
            pass
    assert admin.purge("done", older_than=3600) == 0  # nothing that old
    assert admin.purge("failed", batch=2) == 1
    assert admin.purge("finished", queue="other.q") == 0  # its one task waits
    assert admin.purge(batch=2) == 7  # the done ones, in four batches
    left = admin.list_tasks()
    assert [(t.id, t.state) for t in left] == [
        (ids["other"], "waiting"),
        (ids["delayed"], "waiting"),
    ]
    with pytest.raises(ValueError, match="state must be one of finished, done, failed"):
        admin.purge("waiting")


def test_reset_deletes_every_task_result_and_lock_only_when_confirmed(
    dsn: str, client: jm.Client, admin: jm.Admin, conn: psycopg.Connection[Any]
) -> None:
    def count(table: str) -> int:
        row = conn.execute(f"SELECT count(*) FROM jobmachine.{table}").fetchone()
        return int(row[0]) if row else -1

    # A schedule, when the schema has them (a stand-in table when it does not).
    if conn.execute("SELECT to_regclass('jobmachine.schedule')").fetchone() == (None,):
        conn.execute("CREATE TABLE jobmachine.schedule (name text)")
        conn.execute("INSERT INTO jobmachine.schedule VALUES ('nightly')")
    schedules = count("schedule")
    _mix(dsn, client)
    parent = client.send("parent", delay=3600)
    client.send("child", parents=[parent])  # blocked
    assert client.lock("reset.lock", expire=600) is not None
    before = (count("task"), count("result"), count("lock"))
    assert before[0] == 7 and before[1] > 0 and before[2] == 1
    for refused in ({}, {"confirm": False}, {"confirm": 1}, {"confirm": "yes"}):
        with pytest.raises(ValueError, match="pass confirm=True"):
            admin.reset(**refused)
    assert (count("task"), count("result"), count("lock")) == before

    # A task running while the reset comes, a client waiting for it.
    started, release = threading.Event(), threading.Event()

    class Held(Base):
        def handle(self, task: jm.Task) -> None:
            started.set()
            release.wait(10)
            self.reply("too late")

    w = Held(dsn, queue="reset.q")
    with serving(w):
        running = client.send("run", queue="reset.q")
        assert started.wait(5)
        told: list[BaseException] = []

        def wait_for_it() -> None:
            try:
                client.wait(running, timeout=30)
            except BaseException as ex:  # checked below
                told.append(ex)

        waiter = threading.Thread(target=wait_for_it)
        waiter.start()
        removed = admin.reset(confirm=True)
        assert removed == {"tasks": 8, "locks": 1, "schedules": schedules}, removed
        waiter.join(10)
        assert len(told) == 1 and isinstance(told[0], jm.UnknownTask), told
        # The worker's answer is refused (the task is gone), and it goes on.
        release.set()
        again = client.send("after", queue="reset.q")
        assert client.wait(again, timeout=10) == "too late"
    assert (count("task"), count("result"), count("lock"), count("schedule")) == (1, 1, 0, 0)
    assert "reset.q" in admin.queues()  # queues stay
    assert admin.reset(confirm=True) == {"tasks": 1, "locks": 0, "schedules": 0}


def test_workers_lists_the_registered_workers_and_what_they_run(
    dsn: str, client: jm.Client, admin: jm.Admin
) -> None:
    started, release = threading.Event(), threading.Event()

    class Slow(Base):
        def handle(self, task: jm.Task) -> None:
            started.set()
            release.wait(10)
            self.reply("ok")

    w = Slow(dsn, queue=["job.task", "other.q"])
    with serving(w):
        tid = client.send("x")
        assert started.wait(5)
        (info,) = admin.workers()
        assert (info.id, info.alive, info.running, info.queues) == (
            w.worker_id,
            True,
            [tid],
            ["job.task", "other.q"],
        )
        assert admin.status_string().endswith("R=1 F=0 done=0 workers=1/1")
        stats = admin.stats()
        assert (stats.workers, stats.busy, stats.idle) == (1, 1, 0)
        release.set()
        assert client.wait(tid, timeout=5) == "ok"
    assert admin.workers() == []


async def test_the_async_admin_has_the_same_answers(dsn: str, client: jm.Client) -> None:
    ids = _mix(dsn, client)
    async with jm.AsyncAdmin(dsn) as a:
        assert await a.status_string() == "W=2 D=1 B=0 R=0 F=1 done=1 workers=0/0"
        stats = await a.stats()
        assert (stats.total("waiting"), stats.done) == (2, 1)
        assert [t.id for t in await a.list_tasks(state="done")] == [ids["done"]]
        await a.cancel(ids["waiting"])
        assert (await a.task_info(ids["waiting"])).state == "failed"


# -- schema v3: blocked tasks, paused queues, busy and idle workers ------------------


def test_stats_count_blocked_tasks_and_paused_queues(
    dsn: str, client: jm.Client, admin: jm.Admin
) -> None:
    parent = client.send("parent")
    client.send("child", parents=[parent])
    client.send("grandchild", parents=[parent], queue="kids.q")
    client.send("elsewhere", queue="other.q")
    admin.pause("other.q")
    by_queue = {q.queue: q for q in admin.stats().queues}
    assert by_queue["job.task"] == jm.QueueStats("job.task", 1, 0, 1, 0, 0, paused=False)
    assert by_queue["kids.q"] == jm.QueueStats("kids.q", 0, 0, 1, 0, 0, paused=False)
    assert by_queue["other.q"] == jm.QueueStats("other.q", 1, 0, 0, 0, 0, paused=True)
    assert admin.status_string() == "W=2 D=0 B=2 R=0 F=0 done=0 workers=0/0"
    # The parent done: its children wait for a worker, and stats say so.
    with Base(dsn) as w:
        assert w.work_once()
    stats = admin.stats()
    assert (stats.total("waiting"), stats.total("blocked"), stats.done) == (3, 0, 1)
    admin.resume("other.q")
    assert not any(q.paused for q in admin.stats().queues)


def test_stats_count_busy_and_idle_worker_processes(
    dsn: str, db: psycopg.Connection[Any], client: jm.Client, admin: jm.Admin, tmp_path: Path
) -> None:
    """Two workers in processes of their own, one of them running a slow task."""
    busy = start_worker(dsn, "slow.q", tmp_path, "busy", sleep=3, dead_after=2)
    idle = start_worker(dsn, "idle.q", tmp_path, "idle", dead_after=2)
    children = [busy, idle]
    try:
        wait_until(lambda: started_count(db) >= 2, 30, "2 workers to start", children)
        tid = client.send({"seq": 7}, queue="slow.q")
        wait_until(lambda: processed_by(db, tid), 10, "the slow task to start", children)
        stats = admin.stats()
        assert (stats.workers, stats.busy, stats.idle) == (2, 1, 1)
        assert {q.queue: q.running for q in stats.queues}["slow.q"] == 1
        assert admin.status_string() == "W=0 D=0 B=0 R=1 F=0 done=0 workers=1/2"
        by_pid = {w.pid: w for w in admin.workers()}
        assert by_pid[busy.pid].busy and by_pid[busy.pid].running == [tid]
        assert not by_pid[idle.pid].busy
        assert client.wait(tid, timeout=15) == expected_reply(7)
        stats = admin.stats()
        assert (stats.workers, stats.busy, stats.idle, stats.done) == (2, 0, 2, 1)
        terminate_and_check(children)
    finally:
        kill_all(children)
    assert admin.stats().workers == 0


def test_done_count_is_exact_while_the_table_is_small(
    dsn: str, client: jm.Client, admin: jm.Admin, conn: psycopg.Connection[Any]
) -> None:
    client.send_many(range(7))
    with Base(dsn) as w:
        while w.work_once():
            pass
    client.send("waits")
    for analyzed in (False, True):
        if analyzed:
            conn.execute("ANALYZE jobmachine.task")
        stats = admin.stats()
        assert (stats.done, stats.done_estimated) == (7, False), analyzed
        assert admin.status_string().endswith("done=7 workers=0/0")


def test_history_has_24_hourly_buckets_with_the_finished_tasks(
    dsn: str, client: jm.Client, admin: jm.Admin, conn: psycopg.Connection[Any]
) -> None:
    ids = _mix(dsn, client)  # one done and one failed, now
    old_done, old_failed, ancient = client.send("o1"), client.send("o2"), client.send("o3")
    conn.execute(
        "UPDATE jobmachine.task SET status = 200, modified = now() - interval '3 hours'"
        " WHERE task_id = %s",
        (old_done,),
    )
    conn.execute(
        "UPDATE jobmachine.task SET status = 900, modified = now() - interval '3 hours'"
        " WHERE task_id = %s",
        (old_failed,),
    )
    conn.execute(  # older than the 24 hours shown
        "UPDATE jobmachine.task SET status = 200, modified = now() - interval '30 hours'"
        " WHERE task_id = %s",
        (ancient,),
    )
    hist = admin.history()
    row = conn.execute(
        "SELECT date_trunc('hour', now()),"
        " (SELECT date_trunc('hour', modified) FROM jobmachine.task WHERE task_id = %s),"
        " (SELECT date_trunc('hour', modified) FROM jobmachine.task WHERE task_id = %s)",
        (ids["done"], old_done),
    ).fetchone()
    assert row is not None
    this_hour, done_hour, old_hour = row
    assert len(hist) == 24
    assert hist[-1].hour == this_hour
    assert all(b.hour - a.hour == timedelta(hours=1) for a, b in itertools.pairwise(hist))
    by_hour = {h.hour: (h.done, h.failed) for h in hist}
    assert by_hour[done_hour] == (1, 1)
    assert by_hour[old_hour] == (1, 1)
    assert sum(h.done for h in hist) == 2 and sum(h.failed for h in hist) == 2
    if done_hour == this_hour:  # not across an hour's turn
        assert (hist[-1].done, hist[-1].failed) == (1, 1)
        assert (hist[-4].done, hist[-4].failed) == (1, 1)


def test_list_tasks_by_grouping_offset_and_blocked_state(
    dsn: str, client: jm.Client, admin: jm.Admin
) -> None:
    a = [client.send(n, grouping="batch-a") for n in range(5)]
    b = client.send("b", grouping="batch-b", title="the b task", priority=3)
    blocked = client.send("blocked", parents=[a[0]], grouping="batch-a")
    assert [t.id for t in admin.list_tasks(grouping="batch-a")] == [blocked, *reversed(a)]
    (only_b,) = admin.list_tasks(grouping="batch-b")
    assert (only_b.id, only_b.grouping, only_b.title, only_b.priority) == (
        b,
        "batch-b",
        "the b task",
        3,
    )
    assert admin.list_tasks(grouping="no-such") == []
    every = [t.id for t in admin.list_tasks()]
    assert [t.id for t in admin.list_tasks(offset=2, limit=3)] == every[2:5]
    assert [t.id for t in admin.list_tasks(grouping="batch-a", offset=4)] == [a[1], a[0]]
    assert admin.list_tasks(offset=100) == []
    (got,) = admin.list_tasks(state="blocked")
    assert (got.id, got.state) == (blocked, "blocked")
    assert blocked not in [t.id for t in admin.list_tasks(state="waiting")]
    assert admin.list_tasks(state="blocked", queue="other.q") == []


def test_cancel_a_blocked_task_fails_it_and_its_own_children(
    dsn: str, client: jm.Client, admin: jm.Admin
) -> None:
    parent = client.send("parent")
    child = client.send("child", parents=[parent])
    grandchild = client.send("grandchild", parents=[child])
    assert admin.task_info(child).state == "blocked"
    admin.cancel(child)
    info = admin.task_info(child)
    assert info.state == "failed"
    assert [e["type"] for e in info.errors] == ["Cancelled"]
    grand = admin.task_info(grandchild)
    assert grand.state == "failed"
    assert [(e["type"], e["parent"]) for e in grand.errors] == [("ParentFailed", child)]
    assert admin.task_info(parent).state == "waiting"  # the parent is untouched
    with pytest.raises(jm.TaskFailed):
        client.wait(child, timeout=1)
    # The parent still runs; nothing of its cancelled descendants does.
    with Base(dsn) as w:
        assert w.work_once()
        assert not w.work_once()
    assert [t.id for t in w.seen] == [parent]


def test_retry_with_a_priority_runs_before_older_tasks(
    dsn: str, client: jm.Client, admin: jm.Admin
) -> None:
    ids = _mix(dsn, client)
    for n in range(3):
        client.send(f"newer {n}")
    admin.retry(ids["failed"], priority=5)
    info = admin.task_info(ids["failed"])
    assert (info.state, info.priority, info.queue, info.attempts) == ("waiting", 5, "job.task", 1)
    with Fails(dsn) as w:
        assert w.work_once()
    # Before the older waiting task and the newer ones: priority first.
    assert w.seen[0].id == ids["failed"] and w.seen[0].priority == 5
    with pytest.raises(TypeError, match="priority must be an int"):
        admin.retry(ids["done"], priority="high")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="priority must be within"):
        admin.retry(ids["done"], priority=2**31)
    assert admin.task_info(ids["done"]).state == "done"  # refused, nothing changed


def test_retry_to_another_queue_keeps_the_priority_unless_given(
    dsn: str, client: jm.Client, admin: jm.Admin
) -> None:
    tid = client.send("bad", priority=2)
    with Fails(dsn, retries=0) as w:
        assert w.work_once()
    admin.retry(tid, queue="fresh.q")
    info = admin.task_info(tid)
    assert (info.state, info.queue, info.priority) == ("waiting", "fresh.q", 2)
    assert {q.queue: q.waiting for q in admin.stats().queues}["fresh.q"] == 1

    class Fixed(Base):
        def handle(self, task: jm.Task) -> None:
            self.reply("fixed")

    with Fixed(dsn, queue="job.task") as fixed:
        assert not fixed.work_once()  # it left job.task
    with Fixed(dsn, queue="fresh.q") as fixed:
        assert fixed.work_once()
    assert client.receive(tid) == "fixed"
    admin.retry(tid, queue="job.task", priority=-1)
    info = admin.task_info(tid)
    assert (info.state, info.queue, info.priority) == ("waiting", "job.task", -1)
    with pytest.raises(jm.InvalidQueueName):
        admin.retry(tid, queue="")


def test_retry_refuses_when_another_task_holds_the_unique_key(
    dsn: str, client: jm.Client, admin: jm.Admin
) -> None:
    first = client.send("bad", unique_key="k1")
    with Fails(dsn, retries=0) as w:
        assert w.work_once()
    assert admin.task_info(first).state == "failed"
    holder = client.send("again", unique_key="k1")  # the key is free again
    assert holder != first
    with pytest.raises(ValueError, match=rf"\b{first}\b") as raised:
        admin.retry(first)
    # The message names the task that holds the key, so the operator can act.
    assert re.search(rf"\b{holder}\b", str(raised.value)), str(raised.value)
    assert admin.task_info(first).state == "failed"  # unchanged
    assert admin.task_info(holder).state == "waiting"
    # Into another queue, the key is free.
    admin.retry(first, queue="elsewhere.q")
    assert admin.task_info(first).state == "waiting"


# -- pause / resume -------------------------------------------------------------------


def test_a_paused_queue_keeps_its_tasks_while_other_queues_are_served(
    dsn: str, client: jm.Client, admin: jm.Admin
) -> None:
    held = client.send("held", queue="paused.q")
    free = client.send("free", queue="open.q")
    admin.pause("paused.q")
    admin.pause("paused.q")  # twice is fine
    with Base(dsn, queue=["paused.q", "open.q"]) as w:
        assert w.work_once() is True
        assert w.work_once() is False
        assert [t.id for t in w.seen] == [free]
        assert admin.task_info(held).state == "waiting"
        client.send("more", queue="paused.q")  # a paused queue still takes tasks
        assert w.work_once() is False
        admin.resume("paused.q")
        assert w.work_once() is True and w.work_once() is True
        assert w.work_once() is False
    assert [t.id for t in w.seen][:2] == [free, held]
    with pytest.raises(ValueError, match=r"no queue 'nope\.q'"):
        admin.pause("nope.q")
    with pytest.raises(ValueError, match=r"no queue 'nope\.q'"):
        admin.resume("nope.q")


def test_resume_wakes_a_waiting_worker_process_at_once(
    dsn: str, db: psycopg.Connection[Any], client: jm.Client, admin: jm.Admin, tmp_path: Path
) -> None:
    tid = client.send({"seq": 1}, queue="resume.q")
    admin.pause("resume.q")
    worker = start_worker(dsn, "resume.q", tmp_path, "w", timeout=30)
    try:
        wait_until(lambda: started_count(db) >= 1, 30, "the worker to start", [worker])
        time.sleep(1.0)  # it drained (nothing claimable) and waits, up to 30 s
        assert processed_by(db, tid) == [], worker.describe()
        assert admin.task_info(tid).state == "waiting"
        t0 = time.monotonic()
        admin.resume("resume.q")
        wait_until(lambda: processed_by(db, tid), 10, "the resumed task to run", [worker])
        assert time.monotonic() - t0 < 3, worker.describe()
        assert client.wait(tid, timeout=10) == expected_reply(1)
        terminate_and_check([worker])
    finally:
        worker.kill()


# -- stop_workers ----------------------------------------------------------------------


def test_stop_workers_stops_a_worker_process_after_the_task_in_hand(
    dsn: str, db: psycopg.Connection[Any], client: jm.Client, admin: jm.Admin, tmp_path: Path
) -> None:
    worker = start_worker(dsn, "stop.q", tmp_path, "w", timeout=30, dead_after=2, sleep=1.5)
    try:
        wait_until(lambda: started_count(db) >= 1, 30, "the worker to start", [worker])
        tid = client.send({"seq": 5}, queue="stop.q")
        wait_until(lambda: processed_by(db, tid), 10, "the task to start", [worker])
        later = client.send({"seq": 6}, queue="stop.q")
        assert admin.stop_workers() == 1
        (info,) = admin.workers()
        assert info.command == "stop"
        code = worker.wait_exit(6)
        assert code == 0, worker.describe()
    finally:
        worker.kill()
    # The task in hand finished; the one behind it was left for another worker.
    assert client.wait(tid, timeout=1) == expected_reply(5)
    assert task_state(db, tid) == (jm.Status.FINISHED, 1)
    assert processed_by(db, later) == []
    assert task_state(db, later) == (jm.Status.WAITING, 0)
    assert admin.workers() == []


def test_stop_workers_by_id_stops_that_idle_worker_only(
    dsn: str, db: psycopg.Connection[Any], client: jm.Client, admin: jm.Admin, tmp_path: Path
) -> None:
    a = start_worker(dsn, "idle.q", tmp_path, "a", timeout=30, dead_after=2)
    b = start_worker(dsn, "idle.q", tmp_path, "b", timeout=30, dead_after=2)
    children = [a, b]
    try:
        wait_until(lambda: started_count(db) >= 2, 30, "2 workers to start", children)
        ids = {w.pid: w.id for w in admin.workers()}
        assert admin.stop_workers(ids[a.pid]) == 1
        t0 = time.monotonic()
        assert a.wait_exit(5) == 0, a.describe()
        assert time.monotonic() - t0 < 3, a.describe()
        time.sleep(1.2)  # two more heartbeats of b
        assert b.alive(), b.describe()
        assert [w.pid for w in admin.workers()] == [b.pid]
        tid = client.send({"seq": 9}, queue="idle.q")
        assert client.wait(tid, timeout=10) == expected_reply(9)
        assert processed_by(db, tid) == [b.pid]
        assert admin.stop_workers(10**9) == 0  # no such worker
        terminate_and_check([b])
    finally:
        kill_all(children)
