"""The worker's own pool: made from its ``dsn`` to run several tasks at once.

A worker given a ``dsn`` and ``concurrency`` above 1 does its work through
a pool of its own, of up to ``concurrency`` connections (beside its
listening and registry connections); one given a connection or a pool, or
started with concurrency 1, has none. ``receive()`` and ``work_once()``
open it, a command that raises the concurrency grows it, and it is closed
when ``receive()`` returns or the worker is closed. A closed pool cannot
be opened again, so the next ``receive()`` gets a new one, and the
worker's connector is pointed at it.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from .connection import AsyncConnector, AsyncPinnedConnection


class AsyncOwnPool:
    """The pool a worker makes for itself, if any (:attr:`pool`).

    :param dsn: where to connect; None: the worker has no pool of its own.
    :param size: the worker's concurrency: no pool at 1.
    :param kwargs: extra keyword arguments of each connection.
    """

    def __init__(self, dsn: str | None, size: int, kwargs: dict[str, Any]) -> None:
        #: The pool, or None when the worker has none of its own.
        self.pool: AsyncConnectionPool | None = None
        if dsn and size > 1:
            self.pool = AsyncConnectionPool(
                dsn,
                connection_class=AsyncPinnedConnection,
                min_size=1,
                max_size=size,
                kwargs={"autocommit": True, **kwargs},
                open=False,
                name="job_machine-worker",
            )

    async def open(self, connector: AsyncConnector) -> None:
        """Open the pool (a new one if it was closed, which ``connector``
        then uses)."""
        pool = self.pool
        if pool is None:
            return
        if pool.closed:
            pool = AsyncConnectionPool(
                pool.conninfo,
                connection_class=AsyncPinnedConnection,
                min_size=pool.min_size,
                max_size=pool.max_size,
                kwargs=pool.kwargs,
                open=False,
                name=pool.name,
            )
            self.pool = connector.pool = pool
        await pool.open(wait=True)

    async def grow(self, size: int) -> None:
        """Let the pool hold ``size`` connections, if it holds fewer."""
        pool = self.pool
        if pool is not None and size > pool.max_size:
            await pool.resize(pool.min_size, size)

    async def close(self) -> None:
        """Close the pool, if any."""
        if self.pool is not None:
            await self.pool.close()
