"""Commands for running workers (Admin.broadcast, Worker.on_command and the
built-in handlers), and Worker.work_once(task_id=)."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

import psycopg
import pytest

import job_machine as jm
from tests.support.procs import wait_until
from tests.support.workers import Base, serving


class Gate(Base):
    """Holds every task until ``release`` is set; counts the tasks in hand."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.in_hand = 0
        self.most = 0

    def handle(self, task: jm.Task) -> None:
        with self.lock:
            self.in_hand += 1
            self.most = max(self.most, self.in_hand)
        self.release.wait(30)
        with self.lock:
            self.in_hand -= 1
        self.reply("ok")


def _pending(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM jobmachine.worker_command").fetchone()
    return int(row[0]) if row else -1


def test_a_broadcast_runs_each_workers_handler_once_in_order(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    one, two = Base(dsn, dead_after=1), Base(dsn, dead_after=1)
    got: dict[str, list[Any]] = {"one": [], "two": []}
    one.on_command("reload", lambda args: got["one"].append(args))

    @two.on_command("reload")
    def reload(args: Any) -> None:
        got["two"].append(args)

    with serving(one), serving(two), jm.Admin(dsn) as admin:
        assert admin.broadcast("reload", {"n": 1}) == 2
        assert admin.broadcast("reload", [2]) == 2
        assert one.worker_id is not None
        assert admin.broadcast("reload", None, worker_ids=[one.worker_id]) == 1
        assert admin.broadcast("reload", 4, worker_ids=[999_999]) == 0
        wait_until(lambda: len(got["one"]) == 3 and len(got["two"]) == 2, 10, "the commands")
        wait_until(lambda: _pending(conn) == 0, 10, "the commands taken")
    assert got == {"one": [{"n": 1}, [2], None], "two": [{"n": 1}, [2]]}


def test_the_concurrency_command_lets_a_running_worker_run_more_at_once(dsn: str) -> None:
    w = Gate(dsn, queue="cmd.c", concurrency=2, dead_after=1)
    with serving(w), jm.Admin(dsn) as admin, jm.Client(dsn, queue="cmd.c") as client:
        assert admin.broadcast("concurrency", 3) == 1
        wait_until(lambda: w.concurrency == 3, 10, "concurrency 3")
        ids = client.send_many(list(range(4)))
        try:
            wait_until(lambda: w.in_hand == 3, 10, "three tasks at once")
        finally:
            w.release.set()
        for task_id in ids:
            client.wait(task_id, timeout=10)
        assert w.most == 3
        assert w._own_pool.pool is not None and w._own_pool.pool.max_size == 3
        # Down again, to one at a time: still in slots.
        admin.broadcast("concurrency", 1)
        wait_until(lambda: w.concurrency == 1, 10, "concurrency 1")


def test_built_in_commands_status_stop_and_refusals(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="job_machine")
    w = Base(dsn, queue="cmd.s", dead_after=1)
    with serving(w), jm.Admin(dsn) as admin:
        admin.broadcast("status")
        wait_until(lambda: "status {" in caplog.text, 10, "the status logged")
        assert f'"worker_id":{w.worker_id}' in caplog.text
        assert '"queues":["cmd.s"]' in caplog.text
        # Started with concurrency 1: it runs tasks one by one and stays so.
        admin.broadcast("concurrency", 4)
        admin.broadcast("concurrency", "many")
        admin.broadcast("no-such-command", {"x": 1})
        wait_until(lambda: "unknown command 'no-such-command'" in caplog.text, 10, "the warning")
        assert "concurrency 4 refused" in caplog.text
        assert "concurrency must be a whole number >= 1, not 'many'" in caplog.text
        assert w.concurrency == 1
        admin.broadcast("stop")
        wait_until(lambda: "asked to stop" in caplog.text, 10, "the stop")
    assert w.status()["worker_id"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("",), "command must be a non-empty string"),
        ((None,), "command must be a non-empty string"),
        (("x" * 201,), "up to 200 characters"),
        (("a\x00b",), "contains NUL"),
        (("x", object()), "cannot be encoded as JSON"),
        (("x", None, "12"), "worker_ids must be a list"),
        (("x", None, [1.5]), "worker_ids must be a list"),
    ],
)
def test_a_bad_broadcast_is_refused(
    dsn: str, conn: psycopg.Connection[Any], args: tuple[Any, ...], message: str
) -> None:
    conn.execute("INSERT INTO jobmachine.worker (host, pid, queues) VALUES ('h', 1, '{q}')")
    with jm.Admin(dsn) as admin, pytest.raises((ValueError, jm.InvalidData), match=message):
        admin.broadcast(*args)
    assert _pending(conn) == 0


def test_work_once_with_a_task_id_claims_that_task_only_if_it_waits(dsn: str) -> None:
    with jm.Client(dsn, queue="once.q") as client, jm.Admin(dsn) as admin:
        first, second = client.send_many([1, 2])
        elsewhere = client.send(3, queue="once.other")
        later = client.send(4, delay=timedelta(hours=1))
        low = client.send(5, priority=-5)
        w = Base(dsn, queue="once.q", min_priority=0)
        for task_id in (elsewhere, later, low, 999_999):
            assert not w.work_once(task_id=task_id), task_id
        assert w.work_once(task_id=second)
        assert [t.id for t in w.seen] == [second]
        assert not w.work_once(task_id=second)  # done now
        admin.pause("once.q")
        assert not w.work_once(task_id=first)
        admin.resume("once.q")
        # Within the queue's limits: while its one slot is taken, nothing.
        third = client.send(6)
        admin.set_limits("once.q", concurrency=1)
        with jm.Worker(dsn, queue="once.q") as holder:
            (held,) = holder._claim(1, first)
            assert not w.work_once(task_id=third)
            holder._store.task_done(held.id, held.attempt)
        assert w.work_once(task_id=third)
        assert [t.id for t in w.seen] == [second, third]
        with pytest.raises(ValueError, match="task_id must be a task id"):
            w.work_once(task_id="1")  # type: ignore[arg-type]
        w.close()


def test_the_cli_broadcasts_to_every_worker_or_those_named(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    from tests.integration.test_cli import cli, failed, ok  # noqa: PLC0415

    ids = [
        conn.execute(
            "INSERT INTO jobmachine.worker (host, pid, queues) VALUES ('h', %s, '{q}')"
            " RETURNING worker_id",
            (pid,),
        ).fetchone()[0]  # type: ignore[index]
        for pid in (1, 2)
    ]
    assert ok(cli("workers", "broadcast", "reload", '{"a": 1}', dsn=dsn)) == (
        "sent reload to 2 workers\n"
    )
    assert ok(cli("workers", "broadcast", "status", "--worker", str(ids[1]), dsn=dsn)) == (
        "sent status to 1 worker\n"
    )
    assert "not valid JSON" in failed(cli("workers", "broadcast", "x", "{", dsn=dsn), 2)
    rows = conn.execute(
        "SELECT worker_id, command, args FROM jobmachine.worker_command ORDER BY command_id"
    ).fetchall()
    assert rows == [
        (ids[0], "reload", '{"a":1}'),
        (ids[1], "reload", '{"a":1}'),
        (ids[1], "status", None),
    ]
