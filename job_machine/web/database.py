"""The database gate: the dashboard's one connection (an AsyncAdmin), used
by one request at a time under a statement_timeout; a request that waits
too long for it gets :class:`Busy` (503)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .._async.admin import AsyncAdmin

#: Seconds a connection attempt of the dashboard may take, unless the DSN says.
CONNECT_TIMEOUT = 10


class Busy(Exception):
    """The dashboard's connection stayed busy with other requests."""


def session_options(dsn: str, statement_timeout: float) -> dict[str, str]:
    """Connection parameters for the dashboard's connection: the
    statement_timeout added to the DSN's own options (or $PGOPTIONS), and a
    connect_timeout unless the DSN or $PGCONNECT_TIMEOUT has one."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:  # connecting says the DSN is invalid
        return {}
    found: dict[str, str] = {}
    if statement_timeout:
        options = params.get("options") or os.environ.get("PGOPTIONS", "")
        timeout = f"-c statement_timeout={round(statement_timeout * 1000)}"
        found["options"] = f"{options} {timeout}".strip()
    if "connect_timeout" not in params and "PGCONNECT_TIMEOUT" not in os.environ:
        found["connect_timeout"] = str(CONNECT_TIMEOUT)
    return found


class _Database:
    """The app's AsyncAdmin on one connection of its own, used by one
    request at a time (a dashboard's statements are short, and bounded by
    statement_timeout); a request that waits more than ``wait`` seconds for
    it gets :class:`Busy`."""

    def __init__(self, dsn: str, statement_timeout: float, wait: float) -> None:
        self._admin = AsyncAdmin(dsn, connect_kwargs=session_options(dsn, statement_timeout))
        self._lock = asyncio.Lock()
        self._wait = wait
        #: Whether the database refused writes at the end of the last use:
        #: a standby (a replica), whose pages are read-only whatever the config.
        self.server_read_only = False

    @asynccontextmanager
    async def use(self) -> AsyncIterator[AsyncAdmin]:
        try:
            async with asyncio.timeout(self._wait):
                await self._lock.acquire()
        except TimeoutError:
            raise Busy() from None
        try:
            yield self._admin
            # After the page's own statements, so the page renders with it.
            self.server_read_only = await self._admin.read_only()
        finally:
            self._lock.release()

    async def close(self) -> None:
        await self._admin.close()
