"""The subscriber room: the queues a worker serves, and its listening connection.

A worker is given queue names and patterns (``gl.*``, ``gl.**``, see
:mod:`job_machine.channels`). It serves the exact names, and the existing
queues the patterns match: those are looked up again at every look at the
queues (:meth:`AsyncSubscriber.subscribe`), when a queue is created (the
patterns' worker LISTENs on ``NEW_QUEUE_CHANNEL``), and housekeeping's
removed queues are dropped. It LISTENs on ``jm:<queue>`` for each queue
served, on a connection that is never handed to anyone else: the worker's
own one when it has no pool (and no ``listen_dsn``), else one opened for it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection

from .._waker import Waker
from ..channels import NEW_QUEUE_CHANNEL, is_pattern, queue_channel, subscription
from ..liveness import CLIENT_KEEPALIVES
from .connection import AsyncConnector, aconnect
from .listener import AsyncListener
from .store import AsyncStore

logger = logging.getLogger("job_machine.worker")


class AsyncSubscriber:
    """The queues one worker serves, and its listener while it listens.

    :param queues: the queues and patterns to serve, checked.
    :param worker_id: the worker's id now, for the log.
    """

    def __init__(
        self,
        queues: Sequence[str],
        store: AsyncStore,
        connector: AsyncConnector,
        *,
        worker_id: Callable[[], int | None],
    ) -> None:
        self._queues = list(queues)
        self._store = store
        self._connector = connector
        self._worker_id = worker_id
        #: The patterns among the queues.
        self.patterns = [q for q in self._queues if is_pattern(q)]
        #: The queue names served: the exact ones, and those the patterns
        #: match among the queues that exist.
        self.served: list[str] = [str(q) for q in self._queues if not is_pattern(q)]
        #: The listener while the worker listens, else None.
        self.listener: AsyncListener | None = None

    async def subscribe(self, listener: AsyncListener | None) -> None:
        """Serve (and LISTEN on) every existing queue the patterns match, and
        no longer those of them that housekeeping removed."""
        if not self.patterns:
            return
        sub = subscription(self._queues, self.served, await self._store.queue_names())
        for name in sub.added:
            if listener is not None:
                await listener.listen(queue_channel(name))
            logger.info("worker %s: now serving queue %s", self._worker_id(), name)
        # Long names may share a channel (truncated to 63 bytes): keep it
        # while a queue still served is announced on it.
        kept = {queue_channel(q) for q in sub.served}
        for name in sub.dropped:
            if listener is not None and queue_channel(name) not in kept:
                await listener.unlisten(queue_channel(name))
        self.served = sub.served

    @asynccontextmanager
    async def listening(
        self, listen_dsn: str | None, waker: Waker | None
    ) -> AsyncIterator[AsyncListener]:
        """Listen on the queues served for the block, on a listening
        connection (``listen_dsn``'s, when given); ``waker`` interrupts
        the listener's waits."""
        async with self._listening_connection(listen_dsn) as conn:
            listener = AsyncListener(conn, waker)
            try:
                if self.patterns:
                    # First, so a queue created from now on is heard of.
                    await listener.listen(NEW_QUEUE_CHANNEL)
                for name in self.served:
                    await listener.listen(queue_channel(name))
                await self.subscribe(listener)
                self.listener = listener
                yield listener
            finally:
                self.listener = None
                listener.close()

    @asynccontextmanager
    async def _listening_connection(
        self, listen_dsn: str | None
    ) -> AsyncIterator[AsyncConnection[Any]]:
        connector = self._connector
        if connector.pool is not None or listen_dsn:
            # Work goes through the pool (or elsewhere); listening needs a
            # connection that is never handed to anyone else.
            conn = await aconnect(listen_dsn or connector.conninfo, **CLIENT_KEEPALIVES)
            try:
                yield conn
            finally:
                await conn.close()
        else:
            async with connector.listening() as conn:
                yield conn
