"""Sends of one client that arrive together, written together.

A web process shares one client between its requests, and under load many of
them send at the same moment. Each send on its own is a statement and a
commit, one after the other on the client's connection. So concurrent sends
queue up: whoever finds no write in progress becomes the writer and writes
every queued send, one statement per queue and set of options (the statement
of ``send_many``: one commit, one notification), until the queue is empty;
the others wait for their task id. A send alone pays a lock and nothing more.

Only the simple sends go this way (no ``unique_key``, no ``parents``), and
only on the client's own connection or pool: on the caller's connection each
send stays part of the caller's transaction.
"""

from __future__ import annotations

import threading
from typing import Any

from .._acompat import AWakeup, ashield
from .store import AsyncStore


class _Send:
    """One queued send and, once written, its task id or error."""

    __slots__ = ("channel", "error", "key", "options", "parameters", "queue", "task_id", "woken")

    def __init__(self, queue: str, parameters: str, channel: str, options: dict[str, Any]) -> None:
        self.queue = queue
        self.parameters = parameters
        self.channel = channel
        self.options = options
        # Each send's own trace context goes with its row, not in the key:
        # traced sends still share a statement.
        self.key = (
            queue,
            channel,
            tuple(sorted(kv for kv in options.items() if kv[0] != "trace_context")),
        )
        self.task_id: int | None = None
        self.error: BaseException | None = None
        self.woken = AWakeup()

    @property
    def done(self) -> bool:
        return self.task_id is not None or self.error is not None


class AsyncSendGroup:
    """Writes a client's concurrent sends together (see the module)."""

    def __init__(self, store: AsyncStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._queue: list[_Send] = []
        self._writing = False

    async def send(self, queue: str, parameters: str, channel: str, options: dict[str, Any]) -> int:
        """Insert one waiting task (checked options, encoded data) and return its id."""
        with self._lock:
            alone = not self._writing and not self._queue
            if alone:
                self._writing = True
        if alone:
            # Nobody else is sending: write it straight away (the common case
            # of a quiet client), then hand the role to a send that queued
            # meanwhile, if any.
            try:
                return await self._store.task_insert(queue, parameters, channel, options)
            finally:
                with self._lock:
                    self._writing = False
                    waiting = self._queue[:1]
                for send in waiting:
                    send.woken.set()
        mine = _Send(queue, parameters, channel, options)
        with self._lock:
            self._queue.append(mine)
        while not mine.done:
            with self._lock:
                lead = not self._writing
                if lead:
                    self._writing = True
            if lead:
                await self._write_queued()
                continue
            try:
                await mine.woken.wait(None)
            except BaseException:
                with self._lock:  # given up before its turn: never written
                    if mine in self._queue:
                        self._queue.remove(mine)
                raise
            mine.woken.clear()
        if mine.error is not None:
            raise mine.error
        assert mine.task_id is not None
        return mine.task_id

    async def _write_queued(self) -> None:
        """As the writer: write batches until the queue is empty, then hand
        the role back (waking a waiting send to take it, if one came late)."""
        try:
            while True:
                with self._lock:
                    batch, self._queue = self._queue, []
                    if not batch:
                        self._writing = False
                        return
                # Shielded: a writer cancelled mid-statement (its caller gave
                # up) still finishes the batch for the others in it.
                await ashield(self._write(batch))
        except BaseException:
            with self._lock:
                self._writing = False
                waiting = list(self._queue)
            for send in waiting[:1]:
                send.woken.set()  # someone must take over the queue
            raise

    async def _write(self, batch: list[_Send]) -> int:
        """Write a batch, a statement per queue and options; how many statements."""
        groups: dict[tuple[Any, ...], list[_Send]] = {}
        for send in batch:
            groups.setdefault(send.key, []).append(send)
        for sends in groups.values():
            first = sends[0]
            try:
                if len(sends) == 1:
                    ids = [
                        await self._store.task_insert(
                            first.queue, first.parameters, first.channel, first.options
                        )
                    ]
                else:
                    ids = await self._store.task_insert_many(
                        first.queue,
                        [s.parameters for s in sends],
                        first.channel,
                        first.options,
                        [s.options.get("trace_context") for s in sends],
                    )
            except Exception as ex:
                for send in sends:
                    send.error = ex
            else:
                for send, task_id in zip(sends, ids, strict=True):
                    send.task_id = task_id
            for send in sends:
                send.woken.set()
        return len(groups)
