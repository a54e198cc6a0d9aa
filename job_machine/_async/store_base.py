"""The Store's seam: where job_machine's statements meet psycopg.

:class:`AsyncStoreBase` holds the connector and the named statements of
job_machine/queries.sql and runs them (``_one``, ``_all``) on a dict-row
cursor (``_cursor``) that turns psycopg's errors into job_machine's. The
Store's statements build on it, one file per table or area
(store_tasks.py, store_outcomes.py, store_workers.py, store_admin.py,
store_schedules.py, store_housekeeping.py); store.py composes them into
the one Store the rest of job_machine uses.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Self

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from .._db_errors import translate
from .._queries import queries
from ..errors import ServerReadOnly
from ..task import Status
from .connection import AsyncConnector


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


class AsyncStoreBase:
    """Runs job_machine's named statements on connections from a Connector."""

    def __init__(self, connector: AsyncConnector) -> None:
        self.connector = connector
        self._q = queries()
        #: The connection every statement runs on, in a Store from :meth:`on`.
        self._session: AsyncConnection[Any] | None = None
        #: The warnings given once (shared with the Stores from :meth:`on`).
        self._warned: set[str] = set()

    def on(self, conn: AsyncConnection[Any]) -> Self:
        """This Store with every statement run on ``conn``, a connection its
        connector handed out or a session of its own: a worker's registry
        session (its advisory lock, LISTEN and keepalive settings are the
        session's), a housekeeping round inside the transaction it holds
        the chore lock in. The statements are not made a transaction of
        their own; wrap them in ``connector.unit(conn)`` for that."""
        bound = copy.copy(self)
        bound._session = conn
        return bound

    @asynccontextmanager
    async def _cursor(self) -> AsyncIterator[psycopg.AsyncCursor[dict[str, Any]]]:
        """A dict-row cursor whose psycopg errors are raised as job_machine's
        (job_machine/_db_errors.py: ConnectionLost, ServerReadOnly,
        SchemaMissing, a StatementFailed kind, DatabaseError)."""
        used: list[AsyncConnection[Any]] = []
        conn = self._session
        try:
            if conn is not None:
                used.append(conn)
                async with conn.cursor(row_factory=dict_row) as cur:
                    yield cur
            else:
                async with self.connector.connection() as c, c.cursor(row_factory=dict_row) as cur:
                    used.append(c)
                    yield cur
        except psycopg.Error as ex:
            ours = translate(ex, used[0] if used else None)
            if (
                isinstance(ours, ServerReadOnly)
                and used
                and self.connector.reconnects
                and not used[0].closed
            ):
                # A standby, or a primary demoted or made read-only: a lost
                # connection for us. Ours is dropped, so the next call connects
                # again (to the new primary, given target_session_attrs=read-write).
                await used[0].close()
            raise ours from ours.__cause__

    async def _one(self, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
        async with self._cursor() as cur:
            await cur.execute(self._q[name], params)
            return await cur.fetchone()

    async def _all(
        self,
        name: str,
        params: dict[str, Any],
        prepare: bool | None = None,
    ) -> list[dict[str, Any]]:
        async with self._cursor() as cur:
            await cur.execute(self._q[name], params, prepare=prepare)
            return await cur.fetchall()

    # -- the session and the server ----------------------------------------

    async def session_set(self, settings: dict[str, str]) -> None:
        """Set configuration parameters for the rest of the session (of a
        Store from :meth:`on`)."""
        for name, value in settings.items():
            await self._one("session_set", {"name": name, "value": value})

    async def schema_version(self) -> int | None:
        """The installed schema version; raises SchemaMissing when there is none."""
        row = await self._one("schema_version", {})
        return None if row is None else row["version"]

    async def server_role(self) -> tuple[bool, bool]:
        """(whether the server is a standby, whether it refuses writes)."""
        row = await self._one("server_role", {})
        assert row is not None
        return bool(row["standby"]), bool(row["standby"] or row["read_only"])
