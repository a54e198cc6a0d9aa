"""The Store's one translation of psycopg errors on a live connection into
job_machine's StatementFailed kinds (issue 14, item 4)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors
from psycopg_pool import PoolTimeout

import job_machine as jm
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
