# DO NOT EDIT: generated from job_machine/_async/completer.py by tools/async_to_sync.py.
# Change the async source and run `python tools/async_to_sync.py`.
"""The completer: writes what tasks ended with, one at a time or in groups.

A task ends with a reply or result (:meth:`Worker.reply`,
:meth:`Worker.result`), a plain return (done without an answer), or an
error. Written one by one, each costs a statement and a commit, and the
commit is most of a short task's cost. So while the worker has more work in
hand (tasks claimed ahead, other slots running), the completer collects the
ends of consecutive tasks and writes them together: one statement, one
commit, with one ``jmr:<task_id>`` notification per task inside it, each
task still fenced by its claiming attempt (``status = 100 AND attempts =
attempt``). When nothing else is in hand (an idle worker's one task, the
case the round-trip latency measures), an end is written at once.

What that means for the promises (docs/worker.md has the user's version):

- ``reply()`` returns once the answer is committed, or, while tasks are in
  hand, once it is queued for the group's commit, which comes before the
  worker claims again and at most ``prefetch_seconds`` after the group's
  first end was queued. At concurrency 1 the serving loop cannot write
  while the next task of the group runs, so a side loop of the worker
  writes the group once it has aged (:meth:`flush_aged`), on a connection
  of its own: the worker's connection may be in a transaction of
  ``process()`` (a ``conn=`` caller's, a note being written) and a
  statement slipped into it would commit or roll back with that.
- A crash between a queued end and its commit leaves the task started; it
  is rescued and runs again (at least once, as before).
- A queued end the database refuses because the attempt was fenced out
  (revived while it ran) is logged, and the revived attempt's own end
  stands; ``TaskNotHeld`` is raised only by an end written at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .._backoff import Backoff
from .._format import first_line
from ..errors import ConnectionFailed, StatementFailed
from ..logging import end_extra
from ..task import ERROR, Status, TaskEnd
from .store import Store

logger = logging.getLogger("job_machine.worker")


class Completer:
    """Collects ends while :attr:`collecting`, and writes them in one statement.

    Thread-safe: a sync worker's task threads add ends while the serving
    loop writes them.
    """

    def __init__(
        self,
        store: Store,
        *,
        retries: Callable[[], int],
        max_age: float,
        reconnect_backoff: Backoff,
        pause: Callable[[float], None],
        can_reconnect: Callable[[], bool],
    ) -> None:
        self._store = store
        self._retries = retries
        #: Seconds the oldest collected end may wait before it is due.
        self.max_age = max_age
        self._backoff = reconnect_backoff
        self._pause = pause
        self._can_reconnect = can_reconnect
        self._lock = threading.Lock()
        self._pending: list[TaskEnd] = []
        self._since = 0.0
        #: Ends taken by :meth:`flush_aged` and not written yet.
        self._in_flight: list[TaskEnd] = []
        #: :meth:`flush_aged`'s own backoff after a failed write, and when
        #: it may try again.
        self._aged_backoff = Backoff(reconnect_backoff.base, reconnect_backoff.cap)
        self._aged_retry_at = 0.0
        #: Whether ends are collected (True) or written at once by their caller.
        self.collecting = False
        #: Called (in the caller's thread) when a group's first end is
        #: collected: the worker's side loop starts watching its age.
        self.on_group: Callable[[], None] | None = None

    # -- collecting -----------------------------------------------------------

    def add(self, end: TaskEnd) -> bool:
        """Collect ``end`` if collecting (True); else the caller writes it now."""
        with self._lock:
            if not self.collecting:
                return False
            first = not self._pending
            if first:
                self._since = time.monotonic()
            self._pending.append(end)
        if first and self.on_group is not None:
            self.on_group()
        return True

    @property
    def pending(self) -> int:
        """How many ends wait to be written."""
        with self._lock:
            return len(self._pending)

    def pending_ids(self) -> list[int]:
        """The tasks whose ends wait to be written (still held by this worker)."""
        with self._lock:
            return [e.task_id for e in self._pending + self._in_flight]

    def due_in(self) -> float | None:
        """Seconds until :meth:`flush_aged` has something to write: the
        oldest collected end has waited :attr:`max_age` (and a failed try's
        backoff is over); 0 or less: now. None when none is collected."""
        with self._lock:
            if not self._pending:
                return None
            due = max(self._since + self.max_age, self._aged_retry_at)
            return due - time.monotonic()

    def aged(self, now: float | None = None) -> bool:
        """Whether the oldest collected end has waited :attr:`max_age`."""
        with self._lock:
            if not self._pending:
                return False
            return (time.monotonic() if now is None else now) - self._since >= self.max_age

    def due(self, more_in_hand: bool, slots: int) -> bool:
        """Whether to write now: nothing more is in hand (about to claim or
        to sleep), as many ends as slots, or the oldest has aged."""
        with self._lock:
            n = len(self._pending)
        return n > 0 and (not more_in_hand or n >= slots or self.aged())

    def take(self) -> list[TaskEnd]:
        """Hand over the collected ends for writing."""
        with self._lock:
            pending, self._pending = self._pending, []
        return pending

    # -- writing ------------------------------------------------------------------

    def flush(self) -> None:
        """Write the collected ends in one statement, retrying through a lost
        connection or a failed statement (the tasks stay held meanwhile, so
        nobody else takes them)."""
        ends = self.take()
        if ends:
            self.write(ends)

    def flush_aged(self, store: Store) -> None:
        """Write the collected ends through ``store`` if the oldest has waited
        :attr:`max_age`: one try (from the worker's side loop, while a task
        runs). Ends that could not be written are collected again, for the
        serving loop's own write with its retries."""
        now = time.monotonic()
        with self._lock:
            if not self._pending or now - self._since < self.max_age or now < self._aged_retry_at:
                return
            ends, since, self._pending = self._pending, self._since, []
            self._in_flight = ends
        try:
            written = store.task_complete_many(ends, self._retries())
        except (ConnectionFailed, StatementFailed) as ex:
            delay = self._aged_backoff.next()
            with self._lock:
                self._pending[:0] = ends
                self._since = since
                self._in_flight = []
                self._aged_retry_at = time.monotonic() + delay
            _log_retry(len(ends), ex, delay)
            return
        self._aged_backoff.reset()
        with self._lock:
            self._in_flight = []
            self._aged_retry_at = 0.0
        self._report(ends, written)

    def write(self, ends: list[TaskEnd]) -> dict[int, Status]:
        """Write ``ends`` in one statement; the new status of each task written.
        A task missing was fenced out (revived while it ran) and is logged."""
        while True:
            try:
                written = self._store.task_complete_many(ends, self._retries())
                break
            except (ConnectionFailed, StatementFailed) as ex:
                # A statement that failed on a live connection (a timeout or
                # cancel, a deadlock, no pooled connection free) committed
                # nothing: the ends are kept and written again.
                if isinstance(ex, ConnectionFailed) and not self._can_reconnect():
                    raise
                delay = self._backoff.next()
                _log_retry(len(ends), ex, delay)
                self._pause(delay)
        self._backoff.reset()
        self._report(ends, written)
        return written

    @staticmethod
    def _report(ends: list[TaskEnd], written: dict[int, Status]) -> None:
        """Log the ends the database refused, and the failures."""
        for end in ends:
            status = written.get(end.task_id)
            if status is None:
                # Revived while it ran, or written by a try whose answer was lost.
                logger.warning(
                    "task %d: its %s was not stored (this attempt no longer holds it)",
                    end.task_id,
                    end.kind,
                    extra=end_extra(end.task_id, end.attempt, end.queue),
                )
            elif end.kind == ERROR:
                _log_failure(end, status)


def _log_retry(n: int, ex: Exception, delay: float) -> None:
    logger.warning(
        "%d task(s): could not store how they ended (%s); trying again in %.1f s",
        n,
        first_line(ex),
        delay,
    )


def _log_failure(end: TaskEnd, status: Status) -> None:
    if status == Status.WAITING:
        logger.warning(
            "task %d attempt %d raised %s; retrying in %.1f s",
            end.task_id,
            end.attempt,
            end.raised,
            end.delay,
            extra=end_extra(end.task_id, end.attempt, end.queue),
        )
    else:
        logger.error(
            "task %d failed after %d attempts: %s",
            end.task_id,
            end.attempt,
            end.raised,
            extra=end_extra(end.task_id, end.attempt, end.queue),
        )
