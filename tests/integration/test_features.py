"""The features of schema v3, through Client.send and Worker, on a real PostgreSQL:
delayed tasks, priorities, hierarchical routing, per-task attempts, title and
grouping, dependencies, notes, unique keys, per-task retention and the options
of send_many.

Where concurrency matters the actors are real OS processes (``python -c``
children of this file, each with its own connections), synchronised through a
PostgreSQL advisory lock the test holds: they all wait on it, and the test
releases it once every one of them is waiting, so they act at the same moment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import job_machine as jm
from job_machine._sync.housekeeper import Housekeeper
from tests.support.procs import wait_until
from tests.support.workers import Base, serving

ROOT = Path(__file__).resolve().parent.parent.parent
#: A DSN for objects that are never connected in the test.
NO_DB = "dbname=never_connected"

# -- helpers ------------------------------------------------------------------


class Recorder(Base):
    """Records every task (Base) and replies with its data."""

    def handle(self, task: jm.Task) -> None:
        self.reply(task.data)


class Raiser(Base):
    def handle(self, task: jm.Task) -> None:
        raise RuntimeError(f"attempt {task.attempt} broke")


def count_tasks(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM jobmachine.task").fetchone()
    assert row is not None
    return int(row[0])


def status_of(conn: psycopg.Connection[Any], tid: int) -> int | None:
    row = conn.execute("SELECT status FROM jobmachine.task WHERE task_id = %s", [tid]).fetchone()
    return None if row is None else int(row[0])


def drain(w: jm.Worker, most: int = 100) -> int:
    """work_once() until nothing is left; how many tasks it took."""
    n = 0
    while w.work_once():
        n += 1
        assert n <= most, "the worker never ran out of tasks"
    return n


def wait_due(conn: psycopg.Connection[Any], tid: int) -> None:
    """Wait until the database's clock passes the task's run_after."""
    wait_until(
        lambda: conn.execute(
            "SELECT run_after <= now() FROM jobmachine.task WHERE task_id = %s", [tid]
        ).fetchone()[0],  # type: ignore[index]
        what=f"task {tid} to fall due",
    )


def db_now(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


@contextmanager
def listening(dsn: str, channel: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        yield c


def payloads(listener: psycopg.Connection[Any], within: float = 0.3) -> list[str]:
    """The payloads heard within the next ``within`` seconds (and before)."""
    return [n.payload for n in listener.notifies(timeout=within)]


# -- child processes ------------------------------------------------------------

#: A child process: ``gate-worker DSN QUEUE KEY`` runs a worker whose process()
#: waits for the shared advisory lock KEY (held exclusively by the test) before
#: returning; ``sender DSN QUEUE KEY COUNT NKEYS`` waits for the lock, then sends
#: COUNT tasks with unique keys k0..k{NKEYS-1} in turn and prints
#: ``[[key, id], ...]`` as JSON.
CHILD = r"""
import json, logging, os, sys
import psycopg
import job_machine as jm

logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(asctime)s child[%(process)d] %(message)s")
role, dsn, queue, key = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
gate = psycopg.connect(dsn, autocommit=True)

def through_gate():
    gate.execute("SELECT pg_advisory_lock_shared(%s)", (key,))
    gate.execute("SELECT pg_advisory_unlock_shared(%s)", (key,))

if role == "gate-worker":
    class Gated(jm.Worker):
        def process(self, task):
            through_gate()

    Gated(dsn, queue=queue, timeout=30, prefetch=1, retries=0).receive()
else:
    count, nkeys = int(sys.argv[5]), int(sys.argv[6])
    client = jm.Client(dsn, queue=queue)
    through_gate()
    sent = []
    for i in range(count):
        k = f"k{i % nkeys}"
        sent.append([k, client.send({"i": i, "pid": os.getpid()}, unique_key=k)])
    client.close()
    print(json.dumps(sent))
