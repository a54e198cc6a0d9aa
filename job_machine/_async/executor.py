"""The executor: runs one task and persists how it ended.

For each task it is given, the executor checks that a task claimed ahead
may still run (see :meth:`AsyncExecutor.begin`), sets the task in hand (a
context variable, so concurrent tasks each see their own), calls the
worker's ``process()``, and records the outcome: the answer ``reply()`` or
``result()`` gave, a done mark for a plain return, or the error it raised
with the retry delay. An outcome goes to the completer while it collects
(written with the group), else it is written at once, retried through a
lost connection or a failed statement until it reaches the database
(outcome.py).

An attempt is stopped when it passes its time limit (the task's own, else
the worker's) or when its task is cancelled (:meth:`AsyncExecutor.cancel`):
the async worker cancels the coroutine, a thread sees ``task.cancelled``.
Past the time limit the executor writes the attempt's
:class:`~job_machine.TimeLimitExceeded` error at once (fenced by the
attempt, retried or failed like any error), whether or not the code has
stopped yet; a cancel was written by whoever cancelled. Either way what the
attempt writes afterwards is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from .. import _codec, _otel
from .._acompat import ATimer, arun_stoppable
from .._backoff import Backoff
from ..errors import (
    Cancelled,
    NoCurrentTask,
    TaskNotHeld,
    TimeLimitExceeded,
)
from ..logging import task_extra
from ..task import Task
from .completer import AsyncCompleter
from .outcome import AsyncOutcome
from .store import AsyncStore

T = TypeVar("T")

logger = logging.getLogger("job_machine.worker")

#: Most cancels of attempts not started yet that an executor remembers (a
#: cancel of an attempt that ended meanwhile is never looked up again).
_CANCELLED_AHEAD = 1000


@dataclass(slots=True)
class _InHand:
    """A task being processed, and whether process() has answered it yet."""

    task: Task
    answered: bool = False
    #: The seq of the next part send_part() stores.
    parts: int = 0


class AsyncExecutor:
    """Runs tasks with the worker's ``process`` and records how they ended.

    Every setting is read through a callable when it is needed, so a value
    the worker's owner sets after construction (in ``startup()``, say) holds.
    """

    def __init__(
        self,
        store: AsyncStore,
        completer: AsyncCompleter,
        *,
        process: Callable[[Task], Awaitable[None]],
        retry_delay: Callable[[Task, BaseException], float],
        retries: Callable[[], int],
        backoff: Callable[[], Backoff],
        pause: Callable[[float], Awaitable[None]],
        can_reconnect: Callable[[], bool],
        must_reclaim: Callable[[float], bool],
        name: str,
        time_limit: Callable[[], float | None] = lambda: None,
        on_stopped: Callable[[Task, Exception], None] | None = None,
    ) -> None:
        self._store = store
        self._outcome = AsyncOutcome(
            store,
            completer,
            retry_delay=retry_delay,
            retries=retries,
            backoff=backoff,
            pause=pause,
            can_reconnect=can_reconnect,
        )
        self._process = process
        self._retries = retries
        self._must_reclaim = must_reclaim
        self._in_hand: ContextVar[_InHand | None] = ContextVar(name, default=None)
        self._time_limit = time_limit
        #: Called (in any thread) once an attempt was stopped and its end
        #: written: a worker process ends itself there.
        self._on_stopped = on_stopped
        #: The tasks whose process() runs, by id (for cancel(), from any thread).
        self._running: dict[int, Task] = {}
        #: Attempts cancelled before their process() started (claimed ahead):
        #: (task id, attempt), never run.
        self._cancelled_ahead: set[tuple[int, int]] = set()
        # Look for an OpenTelemetry provider now (importing the package, about
        # 10 ms), not on the first task.
        _otel.enabled()

    # -- the task in hand -----------------------------------------------------------

    def current(self) -> Task:
        """The task being processed (in this thread or asyncio task)."""
        in_hand = self._in_hand.get()
        if in_hand is None:
            raise NoCurrentTask("no task is being processed (call this from process())")
        return in_hand.task

    def held(self) -> list[tuple[int, int]]:
        """The (task id, attempt) of every task whose process() runs now."""
        return [(t.id, t.attempt) for t in list(self._running.values())]

    def cancel(self, task_id: int, attempt: int) -> bool:
        """Stop ``attempt`` of ``task_id`` (from any thread), cancelled by an
        operator (the task has failed already): the async worker cancels its
        coroutine, a thread sees ``task.cancelled``. An attempt claimed
        ahead and not started yet will not start. False when it does not
        run here (or was stopped or had ended already)."""
        task = self._running.get(task_id)
        if task is None or task.attempt != attempt:
            self._cancelled_ahead.add((task_id, attempt))
            while len(self._cancelled_ahead) > _CANCELLED_AHEAD:
                self._cancelled_ahead.pop()
            return False
        reason = Cancelled(f"task {task_id} was cancelled")
        if not task.stop.stop(reason):
            return False
        logger.warning(
            "task %d attempt %d: %s; stopping it",
            task.id,
            task.attempt,
            reason,
            extra=task_extra(task),
        )
        if self._on_stopped is not None:
            self._on_stopped(task, reason)
        return True

    async def hand_back(self, store: AsyncStore, reason: Exception) -> int:
        """Stop every attempt whose process() runs here and hand its task
        back at once through ``store``: waiting again, due now, with
        ``reason`` as the attempt's error (failed when it has used its
        attempts). What the attempt writes afterwards is refused. How many
        were handed back."""
        handed = 0
        for task in list(self._running.values()):
            if task.stop.stop(reason):  # else it ended (or was stopped) meanwhile
                handed += await self._outcome.hand_back(store, task, reason)
        return handed

    def current_id(self) -> int | None:
        """The id of the task being processed here, if any."""
        in_hand = self._in_hand.get()
        return None if in_hand is None else in_hand.task.id

    def _unanswered(self) -> Task:
        """The task in hand, which must not have been answered yet, nor
        stopped (its attempt is ended in the database already)."""
        in_hand = self._in_hand.get()
        if in_hand is not None and in_hand.answered:
            raise TaskNotHeld(f"task {in_hand.task.id} is answered already")
        task = self.current()
        stopped = task.stop.reason
        if stopped is not None:
            raise TaskNotHeld(
                f"task {task.id} attempt {task.attempt} was stopped "
                f"({type(stopped).__name__}): it is no longer held by this worker"
            )
        return task

    async def finish(self, data: Any, notify: bool) -> None:
        """Store ``data`` as the answer of the task in hand and mark it done
        (notifying the client when ``notify``).

        :raises TaskNotHeld: written at once and refused: no longer held.
        """
        task = self._unanswered()
        text = _codec.encode(data, "reply data")
        with _otel.reply_span(task):
            if not await self._outcome.answered(task, text, notify):
                raise TaskNotHeld(f"task {task.id} is no longer held by this worker")
        in_hand = self._in_hand.get()
        if in_hand is not None:
            in_hand.answered = True

    def next_part(self) -> tuple[Task, int]:
        """The task in hand (not answered yet) and the seq of its next part.

        :raises TaskNotHeld: the task in hand is answered already.
        """
        task = self._unanswered()
        in_hand = self._in_hand.get()
        assert in_hand is not None
        seq, in_hand.parts = in_hand.parts, in_hand.parts + 1
        return task, seq

    def mark_answered(self) -> None:
        """The task in hand was answered by other means (a task function's
        rejection, written at once): no done mark follows process()."""
        in_hand = self._in_hand.get()
        if in_hand is not None:
            in_hand.answered = True

    async def error_result(self, data: Any) -> None:
        """Store ``data`` as an error result of the task in hand."""
        task = self._unanswered()
        text = _codec.encode(data, "error_result data")
        if not await self._store.result_insert_error(task.id, task.attempt, text):
            raise TaskNotHeld(f"task {task.id} is no longer held by this worker")

    # -- running one task ------------------------------------------------------------

    async def begin(self, task: Task, waited: float) -> bool:
        """Whether ``task``, claimed ``waited`` seconds ago, may run now.

        A task that waited in the buffer twice ``prefetch_seconds`` or more
        (longer than a batch is meant to last) is claimed again first, in
        one statement that starts its clock (``max_runtime`` counts from
        here) and finds a task given up or revived while it waited, which
        must not run. One that waited less runs at once: no statement on the
        drain's hot path; its clock started at most ``2 * prefetch_seconds``
        earlier."""
        if not self._must_reclaim(waited):
            return True
        return await self._outcome.begin(task)

    async def run(self, task: Task, waited: float = 0.0) -> None:
        """Run ``task`` with ``process()`` and record how it ended."""
        if self._cancelled_ahead and (task.id, task.attempt) in self._cancelled_ahead:
            self._cancelled_ahead.discard((task.id, task.attempt))
            logger.warning(
                "task %d was cancelled while it waited in the worker; not run",
                task.id,
                extra=task_extra(task),
            )
            return
        if not await self.begin(task, waited):
            logger.warning(
                "task %d was given up or revived while it waited in the worker; not run",
                task.id,
                extra=task_extra(task),
            )
            return
        in_hand = _InHand(task)
        token = self._in_hand.set(in_hand)
        self._running[task.id] = task
        limit = task.time_limit if task.time_limit is not None else self._time_limit()
        timer = None if limit is None else ATimer(limit, partial(self._time_out, task, limit))
        try:
            with _otel.process_span(task, lambda: self._will_retry(task)):
                try:
                    await arun_stoppable(lambda: self._process(task), task.stop)
                finally:
                    self._running.pop(task.id, None)
                    stopped = None if task.stop.settle() else task.stop.reason
                    if timer is not None:
                        await timer.finish()  # a time-out being written: its end
                if stopped is not None:
                    raise stopped
        except Exception as ex:
            if task.stop.reason is not None:
                # Stopped: its end is written (the time-out's error, or the
                # cancel); whatever the code raised or answered since is not.
                logger.info(
                    "task %d attempt %d stopped (%s)",
                    task.id,
                    task.attempt,
                    type(task.stop.reason).__name__,
                    extra=task_extra(task),
                )
            elif in_hand.answered:
                # Answered, then raised: the answer stands, whether it was
                # written at once or queued for the group's commit (which
                # must not also get an error end for the same attempt).
                logger.warning(
                    "task %d attempt %d raised %r after it was answered; the answer stands",
                    task.id,
                    task.attempt,
                    ex,
                    extra=task_extra(task),
                )
            else:
                await self._outcome.failed(task, ex)
        else:
            if not in_hand.answered:
                await self._outcome.done(task)
        finally:
            self._in_hand.reset(token)

    def _will_retry(self, task: Task) -> bool:
        """Whether a failure of this attempt would leave attempts to come
        (for the process span; the database decides)."""
        budget = task.max_attempts if task.max_attempts is not None else self._retries() + 1
        return task.attempt < budget

    async def _time_out(self, task: Task, limit: float) -> None:
        """The attempt passed its time limit: stop it, and write its
        TimeLimitExceeded error at once (the code may not stop soon: a
        thread only stops when it looks)."""
        error = TimeLimitExceeded(
            f"attempt {task.attempt} of task {task.id} ran longer than its time limit ({limit:g} s)"
        )
        if not task.stop.stop(error):
            return  # it ended (or was cancelled) meanwhile
        await self._outcome.failed(task, error, grouped=False)
        if self._on_stopped is not None:
            self._on_stopped(task, error)
