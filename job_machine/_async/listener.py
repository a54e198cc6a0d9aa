"""Waiting for notifications on one connection, interruptible from anywhere.

Notifications are only a wake-up hint: whoever waits re-reads the table after
every wake-up and every timeout, so a lost notification delays work, never
loses it.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, Notify, sql

from .._acompat import aselect_readable
from .._waker import Waker


class AsyncListener:
    """LISTENs on channels of one connection and waits for their notifications.

    The wait also watches a :class:`~job_machine._waker.Waker` (the
    worker's, or one of its own): waking it from another thread or a signal
    handler makes a blocked wait return at once.
    """

    def __init__(self, conn: AsyncConnection[Any], waker: Waker | None = None) -> None:
        self.conn = conn
        self.channels: set[str] = set()
        self._own_waker = waker is None
        self.waker = waker if waker is not None else Waker()

    async def listen(self, channel: str) -> None:
        """Start receiving ``channel``'s notifications (a no-op if already listening)."""
        if channel not in self.channels:
            await self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            self.channels.add(channel)

    async def unlisten(self, channel: str) -> None:
        """Stop receiving ``channel``'s notifications."""
        if channel in self.channels:
            await self.conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(channel)))
            self.channels.discard(channel)

    async def pending(self) -> list[Notify]:
        """Notifications already received, without waiting."""
        return [n async for n in self.conn.notifies(timeout=0)]

    async def wait(self, timeout: float | None) -> list[Notify] | None:
        """Wait up to ``timeout`` seconds for notifications.

        :return: the notifications received, possibly ``[]`` when the waker
            was called, or ``None`` when the timeout passed.
        """
        got = await self.pending()
        if got:
            return got
        sock = self.conn.pgconn.socket
        ready = await aselect_readable([sock, self.waker.fd], timeout)
        if self.waker.fd in ready:
            self.waker.clear()
        if sock in ready:
            got = await self.pending()
        if not ready:
            return None
        return got

    async def ping(self) -> None:
        """A trivial round trip, to find a connection that died silently: it
        raises when the server is gone (client-side TCP keepalives and
        ``tcp_user_timeout`` bound how long that takes on a half-open link)."""
        await self.conn.execute("SELECT 1")

    def close(self) -> None:
        """Release the wake-up pipe if it is the listener's own (the connection
        belongs to the caller)."""
        if self._own_waker:
            self.waker.close()
