# DO NOT EDIT: generated from job_machine/_async/listener.py by tools/async_to_sync.py.
# Change the async source and run `python tools/async_to_sync.py`.
"""Waiting for notifications on one connection, interruptible from anywhere.

Notifications are only a wake-up hint: whoever waits re-reads the table after
every wake-up and every timeout, so a lost notification delays work, never
loses it. psycopg's errors on the connection are raised as job_machine's
(a dead connection as ConnectionLost), as the Store's are.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from psycopg import Connection, Notify, sql

from .._acompat import select_readable
from .._db_errors import translated
from .._waker import Waker


class Listener:
    """LISTENs on channels of one connection and waits for their notifications.

    The wait also watches a :class:`~job_machine._waker.Waker` (the
    worker's, or one of its own): waking it from another thread or a signal
    handler makes a blocked wait return at once.
    """

    def __init__(self, conn: Connection[Any], waker: Waker | None = None) -> None:
        self.conn = conn
        self.channels: set[str] = set()
        self._own_waker = waker is None
        self.waker = waker if waker is not None else Waker()
        #: Notifications read by :meth:`read_meanwhile`, the newest per
        #: channel (they are hints: which channels spoke is what matters).
        self._meanwhile: dict[str, Notify] = {}
        self._meanwhile_lock = threading.Lock()

    def listen(self, channel: str) -> None:
        """Start receiving ``channel``'s notifications (a no-op if already listening)."""
        if channel not in self.channels:
            with translated(self.conn):
                self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            self.channels.add(channel)

    def unlisten(self, channel: str) -> None:
        """Stop receiving ``channel``'s notifications."""
        if channel in self.channels:
            with translated(self.conn):
                self.conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(channel)))
            self.channels.discard(channel)

    def pending(self) -> list[Notify]:
        """Notifications already received, without waiting (those kept by
        :meth:`read_meanwhile` first)."""
        with self._meanwhile_lock:
            kept, self._meanwhile = list(self._meanwhile.values()), {}
        with translated(self.conn):
            return kept + [n for n in self.conn.notifies(timeout=0)]

    def read_meanwhile(self, quiet: float = 0.01, limit: float = 0.5) -> None:
        """Read the notifications the connection receives until none came
        for ``quiet`` seconds (or for ``limit`` seconds at most), keeping
        them for the next :meth:`wait`, while nobody waits (a long task
        runs). A backend whose client reads nothing blocks once the sockets
        are full and holds the cluster's NOTIFY queue tail. psycopg's
        connection lock keeps this from interleaving with statements on the
        connection (they wait for it, ``quiet`` seconds when nothing comes)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            with translated(self.conn):
                got = [n for n in self.conn.notifies(timeout=quiet)]
            if not got:
                return
            with self._meanwhile_lock:
                for n in got:
                    self._meanwhile[n.channel] = n

    def wait(self, timeout: float | None) -> list[Notify] | None:
        """Wait up to ``timeout`` seconds for notifications.

        :return: the notifications received, possibly ``[]`` when the waker
            was called, or ``None`` when the timeout passed.
        """
        got = self.pending()
        if got:
            return got
        with translated(self.conn):
            sock = self.conn.pgconn.socket
        ready = select_readable([sock, self.waker.fd], timeout)
        if self.waker.fd in ready:
            self.waker.clear()
        if sock in ready:
            got = self.pending()
        if not ready:
            return None
        return got

    def ping(self) -> None:
        """A trivial round trip, to find a connection that died silently: it
        raises when the server is gone (client-side TCP keepalives and
        ``tcp_user_timeout`` bound how long that takes on a half-open link)."""
        with translated(self.conn):
            self.conn.execute("SELECT 1")

    def close(self) -> None:
        """Release the wake-up pipe if it is the listener's own (the connection
        belongs to the caller)."""
        if self._own_waker:
            self.waker.close()
