"""Client-side promises of README's "What is guaranteed" and "Waiting for
answers": a failed statement is not a lost connection, the 2 s re-read of a
wait, Perl's reply wake, and ``as_completed``'s order."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus

import job_machine as jm

QUEUE = "prom.q"
APP = "prom_client"


def _backends(conn: psycopg.Connection[Any], app: str = APP) -> list[int]:
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
        " AND datname = current_database() ORDER BY pid",
        (app,),
    ).fetchall()
    return [int(r[0]) for r in rows]


def _task_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM jobmachine.task").fetchone()
    assert row is not None
    return int(row[0])


@contextmanager
def _table_locked(dsn: str) -> Iterator[None]:
    """Another session holds jobmachine.task's strongest lock, so every
    statement that touches the table waits."""
    with psycopg.connect(dsn) as other:
        other.execute("LOCK TABLE jobmachine.task IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            other.rollback()


# -- gap 6: a client's statement that fails ---------------------------------------


def test_a_client_statement_timeout_commits_nothing_and_the_same_connection_serves_again(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """README: a statement timeout raises ``StatementTimeout`` (a
    ``StatementFailed``, not a ``ConnectionLost``), nothing of the call is
    committed, and the connection still works: the next call runs on the
    same server session, no reconnect."""
    slow = make_conninfo(dsn, application_name=APP, options="-c statement_timeout=200")
    with jm.Client(slow, queue=QUEUE) as client:
        first = client.send("before")
        (backend,) = _backends(conn)
        with _table_locked(dsn):
            started = time.monotonic()
            with pytest.raises(jm.StatementTimeout) as caught:
                client.send("during the lock")
            assert time.monotonic() - started < 5
        assert not isinstance(caught.value, jm.ConnectionLost)
        assert isinstance(caught.value, jm.StatementFailed)
        assert _task_count(conn) == 1, "the failed send left a task behind"
        again = client.send("after")
        assert again > first
        assert _backends(conn) == [backend], "the client reconnected after a statement failure"
        assert client.check(first) is False
    rows = conn.execute("SELECT parameters FROM jobmachine.task ORDER BY task_id").fetchall()
    assert [r[0] for r in rows] == ['"before"', '"after"']


def test_a_statement_timeout_inside_the_callers_transaction_keeps_the_callers_work(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """``Client(conn=)``: the failing call is undone by its savepoint; the
    caller's earlier insert survives, its transaction is still open and
    usable, and committing it commits that insert and nothing of the call."""
    conn.execute("CREATE TABLE mine (v text)")
    with psycopg.connect(dsn, options="-c statement_timeout=200") as caller:
        client = jm.Client(conn=caller, queue=QUEUE)
        client.send("warm up")  # creates the queue's row outside the lock
        caller.commit()
        caller.execute("INSERT INTO mine VALUES ('kept')")
        with _table_locked(dsn), pytest.raises(jm.StatementTimeout):
            client.send("during the lock")
        assert caller.info.transaction_status == TransactionStatus.INTRANS
        assert caller.execute("SELECT v FROM mine").fetchall() == [("kept",)]
        tid = client.send("after")  # the same transaction goes on
        caller.commit()
        client.close()
    assert conn.execute("SELECT v FROM mine").fetchall() == [("kept",)]
    rows = conn.execute("SELECT task_id, parameters FROM jobmachine.task ORDER BY task_id")
    assert [r[1] for r in rows.fetchall()] == ['"warm up"', '"after"']
    assert tid > 0


def test_a_deadlock_between_two_callers_transactions_raises_transaction_conflict(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """Two callers note two tasks in opposite orders inside their own
    transactions: PostgreSQL breaks the deadlock by failing one statement,
    which raises ``TransactionConflict`` (a ``StatementFailed``); the other
    call goes through, and each caller's transaction is still usable."""
    with jm.Client(dsn, queue=QUEUE) as sender:
        a, b = sender.send("a"), sender.send("b")
    fast = "-c deadlock_timeout=100"  # superuser-settable; the test server's role is
    with psycopg.connect(dsn, options=fast) as c1, psycopg.connect(dsn, options=fast) as c2:
        one = jm.Client(conn=c1, queue=QUEUE)
        two = jm.Client(conn=c2, queue=QUEUE)
        one.note(a, by="one")
        two.note(b, by="two")
        outcome: dict[str, tuple[BaseException | None, TransactionStatus]] = {}

        def finish(name: str, caller: psycopg.Connection[Any], client: jm.Client, tid: int) -> None:
            """Note the other task, then commit (freeing the other caller)."""
            error: BaseException | None = None
            try:
                client.note(tid, by=name)
            except BaseException as ex:  # examined by the test thread
                error = ex
            outcome[name] = (error, caller.info.transaction_status)
            caller.commit()

        t = threading.Thread(target=finish, args=("one", c1, one, b))
        t.start()
        # one's note of b waits for two's lock before two notes a.
        deadline = time.monotonic() + 10
        while not conn.execute(
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()"
        ).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "one's note never waited for two's lock"
            time.sleep(0.02)
        finish("two", c2, two, a)
        t.join(10)
        assert not t.is_alive()
        one.close()
        two.close()
    failed = {name: ex for name, (ex, _) in outcome.items() if ex is not None}
    assert len(failed) == 1, outcome
    ((loser, ex),) = failed.items()
    assert isinstance(ex, jm.TransactionConflict), repr(ex)
    assert isinstance(ex, jm.StatementFailed)
    # Only the failed statement was undone: both transactions stayed usable.
    assert {status for _, status in outcome.values()} == {TransactionStatus.INTRANS}
    winner = "two" if loser == "one" else "one"
    with jm.Client(dsn, queue=QUEUE) as reader:
        # The winner's second note came after the loser's first (it waited
        # for the loser's commit); the loser's failed note left nothing.
        assert [reader.task_info(tid).notes for tid in (a, b)] == [{"by": winner}] * 2
