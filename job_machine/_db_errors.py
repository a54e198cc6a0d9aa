"""Where psycopg's errors become job_machine's: one function for every code
that talks to PostgreSQL (the Store's cursor, the Connector, the listening
connections, the schema install). Not sync or async, so never twinned.

Which error is which, in the order they are tried:

- the connection died under the call (psycopg's ``OperationalError`` or
  ``InterfaceError`` with the connection broken or closed):
  :class:`~job_machine.ConnectionLost`;
- a statement that failed on a live connection for a reason that may pass
  (a timeout or cancel, a deadlock, a serialization failure, no pooled
  connection in time): a :class:`~job_machine.StatementFailed` kind;
- a server that refuses writes (25006): :class:`~job_machine.ServerReadOnly`;
- a table, schema, column or function of the schema missing:
  :class:`~job_machine.SchemaMissing`;
- any other ``OperationalError`` or ``InterfaceError``:
  :class:`~job_machine.DatabaseUnavailable`; anything else psycopg raises:
  :class:`~job_machine.DatabaseError`, with its SQLSTATE.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import psycopg
from psycopg import errors
from psycopg_pool import PoolTimeout

from ._dsn import UNPARSABLE_DSN, describe_target
from .errors import (
    ConnectionFailed,
    ConnectionLost,
    DatabaseError,
    DatabaseUnavailable,
    JobMachineError,
    PoolExhausted,
    SchemaMissing,
    ServerReadOnly,
    StatementFailed,
    StatementTimeout,
    TransactionConflict,
)

#: The SQLSTATE of a statement the role may not run (docs/roles.md).
INSUFFICIENT_PRIVILEGE = "42501"


def translate(
    ex: psycopg.Error, conn: psycopg.BaseConnection[Any] | None = None
) -> JobMachineError:
    """job_machine's error for ``ex``, raised on ``conn`` (None: not known,
    or no connection was had yet), with ``ex`` as its ``__cause__`` (a
    :class:`SchemaMissing` has none: what psycopg said is in its message).
    Raise it with :func:`reraise`."""
    ours: JobMachineError
    if isinstance(ex, psycopg.OperationalError | psycopg.InterfaceError) and (
        conn is not None and (conn.broken or conn.closed)
    ):
        ours = ConnectionLost(f"{ConnectionLost.__doc__} ({_said(ex)})")
    elif isinstance(ex, psycopg.OperationalError) and (failed := statement_failed(ex)):
        ours = failed
    elif isinstance(ex, errors.ReadOnlySqlTransaction):
        ours = ServerReadOnly(
            f"the server is read-only ({ex.diag.message_primary}): a standby, or a "
            "primary demoted or made read-only; a DSN listing every node with "
            "target_session_attrs=read-write finds the primary on reconnect"
        )
    elif isinstance(ex, errors.UndefinedTable | errors.InvalidSchemaName):
        ours = SchemaMissing(f"{SchemaMissing.__doc__} ({ex.diag.message_primary})")
        ours.__cause__ = None
        ours.__suppress_context__ = True
        return ours
    elif isinstance(
        ex, errors.UndefinedColumn | errors.InvalidColumnReference | errors.UndefinedFunction
    ):
        # A Perl Job::Machine database that job_machine's install has not
        # upgraded yet: no attempts column, no unique class name; or a
        # schema that this release's create_tables.sql has not run on:
        # no jobmachine.queue_find() and the other functions.
        ours = SchemaMissing(
            "the jobmachine schema is not upgraded for job_machine (a Perl Job::Machine "
            "schema?): run `psql -f sql/create_tables.sql` or job_machine.install_schema() "
            f"({ex.diag.message_primary})"
        )
        ours.__cause__ = None
        ours.__suppress_context__ = True
        return ours
    else:
        kind = (
            DatabaseUnavailable
            if isinstance(ex, psycopg.OperationalError | psycopg.InterfaceError)
            else DatabaseError
        )
        ours = kind(_with_sqlstate(ex), ex.sqlstate, ex.diag.message_primary)
    ours.__cause__ = ex
    return ours


def statement_failed(ex: psycopg.OperationalError) -> StatementFailed | None:
    """Our error for a statement that failed on a live connection for a
    reason that may pass by itself, or None."""
    kind: type[StatementFailed]
    if isinstance(ex, errors.QueryCanceled | errors.LockNotAvailable):
        kind = StatementTimeout
    elif isinstance(ex, errors.DeadlockDetected | errors.SerializationFailure):
        kind = TransactionConflict
    elif isinstance(ex, PoolTimeout):
        kind = PoolExhausted
    else:
        return None
    what = " ".join((kind.__doc__ or kind.__name__).split())
    return kind(f"{what} ({_said(ex)})")


def connect_failed(ex: psycopg.Error, dsn: str) -> JobMachineError:
    """job_machine's error for a connection to ``dsn`` that could not be
    opened: :class:`ConnectionFailed` naming where it tried, never the
    password, and not chained to ``ex`` (raise it outside the ``except``
    block: libpq's error about a DSN it cannot parse may quote the password,
    so it must not even be the ``__context__``)."""
    if isinstance(ex, psycopg.OperationalError):
        # libpq: 'connection failed: connection to server at "h", port p failed:
        # Connection refused\n\tIs the server running...': keep the cause.
        lines = str(ex).strip().splitlines()
        reason = lines[0].rsplit("failed: ", 1)[-1].strip() if lines else type(ex).__name__
        return ConnectionFailed(
            f"could not connect to PostgreSQL at {describe_target(dsn)}: {reason}"
        )
    if isinstance(ex, psycopg.ProgrammingError):
        return ConnectionFailed(UNPARSABLE_DSN)
    return translate(ex)


def reraise(ex: psycopg.Error, conn: psycopg.BaseConnection[Any] | None = None) -> NoReturn:
    """Raise :func:`translate`'s error for ``ex`` (from an ``except`` block)."""
    ours = translate(ex, conn)
    raise ours from ours.__cause__


@contextmanager
def translated(conn: psycopg.BaseConnection[Any] | None = None) -> Iterator[None]:
    """A block whose psycopg errors are raised as job_machine's (raised on
    ``conn``, if known); job_machine's own errors pass unchanged."""
    try:
        yield
    except psycopg.Error as ex:
        reraise(ex, conn)


def _said(ex: psycopg.Error) -> str:
    return str(ex).strip() or type(ex).__name__


def _with_sqlstate(ex: psycopg.Error) -> str:
    """psycopg's message (DETAIL, HINT and CONTEXT lines included), its
    first line followed by the SQLSTATE when the server gave one."""
    text = _said(ex)
    if not ex.sqlstate:
        return text
    first, _, rest = text.partition("\n")
    return f"{first} (SQLSTATE {ex.sqlstate})" + (f"\n{rest}" if rest else "")
