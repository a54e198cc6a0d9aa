# DO NOT EDIT: generated from job_machine/_async/store_base.py by tools/async_to_sync.py.
# Change the async source and run `python tools/async_to_sync.py`.
"""The Store's seam: where job_machine's statements meet psycopg.

:class:`StoreBase` holds the connector and the named statements of
job_machine/queries.sql and runs them (``_one``, ``_all``) on a dict-row
cursor (``_cursor``) that turns psycopg's errors into job_machine's. The
Store's statements build on it, one file per table or area
(store_tasks.py, store_outcomes.py, store_workers.py, store_admin.py,
store_schedules.py, store_housekeeping.py); store.py composes them into
the one Store the rest of job_machine uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import Connection, errors
from psycopg.rows import dict_row
from psycopg_pool import PoolTimeout

from .._queries import queries
from ..errors import (
    ConnectionLost,
    PoolExhausted,
    SchemaMissing,
    ServerReadOnly,
    StatementFailed,
    StatementTimeout,
    TransactionConflict,
)
from ..task import Status
from .connection import Connector


@dataclass(frozen=True, slots=True)
class Answer:
    """What the database holds for a client waiting on a task."""

    status: Status
    reply: str | None  #: JSON of the newest reply or result, if any
    error: str | None  #: JSON of the newest error result, if any


@dataclass(frozen=True, slots=True)
class Registration:
    """A worker's row in jobmachine.worker."""

    worker_id: int
    locked: bool  #: whether this session holds the worker's liveness lock


def _statement_failed(ex: psycopg.OperationalError) -> StatementFailed | None:
    """Our error for a statement that failed on a live connection, or None."""
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
    return kind(f"{what} ({str(ex).strip() or type(ex).__name__})")


class StoreBase:
    """Runs job_machine's named statements on connections from a Connector."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self._q = queries()

    @contextmanager
    def _cursor(
        self, conn: Connection[Any] | None = None
    ) -> Iterator[psycopg.Cursor[dict[str, Any]]]:
        """A dict-row cursor, with a missing schema reported as SchemaMissing, a
        connection that died under the call as ConnectionLost, and a statement
        that failed on a live connection for a passing reason (a timeout or
        cancel, a deadlock, a serialization failure, no pooled connection in
        time) as a StatementFailed: the one place psycopg's errors become ours."""
        used: list[Connection[Any]] = []
        try:
            if conn is not None:
                used.append(conn)
                with conn.cursor(row_factory=dict_row) as cur:
                    yield cur
            else:
                with self.connector.connection() as c, c.cursor(row_factory=dict_row) as cur:
                    used.append(c)
                    yield cur
        except psycopg.OperationalError as ex:
            if used and (used[0].broken or used[0].closed):
                raise ConnectionLost(
                    f"{ConnectionLost.__doc__} ({str(ex).strip() or type(ex).__name__})"
                ) from ex
            failed = _statement_failed(ex)
            if failed is None:
                raise
            raise failed from ex
        except errors.ReadOnlySqlTransaction as ex:
            # A standby, or a primary demoted or made read-only: a lost
            # connection for us. Ours is dropped, so the next call connects
            # again (to the new primary, given target_session_attrs=read-write).
            if used and self.connector.reconnects and not used[0].closed:
                used[0].close()
            raise ServerReadOnly(
                f"the server is read-only ({ex.diag.message_primary}): a standby, or a "
                "primary demoted or made read-only; a DSN listing every node with "
                "target_session_attrs=read-write finds the primary on reconnect"
            ) from ex
        except (errors.UndefinedTable, errors.InvalidSchemaName) as ex:
            raise SchemaMissing(f"{SchemaMissing.__doc__} ({ex.diag.message_primary})") from None
        except (
            errors.UndefinedColumn,
            errors.InvalidColumnReference,
            errors.UndefinedFunction,
        ) as ex:
            # A Perl Job::Machine database that job_machine's install has not
            # upgraded yet: no attempts column, no unique class name; or a
            # schema that this release's create_tables.sql has not run on:
            # no jobmachine.queue_find() and the other functions.
            raise SchemaMissing(
                "the jobmachine schema is not upgraded for job_machine (a Perl Job::Machine "
                "schema?): run `psql -f sql/create_tables.sql` or job_machine.install_schema() "
                f"({ex.diag.message_primary})"
            ) from None

    def _one(
        self, name: str, params: dict[str, Any], conn: Connection[Any] | None = None
    ) -> dict[str, Any] | None:
        with self._cursor(conn) as cur:
            cur.execute(self._q[name], params)
            return cur.fetchone()

    def _all(
        self,
        name: str,
        params: dict[str, Any],
        conn: Connection[Any] | None = None,
        prepare: bool | None = None,
    ) -> list[dict[str, Any]]:
        with self._cursor(conn) as cur:
            cur.execute(self._q[name], params, prepare=prepare)
            return cur.fetchall()

    # -- the session and the server ----------------------------------------

    def session_set(self, settings: dict[str, str], conn: Connection[Any]) -> None:
        """Set configuration parameters for the rest of ``conn``'s session."""
        for name, value in settings.items():
            self._one("session_set", {"name": name, "value": value}, conn)

    def schema_version(self) -> int | None:
        """The installed schema version; raises SchemaMissing when there is none."""
        row = self._one("schema_version", {})
        return None if row is None else row["version"]

    def server_role(self) -> tuple[bool, bool]:
        """(whether the server is a standby, whether it refuses writes)."""
        row = self._one("server_role", {})
        assert row is not None
        return bool(row["standby"]), bool(row["standby"] or row["read_only"])