"""


class Proc:
    """A ``python -c CHILD`` process, its output in files under ``log_dir``."""

    def __init__(self, log_dir: Path, name: str, *args: str) -> None:
        self.name = name
        self.out = log_dir / f"{name}.stdout"
        self.err = log_dir / f"{name}.stderr"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-c", CHILD, *args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    def describe(self) -> str:
        return (
            f"--- {self.name} returncode={self.popen.poll()} ---\n"
            f"{self.err.read_text(errors='replace')[-3000:]}"
        )

    def finish(self, timeout: float = 20) -> str:
        """Wait for a normal exit (code 0) and return its stdout."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 0, self.describe()
        return self.out.read_text()

    def terminate(self, timeout: float = 10) -> None:
        """SIGTERM; the worker must stop gracefully (exit 0)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        self.finish(timeout)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


@contextmanager
def procs(log_dir: Path) -> Iterator[list[Proc]]:
    """A list to start Procs into; whatever is still running at the end is killed."""
    children: list[Proc] = []
    try:
        yield children
    finally:
        for child in children:
            child.kill()


@contextmanager
def gate_closed(conn: psycopg.Connection[Any], key: int) -> Iterator[Callable[[int], None]]:
    """Hold advisory lock ``key`` exclusively; yields ``wait_waiters(n)``, which
    returns once ``n`` sessions are waiting for it. Released at the end."""

    def wait_waiters(n: int, timeout: float = 20) -> None:
        def waiting() -> bool:
            row = conn.execute(
                """SELECT count(*) FROM pg_locks
                    WHERE locktype = 'advisory' AND NOT granted
                      AND classid = 0 AND objid = %s AND objsubid = 1""",
                [key],
            ).fetchone()
            return row is not None and row[0] >= n

        wait_until(waiting, timeout, f"{n} sessions waiting at the gate")

    conn.execute("SELECT pg_advisory_lock(%s)", [key])
    try:
        yield wait_waiters
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", [key])


# == 1. delayed tasks ===========================================================

Q = "feat.q"


@pytest.mark.parametrize("how", ["delay", "timedelta", "run_after"])
def test_a_delayed_task_is_not_claimed_before_it_is_due(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any], how: str
) -> None:
    options: dict[str, Any] = {
        "delay": {"delay": 0.4},
        "timedelta": {"delay": timedelta(milliseconds=400)},
        "run_after": {"run_after": db_now(conn) + timedelta(milliseconds=400)},
    }[how]
    sent_at = db_now(conn)
    tid = client.send("later", queue=Q, **options)
    info = client.task_info(tid)
    assert info.state == "waiting"
    assert info.run_after is not None
    assert timedelta(milliseconds=300) < info.run_after - sent_at < timedelta(milliseconds=600)
    with Recorder(dsn, queue=Q) as w:
        assert w.work_once() is False  # not due yet
        assert status_of(conn, tid) == jm.Status.WAITING
        wait_due(conn, tid)
        assert w.work_once() is True
        assert [t.id for t in w.seen] == [tid]
    info = client.task_info(tid)
    assert info.state == "done"
    assert info.started is not None and info.started >= info.run_after


def test_an_undelayed_task_beside_a_delayed_one_runs_at_once(dsn: str, client: jm.Client) -> None:
    later = client.send("later", queue=Q, delay=60)
    now = client.send("now", queue=Q)
    with Recorder(dsn, queue=Q) as w:
        assert drain(w) == 1
    assert [t.id for t in w.seen] == [now]
    assert client.task_info(later).state == "waiting"


@pytest.mark.parametrize("before", [False, True])
def test_a_sleeping_worker_wakes_on_time_for_a_delayed_task(
    dsn: str, client: jm.Client, before: bool
) -> None:
    """The worker's timeout is 30 s: only the task's due time can wake it.
    ``before``: the delayed task is sent before the worker starts (it must
    read the due time at startup, not only on a notification)."""
    delay = 1.0
    w = Recorder(dsn, queue=Q, timeout=30)
    tid = client.send("delayed", delay=delay, queue=Q) if before else None
    with serving(w):
        if tid is None:
            w.wait_idle(after=0)  # the worker is asleep, waiting for news
            tid = client.send("delayed", delay=delay, queue=Q)
        assert client.wait(tid, timeout=10) == "delayed"
    info = client.task_info(tid)
    assert info.run_after is not None and info.started is not None
    # Never before due (the database's clock), and within a second after.
    assert info.started >= info.run_after, (info.started, info.run_after)
    assert info.started - info.run_after < timedelta(seconds=1), (info.started, info.run_after)


def test_a_sooner_delayed_task_wakes_a_worker_sleeping_for_a_later_one(
    dsn: str, client: jm.Client
) -> None:
    w = Recorder(dsn, queue=Q, timeout=30)
    late = client.send("late", delay=60, queue=Q)
    with serving(w):
        w.wait_idle(after=0)  # asleep until the late task's due time (60 s)
        soon = client.send("soon", delay=0.5, queue=Q)
        assert client.wait(soon, timeout=10) == "soon"
    info = client.task_info(soon)
    assert info.started is not None and info.run_after is not None
    assert info.started >= info.run_after
    assert info.started - info.run_after < timedelta(seconds=1)
    assert client.task_info(late).state == "waiting"


def test_a_pattern_worker_wakes_on_time_for_a_delayed_task_of_a_new_queue(
    dsn: str, client: jm.Client
) -> None:
    w = Recorder(dsn, queue="later.*", timeout=30)
    with serving(w):
        w.wait_idle(after=0)
        tid = client.send("x", queue="later.fresh", delay=0.8)
        assert client.wait(tid, timeout=10) == "x"
    info = client.task_info(tid)
    assert info.started is not None and info.run_after is not None
    assert info.run_after <= info.started < info.run_after + timedelta(seconds=1)


#: Bad options of send: (options, exception, what its message must say).
BAD_OPTIONS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"run_after": datetime(2030, 1, 1)}, ValueError, "run_after"),
    ({"run_after": "2030-01-01"}, TypeError, "run_after"),
    (
        {"run_after": datetime(2030, 1, 1, tzinfo=UTC), "delay": 5},
        ValueError,
        "run_after or delay",
    ),
    ({"delay": -1}, ValueError, "delay"),
    ({"delay": timedelta(seconds=-1)}, ValueError, "delay"),
    ({"delay": float("nan")}, ValueError, "delay"),
    ({"delay": float("inf")}, ValueError, "delay"),
    ({"delay": "5"}, ValueError, "delay"),
    ({"priority": 1.5}, TypeError, "priority"),
    ({"priority": True}, TypeError, "priority"),
    ({"priority": 2**31}, ValueError, "priority"),
    ({"attempts": 0}, ValueError, "attempts"),
    ({"attempts": 2.0}, ValueError, "attempts"),
    ({"remove_after": -5}, ValueError, "remove_after"),
    ({"remove_after": datetime(2030, 1, 1)}, ValueError, "remove_after"),
    ({"unique_key": ""}, ValueError, "unique_key"),
    ({"unique_key": 5}, TypeError, "unique_key"),
    ({"title": 5}, TypeError, "title"),
    ({"parents": 5}, TypeError, "parents"),
    ({"parents": "12"}, TypeError, "parents"),
    ({"parents": [0]}, ValueError, "parents"),
]


def test_bad_options_are_refused_and_nothing_is_inserted(
    client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    for options, error, match in BAD_OPTIONS:
        with pytest.raises(error, match=match):
            client.send("x", queue="feat.bad", **options)
        assert count_tasks(conn) == 0, options
    assert client.id is None


def test_send_many_refuses_bad_options_and_inserts_nothing(
    client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    with pytest.raises(ValueError, match="delay"):
        client.send_many([1, 2], queue=Q, delay=-1)
    with pytest.raises(ValueError, match="run_after"):
        client.send_many([1, 2], queue=Q, run_after=datetime(2030, 1, 1))
    assert count_tasks(conn) == 0


# == 2. priorities ==============================================================


def test_higher_priority_first_then_oldest_first(dsn: str, client: jm.Client) -> None:
    sent = [("low", -5), ("mid", 0), ("high", 10), ("mid2", 0), ("high2", 10), ("top", 99)]
    ids = {name: client.send(name, queue=Q, priority=p) for name, p in sent}
    with Recorder(dsn, queue=Q) as w:
        assert drain(w) == len(sent)
    assert [t.data for t in w.seen] == ["top", "high", "high2", "mid", "mid2", "low"]
    # process() sees each task's priority.
    assert [(t.id, t.priority) for t in w.seen] == [
        (ids[name], p) for name, p in sorted(sent, key=lambda s: -s[1])
    ]
    assert client.task_info(ids["top"]).priority == 99


def test_priority_order_holds_across_queues_and_through_a_serving_worker(
    dsn: str, client: jm.Client
) -> None:
    """A worker of two queues takes the best task of either; a serving worker
    claims short tasks in batches (prefetch) and must keep the order too."""
    expected: list[tuple[int, int]] = []
    for n in range(40):
        p = (n * 7) % 5
        tid = client.send({"n": n}, queue=("feat.a" if n % 2 else "feat.b"), priority=p)
        expected.append((p, tid))
    expected.sort(key=lambda pt: (-pt[0], pt[1]))
    w = Recorder(dsn, queue=["feat.a", "feat.b"], timeout=30)
    with serving(w):
        wait_until(lambda: len(w.seen) == len(expected), 10, "all tasks processed")
    assert [(t.priority, t.id) for t in w.seen] == expected


def test_min_priority_claims_only_tasks_at_or_above_it(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    ids = {p: client.send(f"p{p}", queue=Q, priority=p) for p in (-3, 0, 4, 5, 9)}
    with Recorder(dsn, queue=Q, min_priority=5) as w:
        assert drain(w) == 2
    assert [t.priority for t in w.seen] == [9, 5]
    assert all(t.priority >= 5 for t in w.seen)
    for p in (-3, 0, 4):
        assert status_of(conn, ids[p]) == jm.Status.WAITING
    with Recorder(dsn, queue=Q, min_priority=-3) as everyone:
        assert drain(everyone) == 3
    assert [t.priority for t in everyone.seen] == [4, 0, -3]


def test_a_serving_worker_with_min_priority_leaves_low_tasks_alone(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    low = client.send("low", queue=Q, priority=1)
    w = Recorder(dsn, queue=Q, timeout=30, min_priority=2)
    with serving(w):
        high = client.send("high", queue=Q, priority=2)
        assert client.wait(high, timeout=5) == "high"
        w.wait_drained()  # it looked for more after high: low stays
    assert [t.id for t in w.seen] == [high]
    assert status_of(conn, low) == jm.Status.WAITING


# == 3. hierarchical routing ====================================================


def test_patterns_serve_their_branch_only(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    names = ["gl", "gl.a", "gl.b", "gl.a.x", "gl.a.x.y", "glx.a", "other.a"]
    ids = {name: client.send(name, queue=name) for name in names}
    with Recorder(dsn, queue="gl.*") as one_level:
        drain(one_level)
    assert sorted(t.queue for t in one_level.seen) == ["gl.a", "gl.b"]
    assert all(t.data == t.queue for t in one_level.seen)

    with Recorder(dsn, queue="gl.**") as any_depth:
        drain(any_depth)
    assert sorted(t.queue for t in any_depth.seen) == ["gl.a.x", "gl.a.x.y"]

    # Exact names keep working, beside a pattern.
    with Recorder(dsn, queue=["gl", "other.*"]) as mixed:
        drain(mixed)
    assert sorted(t.queue for t in mixed.seen) == ["gl", "other.a"]
    assert status_of(conn, ids["glx.a"]) == jm.Status.WAITING


def test_top_level_patterns(dsn: str, client: jm.Client, conn: psycopg.Connection[Any]) -> None:
    for name in ["top", "a.b", "a.b.c"]:
        client.send(name, queue=name)
    with Recorder(dsn, queue="*") as top:
        drain(top)
    assert [t.queue for t in top.seen] == ["top"]
    with Recorder(dsn, queue="**") as everything:
        drain(everything)
    assert sorted(t.queue for t in everything.seen) == ["a.b", "a.b.c"]


@pytest.mark.parametrize("pattern", ["gl.*", "gl.**"])
def test_a_queue_created_after_the_worker_started_is_served_promptly(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any], pattern: str
) -> None:
    """The worker's timeout is 30 s: only LISTEN can bring these tasks in time."""
    client.send("old", queue="gl.old")
    w = Recorder(dsn, queue=pattern, timeout=30)
    with serving(w):
        w.wait_drained()  # asleep, with gl.old's task done
        not_mine = client.send("deep", queue="gl.new.deep") if pattern == "gl.*" else None
        elsewhere = client.send("elsewhere", queue="glnew")
        t0 = time.monotonic()
        first = client.send("first", queue="gl.new")
        assert client.wait(first, timeout=5) == "first"
        took_first = time.monotonic() - t0
        # Now an existing queue, heard on its own channel.
        w.wait_drained()
        t0 = time.monotonic()
        second = client.send("second", queue="gl.new")
        assert client.wait(second, timeout=5) == "second"
        took_second = time.monotonic() - t0
        if pattern == "gl.**":
            deep = client.send("deeper", queue="gl.new.deep.er")
            assert client.wait(deep, timeout=5) == "deeper"
        # A new queue made by send_many is announced too.
        many = client.send_many(["m1", "m2"], queue="gl.many")
        assert client.wait(many[-1], timeout=5) == "m2"
        assert client.wait(many[0], timeout=1) == "m1"
    assert took_first < 5 and took_second < 5, (took_first, took_second)
    assert "gl.new" in [t.queue for t in w.seen]
    assert status_of(conn, elsewhere) == jm.Status.WAITING
    if not_mine is not None:
        assert status_of(conn, not_mine) == jm.Status.WAITING


