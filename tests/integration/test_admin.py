"""Admin: counts by queue and state, listings, workers, and cancel / retry /
remove / purge by hand, with their refusals."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

import job_machine as jm
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
    stats = {q.queue: q for q in admin.stats()}
    assert stats["job.task"] == jm.QueueStats("job.task", 1, 1, 0, 1, 1)
    assert stats["other.q"] == jm.QueueStats("other.q", 1, 0, 0, 0, 0)
    assert admin.status_string() == "W=2 D=1 R=0 done=1 F=1 workers=0"


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
        ({"state": "lost"}, "state must be one of waiting, running, done, failed"),
        ({"limit": 0}, "limit must be"),
        ({"queue": "bad queue"}, "queue"),
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
    assert admin.task_info(tid).state == "failed"
    with pytest.raises(ValueError, match="is 'failed': only a waiting task can be cancelled"):
        admin.cancel(tid)
    with pytest.raises(jm.UnknownTask):
        admin.cancel(tid + 1000)


def test_retry_sends_a_failed_task_again_with_fresh_attempts(
    dsn: str, client: jm.Client, admin: jm.Admin, conn: psycopg.Connection[Any]
) -> None:
    ids = _mix(dsn, client)
    admin.retry(ids["failed"], queue="retry.q")
    info = admin.task_info(ids["failed"])
    assert (info.state, info.attempts, info.queue) == ("waiting", 0, "retry.q")
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
        assert admin.status_string().endswith("R=1 done=0 F=0 workers=1")
        release.set()
        assert client.wait(tid, timeout=5) == "ok"
    assert admin.workers() == []


async def test_the_async_admin_has_the_same_answers(dsn: str, client: jm.Client) -> None:
    ids = _mix(dsn, client)
    async with jm.AsyncAdmin(dsn) as a:
        assert await a.status_string() == "W=2 D=1 R=0 done=1 F=1 workers=0"
        assert [t.id for t in await a.list_tasks(state="done")] == [ids["done"]]
        await a.cancel(ids["waiting"])
        assert (await a.task_info(ids["waiting"])).state == "failed"
