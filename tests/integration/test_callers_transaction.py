"""The caller's connection (``conn=``) keeps psycopg's transaction semantics.

On a non-autocommit connection a psycopg user is in a transaction from the
first statement until *they* commit or roll back: no call of job_machine
commits it (send, send_many, the reads, notes, locks, every Admin action,
a worker's work_once() and housekeeping()). On an autocommit connection
every call is its own transaction."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

import job_machine as jm
from tests.support.rows import task_state
from tests.support.workers import Base

QUEUE = "job.task"


@contextmanager
def listening(dsn: str, channel: str) -> Iterator[psycopg.Connection[Any]]:
    """A second connection that LISTENs on ``channel``."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        yield c


def payloads(c: psycopg.Connection[Any], expect: int) -> list[str]:
    """The payloads of the next ``expect`` notifications (waiting up to 10 s)."""
    return [n.payload for n in c.notifies(timeout=10, stop_after=expect)]


def count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM jobmachine.{table}").fetchone()
    assert row is not None
    return int(row[0])


@contextmanager
def callers(dsn: str, autocommit: bool = False) -> Iterator[psycopg.Connection[Any]]:
    """A caller's connection, fresh and idle."""
    with psycopg.connect(dsn, autocommit=autocommit) as c:
        assert c.info.transaction_status == TransactionStatus.IDLE
        yield c


