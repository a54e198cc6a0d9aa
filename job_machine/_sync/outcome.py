# DO NOT EDIT: generated from job_machine/_async/outcome.py by tools/async_to_sync.py.
# Change the async source and run `python tools/async_to_sync.py`.
"""An attempt's outcome, written until it reaches the database.

The executor runs a task; this room writes how the attempt ended: its
answer (``reply()``/``result()``), a done mark for a plain return, or the
error it raised with its retry delay, and the hand-back of a task stopped
past a stop's grace. An outcome goes to the completer while it collects
(written with the group); else it is written at once and retried through
a lost connection or a failed statement until it reaches the database
(:meth:`Outcome.persist`): the task stays held meanwhile, so nobody
else takes it, and a write whose answer was lost is recognised by what the
database then holds of this very attempt.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from .. import _codec
from .._backoff import Backoff
from .._format import first_line
from ..errors import Cancelled, ConnectionFailed, StatementFailed, TaskNotHeld
from ..logging import task_extra
from ..task import DONE, ERROR, REPLY, RESULT, Status, Task, TaskEnd
from .completer import Completer
from .store import Store

T = TypeVar("T")

logger = logging.getLogger("job_machine.worker")


class Outcome:
    """Writes the outcomes of a worker's attempts (see the module).

    Every setting is read through a callable when it is needed, so a value
    the worker's owner sets after construction holds.
    """

    def __init__(
        self,
        store: Store,
        completer: Completer,
        *,
        retry_delay: Callable[[Task, BaseException], float],
        retries: Callable[[], int],
        backoff: Callable[[], Backoff],
        pause: Callable[[float], None],
        can_reconnect: Callable[[], bool],
    ) -> None:
        self._store = store
        self._completer = completer
        self._retry_delay = retry_delay
        self._retries = retries
        self._backoff = backoff
        self._pause = pause
        self._can_reconnect = can_reconnect

    def begin(self, task: Task) -> bool:
        """Claim ``task`` again before it runs (it waited long in the
        buffer): False when it was given up or revived meanwhile."""
        return self.persist(lambda: self._store.task_begin(task.id, task.attempt), task, _not_held)

    def answered(self, task: Task, text: str, notify: bool) -> bool:
        """Store ``text`` (encoded JSON) as the answer of ``task`` and mark it
        done, notifying the client when ``notify``: queued for the group's
        commit while the completer collects, else written now. False when
        the attempt is no longer held."""
        end = TaskEnd(task.id, task.attempt, REPLY if notify else RESULT, text, queue=task.queue)
        if self._completer.add(end):
            return True
        return self.persist(
            lambda: self._store.task_finish(task.id, task.attempt, text, notify),
            task,
            lambda: self._finished_by(task),
        )

    def done(self, task: Task) -> None:
        """Mark ``task`` done: ``process()`` returned without answering."""
        if self._completer.add(TaskEnd(task.id, task.attempt, DONE, queue=task.queue)):
            return
        if not self.persist(
            lambda: self._store.task_done(task.id, task.attempt),
            task,
            lambda: self._finished_by(task),
        ):
            logger.warning(
                "task %d was revived while it ran; not marked done",
                task.id,
                extra=task_extra(task),
            )

    def failed(self, task: Task, ex: Exception, grouped: bool = True) -> None:
        """Record that the attempt raised ``ex``: the task waits for its retry
        delay, or fails when it has used its attempts. ``grouped``: it may
        go with the group's commit (a time-out is written at once)."""
        if isinstance(ex, TaskNotHeld | Cancelled):
            logger.warning("%s", ex, extra=task_extra(task))
            return
        error = {
            "type": type(ex).__qualname__,
            "message": str(ex),
            "traceback": "".join(traceback.format_exception(ex)),
            "attempt": task.attempt,
        }
        delay = self._retry_delay(task, ex)
        text = _codec.encode(error, "error")
        end = TaskEnd(task.id, task.attempt, ERROR, text, delay, repr(ex), task.queue)
        if grouped and self._completer.add(end):
            return
        retries = self._retries()
        status = self.persist(
            lambda: self._store.task_fail_attempt(task.id, task.attempt, text, retries, delay),
            task,
            lambda: self._failure_recorded(task, _codec.decode(text)),
        )
        if status is None:
            logger.warning(
                "task %d raised %r but was revived meanwhile", task.id, ex, extra=task_extra(task)
            )
        elif status == Status.WAITING:
            logger.warning(
                "task %d attempt %d raised %r; retrying in %.1f s",
                task.id,
                task.attempt,
                ex,
                delay,
                extra=task_extra(task),
            )
        else:
            logger.error(
                "task %d failed after %d attempts: %r",
                task.id,
                task.attempt,
                ex,
                extra=task_extra(task),
            )

    def hand_back(self, store: Store, task: Task, reason: Exception) -> bool:
        """Hand a stopped attempt's task back at once through ``store``:
        waiting again, due now, with ``reason`` as the attempt's error
        (failed when it has used its attempts). Once, no retry: when the
        write fails the worker's deregistration hands it back instead.
        Whether it was handed back."""
        error = {"type": type(reason).__qualname__, "message": str(reason)}
        text = _codec.encode(error | {"attempt": task.attempt}, "error")
        try:
            status = store.task_fail_attempt(task.id, task.attempt, text, self._retries(), 0.0)
        except (ConnectionFailed, StatementFailed) as ex:
            logger.warning(
                "task %d: could not hand it back now (%s)",
                task.id,
                first_line(ex),
                extra=task_extra(task),
            )
            return False
        if status is None:
            return False
        logger.warning(
            "task %d attempt %d: %s; handed back (%s)",
            task.id,
            task.attempt,
            reason,
            "failed" if status == Status.FAILED else "waiting again",
            extra=task_extra(task),
        )
        return True

    def persist(
        self,
        write: Callable[[], T],
        task: Task,
        recovered: Callable[[], T],
    ) -> T:
        """Run a write about ``task`` until it reaches the database: a finished
        task's outcome is kept through a lost connection or a statement that
        failed on a live one (a timeout or cancel, a deadlock, no pooled
        connection free), retried with backoff (the task stays held
        meanwhile, so nobody else takes it). When a try
        committed but its answer was lost, the next finds the task no longer
        held: ``recovered()`` then reads what the database shows of this very
        attempt's write (its result, or a falsy value when it is not there)."""
        backoff = self._backoff()
        lost = False
        while True:
            try:
                result = write()
            except (ConnectionFailed, StatementFailed) as ex:
                if isinstance(ex, ConnectionFailed):
                    if not self._can_reconnect():
                        raise
                    lost = True  # the write may have committed, its answer lost
                delay = backoff.next()
                logger.warning(
                    "task %d: could not store its outcome (%s); trying again in %.1f s",
                    task.id,
                    first_line(ex),
                    delay,
                )
                self._pause(delay)
                continue
            if not result and lost:
                return recovered()
            return result

    def _finished_by(self, task: Task) -> bool:
        """Whether ``task`` was marked done by this attempt: finished with
        this attempt number (the fencing token grows with every claim, and
        only the holder of an attempt can finish it). A task given up or
        revived meanwhile, failed or waiting again, was not."""
        info = self._store.task_info(task.id)
        return bool(info and info.status == Status.FINISHED and info.attempts == task.attempt)

    def _failure_recorded(self, task: Task, error: Any) -> Status | None:
        """The status this attempt's failure left the task in, when the
        database holds the very error it wrote (a give-up or a rescue stores
        an error of its own for the same attempt); else None."""
        info = self._store.task_info(task.id)
        if info is None or error not in info.errors:
            return None
        if info.status == Status.FAILED and info.attempts == task.attempt:
            return Status.FAILED
        return Status.WAITING


def _not_held() -> bool:
    """What a re-claim whose answer was lost found, when its retry finds the
    task not held: not held (the re-claim only restarts a clock)."""
    return False
