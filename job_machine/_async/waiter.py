"""Waiting for tasks' answers: the client's side of the reply path.

A waiter subscribes to the process's one reply listener
(:mod:`job_machine.replies`) for the tasks' ``jmr:<id>`` channels, and once
LISTEN is in place reads the table; after that it sleeps until a
notification of one of its tasks arrives, then reads again. Reading after
LISTEN is what makes a wake-up impossible to lose: an answer committed
before the read is seen by the read, one committed after it notifies.

Every way a task ends notifies its channel (reply, result, a plain return,
failure, cancel, removal). A waiter still re-reads every :data:`RECHECK`
seconds, so an end that notifies nobody (a Perl worker's ``result``, a row
deleted by hand) delays an answer by at most that long, never until the
timeout.

A part a worker streams (``send_part``) is announced on the same channel
with the payload ``part``: the answer's waiters ignore it (the listener
does not wake them), the parts' readers (:func:`read_parts`) are woken by it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncGenerator, Sequence

from .. import _codec
from .._acompat import AMutex, AWakeup
from ..channels import PART_PAYLOAD
from ..errors import UnknownTask, WaitTimeout, task_failed
from ..replies import ReplyListener
from ..task import Part, Status
from .store import Answer, AsyncStore

#: Seconds between a waiter's reads of the table when no notification came.
RECHECK = 2.0

#: Most parts one read of :func:`read_parts` fetches.
PART_BATCH = 1000


class _Read:
    """One waiter's request in :class:`AsyncAnswerReader`'s queue."""

    __slots__ = ("error", "ids", "result")

    def __init__(self, ids: Sequence[int]) -> None:
        self.ids = ids
        self.result: dict[int, Answer] | None = None
        self.error: BaseException | None = None


class AsyncAnswerReader:
    """Reads the answers of many waiters in one statement.

    Waiters of one client that need a read at the same moment (a burst of
    replies woke them, or they all just subscribed) queue their task ids;
    whoever gets the reader's lock first reads every queued id at once and
    hands each waiter its rows, and the others find theirs done when the
    lock comes to them. One waiter alone pays one lock and one read.
    """

    def __init__(self, store: AsyncStore) -> None:
        self._store = store
        self._mutex = AMutex()
        self._lock = threading.Lock()
        self._queue: list[_Read] = []

    async def read(self, task_ids: Sequence[int]) -> dict[int, Answer]:
        """The answers of ``task_ids`` (a task missing does not exist)."""
        mine = _Read(task_ids)
        with self._lock:
            self._queue.append(mine)
        async with self._mutex:
            if mine.result is None and mine.error is None:
                with self._lock:
                    batch, self._queue = self._queue, []
                ids = sorted({t for r in batch for t in r.ids})
                try:
                    async with self._store.connector.standalone():
                        found = await self._store.task_answers(ids)
                except BaseException as ex:
                    for r in batch:
                        r.error = ex
                    raise
                for r in batch:
                    r.result = found
        if mine.error is not None:
            raise mine.error
        assert mine.result is not None
        return mine.result


def is_answered(answer: Answer) -> bool:
    """Whether a client waiting on the task has its answer."""
    return answer.reply is not None or answer.status in (Status.FINISHED, Status.FAILED)


async def answers(
    reader: AsyncAnswerReader,
    listener: ReplyListener,
    task_ids: Sequence[int],
    timeout: float | None,
    recheck: float | None = None,
) -> AsyncGenerator[tuple[int, Answer]]:
    """Yield ``(task_id, answer)`` for each of ``task_ids`` as it is answered.

    :raises WaitTimeout: some are still unanswered after ``timeout`` seconds
        (None: wait forever).
    :raises UnknownTask: a task does not exist (or was removed unanswered).
    """
    recheck = RECHECK if recheck is None else recheck
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = list(dict.fromkeys(task_ids))
    woken = AWakeup()
    listening = AWakeup()
    sub = listener.subscribe(pending, woken.set, listening.set, ignore=(PART_PAYLOAD,))
    try:
        # If the listener cannot connect, reading every `recheck` still answers.
        await listening.wait(_bounded(recheck, deadline))
        while pending:
            woken.clear()
            found = await reader.read(pending)
            still = []
            for tid in pending:
                answer = found.get(tid)
                if answer is None:
                    raise UnknownTask(f"there is no task {tid}")
                if is_answered(answer):
                    yield tid, answer
                else:
                    still.append(tid)
            pending = still
            if not pending:
                return
            wait = _bounded(recheck, deadline)
            if wait <= 0:
                ids = ", ".join(map(str, pending[:10])) + (", ..." if len(pending) > 10 else "")
                raise WaitTimeout(f"no reply to task {ids} within {timeout} s")
            await woken.wait(wait)
    finally:
        listener.unsubscribe(sub)


async def read_parts(
    store: AsyncStore,
    listener: ReplyListener,
    task_id: int,
    timeout: float | None,
    recheck: float | None = None,
) -> AsyncGenerator[Part]:
    """Yield the task's parts in order as they are stored, and end once the
    task is answered and every part of its answering attempt was yielded.

    Subscribed like :func:`answers`, then each read (on a wake-up, or every
    ``recheck`` seconds) takes the parts after the last one yielded and the
    task's answer in one snapshot: a part is committed before its attempt's
    answer, so a read that sees the answer sees every part before it, and
    none is lost between the last part and the end. A later attempt (the
    task was retried) is read from its first part on. Before the answer,
    parts are yielded without a gap in ``seq`` (a part committed ahead of
    an earlier one waits for it).

    :raises WaitTimeout: not answered after ``timeout`` seconds (None: wait
        forever); the parts stored by then were yielded.
    :raises TaskFailed: the task failed (after its last attempt's parts).
    :raises UnknownTask: there is no such task (or it was removed).
    """
    recheck = RECHECK if recheck is None else recheck
    deadline = None if timeout is None else time.monotonic() + timeout
    woken = AWakeup()
    listening = AWakeup()
    sub = listener.subscribe([task_id], woken.set, listening.set)
    attempt, seq = 0, 0  # the next part expected
    try:
        await listening.wait(_bounded(recheck, deadline))
        while True:
            woken.clear()
            async with store.connector.standalone():
                read = await store.part_read(task_id, attempt, seq, PART_BATCH)
            if read is None:
                raise UnknownTask(f"there is no task {task_id}")
            answer, current, found = read
            if current != attempt:
                attempt, seq = current, 0
            answered = is_answered(answer)
            gap = False
            for part in found:
                if part.seq != seq and not answered:
                    gap = True  # the part before it is not committed yet
                    break
                yield part
                seq = part.seq + 1
            if len(found) >= PART_BATCH and not gap:
                continue  # more stored than one read takes
            if answered:
                if answer.reply is None and answer.status == Status.FAILED:
                    raise task_failed(task_id, _codec.decode(answer.error))
                return
            wait = _bounded(recheck, deadline)
            if wait <= 0:
                raise WaitTimeout(f"task {task_id} was not answered within {timeout} s")
            await woken.wait(wait)
    finally:
        listener.unsubscribe(sub)


def _bounded(recheck: float, deadline: float | None) -> float:
    if deadline is None:
        return recheck
    return min(recheck, deadline - time.monotonic())
