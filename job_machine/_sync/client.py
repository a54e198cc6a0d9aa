# DO NOT EDIT: generated from job_machine/_async/client.py by tools/async_to_sync.py.
# Change the async source and run `python tools/async_to_sync.py`.
"""Client: send tasks and get their replies."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import closing
from datetime import datetime, timedelta
from typing import Any

from psycopg import Connection
from psycopg_pool import ConnectionPool

from .. import _codec, _otel
from .._options import send_options
from ..channels import queue_channel, validate_queue
from ..errors import NoCurrentTask, UnknownTask, task_failed
from ..replies import ReplyListener, reply_listener
from ..task import Answered, Part, Status, TaskInfo
from .connection import Connector, ConnectorOwner
from .locks import LocksAndNotes
from .sender import SendGroup
from .store import Answer, Store
from .waiter import AnswerReader, answers, read_parts


class Client(LocksAndNotes, ConnectorOwner):
    """Sends tasks to a queue and reads the replies of the workers.

    :param dsn: a PostgreSQL connection string; the client opens its own
        autocommit connection on first use.
    :param queue: the default queue of :meth:`send` (a dotted name such as
        ``"gl.accounting"``).
    :param conn: use this connection instead. A :meth:`send` made while it is
        inside a transaction is part of that transaction: the task exists, and
        its notification fires, only if the caller commits.
    :param pool: use connections from this pool instead (one per call,
        never held while waiting for a reply).
    :param listen_dsn: where the process's reply listener connects, when
        the client's statements go elsewhere (a PgBouncer in transaction mode
        cannot LISTEN: give the direct address here). By default the reply
        listener opens a connection like the client's (its ``dsn``, the
        pool's conninfo, or the given connection's parameters).
    :param connect_kwargs: extra keyword arguments for ``psycopg.connect``
        when the client opens its own connection; behind PgBouncer in
        transaction mode pass ``{"prepare_threshold": None}``.
    :param extra: any other keyword arguments are kept as attributes of the
        client, as Job::Machine's extra parameters are.
    """

    def __init__(
        self,
        dsn: str | None = None,
        queue: str | None = None,
        *,
        conn: Connection[Any] | None = None,
        pool: ConnectionPool | None = None,
        listen_dsn: str | None = None,
        connect_kwargs: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        self.queue = validate_queue(queue) if queue is not None else None
        #: The id of the task most recently sent; the default of check/receive/wait.
        self.id: int | None = None
        self._connector = Connector(dsn=dsn, conn=conn, pool=pool, connect_kwargs=connect_kwargs)
        self._store = Store(self._connector)
        self._listen_dsn = listen_dsn
        self._connect_kwargs = connect_kwargs
        self._replies: ReplyListener | None = None
        self._reader = AnswerReader(self._store)
        self._sends = SendGroup(self._store)
        self._traced = _otel.Remembered()
        for name, value in extra.items():
            setattr(self, name, value)

    # -- sending ----------------------------------------------------------

    def send(
        self,
        data: Any,
        queue: str | None = None,
        *,
        priority: int = 0,
        run_after: datetime | None = None,
        delay: float | timedelta | None = None,
        attempts: int | None = None,
        title: str | None = None,
        grouping: str | None = None,
        remove_after: float | timedelta | datetime | None = None,
        unique_key: str | None = None,
        parents: Iterable[int] | None = None,
        time_limit: float | timedelta | None = None,
        expire_after: float | timedelta | None = None,
        expires_at: datetime | None = None,
    ) -> int:
        """Send ``data`` (any JSON value) as a new task and return its id.

        The task is inserted and ``jm:<queue>`` notified in one statement.
        The id becomes the client's current id (:attr:`id`).

        :param priority: higher runs first (then oldest first); default 0.
        :param run_after: not before this (timezone-aware) time.
        :param delay: not before this many seconds from now (the database's clock).
        :param attempts: how many times it may run in all, overriding the
            worker's ``retries``.
        :param title: free text (Job::Machine's ``title`` column).
        :param grouping: a key to find related tasks by (``grouping`` column).
        :param remove_after: how long it is kept once finished (seconds or a
            timedelta; default: the worker's ``remove_after`` days), or the
            time (a datetime) after which it is removed once finished.
        :param unique_key: while a task of this queue with the same key is
            waiting, blocked or running, return that task's id and send nothing.
        :param parents: ids of tasks that must be done before this one runs;
            if one of them fails, this one fails without running (its error
            says which parent).
        :param time_limit: seconds (or a timedelta) one attempt may run,
            overriding the worker's ``time_limit``: the worker stops an
            attempt that runs longer, which ends with a
            :class:`~job_machine.TimeLimitExceeded` error (retried or
            failed like any error). docs/deadlines.md.
        :param expire_after: seconds (or a timedelta) from now within which
            the task must start: if no worker has started it by then, it
            never runs, and ends failed; a waiting client gets
            :class:`~job_machine.TaskExpired`.
        :param expires_at: the same as a (timezone-aware) time.
        :raises InvalidData: ``data`` cannot be encoded as JSON (nothing is written).
        :raises InvalidQueueName: the queue name is empty or contains NUL.
        :raises UnknownTask: a parent does not exist (nothing is written).
        :raises ValueError, TypeError: a bad option; the message names it.
        """
        name = self._queue(queue)
        options = send_options(
            priority=priority,
            run_after=run_after,
            delay=delay,
            attempts=attempts,
            title=title,
            grouping=grouping,
            remove_after=remove_after,
            unique_key=unique_key,
            parents=parents,
            time_limit=time_limit,
            expire_after=expire_after,
            expires_at=expires_at,
        )
        parameters = _codec.encode(data)
        channel = queue_channel(name)
        with _otel.send_span(name) as span:
            options["trace_context"] = span.context
            if (
                options["unique_key"] is None
                and not options["parents"]
                and self._connector.reconnects
            ):
                # Concurrent sends of this client go out together (one commit).
                task_id = self._sends.send(name, parameters, channel, options)
            else:
                task_id = self._store.task_insert(name, parameters, channel, options)
            span.sent(task_id)
        self._traced.add(task_id, span.context, name)
        self.id = task_id
        return task_id

    def send_many(
        self,
        items: Iterable[Any],
        queue: str | None = None,
        *,
        priority: int = 0,
        run_after: datetime | None = None,
        delay: float | timedelta | None = None,
        attempts: int | None = None,
        title: str | None = None,
        grouping: str | None = None,
        remove_after: float | timedelta | datetime | None = None,
        time_limit: float | timedelta | None = None,
        expire_after: float | timedelta | None = None,
        expires_at: datetime | None = None,
    ) -> list[int]:
        """Send each of ``items`` as a task of one queue, in one statement and
        one transaction, and return their ids in the same order.

        The queue is notified once for the whole batch. Much faster than a
        loop of :meth:`send` (one commit instead of one per task). The last id
        becomes the client's current id. The options, as for :meth:`send`,
        apply to every task of the batch.

        :raises InvalidData: an item cannot be encoded as JSON; the message
            names its index, and nothing is written.
        :raises InvalidQueueName: the queue name is empty or contains NUL.
        :raises ValueError, TypeError: a bad option; the message names it.
        """
        name = self._queue(queue)
        options = send_options(
            priority=priority,
            run_after=run_after,
            delay=delay,
            attempts=attempts,
            title=title,
            grouping=grouping,
            remove_after=remove_after,
            time_limit=time_limit,
            expire_after=expire_after,
            expires_at=expires_at,
        )
        parameters = [_codec.encode(item, f"item {n}") for n, item in enumerate(items)]
        if not parameters:
            return []
        with _otel.send_span(name, len(parameters)) as span:
            options["trace_context"] = span.context
            ids = self._store.task_insert_many(name, parameters, queue_channel(name), options)
            span.sent(ids)
        for task_id in ids:
            self._traced.add(task_id, span.context, name)
        self.id = ids[-1]
        return ids

    def cancel(self, task_id: int | None = None) -> bool:
        """Cancel a task (default: the current one) that has not finished:
        waiting, blocked or running. It fails at once with a ``Cancelled``
        error, is not retried, its waiting client gets
        :class:`~job_machine.TaskCancelled`, and its blocked children fail.
        A running attempt is stopped by its worker (docs/deadlines.md).
        False when the task had finished already (nothing changes). Under the
        least-privilege roles this needs the admin role (jobmachine_admin).

        :raises UnknownTask: there is no such task.
        """
        tid = self._task_id("reply" if task_id is None else task_id)
        if self._store.admin_cancel(tid):
            return True
        if self._store.task_answered(tid) is None:
            raise UnknownTask(f"there is no task {tid}")
        return False

    # -- replies ----------------------------------------------------------

    def check(self, task_id: int | str = "reply") -> bool:
        """True when the task has been answered: it has a reply, or it has
        finished (done without one, or failed).

        Reads the table, so it works from any process, however long after the
        reply was sent. ``check("reply")`` checks the current task, as in
        Job::Machine.

        :raises UnknownTask: there is no such task.
        """
        tid = self._task_id(task_id)
        answered = self._store.task_answered(tid)
        if answered is None:
            raise UnknownTask(f"there is no task {tid}")
        return answered

    def receive(self, task_id: int | str | None = None) -> Any:
        """The newest reply of the task (the value the worker passed to
        ``reply`` or ``result``), or None when there is none yet.

        :raises TaskFailed: the task failed; the exception carries its last error.
        :raises UnknownTask: there is no such task.
        """
        tid = self._task_id(task_id)
        return self._value(tid, self._answer(tid))

    def wait(self, task_id: int | str | None = None, timeout: float | None = 30.0) -> Any:
        """Block until the task is answered and return its reply (see :meth:`receive`).

        Woken by the notification on ``jmr:<task_id>`` that every way a task
        ends sends (reply, result, a plain return, failure, cancel, removal),
        through the one reply listener the process shares between all its
        waits (:mod:`job_machine.replies`): any number of threads (sync) or
        asyncio tasks (async) may wait at once on one client, and none holds
        a connection while it waits. The table is read once the listener
        LISTENs, so an answer committed before the wait began is returned at
        once; it is also read every few seconds, so an end that notifies
        nobody (a Perl worker's ``result``) is seen within that.

        :param timeout: seconds to wait at most; None waits forever.
        :raises WaitTimeout: no answer within ``timeout``.
        :raises TaskFailed: the task failed.
        :raises UnknownTask: there is no such task (or it was removed).
        """
        tid = self._task_id(task_id)
        with self._traced.wait_span(tid):
            return self._wait_one(tid, timeout)

    def _wait_one(self, tid: int, timeout: float | None) -> Any:
        with closing(answers(self._reader, self._listener(), [tid], timeout)) as answered:
            for _, answer in answered:
                return self._value(tid, answer)
        raise AssertionError("unreachable: answers() yields or raises")  # pragma: no cover

    def wait_all(self, task_ids: Iterable[int], timeout: float | None = 30.0) -> list[Any]:
        """Wait for every task's answer and return the replies in the order
        of ``task_ids`` (scatter-gather: send many, then wait once).

        One subscription for all of them on the process's reply listener,
        and one read of the table per wake-up, however many tasks.

        :param timeout: seconds to wait at most for all of them; None: forever.
        :raises WaitTimeout: some are still unanswered after ``timeout``.
        :raises TaskFailed: as soon as one of them is seen failed.
        :raises UnknownTask: one of them does not exist.
        """
        ids = [self._check_id(t) for t in task_ids]
        replies: dict[int, Any] = {}
        with self._traced.group_span(ids) as traced:
            with closing(answers(self._reader, self._listener(), ids, timeout)) as answered:
                for tid, answer in answered:
                    traced(tid, answer.status == Status.FAILED and answer.reply is None)
                    replies[tid] = self._value(tid, answer)
        return [replies[t] for t in ids]

    def as_completed(
        self, task_ids: Iterable[int], timeout: float | None = 30.0
    ) -> Iterator[Answered]:
        """Yield each task's :class:`~job_machine.Answered` as it is answered,
        first answered first (a failed task too: its ``value()`` raises
        :class:`~job_machine.TaskFailed`).

        :param timeout: seconds to wait at most for all of them; None: forever.
        :raises WaitTimeout: some are still unanswered after ``timeout``
            (those answered before were yielded).
        :raises UnknownTask: one of them does not exist.
        """
        ids = [self._check_id(t) for t in task_ids]
        with self._traced.group_span(ids) as traced:
            with closing(answers(self._reader, self._listener(), ids, timeout)) as answered:
                for tid, answer in answered:
                    failed = answer.status == Status.FAILED and answer.reply is None
                    traced(tid, failed)
                    yield Answered(
                        task_id=tid,
                        reply=None if failed else self._value(tid, answer),
                        error=_codec.decode(answer.error) if failed else None,
                        failed=failed,
                    )

    def parts(
        self, task_id: int | str | None = None, timeout: float | None = 30.0
    ) -> Iterator[Part]:
        """Yield the task's streamed parts (:class:`~job_machine.Part`: what
        the worker sent with ``send_part``, or a generator task function
        yielded) in order as they arrive, then end when the task is answered;
        its reply is then :meth:`receive`'s (or :meth:`wait`'s), at once.

        The iteration ends only once every part of the answering attempt was
        yielded, so no part is lost between the parts and the reply. Parts
        are stored: a reader that starts late, or after the task ended, in
        any process, gets every stored part first. Woken through the
        process's one reply listener (each part notifies ``jmr:<task_id>``
        with the payload ``part``, which :meth:`wait` ignores). When a failed
        attempt is retried, the parts go on with the new attempt's first
        (a higher ``part.attempt``, ``seq`` 0 again).

        :param timeout: seconds to wait at most for the task's answer; None:
            forever.
        :raises WaitTimeout: not answered within ``timeout`` (the parts
            stored by then were yielded).
        :raises TaskFailed: the task failed (after its last attempt's parts).
        :raises UnknownTask: there is no such task (or it was removed).
        """
        tid = self._task_id(task_id)
        return read_parts(self._store, self._listener(), tid, timeout)

    def task_info(self, task_id: int | str | None = None) -> TaskInfo:
        """Where the task stands: its state (waiting, blocked, running, done,
        failed), its options, attempts, every error and result stored so far,
        its notes, its parents and children, and which worker holds it.

        :raises UnknownTask: there is no such task.
        """
        tid = self._task_id(task_id)
        info = self._store.task_info(tid)
        if info is None:
            raise UnknownTask(f"there is no task {tid}")
        return info

    def note(self, task_id: int | str | None = None, /, **notes: Any) -> None:
        """Attach metadata to a task: each keyword is set (any JSON value) or,
        given as None, removed. Notes show in :meth:`task_info`.

        :raises UnknownTask: there is no such task.
        :raises InvalidData: a value cannot be encoded as JSON (nothing is written).
        """
        self._note(self._task_id(task_id), notes)

    def uncheck(self, task_id: int | str | None = None) -> None:
        """Stop waiting for a task's reply: it is no longer the current task.

        A client never keeps listening between calls (:meth:`wait` subscribes
        to ``jmr:<task_id>`` only while it waits), so there is nothing else to undo.
        """
        tid = self._task_id(task_id)
        if self.id == tid:
            self.id = None

    # -- helpers ----------------------------------------------------------

    def _queue(self, queue: str | None) -> str:
        if queue is not None:
            return validate_queue(queue)
        if self.queue is None:
            raise ValueError("no queue: pass queue= to send() or to the client")
        return self.queue

    def _task_id(self, task_id: int | str | None) -> int:
        if task_id is None or task_id == "reply":
            if self.id is None:
                raise NoCurrentTask()
            return self.id
        return self._check_id(task_id)

    @staticmethod
    def _check_id(task_id: object) -> int:
        if isinstance(task_id, bool) or not isinstance(task_id, int):
            raise TypeError(f"task id must be an int or 'reply', not {task_id!r}")
        return task_id

    def _listener(self) -> ReplyListener:
        """The process's reply listener for this client's database."""
        self._connector.require_no_transaction()
        if self._replies is None:
            conninfo = self._listen_dsn or self._connector.conninfo
            self._replies = reply_listener(conninfo, self._connect_kwargs)
            self._replies.acquire()
        return self._replies

    def close(self) -> None:
        """Close the connection this client opened itself (a connection or
        pool given by the caller stays open), and let go of the process's
        reply listener: its connection closes once no open client uses it."""
        replies, self._replies = self._replies, None
        if replies is not None:
            replies.release()
        super().close()

    def _answer(self, tid: int) -> Answer:
        answer = self._store.task_answer(tid)
        if answer is None:
            raise UnknownTask(f"there is no task {tid}")
        return answer

    @staticmethod
    def _value(tid: int, answer: Answer) -> Any:
        if answer.reply is not None:
            return _codec.decode(answer.reply)
        if answer.status == Status.FAILED:
            raise task_failed(tid, _codec.decode(answer.error))
        return None
