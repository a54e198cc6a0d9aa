"""The only code that talks SQL: one method per named query of queries.sql."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection, errors
from psycopg.rows import dict_row

from .. import _codec
from .._queries import queries
from ..errors import SchemaMissing
from ..task import Status, Task
from .connection import AsyncConnector

#: Advisory lock key of the housekeeping chores (one housekeeper at a time).
CHORE_LOCK_KEY = 0x6A6D_686B  # "jmhk"


@dataclass(frozen=True, slots=True)
class Answer:
    """What the database holds for a client waiting on a task."""

    status: Status
    reply: str | None  #: JSON of the newest reply or result, if any
    error: str | None  #: JSON of the newest error result, if any


@dataclass(frozen=True, slots=True)
class ChoreCounts:
    """What one round of housekeeping did."""

    ran: bool  #: False when another worker held the housekeeping lock
    revived: int = 0
    failed: int = 0
    removed: int = 0


class AsyncStore:
    """Runs job_machine's statements on connections from a Connector."""

    def __init__(self, connector: AsyncConnector) -> None:
        self.connector = connector
        self._q = queries()

    @asynccontextmanager
    async def _cursor(
        self, conn: AsyncConnection[Any] | None = None
    ) -> AsyncIterator[psycopg.AsyncCursor[dict[str, Any]]]:
        """A dict-row cursor, with a missing schema reported as SchemaMissing."""
        try:
            if conn is not None:
                async with conn.cursor(row_factory=dict_row) as cur:
                    yield cur
            else:
                async with self.connector.connection() as c, c.cursor(row_factory=dict_row) as cur:
                    yield cur
        except (errors.UndefinedTable, errors.InvalidSchemaName) as ex:
            raise SchemaMissing(f"{SchemaMissing.__doc__} ({ex.diag.message_primary})") from None
        except (errors.UndefinedColumn, errors.InvalidColumnReference) as ex:
            # A Perl Job::Machine database that job_machine's install has not
            # upgraded yet: no attempts column, no unique class name.
            raise SchemaMissing(
                "the jobmachine schema is not upgraded for job_machine (a Perl Job::Machine "
                "schema?): run `psql -f sql/create_tables.sql` or job_machine.install_schema() "
                f"({ex.diag.message_primary})"
            ) from None

    async def _one(
        self, name: str, params: dict[str, Any], conn: AsyncConnection[Any] | None = None
    ) -> dict[str, Any] | None:
        async with self._cursor(conn) as cur:
            await cur.execute(self._q[name], params)
            return await cur.fetchone()

    async def _all(
        self, name: str, params: dict[str, Any], conn: AsyncConnection[Any] | None = None
    ) -> list[dict[str, Any]]:
        async with self._cursor(conn) as cur:
            await cur.execute(self._q[name], params)
            return await cur.fetchall()

    # -- tasks ------------------------------------------------------------

    async def task_insert(self, queue: str, parameters: str, channel: str) -> int:
        """Insert a waiting task and notify ``channel``; return its id."""
        params = {"queue": queue, "parameters": parameters, "channel": channel}
        row = await self._one("task_insert", params)
        if row is None:
            # Another sender created the queue's class row at the same moment;
            # it is committed now, so the second try finds it.
            row = await self._one("task_insert", params)
        assert row is not None, "task_insert returned no row twice"
        return int(row["task_id"])

    async def task_claim(
        self, queues: Sequence[str], limit: int = 1, now: datetime | None = None
    ) -> list[Task]:
        """Claim up to ``limit`` waiting tasks of ``queues``, oldest first."""
        rows = await self._all("task_claim", {"queues": list(queues), "limit": limit, "now": now})
        return [
            Task(
                id=int(r["task_id"]),
                queue=r["queue"],
                data=_codec.decode(r["parameters"]),
                attempt=int(r["attempts"]),
                created=r["created"],
                parameters=r["parameters"] or "",
            )
            for r in rows
        ]

    async def task_finish(self, task_id: int, attempt: int, result: str, notify: bool) -> bool:
        """Store a result and mark the task done; False if this attempt no longer holds it."""
        params = {"task_id": task_id, "attempt": attempt, "result": result, "notify": notify}
        return await self._one("task_finish", params) is not None

    async def task_done(self, task_id: int, attempt: int) -> bool:
        """Mark the task done without a result; False if this attempt no longer holds it."""
        return await self._one("task_done", {"task_id": task_id, "attempt": attempt}) is not None

    async def result_insert_error(self, task_id: int, attempt: int, result: str) -> bool:
        """Store an error result, status unchanged; False if this attempt no longer holds it."""
        params = {"task_id": task_id, "attempt": attempt, "result": result}
        return await self._one("result_insert_error", params) is not None

    async def task_fail_attempt(
        self, task_id: int, attempt: int, error: str, retries: int
    ) -> Status | None:
        """Store the error of a failed attempt; the task waits again, or fails when
        ``attempt > retries``. The new status, or None if this attempt no longer holds it."""
        params = {"task_id": task_id, "attempt": attempt, "result": error, "retries": retries}
        row = await self._one("task_fail_attempt", params)
        return None if row is None else Status(row["status"])

    async def task_answer(
        self, task_id: int, conn: AsyncConnection[Any] | None = None
    ) -> Answer | None:
        """Status, newest reply and newest error of a task; None if there is no such task.

        :param conn: read on this connection (the one a waiting client listens
            on) instead of taking another.
        """
        row = await self._one("task_answer", {"task_id": task_id}, conn)
        if row is None:
            return None
        return Answer(Status(row["status"]), row["reply"], row["error"])

    async def task_answered(self, task_id: int) -> bool | None:
        """Whether the task has a reply or has finished; None if there is no such task."""
        row = await self._one("task_answered", {"task_id": task_id})
        return None if row is None else bool(row["answered"])

    # -- housekeeping -----------------------------------------------------

    async def chores(
        self,
        *,
        max_runtime: float,
        retries: int,
        remove_after_days: float,
        remove_limit: int = 1000,
        now: datetime | None = None,
    ) -> ChoreCounts:
        """Revive stale started tasks, fail exhausted ones and remove old finished
        ones, in one transaction, unless another worker is doing it right now."""
        async with self.connector.connection() as conn, conn.transaction():
            got = await self._one("chore_lock", {"key": CHORE_LOCK_KEY}, conn)
            if not (got and got["got"]):
                return ChoreCounts(ran=False)
            revived = await self._all(
                "task_revive", {"max_runtime": max_runtime, "retries": retries, "now": now}, conn
            )
            removed = await self._all(
                "task_remove_old",
                {"remove_after_days": remove_after_days, "limit": remove_limit, "now": now},
                conn,
            )
        failed = sum(1 for r in revived if r["status"] == Status.FAILED)
        return ChoreCounts(
            ran=True, revived=len(revived) - failed, failed=failed, removed=len(removed)
        )

    async def schema_version(self) -> int | None:
        """The installed schema version; raises SchemaMissing when there is none."""
        row = await self._one("schema_version", {})
        return None if row is None else row["version"]
