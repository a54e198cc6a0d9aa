# DO NOT EDIT: generated from job_machine/_async/sideloop.py by tools/async_to_sync.py.
# Change the async source and run `python tools/async_to_sync.py`.
"""The side loop of a worker at concurrency 1: what the serving loop cannot
do while ``process()`` runs.

At concurrency 1 the serving loop runs each task itself, so while one task
runs (in a thread of the sync worker, on the event loop of the async one)
nobody else looks after the worker. The side loop does, in a thread of its
own (sync) or an asyncio task (async), for as long as ``receive()`` serves:

- it reads the listening connection every second while a task runs longer
  than that, so its backend never blocks on a full socket, holding the
  cluster's NOTIFY queue tail, however long ``process()`` takes;
- it writes the ends of a group's earlier tasks once the oldest has waited
  ``prefetch_seconds``, however long the task running now takes (README
  "When ``reply()`` returns");
- past the grace of a ``stop()`` kept by the worker (no signal handlers),
  it stops the task in hand and hands it back.

Its writes go through a connection of its own (opened when first needed,
closed at the end), never the worker's: that one may be in a transaction of
``process()`` (psycopg's connection lock only keeps statements from
interleaving, not a statement from landing inside another's transaction).
At concurrency > 1 the serving loop does all this itself (it waits on the
listener while tasks run, for at most ``prefetch_seconds`` while ends are
pending), and no side loop runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING

from .._acompat import join_all, select_readable, spawn
from .._format import first_line
from .._waker import Waker
from .connection import Connector
from .store import Store

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger("job_machine.worker")

#: Seconds between two reads of the listening connection while a task runs.
READ_WHILE_BUSY = 1.0


class SideLoop:
    """The side loop of one worker (see the module's docstring)."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        #: The side loop's own connection (opened when first needed).
        self._side: Store | None = None
        #: Wakes the loop (a group's first end, a stop); the lock keeps
        #: poke() from writing to it while it is closed.
        self._poke: Waker | None = None
        self._lock = threading.Lock()
        #: When the loop wakes next by itself.
        self._wakes_at = 0.0

    @contextmanager
    def running(self) -> Iterator[None]:
        """Run the loop for the block (at concurrency 1 only)."""
        worker = self._worker
        if worker._slotted:
            yield
            return
        stop, poke = Waker(), Waker()
        self._poke = poke
        worker._completer.on_group = partial(self._group_begun, poke)
        reader = spawn(partial(self._loop, stop, poke), lambda: None)
        try:
            yield
        finally:
            stop.wake()
            join_all([reader])
            worker._completer.on_group = None
            with self._lock:
                self._poke = None
                poke.close()
            stop.close()
            side, self._side = self._side, None
            if side is not None:
                side.connector.close()

    def poke(self) -> None:
        """Wake the loop now (a stop: it keeps the grace). Safe from any thread."""
        if self._lock.acquire(blocking=False):  # busy: the loop is being closed
            try:
                if self._poke is not None:
                    self._poke.wake()
            finally:
                self._lock.release()

    def _group_begun(self, poke: Waker) -> None:
        """A group's first end was collected: make sure the loop looks at it
        within prefetch_seconds (while a batch runs it wakes that often by
        itself, so a drain of short tasks costs no wake-up each)."""
        if self._wakes_at > time.monotonic() + self._worker.prefetch_seconds:
            poke.wake()

    def _store(self) -> Store:
        """Where the loop writes: a pool hands it a connection of its own;
        otherwise a connection of its own, like the worker's."""
        worker = self._worker
        if worker._connector.pool is not None:
            return worker._store
        if self._side is None:
            self._side = Store(
                Connector(dsn=worker._connector.conninfo, connect_kwargs=worker._connect_kwargs)
            )
        return self._side

    def _loop(self, stop: Waker, poke: Waker) -> None:
        worker = self._worker
        completer = worker._completer
        read = time.monotonic()
        handed_back = False
        while True:
            wait = READ_WHILE_BUSY
            if completer.collecting:
                wait = min(wait, worker.prefetch_seconds)  # a group may begin meanwhile
            due = completer.due_in()
            if due is not None:
                wait = min(wait, due)
            grace = None if handed_back else worker._stopper.grace_left()
            if grace is not None:
                wait = min(wait, grace)
            wait = max(0.001, wait)
            self._wakes_at = time.monotonic() + wait
            ready = select_readable([stop.fd, poke.fd], wait)
            if stop.fd in ready:
                return
            if poke.fd in ready:
                poke.clear()
            try:
                if completer.aged():
                    completer.flush_aged(self._store())
                grace = None if handed_back else worker._stopper.grace_left()
                if grace is not None and grace <= 0:
                    handed_back = True
                    worker._stopper.hand_back_running(self._store())
            except Exception as ex:  # logged; the serving loop writes what is left
                logger.warning("worker %s: %s", worker.worker_id, first_line(ex))
            since, listener, now = worker._busy_since, worker._subscriber.listener, time.monotonic()
            if (
                since is None
                or listener is None
                or now - since < READ_WHILE_BUSY
                or now - read < READ_WHILE_BUSY
            ):
                continue
            read = now
            try:
                listener.read_meanwhile()
            except Exception as ex:  # the serving loop finds a broken connection itself
                logger.debug("worker %s: reading notifications: %s", worker.worker_id, ex)
