"""psycopg's errors become job_machine's at one point (job_machine/_db_errors.py,
issue 16): what the server refuses for a reason job_machine has no name for
is a DatabaseError carrying its SQLSTATE, from the Store's statements, its
transactions, and the worker's listening connection alike."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import job_machine as jm
from job_machine._sync.listener import Listener
from tests.integration.test_statement_failures import _heard
from tests.support.procs import wait_until
from tests.support.workers import Base, serving

QUEUE = "db.errors"

#: A trigger function of the user's own: raises with the ERRCODE, HINT and
#: message stored in db_trouble while a row is there.
TROUBLE = """
CREATE TABLE db_trouble (errcode text, message text);
CREATE FUNCTION db_trouble() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE t record;
BEGIN
    FOR t IN SELECT * FROM public.db_trouble LOOP
        RAISE EXCEPTION USING ERRCODE = t.errcode, MESSAGE = t.message, HINT = 'the hint';
    END LOOP;
    RETURN NEW;
END $$;
"""


def _trouble(conn: psycopg.Connection[Any], trigger: str, errcode: str, message: str) -> None:
    conn.execute(TROUBLE)
    conn.execute(trigger)
    conn.execute("INSERT INTO db_trouble VALUES (%s, %s)", [errcode, message])


@pytest.mark.parametrize(
    ("errcode", "kind", "message"),
    [
        ("P0001", jm.DatabaseError, "no tasks today"),  # a RAISE of the user's own
        ("23514", jm.DatabaseError, "check violated"),  # check_violation
        ("53100", jm.DatabaseUnavailable, "could not extend file: No space left"),  # disk_full
    ],
)
def test_an_error_job_machine_has_no_name_for_is_a_database_error_with_its_sqlstate(
    dsn: str, conn: psycopg.Connection[Any], errcode: str, kind: type[Exception], message: str
) -> None:
    """A trigger of the user's own refuses the send: the call raises
    DatabaseError (DatabaseUnavailable for the server's own trouble), not
    psycopg's error; nothing is written and the client goes on."""
    with jm.Client(dsn, queue=QUEUE) as client:
        first = client.send("before")
        _trouble(
            conn,
            "CREATE TRIGGER refuse BEFORE INSERT ON jobmachine.task"
            " FOR EACH ROW EXECUTE FUNCTION db_trouble()",
            errcode,
            message,
        )
        with pytest.raises(kind) as raised:
            client.send("refused")
        ours = raised.value
        assert type(ours) is kind
        assert isinstance(ours, jm.DatabaseError) and isinstance(ours, jm.JobMachineError)
        assert not isinstance(ours, jm.ConnectionFailed | jm.StatementFailed)
        assert (ours.sqlstate, ours.message_primary) == (errcode, message)
        assert isinstance(ours.__cause__, psycopg.Error)
        assert ours.__cause__.sqlstate == errcode
        text = str(ours)
        assert text.startswith(f"{message} (SQLSTATE {errcode})"), text
        assert "HINT:  the hint" in text
        conn.execute("DELETE FROM db_trouble")
        after = client.send("after")
    assert after > first
    rows = conn.execute("SELECT parameters FROM jobmachine.task ORDER BY task_id").fetchall()
    assert [r[0] for r in rows] == ['"before"', '"after"']


async def test_the_async_face_raises_the_same_database_error(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    _trouble(
        conn,
        "CREATE TRIGGER refuse BEFORE INSERT ON jobmachine.task"
        " FOR EACH ROW EXECUTE FUNCTION db_trouble()",
        "P0001",
        "no tasks today",
    )
    async with jm.AsyncClient(dsn, queue=QUEUE) as client:
        with pytest.raises(jm.DatabaseError) as raised:
            await client.send("refused")
    assert raised.value.sqlstate == "P0001"


def test_an_error_at_the_commit_of_a_store_transaction_is_a_database_error(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """housekeeping() runs its chores in one transaction; a deferred
    constraint trigger of the user's own refuses it at COMMIT, which the
    Connector runs, not a Store statement: DatabaseError all the same."""
    with jm.Client(dsn, queue=QUEUE) as client:
        tid = client.send("expiring", expire_after=3600)
    conn.execute(
        "UPDATE jobmachine.task SET expires_at = now() - interval '1 hour' WHERE task_id = %s",
        [tid],
    )
    _trouble(
        conn,
        "CREATE CONSTRAINT TRIGGER refuse AFTER UPDATE ON jobmachine.task"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION db_trouble()",
        "P0001",
        "not at commit",
    )
    with Base(dsn, queue=QUEUE) as worker, pytest.raises(jm.DatabaseError) as raised:
        worker.housekeeping()
    assert (raised.value.sqlstate, raised.value.message_primary) == ("P0001", "not at commit")
    state = conn.execute("SELECT status FROM jobmachine.task WHERE task_id = %s", [tid])
    assert state.fetchone() == (0,), "the refused transaction was committed"


def test_the_worker_listening_connection_raises_connection_lost(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """The worker's listener runs LISTEN, its pings and notifications on
    the connection itself: a connection that died under it raises
    ConnectionLost (the serve loop reconnects on it), not psycopg's error."""
    with psycopg.connect(dsn, autocommit=True) as listening:
        listener = Listener(listening)
        try:
            listener.listen("jm:db.errors")
            conn.execute("SELECT pg_terminate_backend(%s)", [listening.info.backend_pid])
            with pytest.raises(jm.ConnectionLost) as raised:
                listener.ping()
            assert isinstance(raised.value.__cause__, psycopg.OperationalError)
            with pytest.raises(jm.ConnectionLost):
                listener.listen("jm:db.other")
            with pytest.raises(jm.ConnectionLost):
                listener.wait(0.1)
        finally:
            listener.close()


def test_a_worker_whose_claim_meets_a_server_in_trouble_carries_on(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """Out of disk (53100) at the claim: DatabaseUnavailable, on which the
    worker reconnects with backoff and serves once it passes, as it did on
    psycopg's OperationalError; it does not stop."""
    _trouble(
        conn,
        "CREATE TRIGGER refuse BEFORE UPDATE ON jobmachine.task"
        " FOR EACH ROW EXECUTE FUNCTION db_trouble()",
        "53100",
        "could not extend file: No space left on device",
    )
    with jm.Client(dsn, queue=QUEUE) as client:
        tid = client.send("in trouble")
        worker = Base(dsn, queue=QUEUE, reconnect_backoff=0.05, reconnect_backoff_cap=0.2)
        with _heard("SQLSTATE 53100") as heard, serving(worker) as thread:
            assert heard.event.wait(10), "the worker did not meet the trouble"
            assert thread.is_alive()
            conn.execute("DELETE FROM db_trouble")
            assert client.wait(tid, timeout=10) == {"echo": "in trouble"}
    wait_until(lambda: not thread.is_alive(), 5)
