"""The one translation of psycopg errors into job_machine's
(job_machine/_db_errors.py): a statement that failed on a live connection
is a StatementFailed kind (issue 14, item 4); any other error a
DatabaseError with its SQLSTATE (issue 16)."""

from __future__ import annotations

import pickle

import psycopg
import pytest
from psycopg import errors
from psycopg_pool import PoolTimeout

import job_machine as jm
from job_machine._db_errors import connect_failed, translate, translated
from job_machine._db_errors import statement_failed as _statement_failed


@pytest.mark.parametrize(
    ("raised", "kind"),
    [
        (errors.QueryCanceled("canceling statement due to statement timeout"), jm.StatementTimeout),
        (errors.LockNotAvailable("canceling statement due to lock timeout"), jm.StatementTimeout),
        (errors.DeadlockDetected("deadlock detected"), jm.TransactionConflict),
        (errors.SerializationFailure("could not serialize access"), jm.TransactionConflict),
        (PoolTimeout("couldn't get a connection after 30.00 sec"), jm.PoolExhausted),
    ],
)
def test_passing_failures_become_statement_failed(
    raised: psycopg.OperationalError, kind: type[jm.StatementFailed]
) -> None:
    ours = _statement_failed(raised)
    assert type(ours) is kind
    assert isinstance(ours, jm.StatementFailed) and isinstance(ours, jm.JobMachineError)
    assert not isinstance(ours, jm.ConnectionFailed)  # never taken for a lost connection
    assert str(raised) in str(ours)


def test_other_operational_errors_are_left_alone() -> None:
    assert _statement_failed(errors.AdminShutdown("terminating connection")) is None
    assert _statement_failed(psycopg.OperationalError("server closed the connection")) is None


# -- the rest: DatabaseError, DatabaseUnavailable (issue 16) ---------------------------


def test_any_other_server_error_is_a_database_error_with_its_sqlstate() -> None:
    raised = errors.CheckViolation("new row violates check constraint")
    ours = translate(raised)
    assert type(ours) is jm.DatabaseError
    assert ours.sqlstate == "23514"
    assert str(ours) == "new row violates check constraint (SQLSTATE 23514)"
    assert ours.__cause__ is raised


def test_the_servers_own_trouble_is_database_unavailable() -> None:
    for raised in (errors.DiskFull("could not extend file"), errors.AdminShutdown("bye")):
        ours = translate(raised)  # no connection known, or a live one
        assert type(ours) is jm.DatabaseUnavailable
        assert isinstance(ours, jm.DatabaseError) and not isinstance(ours, jm.ConnectionFailed)
        assert ours.sqlstate == raised.sqlstate
    plain = translate(psycopg.InterfaceError("the cursor is closed"))
    assert type(plain) is jm.DatabaseUnavailable and plain.sqlstate is None
    assert str(plain) == "the cursor is closed"


def test_the_schema_missing_rules_keep_no_cause() -> None:
    ours = translate(errors.UndefinedTable('relation "jobmachine.task" does not exist'))
    assert type(ours) is jm.SchemaMissing
    assert ours.__cause__ is None and ours.__suppress_context__


def test_translated_raises_ours_and_lets_ours_pass() -> None:
    with pytest.raises(jm.DatabaseError) as raised, translated():
        raise errors.DivisionByZero("division by zero")
    assert isinstance(raised.value.__cause__, errors.DivisionByZero)
    with pytest.raises(jm.UnknownTask), translated():
        raise jm.UnknownTask()


def test_a_database_error_pickles_with_its_sqlstate() -> None:
    ours = translate(errors.CheckViolation("no"))
    again = pickle.loads(pickle.dumps(ours))
    assert type(again) is jm.DatabaseError
    assert (str(again), again.sqlstate) == (str(ours), "23514")


def test_a_connect_error_never_quotes_the_dsn() -> None:
    dsn = "postgresql://u:s3cr%ZZet@h/db"
    ours = connect_failed(psycopg.ProgrammingError('invalid percent-encoded token: "s3cr"'), dsn)
    assert type(ours) is jm.ConnectionFailed and "s3cr" not in str(ours)
    assert ours.__cause__ is None
    refused = psycopg.OperationalError(
        'connection failed: connection to server at "h", port 5432 failed: Connection refused'
    )
    ours = connect_failed(refused, "host=h port=5432 password=s3cr")
    assert str(ours) == "could not connect to PostgreSQL at host=h port=5432: Connection refused"