@pytest.mark.parametrize(
    "name", ["gl.*.x", "g*", "gl*", "*.gl", "gl.**.x", "gl.***", "gl.#", "gl. *"]
)
def test_a_wildcard_only_in_the_last_segment_makes_a_pattern(name: str) -> None:
    """Anything else is a queue name, as Perl allows (issue 14, item 8)."""
    # The constructor connects to nothing: no database needed.
    w = Recorder(NO_DB, queue=["gl.a", name])
    assert w._subscriber.served == ["gl.a", name] and w._subscriber.patterns == []
    with pytest.raises(jm.InvalidQueueName):
        Recorder(NO_DB, queue=["gl.a", ""])


@pytest.mark.parametrize("pattern", ["gl.*", "gl.**", "*", "**", "gl.a-b_c.*", "gl", "gl.a"])
def test_valid_subscriptions_are_accepted(pattern: str) -> None:
    assert Recorder(NO_DB, queue=pattern).queues == [pattern]


def test_a_queue_named_like_a_pattern_is_served_by_exact_only(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """A Perl client may name a queue ``gl.*``: it is a queue to send to;
    a worker serves it by that name with ``jm.Exact`` (a plain ``gl.*``
    is the pattern, which serves it too, as one level below ``gl``)."""
    ids = {name: [client.send("x", queue=name)] for name in ["gl.*", "gl.**", "*"]}
    ids["gl.**"] += client.send_many(["y"], queue="gl.**")
    assert count_tasks(conn) == 4
    for name, sent in ids.items():
        with Recorder(dsn, queue=jm.Exact(name)) as w:
            while w.work_once():
                pass
        assert sorted(t.id for t in w.seen) == sorted(sent), name


# == 4. per-task attempts, title and grouping ===================================


def test_attempts_1_fails_after_one_raise_despite_worker_retries(
    dsn: str, client: jm.Client
) -> None:
    once = client.send("once", queue=Q, attempts=1)
    default = client.send("default", queue=Q)
    with Raiser(dsn, queue=Q, retries=3, retry_backoff=0) as w:
        assert drain(w) == 1 + 4  # once: 1 attempt; default: retries + 1
    info = client.task_info(once)
    assert (info.state, info.attempts, info.max_attempts, len(info.errors)) == ("failed", 1, 1, 1)
    assert info.last_error["type"] == "RuntimeError"
    with pytest.raises(jm.TaskFailed, match="attempt 1 broke"):
        client.receive(once)
    assert client.task_info(default).attempts == 4


def test_attempts_5_runs_five_times_despite_retries_0(dsn: str, client: jm.Client) -> None:
    tid = client.send("five", queue=Q, attempts=5)
    with Raiser(dsn, queue=Q, retries=0, retry_backoff=0) as w:
        assert drain(w) == 5
    assert [t.attempt for t in w.seen] == [1, 2, 3, 4, 5]
    assert {t.max_attempts for t in w.seen} == {5}
    info = client.task_info(tid)
    assert (info.state, info.attempts) == ("failed", 5)
    assert [e["attempt"] for e in info.errors] == [1, 2, 3, 4, 5]


def test_attempts_lets_a_task_succeed_on_a_later_try(dsn: str, client: jm.Client) -> None:
    class ThirdTime(Base):
        def handle(self, task: jm.Task) -> None:
            if task.attempt < 3:
                raise RuntimeError("not yet")
            self.reply("ok")

    tid = client.send("x", queue=Q, attempts=3)
    with ThirdTime(dsn, queue=Q, retries=0, retry_backoff=0) as w:
        assert drain(w) == 3
    assert client.receive(tid) == "ok"
    assert client.task_info(tid).state == "done"


def test_title_and_grouping_are_stored_and_visible(dsn: str, client: jm.Client) -> None:
    tid = client.send({"n": 7}, queue=Q, title="Invoice 7", grouping="customer-42")
    plain = client.send({"n": 8}, queue=Q)
    with Recorder(dsn, queue=Q) as w:
        assert drain(w) == 2
    seen = {t.id: t for t in w.seen}
    assert (seen[tid].title, seen[tid].grouping) == ("Invoice 7", "customer-42")
    assert (seen[plain].title, seen[plain].grouping) == (None, None)
    info = client.task_info(tid)
    assert (info.title, info.grouping) == ("Invoice 7", "customer-42")
    with jm.Admin(dsn) as admin:
        listed = admin.list_tasks(grouping="customer-42")
    assert [(t.id, t.title, t.grouping) for t in listed] == [(tid, "Invoice 7", "customer-42")]


# == 5. dependencies ============================================================

P, C = "dep.parent", "dep.child"


def test_a_child_is_blocked_until_all_its_parents_are_done(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    p1 = client.send("p1", queue=P)
    p2 = client.send("p2", queue=P)
    child = client.send("child", queue=C, parents=[p1, p2, p1])
    info = client.task_info(child)
    assert (info.status, info.state) == (jm.Status.BLOCKED, "blocked")
    assert jm.Status.BLOCKED == 10
    assert info.parents == [p1, p2]
    assert client.task_info(p1).children == [child]
    with Recorder(dsn, queue=C) as children, Recorder(dsn, queue=P) as parents:
        assert children.work_once() is False
        assert parents.work_once() is True  # p1 done
        assert status_of(conn, p1) == jm.Status.FINISHED
        assert status_of(conn, child) == jm.Status.BLOCKED
        assert children.work_once() is False
        assert parents.work_once() is True  # p2 done: the child waits
        assert status_of(conn, child) == jm.Status.WAITING
        assert children.work_once() is True
        assert children.work_once() is False
    assert [t.id for t in children.seen] == [child]
    assert client.task_info(child).state == "done"


def test_a_serving_worker_is_woken_when_a_child_is_unblocked(dsn: str, client: jm.Client) -> None:
    parent = client.send("p", queue=P)
    child = client.send("c", queue=C, parents=[parent])
    w = Recorder(dsn, queue=C, timeout=30)
    with serving(w), Recorder(dsn, queue=P) as parents:
        w.wait_idle(after=0)
        assert w.seen == []  # blocked: not taken
        t0 = time.monotonic()
        assert parents.work_once()
        assert client.wait(child, timeout=5) == "c"
        took = time.monotonic() - t0
    assert took < 5, took
    assert [t.id for t in w.seen] == [child]


def test_a_failed_parent_fails_its_children_and_grandchildren(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    parent = client.send("p", queue=P, attempts=1)
    other = client.send("other", queue="dep.other")
    child = client.send("c", queue=C, parents=[parent, other])
    grandchild = client.send("g", queue=C, parents=[child])
    with listening(dsn, f"jmr:{grandchild}") as heard:
        with Raiser(dsn, queue=P) as w:
            assert w.work_once()
        assert status_of(conn, parent) == jm.Status.FAILED
        assert payloads(heard) == ["failed"]  # a client waiting on it is told
    info = client.task_info(child)
    assert (info.state, info.attempts) == ("failed", 0)  # never ran
    assert info.errors[-1]["type"] == "ParentFailed"
    assert info.errors[-1]["parent"] == parent
    assert str(parent) in info.errors[-1]["message"]
    ginfo = client.task_info(grandchild)
    assert (ginfo.state, ginfo.attempts) == ("failed", 0)
    assert ginfo.errors[-1]["type"] == "ParentFailed"
    assert ginfo.errors[-1]["parent"] == child
    with pytest.raises(jm.TaskFailed, match=str(child)):
        client.wait(grandchild, timeout=2)
    # The other parent is untouched, and nothing of the queue C runs.
    assert status_of(conn, other) == jm.Status.WAITING
    with Recorder(dsn, queue=C) as children:
        assert children.work_once() is False


def test_parents_already_done_or_failed(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    done = client.send("ok", queue=P)
    failed = client.send("bad", queue="dep.bad", attempts=1)
    with Recorder(dsn, queue=P) as ok:
        assert ok.work_once()
    with Raiser(dsn, queue="dep.bad") as bad:
        assert bad.work_once()
    assert status_of(conn, failed) == jm.Status.FAILED

    ready = client.send("ready", queue=C, parents=[done])
    assert client.task_info(ready).state == "waiting"

    doomed = client.send("doomed", queue=C, parents=[done, failed])
    info = client.task_info(doomed)
    assert (info.state, info.attempts) == ("failed", 0)
    assert info.errors[-1]["type"] == "ParentFailed"
    assert info.errors[-1]["parent"] == failed
    assert str(failed) in info.errors[-1]["message"]
    with Recorder(dsn, queue=C) as children:
        assert drain(children) == 1
    assert [t.id for t in children.seen] == [ready]


def test_an_unknown_parent_sends_nothing(client: jm.Client, conn: psycopg.Connection[Any]) -> None:
    parent = client.send("p", queue=P)
    with pytest.raises(jm.UnknownTask, match="999999"):
        client.send("c", queue=C, parents=[parent, 999999])
    assert count_tasks(conn) == 1
    with pytest.raises(jm.UnknownTask):
        client.send("c", queue=C, parents=[999999], unique_key="k")
    assert count_tasks(conn) == 1
    assert client.id == parent  # the current task is still the last one sent


def test_cancelling_a_parent_fails_its_blocked_children(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    parent = client.send("p", queue=P)
    child = client.send("c", queue=C, parents=[parent])
    grandchild = client.send("g", queue=C, parents=[child])
    with jm.Admin(dsn) as admin:
        admin.cancel(parent)
    assert client.task_info(parent).errors[-1]["type"] == "Cancelled"
    for tid, its_parent in ((child, parent), (grandchild, child)):
        info = client.task_info(tid)
        assert (info.state, info.attempts) == ("failed", 0)
        assert info.errors[-1]["type"] == "ParentFailed"
        assert info.errors[-1]["parent"] == its_parent


def test_cancelling_a_blocked_task_fails_its_own_children(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    root = client.send("r", queue=P)
    middle = client.send("m", queue=C, parents=[root])
    leaf = client.send("l", queue=C, parents=[middle])
    with jm.Admin(dsn) as admin:
        admin.cancel(middle)
    assert status_of(conn, middle) == jm.Status.FAILED
    assert status_of(conn, leaf) == jm.Status.FAILED
    assert status_of(conn, root) == jm.Status.WAITING


@pytest.mark.parametrize("parent_state", ["waiting", "blocked"])
def test_removing_a_parent_fails_its_blocked_children(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any], parent_state: str
) -> None:
    root = client.send("root", queue=P)
    parent = client.send("p", queue=P, parents=[root] if parent_state == "blocked" else None)
    assert client.task_info(parent).state == parent_state
    child = client.send("c", queue=C, parents=[parent])
    grandchild = client.send("g", queue=C, parents=[child])
    with jm.Admin(dsn) as admin:
        admin.remove(parent)
    assert status_of(conn, parent) is None
    info = client.task_info(child)
    assert (info.state, info.attempts) == ("failed", 0)
    assert info.errors[-1]["type"] == "ParentFailed"
    assert info.errors[-1]["parent"] == parent
    assert "removed" in info.errors[-1]["message"]
    assert client.task_info(grandchild).state == "failed"
    assert status_of(conn, root) == jm.Status.WAITING


def test_removing_a_done_parent_leaves_nothing_blocked(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    p1 = client.send("p1", queue=P)
    p2 = client.send("p2", queue=P)
    child = client.send("c", queue=C, parents=[p1, p2])
    with Recorder(dsn, queue=P) as w:
        assert w.work_once()  # p1 done
    with jm.Admin(dsn) as admin:
        admin.remove(p1)  # done: its children do not fail
    assert status_of(conn, child) == jm.Status.BLOCKED
    with Recorder(dsn, queue=P) as w:
        assert w.work_once()  # p2 done
    # p1 is gone, but it was done: the child must not stay blocked forever.
    assert status_of(conn, child) == jm.Status.WAITING


def test_two_parents_finished_at_once_by_two_processes_release_the_child_once(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Two worker processes hold one parent each, inside process(), waiting on
    a gate; the gate opens and both finish at the same moment. The child must
    become waiting (announced once on its queue) and run once, every round.

    The parents' queue is paused while a round's tasks are sent and resumed
    after, so that the workers claim the parents once the child exists (see
    test_a_parent_locked_by_a_child_being_sent_is_not_left_for_the_timeout for
    what happens otherwise)."""
    key = 7301
    rounds = 5
    conn.execute("INSERT INTO jobmachine.class (name) VALUES (%s)", [P])
    admin = jm.Admin(dsn)
    with (
        admin,
        procs(tmp_path) as children,
        gate_closed(conn, key) as wait_waiters,
        listening(dsn, f"jm:{C}") as heard,
        Recorder(dsn, queue=C) as runner,
    ):
        for n in range(2):
            children.append(Proc(tmp_path, f"gate-worker{n}", "gate-worker", dsn, P, str(key)))
        for r in range(rounds):
            admin.pause(P)
            p1 = client.send({"round": r, "p": 1}, queue=P)
            p2 = client.send({"round": r, "p": 2}, queue=P)
            child = client.send({"round": r}, queue=C, parents=[p1, p2])
            admin.resume(P)
            try:
                wait_waiters(2)  # each worker is in process() with one parent
            except AssertionError:
                raise AssertionError("\n".join(c.describe() for c in children)) from None
            holders = conn.execute(
                "SELECT count(DISTINCT worker_id) FROM jobmachine.task "
                "WHERE task_id = ANY(%s) AND status = 100",
                [[p1, p2]],
            ).fetchone()
            assert holders == (2,)
            conn.execute("SELECT pg_advisory_unlock(%s)", [key])  # open the gate
            wait_until(
                lambda p1=p1, p2=p2: status_of(conn, p1) == status_of(conn, p2) == 200,
                10,
                "both parents done",
            )
            conn.execute("SELECT pg_advisory_lock(%s)", [key])  # close it again
            assert status_of(conn, child) == jm.Status.WAITING, f"round {r}"
            assert payloads(heard, 0.1) == [str(child)], f"round {r}"
            assert drain(runner) == 1, f"round {r}"
            assert client.task_info(child).attempts == 1
        for c in children:
            c.terminate()  # idle now: a graceful stop
    assert [t.data["round"] for t in runner.seen] == list(range(rounds))


def test_a_parent_locked_by_a_child_being_sent_is_not_left_for_the_timeout(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """Sending a child locks its parents' rows (task_insert sets their
    has_children). A worker that looks for work meanwhile skips them (SKIP
    LOCKED); nothing must leave it asleep for its whole timeout (30 s) with a
    parent due. Here the child is sent in a transaction that is still open
    when the parent falls due; the same happens, for a shorter moment, with
    an autocommit send right after the parent's (found by the test above)."""
    w = Recorder(dsn, queue=P, timeout=30)
    with serving(w), psycopg.connect(dsn, autocommit=True) as tx:
        asleep = w.wait_idle(after=0)
        parent = client.send("p", queue=P, delay=0.5)
        w.wait_idle(after=asleep)  # the worker sleeps until the parent is due
        with tx.transaction():
            child = jm.Client(conn=tx).send("c", queue=C, parents=[parent])  # locks the parent
            wait_due(conn, parent)
            w.wait_idle()  # the worker woke for the parent meanwhile, and sleeps again
        assert client.task_info(child).state == "blocked"
        t0 = time.monotonic()
        wait_until(
            lambda: status_of(conn, parent) == jm.Status.FINISHED,
            5,
            "the parent to be processed after the child's transaction ended",
        )
        took = time.monotonic() - t0
    assert took < 5
    assert client.task_info(child).state == "waiting"


# == 6. notes ===================================================================


def test_notes_from_client_and_worker(dsn: str, client: jm.Client) -> None:
    class Noter(Base):
        def handle(self, task: jm.Task) -> None:
            self.note(progress=50, step={"name": "parse", "items": [1, 2]})
            self.note(owner=None)  # removed
            self.note(progress=100)

    tid = client.send("x", queue=Q)
    assert client.task_info(tid).notes == {}
    client.note(tid, owner="alice", progress=0, keep=True)
    assert client.task_info(tid).notes == {"owner": "alice", "progress": 0, "keep": True}
    with Noter(dsn, queue=Q) as w:
        assert w.work_once()
    info = client.task_info(tid)
    assert info.state == "done"
    assert info.notes == {"progress": 100, "step": {"name": "parse", "items": [1, 2]}, "keep": True}
    client.note(tid, keep=None, missing=None)
    assert client.task_info(tid).notes == {
        "progress": 100,
        "step": {"name": "parse", "items": [1, 2]},
    }
    client.note(tid)  # nothing to do
    # The current task by default; odd keys and values survive the round trip.
    client.note(**{'we"ird \\ key': 'naïve "text"', "null_text": "null", "list": []})
    notes = client.task_info(tid).notes
    assert notes['we"ird \\ key'] == 'naïve "text"'
    assert notes["null_text"] == "null"
    assert notes["list"] == []


def test_notes_errors(dsn: str, client: jm.Client) -> None:
    tid = client.send("x", queue=Q)
    client.note(tid, a=1)
    with pytest.raises(jm.UnknownTask):
        client.note(999999, a=1)
    with pytest.raises(jm.InvalidData, match="b"):
        client.note(tid, a=2, b=object())
    with pytest.raises(jm.InvalidData):
        client.note(tid, a=3, c=float("nan"))
    assert client.task_info(tid).notes == {"a": 1}  # nothing written

    class BadNoter(Base):
        def handle(self, task: jm.Task) -> None:
            with pytest.raises(jm.InvalidData):
                self.note(x={1, 2})
            self.note(y=2)
            self.reply("ok")

    with BadNoter(dsn, queue=Q) as w:
        assert w.work_once()
    assert client.task_info(tid).notes == {"a": 1, "y": 2}


# == 7. unique keys =============================================================


def test_a_unique_key_is_held_while_waiting_or_running(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    first = client.send("a", queue=Q, unique_key="k")
    assert client.send("b", queue=Q, unique_key="k") == first
    assert client.id == first
    assert client.task_info(first).unique_key == "k"
    other_key = client.send("c", queue=Q, unique_key="k2")
    other_queue = client.send("d", queue="feat.other", unique_key="k")
    no_key = client.send("e", queue=Q)
    assert len({first, other_key, other_queue, no_key}) == 4
    assert count_tasks(conn) == 4

    during: list[int] = []

    class SendsAgain(Base):
        def handle(self, task: jm.Task) -> None:
            with jm.Client(dsn) as c:
                during.append(c.send("again", queue=Q, unique_key="k"))
            self.reply("ok")

    with SendsAgain(dsn, queue=Q) as w:
        assert w.work_once()
    assert w.seen[0].id == first
    assert during == [first]  # it was running: still the same task
    assert client.task_info(first).state == "done"

    after = client.send("f", queue=Q, unique_key="k")
    assert after not in {first, other_key, other_queue, no_key}
    assert client.task_info(after).state == "waiting"
    assert client.send("g", queue=Q, unique_key="k") == after


def test_a_failed_task_frees_its_unique_key(dsn: str, client: jm.Client) -> None:
    first = client.send("a", queue=Q, unique_key="k", attempts=1)
    with Raiser(dsn, queue=Q) as w:
        assert w.work_once()
    assert client.task_info(first).state == "failed"
    second = client.send("b", queue=Q, unique_key="k")
    assert second != first
    # A blocked task holds its key too.
    parent = client.send("p", queue=P)
    blocked = client.send("c", queue=C, unique_key="b", parents=[parent])
    assert client.send("d", queue=C, unique_key="b") == blocked


_LIVE_DUPLICATES = """
SELECT t.class_id, t.unique_key, array_agg(t.task_id)
  FROM jobmachine.task t
 WHERE t.unique_key IS NOT NULL AND t.status IN (0, 10, 100)
 GROUP BY 1, 2 HAVING count(*) > 1
"""


def _run_senders(
    dsn: str,
    conn: psycopg.Connection[Any],
    tmp_path: Path,
    queue: str,
    key: int,
) -> list[list[tuple[str, int]]]:
    """4 processes x 50 sends of keys k0..k4, released at once; their results."""
    with procs(tmp_path) as children:
        with gate_closed(conn, key) as wait_waiters:
            for n in range(4):
                children.append(
                    Proc(tmp_path, f"{queue}-sender{n}", "sender", dsn, queue, str(key), "50", "5")
                )
            try:
                wait_waiters(4)
            except AssertionError:
                raise AssertionError("\n".join(c.describe() for c in children)) from None
        # The gate is open: all four send at once. Watch the table meanwhile.

        def finished_without_duplicates() -> bool:
            assert conn.execute(_LIVE_DUPLICATES).fetchall() == []
            return all(c.popen.poll() is not None for c in children)

        wait_until(finished_without_duplicates, 120, "the senders to finish", interval=0.005)
        return [[(k, int(i)) for k, i in json.loads(c.finish())] for c in children]


def test_unique_keys_under_concurrent_senders(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Nobody takes the tasks: every process must get the same task per key."""
    results = _run_senders(dsn, conn, tmp_path, "uniq.idle", 7302)
    assert conn.execute(_LIVE_DUPLICATES).fetchall() == []
    assert count_tasks(conn) == 5
    ids: dict[str, set[int]] = {}
    for sent in results:
        assert len(sent) == 50
        for k, tid in sent:
            ids.setdefault(k, set()).add(tid)
    assert sorted(ids) == [f"k{n}" for n in range(5)]
    assert all(len(s) == 1 for s in ids.values()), ids
    rows = conn.execute("SELECT task_id, unique_key FROM jobmachine.task").fetchall()
    assert {k: {tid} for tid, k in rows} == ids


def test_unique_keys_under_concurrent_senders_and_a_worker(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A worker finishes the tasks meanwhile, freeing the keys: new tasks are
    made, but never two live tasks of one key."""
    queue = "uniq.busy"
    w = Recorder(dsn, queue=queue, timeout=30)
    with serving(w):
        results = _run_senders(dsn, conn, tmp_path, queue, 7303)
        wait_until(
            lambda: (
                conn.execute("SELECT count(*) FROM jobmachine.task WHERE status <> 200").fetchone()
                == (0,)
            ),
            10,
            "every task done",
        )
    rows = dict(conn.execute("SELECT task_id, unique_key FROM jobmachine.task").fetchall())
    for sent in results:
        assert len(sent) == 50
        for k, tid in sent:
            assert rows.get(tid) == k, (k, tid)
    assert len(w.seen) == len(rows) >= 5
    assert len({t.id for t in w.seen}) == len(w.seen)  # each ran once


# == 8. per-task retention ======================================================


def test_remove_after_per_task(dsn: str, client: jm.Client, conn: psycopg.Connection[Any]) -> None:
    short = client.send("short", queue=Q, remove_after=0.5)
    kept = client.send("kept", queue=Q)
    hour = client.send("hour", queue=Q, remove_after=timedelta(hours=1))
    unfinished = client.send("unfinished", queue="feat.idle", remove_after=0.5)
    at = client.send("at", queue=Q, remove_after=db_now(conn) + timedelta(hours=2))
    assert client.task_info(short).keep_for == 0.5
    assert client.task_info(at).remove_after is not None
    with Recorder(dsn, queue=Q) as w:
        assert drain(w) == 4
        counts = w.housekeeping()
        assert counts.ran and counts.removed == 0  # not yet
        assert status_of(conn, short) == jm.Status.FINISHED
        wait_until(
            lambda: (
                conn.execute(
                    "SELECT modified + interval '0.5 s' < now() FROM jobmachine.task "
                    "WHERE task_id = %s",
                    [short],
                ).fetchone()
                == (True,)
            ),
            what="the short task's time to pass",
        )
        counts = w.housekeeping()
        assert counts.removed == 1
        assert status_of(conn, short) is None
        assert conn.execute(
            "SELECT count(*) FROM jobmachine.result WHERE task_id = %s", [short]
        ).fetchone() == (0,)
        assert status_of(conn, kept) == jm.Status.FINISHED  # default: 30 days
        assert status_of(conn, hour) == jm.Status.FINISHED
        assert status_of(conn, at) == jm.Status.FINISHED
        assert status_of(conn, unfinished) == jm.Status.WAITING

        def chores_at(later: timedelta) -> int:
            counts = Housekeeper(w._store).run(
                retries=w.retries,
                remove_after_days=w.remove_after,
                grace=w.dead_after / 2,
                max_runtime=None,
                orphan_after=w.orphan_after,
                now=db_now(conn) + later,
            )
            return counts.removed

        assert chores_at(timedelta(minutes=61)) == 1  # the hour is over
        assert status_of(conn, hour) is None
        assert status_of(conn, at) == jm.Status.FINISHED
        assert chores_at(timedelta(hours=2, minutes=1)) == 1  # its time has come
        assert status_of(conn, at) is None
        assert status_of(conn, kept) == jm.Status.FINISHED
        assert chores_at(timedelta(days=29)) == 0
        assert chores_at(timedelta(days=31)) == 1  # the default retention
        assert status_of(conn, kept) is None
        assert status_of(conn, unfinished) == jm.Status.WAITING  # never while unfinished


# == 9. send_many options =======================================================


def test_send_many_applies_priority_and_delay_to_every_task(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    urgent = client.send_many([1, 2, 3], queue=Q, priority=5)
    delayed = client.send_many(["a", "b"], queue=Q, delay=0.4, title="batch", attempts=2)
    plain = client.send("plain", queue=Q)
    for tid in urgent:
        assert client.task_info(tid).priority == 5
    for tid in delayed:
        info = client.task_info(tid)
        assert info.run_after is not None and info.run_after > info.created
        assert (info.title, info.max_attempts) == ("batch", 2)
    with Recorder(dsn, queue=Q) as w:
        assert drain(w) == 4  # the delayed ones are not due
        assert [t.id for t in w.seen] == [*urgent, plain]
        wait_due(conn, delayed[-1])
        assert drain(w) == 2
    assert [t.id for t in w.seen[4:]] == delayed
    assert all(t.title == "batch" and t.max_attempts == 2 for t in w.seen[4:])


def test_send_many_with_run_after(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    when = db_now(conn) + timedelta(hours=1)
    ids = client.send_many([1, 2], queue=Q, run_after=when, priority=-1)
    for tid in ids:
        info = client.task_info(tid)
        assert (info.run_after, info.priority) == (when, -1)
    with Recorder(dsn, queue=Q) as w:
        assert w.work_once() is False


def test_retention_removes_in_bounded_batches_per_round(
    client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """Each round removes at most remove_limit * max_batches finished tasks, in
    batches, from both the default and the per-task branch; the rest go next round."""
    old = client.send_many(list(range(25)), queue=Q)
    own = client.send_many(list(range(5)), queue=Q, remove_after=1)
    waiting = client.send("still waiting", queue=Q)
    conn.execute(
        "UPDATE jobmachine.task SET status = 200, modified = now() - interval '40 days' "
        "WHERE task_id = ANY(%s)",
        [old + own],
    )
    store = client._store

    def round_removes() -> int:
        counts = Housekeeper(store).run(
            retries=3,
            remove_after_days=30,
            grace=1.0,
            max_runtime=None,
            orphan_after=1800,
            remove_limit=4,
            max_batches=3,
        )
        return counts.removed

    def left() -> int:
        row = conn.execute(
            "SELECT count(*) FROM jobmachine.task WHERE task_id = ANY(%s)", [old + own]
        ).fetchone()
        assert row is not None
        return int(row[0])

    # A batch takes up to 4 from each branch (task_remove_old's two LIMITs):
    # three batches remove at most 24, and the round stops there.
    first = round_removes()
    assert 12 <= first <= 24 and left() == 30 - first
    while left():
        assert 0 < round_removes() <= 24
    assert status_of(conn, waiting) == jm.Status.WAITING  # never a waiting task


def test_a_busy_pattern_worker_finds_a_queue_created_silently_within_its_timeout(
    dsn: str, client: jm.Client
) -> None:
    """A pattern worker kept busy by a steady stream of notifications (a
    task every 0.3 s, timeout 1 s) still reads its queue list every
    ``timeout``: a queue a Perl client creates (no ``jmq`` notification) is
    served within about twice the timeout. Before, only a quiet timeout
    made it look, and the stream postponed that forever."""
    from tests.integration.test_perl_compat import Perl  # noqa: PLC0415

    client.send("first", queue="gl.busy")  # the queue exists: the worker listens on it
    w = Recorder(dsn, queue="gl.*", timeout=1)
    stop = threading.Event()

    def feed() -> None:
        with jm.Client(dsn, queue="gl.busy") as feeder:
            while not stop.wait(0.3):
                feeder.send("busy")

    feeder = threading.Thread(target=feed, daemon=True)
    with serving(w):
        feeder.start()
        try:
            # The stream has gone on for longer than the timeout.
            wait_until(
                lambda: sum(t.queue == "gl.busy" for t in w.seen) >= 6,
                10,
                "the worker busy with the stream",
            )
            perl = Perl(dsn)
            try:
                tid = perl.send("gl.new", {"data": "from perl"})
            finally:
                perl.close()
            assert client.wait(tid, timeout=2.5) == {"data": "from perl"}
        finally:
            stop.set()
            feeder.join(5)