def test_send_then_rollback_leaves_no_task_and_wakes_no_worker(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with listening(dsn, f"jm:{QUEUE}") as heard, callers(dsn) as user:
        c = jm.Client(conn=user, queue=QUEUE)
        c.send({"in": "the caller's transaction"})
        c.send_many([1, 2])
        # Our statements opened the caller's transaction and left it open.
        assert user.info.transaction_status == TransactionStatus.INTRANS
        user.rollback()
        assert count(conn, "task") == 0
        assert count(conn, "class") == 0
        # A task committed after the rollback is the first thing a worker hears.
        with jm.Client(dsn, queue=QUEUE) as other:
            marker = other.send("marker")
        assert payloads(heard, 1) == [str(marker)]


def test_send_then_commit_delivers(dsn: str, conn: psycopg.Connection[Any]) -> None:
    with listening(dsn, f"jm:{QUEUE}") as heard, callers(dsn) as user:
        c = jm.Client(conn=user, queue=QUEUE)
        tid = c.send({"n": 1})
        assert user.info.transaction_status == TransactionStatus.INTRANS
        assert count(conn, "task") == 0  # not before the caller commits
        user.commit()
        assert payloads(heard, 1) == [str(tid)]
        with Base(dsn) as w:
            assert w.work_once()
        assert c.wait(tid, timeout=5) == {"echo": {"n": 1}}
        assert user.autocommit is False  # wait() restored the caller's setting


async def test_async_send_then_rollback_leaves_no_task(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as user:
        c = jm.AsyncClient(conn=user, queue=QUEUE)
        await c.send("async")
        assert user.info.transaction_status == TransactionStatus.INTRANS
        await user.rollback()
        assert count(conn, "task") == 0
        tid = await c.send("kept")
        await user.commit()
        assert task_state(conn, tid) == (0, 0)


def test_an_autocommit_connection_commits_each_call(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with callers(dsn, autocommit=True) as user:
        c = jm.Client(conn=user, queue=QUEUE)
        tid = c.send("one")
        assert user.info.transaction_status == TransactionStatus.IDLE
        assert task_state(conn, tid) == (0, 0)
        c.send_many(["two", "three"])
        assert count(conn, "task") == 3
        c.note(tid, seen=True)
        assert conn.execute(
            "SELECT notes FROM jobmachine.task WHERE task_id = %s", (tid,)
        ).fetchone() == ({"seen": True},)
        with jm.Admin(conn=user) as admin:
            admin.cancel(tid)
        assert task_state(conn, tid) == (900, 0)
        with Base(conn=user) as w:
            assert w.work_once()
        assert user.info.transaction_status == TransactionStatus.IDLE
        assert conn.execute(
            "SELECT count(*) FROM jobmachine.task WHERE status = 200"
        ).fetchone() == (1,)


# -- every call on a non-autocommit connection ----------------------------------


def _fixture(dsn: str) -> dict[str, int]:
    """Committed beforehand: a done task (with a reply), a failed one, a
    waiting one, a finished one 40 days old, and a held named lock."""
    with jm.Client(dsn, queue=QUEUE) as c:
        done = c.send("done")
        with Base(dsn) as w:
            assert w.work_once()
        failed = c.send("failed")
        waiting = c.send("waiting")
        old = c.send("old")
        c.lock("held", 600)
    with psycopg.connect(dsn, autocommit=True) as a:
        a.execute("UPDATE jobmachine.task SET status = 900 WHERE task_id = %s", (failed,))
        a.execute(
            "UPDATE jobmachine.task SET status = 200, modified = now() - interval '40 days'"
            " WHERE task_id = %s",
            (old,),
        )
    return {"done": done, "failed": failed, "waiting": waiting, "old": old}


def _snapshot(conn: psycopg.Connection[Any]) -> list[Any]:
    """Everything a call could change."""
    return [
        conn.execute(
            "SELECT task_id, status, attempts, notes, modified, class_id FROM jobmachine.task"
            " ORDER BY task_id"
        ).fetchall(),
        conn.execute("SELECT result_id FROM jobmachine.result ORDER BY 1").fetchall(),
        conn.execute("SELECT class_id, name, paused FROM jobmachine.class ORDER BY 1").fetchall(),
        conn.execute("SELECT lock_id, name, expires FROM jobmachine.lock ORDER BY 1").fetchall(),
        conn.execute("SELECT worker_id, command FROM jobmachine.worker ORDER BY 1").fetchall(),
    ]


Call = Callable[[psycopg.Connection[Any], dict[str, int]], Any]


def _client(user: psycopg.Connection[Any]) -> jm.Client:
    return jm.Client(conn=user, queue=QUEUE)


def _admin(user: psycopg.Connection[Any]) -> jm.Admin:
    return jm.Admin(conn=user)


CALLS: dict[str, Call] = {
    "send": lambda u, ids: _client(u).send("x"),
    "send_many": lambda u, ids: _client(u).send_many(["x", "y"]),
    "send with a unique key": lambda u, ids: _client(u).send("x", unique_key="k"),
    "check": lambda u, ids: _client(u).check(ids["done"]),
    "receive": lambda u, ids: _client(u).receive(ids["done"]),
    "task_info": lambda u, ids: _client(u).task_info(ids["done"]),
    "note": lambda u, ids: _client(u).note(ids["waiting"], by="caller"),
    "lock": lambda u, ids: _client(u).lock("fresh", 60),
    "lock_free": lambda u, ids: _client(u).lock_free("fresh"),
    "unlock": lambda u, ids: _client(u).unlock("held"),
    "admin stats": lambda u, ids: _admin(u).stats(),
    "admin list_tasks": lambda u, ids: _admin(u).list_tasks(),
    "admin workers": lambda u, ids: _admin(u).workers(),
    "admin cancel": lambda u, ids: _admin(u).cancel(ids["waiting"]),
    "admin retry": lambda u, ids: _admin(u).retry(ids["failed"]),
    "admin remove": lambda u, ids: _admin(u).remove(ids["done"]),
    "admin purge": lambda u, ids: _admin(u).purge(),
    "admin pause": lambda u, ids: _admin(u).pause(QUEUE),
    "admin stop_workers": lambda u, ids: _admin(u).stop_workers(),
    "worker work_once": lambda u, ids: Base(conn=u).work_once(),
    "worker housekeeping": lambda u, ids: Base(conn=u).housekeeping(),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_no_call_commits_a_non_autocommit_connection(
    dsn: str, conn: psycopg.Connection[Any], name: str
) -> None:
    ids = _fixture(dsn)
    before = _snapshot(conn)
    with callers(dsn) as user:
        CALLS[name](user, ids)
        assert user.info.transaction_status == TransactionStatus.INTRANS
        assert _snapshot(conn) == before  # nothing visible before the caller commits
        user.rollback()
    assert _snapshot(conn) == before


def test_a_call_inside_the_callers_transaction_is_committed_with_it(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    ids = _fixture(dsn)
    with callers(dsn) as user:
        Base(conn=user).work_once()
        _admin(user).retry(ids["failed"])
        user.commit()
    assert task_state(conn, ids["waiting"]) == (200, 1)
    assert task_state(conn, ids["failed"])[0] == 0


def test_a_failing_call_leaves_the_callers_work_intact(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with jm.Client(dsn, queue=QUEUE) as c:
        first = c.send("a", unique_key="k")
        with Base(dsn) as w:
            assert w.work_once()
        c.send("b", unique_key="k")  # now holds the key
    with callers(dsn) as user:
        # Idle: the failed statement is undone, the connection usable.
        with pytest.raises(ValueError, match="holds its unique key"):
            _admin(user).retry(first)
        assert user.info.transaction_status != TransactionStatus.INERROR
        user.rollback()
        # Inside the caller's transaction: only our statement is undone.
        kept = _client(user).send("kept")
        user.execute("SELECT 1")
        with pytest.raises(ValueError, match="holds its unique key"):
            _admin(user).retry(first)
        assert user.info.transaction_status == TransactionStatus.INTRANS
        user.commit()
    assert task_state(conn, kept) == (0, 0)
    assert task_state(conn, first) == (200, 1)
    row = conn.execute("SELECT parameters FROM jobmachine.task WHERE task_id = %s", (kept,))
    assert json.loads(row.fetchone()[0]) == "kept"  # type: ignore[index]


@pytest.mark.parametrize("autocommit", [False, True])
def test_waiting_restores_the_connections_autocommit_setting(dsn: str, autocommit: bool) -> None:
    with jm.Client(dsn, queue=QUEUE) as sender:
        tid = sender.send("x")
    with Base(dsn) as w:
        assert w.work_once()
    with callers(dsn, autocommit=autocommit) as user:
        assert _client(user).wait(tid, timeout=5) == {"echo": "x"}
        assert user.autocommit is autocommit
        assert user.info.transaction_status == TransactionStatus.IDLE
    kwargs = {"autocommit": True} if autocommit else {}
    with ConnectionPool(dsn, min_size=1, max_size=1, kwargs=kwargs, open=True) as pool:
        assert jm.Client(pool=pool).wait(tid, timeout=5) == {"echo": "x"}
        with pool.connection() as pc:
            assert pc.autocommit is autocommit
