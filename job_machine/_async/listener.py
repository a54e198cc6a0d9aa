"""Waiting for notifications on one connection, interruptible from anywhere.

Notifications are only a wake-up hint: whoever waits re-reads the table after
every wake-up and every timeout, so a lost notification delays work, never
loses it.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from psycopg import AsyncConnection, Notify, sql

from .._acompat import aselect_readable


class AsyncListener:
    """LISTENs on channels of one connection and waits for their notifications.

    :meth:`wake` may be called from another thread or a signal handler: it
    writes to a pipe that the wait watches beside the connection's socket
    (the self-pipe trick), so a blocked wait returns at once.
    """

    def __init__(self, conn: AsyncConnection[Any]) -> None:
        self.conn = conn
        self.channels: set[str] = set()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

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

        :return: the notifications received, possibly ``[]`` when :meth:`wake`
            was called, or ``None`` when the timeout passed.
        """
        got = await self.pending()
        if got:
            return got
        sock = self.conn.pgconn.socket
        ready = await aselect_readable([sock, self._wake_r], timeout)
        if self._wake_r in ready:
            self._drain_wake()
        if sock in ready:
            got = await self.pending()
        if not ready:
            return None
        return got

    def wake(self) -> None:
        """Make a current or the next :meth:`wait` return at once. Thread- and signal-safe."""
        if self._wake_w < 0:
            return  # closed: nothing is waiting any more
        with contextlib.suppress(BlockingIOError):  # full of wake-ups already
            os.write(self._wake_w, b"!")

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass

    def close(self) -> None:
        """Release the wake-up pipe (the connection belongs to the caller)."""
        fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
