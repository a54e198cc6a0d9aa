# DO NOT EDIT: generated from job_machine/_async/worker.py by tools/async_to_sync.py.
# Change the async source and run `python tools/async_to_sync.py`.
"""Worker: subclass it, override process(), and run receive()."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from types import FrameType
from typing import Any, ClassVar, TypeVar

import psycopg
from psycopg import Connection
from psycopg_pool import ConnectionPool

from .. import _codec
from .._acompat import Handle, join_all, run_blocking, select_readable, spawn
from .._backoff import Backoff, backoff_delay
from .._options import check_priority
from .._waker import Waker
from ..channels import (
    NEW_QUEUE_CHANNEL,
    is_pattern,
    queue_channel,
    subscription,
    validate_subscription,
)
from ..errors import ConnectionFailed, NoCurrentTask, Retry, TaskNotHeld
from ..liveness import CLIENT_KEEPALIVES, Liveness
from ..logging import task_extra
from ..task import DONE, ERROR, REPLY, RESULT, Status, Task, TaskEnd
from .completer import Completer
from .connection import Connector, ConnectorOwner, connect
from .listener import Listener
from .locks import LocksAndNotes
from .store import ChoreCounts, Store

T = TypeVar("T")

#: What a lost or unreachable database raises: reconnect and carry on.
_CONNECTION_ERRORS = (ConnectionFailed, psycopg.OperationalError, psycopg.InterfaceError)


@dataclass(slots=True)
class _InHand:
    """A task being processed, and whether process() has answered it yet."""

    task: Task
    answered: bool = False


logger = logging.getLogger("job_machine.worker")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Worker(LocksAndNotes, ConnectorOwner):
    """A service that takes tasks from one or more queues and answers them.

    Subclass it and override :meth:`process`; in it, call :meth:`reply`
    (store the answer, mark the task done, notify the client), :meth:`result`
    (the same without notifying) or :meth:`error_result` (store an error,
    status unchanged). Then run :meth:`receive`.

    :param dsn: PostgreSQL connection string. The worker keeps one connection
        of its own, which listens and does the work, plus its registry
        connection (see :attr:`dead_after`).
    :param queue: a queue name or a list of them. An entry may name a
        branch of the hierarchy: ``gl.*`` serves the queues one level below
        ``gl``, ``gl.**`` every queue below it at any depth (``*`` and ``**``
        from the top); queues created later join while the worker runs, and
        the worker is still woken by LISTEN on each of them.
    :param conn: use this connection instead (it must not be in a transaction
        when :meth:`receive` starts; it is switched to autocommit). Only the
        caller can replace it, so :meth:`receive` raises when it breaks.
    :param pool: take connections for the work from this pool; listening
        uses one more connection of its own, opened from the pool's conninfo.
    :param listen_dsn: where to open the listening and registry connections,
        when the work goes elsewhere (a PgBouncer in transaction mode cannot
        LISTEN or hold a session lock: give it the direct address here).
    :param connect_kwargs: extra keyword arguments for ``psycopg.connect``
        when the worker opens its own work connection; behind PgBouncer in
        transaction mode pass ``{"prepare_threshold": None}``.
    :param concurrency: how many tasks to process at once (1 by default).
        The async worker runs them as asyncio tasks, the sync one in threads
        (for I/O-bound work); with a ``dsn`` the work then goes through a pool
        of ``concurrency`` connections, beside one listening connection. A
        graceful stop waits for every task in hand.
    :param extra: other keyword arguments become attributes of the worker.

    Every setting below can be given to the constructor or set as a class
    attribute of the subclass.
    """

    #: The queue(s) to serve when none is given to the constructor.
    queue: ClassVar[str | Sequence[str] | None] = None
    #: Claim only tasks of at least this priority (None: any).
    min_priority: int | None = None
    #: Seconds without a notification after which the worker pings its
    #: listening connection and reads its queues again: a lost notification
    #: delays a task by at most this long.
    timeout: float = 30.0
    #: Seconds within which a dead worker's tasks go back to waiting
    #: (liveness is judged by PostgreSQL: see docs/liveness.md).
    dead_after: float = 15.0
    #: Optional limit: seconds after which a task a *live* worker still runs
    #: is given up on (an error is stored and it is retried or failed; the
    #: worker running it can no longer finish it). None: never.
    max_runtime: float | None = None
    #: Seconds after which a started task that no registered worker holds (a
    #: Perl worker's, or one claimed by work_once()) is revived, as Perl does.
    orphan_after: float = 1800.0
    #: Retries after the first attempt before a task fails.
    retries: int = 3
    #: Backoff of a retry: ``retry_backoff * 2 ** (attempt - 1)`` seconds,
    #: capped at ``retry_backoff_cap``, with jitter.
    retry_backoff: float = 1.0
    retry_backoff_cap: float = 300.0
    #: Backoff of reconnects after the database went away.
    reconnect_backoff: float = 0.5
    reconnect_backoff_cap: float = 30.0
    #: Seconds the task in hand may take to finish after SIGTERM/SIGINT.
    shutdown_grace: float = 30.0
    #: Seconds between the fleet's slower chores (orphans, old finished tasks).
    housekeeping_interval: float = 60.0
    #: Days after which finished tasks are removed.
    remove_after: float = 30.0
    #: Whether receive() installs SIGTERM/SIGINT handlers (main thread only).
    handle_signals: bool = True
    #: How many tasks to process at once.
    concurrency: int = 1
    #: Most tasks a worker claims in one statement. It claims as many as
    #: its slots get through in ``prefetch_seconds`` by the average run time
    #: of its tasks so far: with concurrency 1, 100 tasks of 1 ms, 10 of
    #: 20 ms, long tasks one by one (with concurrency > 1, at least one per
    #: free slot). The tasks claimed ahead wait in the worker, not for
    #: other workers. 1 turns it off.
    prefetch: int = 100
    #: Seconds of work a worker may hold claimed ahead.
    prefetch_seconds: float = 0.2

    def __init__(
        self,
        dsn: str | None = None,
        queue: str | Sequence[str] | None = None,
        *,
        conn: Connection[Any] | None = None,
        pool: ConnectionPool | None = None,
        listen_dsn: str | None = None,
        connect_kwargs: dict[str, Any] | None = None,
        concurrency: int | None = None,
        prefetch: int | None = None,
        prefetch_seconds: float | None = None,
        min_priority: int | None = None,
        timeout: float | None = None,
        dead_after: float | None = None,
        max_runtime: float | None = None,
        orphan_after: float | None = None,
        retries: int | None = None,
        retry_backoff: float | None = None,
        retry_backoff_cap: float | None = None,
        reconnect_backoff: float | None = None,
        reconnect_backoff_cap: float | None = None,
        shutdown_grace: float | None = None,
        housekeeping_interval: float | None = None,
        remove_after: float | timedelta | None = None,
        **extra: Any,
    ) -> None:
        #: The queues and patterns served, as given.
        self.queues: list[str] = _subscriptions(queue if queue is not None else type(self).queue)
        self._patterns = [q for q in self.queues if is_pattern(q)]
        #: The queue names served: the exact ones, and those the patterns
        #: match among the queues that exist.
        self._served: list[str] = [q for q in self.queues if not is_pattern(q)]
        if min_priority is not None:
            self.min_priority = check_priority("min_priority", min_priority)
        seconds = {
            "timeout": timeout,
            "dead_after": dead_after,
            "max_runtime": max_runtime,
            "orphan_after": orphan_after,
            "retry_backoff": retry_backoff,
            "retry_backoff_cap": retry_backoff_cap,
            "reconnect_backoff": reconnect_backoff,
            "reconnect_backoff_cap": reconnect_backoff_cap,
            "shutdown_grace": shutdown_grace,
            "housekeeping_interval": housekeeping_interval,
            "prefetch_seconds": prefetch_seconds,
        }
        for name, value in seconds.items():
            if value is not None:
                zero_ok = name.startswith("retry_backoff")  # 0: retry at once
                setattr(self, name, _positive(name, value, zero_ok=zero_ok))
        if retries is not None:
            self.retries = _whole("retries", retries, 0)
        if concurrency is not None:
            self.concurrency = _whole("concurrency", concurrency, 1)
        if prefetch is not None:
            self.prefetch = _whole("prefetch", prefetch, 1)
        if remove_after is not None:
            if isinstance(remove_after, timedelta):
                remove_after = remove_after.total_seconds() / 86400
            self.remove_after = _positive("remove_after", remove_after)
        kwargs = CLIENT_KEEPALIVES | (connect_kwargs or {})
        #: The pool the worker makes for itself to run several tasks at once.
        self._own_pool: ConnectionPool | None = None
        if dsn and self.concurrency > 1:
            self._own_pool = ConnectionPool(
                dsn,
                min_size=1,
                max_size=self.concurrency,
                kwargs={"autocommit": True, **kwargs},
                open=False,
                name="job_machine-worker",
            )
            dsn, pool = None, self._own_pool
        self._connector = Connector(dsn=dsn, conn=conn, pool=pool, connect_kwargs=kwargs)
        self._store = Store(self._connector)
        self.listen_dsn = listen_dsn
        #: This worker's id in jobmachine.worker while :meth:`receive` runs.
        self.worker_id: int | None = None
        self._liveness: Liveness | None = None
        self._waker: Waker | None = None
        self._grace_timer: threading.Timer | None = None
        self._grace_lock = threading.Lock()
        self._listener: Listener | None = None
        self._in_hand: ContextVar[_InHand | None] = ContextVar(
            f"job_machine_task_{id(self)}", default=None
        )
        #: Tasks running concurrently (concurrency > 1), by task id.
        self._running_tasks: dict[int, Handle] = {}
        self._slots = threading.Lock()
        #: Tasks claimed ahead and not started yet (prefetch).
        self._ahead: list[Task] = []
        #: Sleeps in a row cut short because a due task was locked.
        self._locked_polls = 0
        #: Moving average of process() time, which decides the prefetch.
        self._avg_runtime: float | None = None
        #: Writes how tasks ended, in groups while more work is in hand.
        self._completer = Completer(
            self._store,
            retries=lambda: self.retries,
            max_age=self.prefetch_seconds,
            reconnect_backoff=Backoff(self.reconnect_backoff, self.reconnect_backoff_cap),
            pause=self._pause,
            can_reconnect=lambda: self._connector.reconnects,
        )
        self._completer.collecting = self.concurrency > 1
        self._started = False
        self._stopping = False
        self._signals_seen = 0
        self._grace_expired = False
        for name, value in extra.items():
            setattr(self, name, value)

    # -- to override --------------------------------------------------------

    def startup(self) -> None:
        """Called once, before the first task. Override to set up resources."""

    def process(self, task: Task) -> None:
        """Handle one task. Override this.

        Call :meth:`reply` (or :meth:`result`) to answer. If this returns
        without answering, the task is marked done with no result. If it
        raises, the error is stored and the task is retried after a backoff
        (:meth:`retry_delay`; raise :class:`~job_machine.Retry` to choose the
        delay), up to :attr:`retries` times, then failed.
        """
        raise NotImplementedError(f"{type(self).__name__} must override process(task)")

    def retry_delay(self, task: Task, error: BaseException) -> float:
        """Seconds before the task is tried again after ``error``. Override for
        a policy of your own; the default is exponential with jitter:
        ``retry_backoff * 2 ** (attempt - 1)``, capped at ``retry_backoff_cap``."""
        if isinstance(error, Retry) and error.after is not None:
            return error.after
        return backoff_delay(task.attempt, self.retry_backoff, self.retry_backoff_cap)

    def keep_running(self) -> bool:
        """Checked after every task and every wake-up; return False to make
        :meth:`receive` return. Override for a worker that stops by itself."""
        return True

    # -- answering, from inside process() -------------------------------------

    @property
    def task(self) -> Task:
        """The task being processed."""
        in_hand = self._in_hand.get()
        if in_hand is None:
            raise NoCurrentTask("no task is being processed (call this from process())")
        return in_hand.task

    def reply(self, data: Any) -> None:
        """Store ``data`` as the task's result, mark it done and notify the client.

        :raises InvalidData: ``data`` cannot be encoded as JSON (nothing is written).
        :raises TaskNotHeld: the task was revived and is no longer this worker's.
        """
        self._finish(data, notify=True)

    def result(self, data: Any) -> None:
        """Store ``data`` as the task's result and mark it done, without notifying."""
        self._finish(data, notify=False)

    def note(self, **notes: Any) -> None:
        """Attach metadata to the task in hand (see :meth:`Client.note`):
        each keyword is set, or removed when given as None."""
        self._note(self.task.id, notes)

    def error_result(self, data: Any) -> None:
        """Store ``data`` as an error result; the task's status does not change."""
        task = self._unanswered()
        text = _codec.encode(data, "error_result data")
        if not self._store.result_insert_error(task.id, task.attempt, text):
            raise TaskNotHeld(f"task {task.id} is no longer held by this worker")

    def _finish(self, data: Any, notify: bool) -> None:
        task = self._unanswered()
        text = _codec.encode(data, "reply data")
        end = TaskEnd(task.id, task.attempt, REPLY if notify else RESULT, text)
        if not self._completer.add(end):
            done = self._persist(
                lambda: self._store.task_finish(task.id, task.attempt, text, notify), task, True
            )
            if not done:
                raise TaskNotHeld(f"task {task.id} is no longer held by this worker")
        in_hand = self._in_hand.get()
        if in_hand is not None:
            in_hand.answered = True

    def _unanswered(self) -> Task:
        """The task in hand, which must not have been answered yet."""
        in_hand = self._in_hand.get()
        if in_hand is not None and in_hand.answered:
            raise TaskNotHeld(f"task {in_hand.task.id} is answered already")
        return self.task

    # -- the service loop ---------------------------------------------------

    def receive(self) -> None:
        """Serve the queues until stopped.

        Registers the worker (see :attr:`dead_after`), listens on
        ``jm:<queue>`` for each queue, processes what is already waiting, then
        sleeps until a notification arrives, a retry falls due, or
        :attr:`timeout` passes. When the database goes away it logs it,
        reconnects with capped exponential backoff and drains the queues
        again; it never exits on a lost connection (only the very first
        connection failing raises :class:`~job_machine.ConnectionFailed`).

        Returns after :meth:`stop`, or when :meth:`keep_running` says so, once
        the task in hand is finished. On SIGTERM/SIGINT it stops claiming and
        gives the task in hand :attr:`shutdown_grace` seconds; a second
        signal, or the end of the grace period, exits at once (SystemExit,
        code 128 + the signal) and the unfinished task goes back to waiting.
        """
        self._signals_seen = 0
        self._grace_expired = False
        self._waker = Waker()
        if self._stopping:  # stop() was called before receive()
            self._waker.wake()
        restore = self._install_signal_handlers()
        liveness = Liveness(
            self.listen_dsn or self._connector.conninfo,
            self.queues,
            dead_after=self.dead_after,
            retries=self.retries,
            max_runtime=self.max_runtime,
            orphan_after=self.orphan_after,
            remove_after_days=self.remove_after,
            housekeeping_interval=self.housekeeping_interval,
            on_command=self._on_command,
        )
        try:
            self._open_own_pool()
            self.worker_id = run_blocking(liveness.start)
            self._liveness = liveness
            # The caller's connection (conn=) in autocommit while serving:
            # the loop commits each claim and answer (outside receive(),
            # calls on it join the caller's transaction instead).
            with self._connector.serving():
                if self.listen_dsn:
                    self._store.check_registered_here(self.worker_id, self.listen_dsn)
                if not self._started:
                    self.startup()
                    self._started = True
                self._serve_reconnecting()
                # A graceful stop: let the tasks in hand finish.
                join_all(list(self._running_tasks.values()))
                self._completer.flush()
        finally:
            self._cancel_grace_timer()
            restore()
            if self._liveness is not None:
                # Leaving in a hurry: one try to record the tasks that did
                # finish, before the hand-back would run them again.
                finished = self._completer.take()
                if finished:
                    with contextlib.suppress(Exception):
                        self._store.task_complete_many(finished, self.retries)
                ahead, self._ahead = [t.id for t in self._ahead], []
                run_blocking(partial(self._liveness.stop, unclaim=ahead))
                self._liveness = None
            self.worker_id = None
            self._connector.close()
            if self._own_pool is not None:
                self._own_pool.close()
            self._waker.close()
            self._waker = None
            self._stopping = False  # a later receive() serves again

    def _serve_reconnecting(self) -> None:
        backoff = Backoff(self.reconnect_backoff, self.reconnect_backoff_cap)
        while self._running():
            try:
                with self._listening_connection() as conn:
                    listener = self._open_listener(conn)
                    try:
                        if backoff.failures:
                            logger.info("worker %s: reconnected; draining", self.worker_id)
                            self._release_lost_claims()
                        backoff.reset()
                        self._serve(listener)
                    finally:
                        self._close_listener()
            except _CONNECTION_ERRORS as ex:
                if not self._running():
                    break
                if not self._connector.reconnects:
                    raise  # the caller's connection: only the caller can replace it
                delay = backoff.next()
                logger.warning(
                    "worker %s: database connection lost (%s); reconnecting in %.1f s",
                    self.worker_id,
                    _first_line(ex),
                    delay,
                )
                self._pause(delay)

    def _serve(self, listener: Listener) -> None:
        while self._running():
            self._drain()
            if not self._running():
                break
            heard = listener.wait(self._next_wait())
            if heard is None:
                # Nothing heard for a while: prove the listening connection
                # still works (a half-open one raises here), then look again
                # (at the queues too: a Perl sender creates them silently).
                listener.ping()
                self._subscribe(listener)
            elif self._patterns and any(n.channel == NEW_QUEUE_CHANNEL for n in heard):
                self._subscribe(listener)

    def stop(self) -> None:
        """Ask :meth:`receive` to return after the task in hand. Safe from any
        thread and from signal handlers."""
        self._stopping = True
        if self._waker is not None:
            self._waker.wake()

    def work_once(self) -> bool:
        """Claim and process one waiting task, if there is one; True if there was.

        Useful in tests and scripts; :meth:`receive` is the service loop.
        Outside :meth:`receive` the worker is not registered, so a task it
        claims is judged by :attr:`orphan_after` like a Perl worker's.
        """
        if self._patterns:
            self._subscribe(None)
        self._open_own_pool()
        tasks = self._claim(1)
        for task in tasks:
            self._run(task)
        self._completer.flush()
        return bool(tasks)

    def close(self) -> None:
        """Close the connections this worker opened itself (its pool too)."""
        super().close()
        if self._own_pool is not None:
            self._own_pool.close()

    def housekeeping(self) -> ChoreCounts:
        """Run the fleet's chores now: rescue the tasks of dead workers, give up
        on tasks past :attr:`max_runtime` (when set), revive unowned tasks
        untouched for :attr:`orphan_after`, remove finished tasks older than
        :attr:`remove_after` days. A running worker fleet does this by itself
        (one housekeeper at a time); this call does nothing when another
        worker is doing it (``ran`` is False)."""
        counts = self._store.chores(
            retries=self.retries,
            remove_after_days=self.remove_after,
            grace=self.dead_after / 2,
            max_runtime=self.max_runtime,
            orphan_after=self.orphan_after,
        )
        if counts.reaped or counts.revived or counts.failed or counts.removed:
            logger.info(
                "housekeeping: reaped %d, revived %d, failed %d, removed %d",
                counts.reaped,
                counts.revived,
                counts.failed,
                counts.removed,
            )
        return counts

    # -- internals -----------------------------------------------------------

    def _running(self) -> bool:
        return not self._stopping and self.keep_running()

    def _next_wait(self) -> float:
        """How long to sleep when the queues gave nothing: until the next
        task falls due, or the timeout. A task due already was skipped by the
        claim because a transaction held its row: look again soon, backing
        off (10 ms doubling to 1.28 s) while that transaction stays open."""
        if self.concurrency > 1 and len(self._running_tasks) >= self.concurrency:
            # No free slot: a finishing task wakes the wait; done marks
            # still pending are written within prefetch_seconds.
            return self.prefetch_seconds if self._completer.pending else self.timeout
        due = self._store.task_next_due(self._served, self.min_priority)
        if due is None or due > 0:
            self._locked_polls = 0
            return self.timeout if due is None else min(self.timeout, due + 0.005)
        self._locked_polls = min(self._locked_polls + 1, 8)
        return min(self.timeout, 0.005 * 2.0**self._locked_polls)

    def _claim(self, limit: int) -> list[Task]:
        return self._store.task_claim(
            self._served, limit=limit, worker_id=self.worker_id, min_priority=self.min_priority
        )

    def _subscribe(self, listener: Listener | None) -> None:
        """Serve (and LISTEN on) every existing queue the patterns match, and
        no longer those of them that housekeeping removed."""
        if not self._patterns:
            return
        sub = subscription(self.queues, self._served, self._store.queue_names())
        for name in sub.unservable:
            logger.warning("queue %r matches %s but cannot be served", name, self._patterns)
        for name in sub.added:
            if listener is not None:
                listener.listen(queue_channel(name))
            logger.info("worker %s: now serving queue %s", self.worker_id, name)
        for name in sub.dropped:
            if listener is not None:
                listener.unlisten(queue_channel(name))
        self._served = sub.served

    def _on_command(self, command: str) -> None:
        """From the liveness thread: an operator left a command for this worker."""
        if command == "stop":
            if not self._stopping:
                logger.info("worker %s: asked to stop; finishing the task in hand", self.worker_id)
            self.stop()
        else:
            logger.warning("worker %s: unknown command %r ignored", self.worker_id, command)

    def _drain(self) -> None:
        if self.concurrency == 1:
            self._drain_one_by_one()
            return
        while self._running():
            if self._completer.due(bool(self._ahead), self.concurrency):
                self._completer.flush()
            free = self.concurrency - len(self._running_tasks)
            if free <= 0:
                return  # the wait wakes when one of them finishes
            exhausted = False
            if not self._ahead:
                # Short tasks: claim ahead what the slots get through in
                # about prefetch_seconds, to start them without a statement.
                limit = max(free, self._batch_size())
                self._ahead = self._claim(limit)
                exhausted = len(self._ahead) < limit
            starting, self._ahead = self._ahead[:free], self._ahead[free:]
            for task in starting:
                # Held while spawning: a thread that finishes at once must not
                # remove its entry before it is there (it would stay forever).
                with self._slots:
                    self._running_tasks[task.id] = spawn(
                        partial(self._run_concurrently, task), self._one_finished
                    )
            if exhausted or not starting:
                return

    def _drain_one_by_one(self) -> None:
        """Claim and process tasks one at a time; while they are short, claim
        several per statement (one claim statement costs about as much as
        ten claimed rows)."""
        while self._running():
            limit = self._batch_size()
            self._ahead = self._claim(limit)
            if not self._ahead:
                return
            # A batch of short tasks: how they end (answers, errors, done
            # marks) is written together, one statement and one commit, at
            # the end of the batch or once the oldest waited prefetch_seconds.
            # A batch of one (an idle worker's task) is written at once.
            self._completer.collecting = len(self._ahead) > 1
            try:
                while self._ahead:
                    if not self._running():
                        self._give_back_ahead()
                        break
                    task = self._ahead.pop(0)
                    started = time.monotonic()
                    self._run(task)
                    self._note_runtime(time.monotonic() - started)
                    if self._completer.due(bool(self._ahead), self.prefetch):
                        self._completer.flush()
            except BaseException:
                # Leaving in a hurry (a second signal, say): still record what
                # finished, but never let that hide why we are leaving.
                with contextlib.suppress(Exception):
                    self._completer.flush()
                raise
            finally:
                self._completer.collecting = False
            self._completer.flush()

    def _note_runtime(self, took: float) -> None:
        # A moving average; from several threads at once a lost update only
        # drops one sample.
        avg = self._avg_runtime
        self._avg_runtime = took if avg is None else 0.8 * avg + 0.2 * took

    def _batch_size(self) -> int:
        """How many tasks to claim at once: what the worker's slots get
        through in ``prefetch_seconds`` by the average run time (one until a
        task has run), at most ``prefetch``."""
        avg = self._avg_runtime
        if avg is None:
            return 1
        fits = self.prefetch_seconds * self.concurrency / avg if avg > 0 else self.prefetch
        return max(1, min(self.prefetch, int(fits)))

    def _give_back_ahead(self) -> None:
        ahead, self._ahead = self._ahead, []
        if ahead and self.worker_id is not None:
            self._store.task_unclaim([t.id for t in ahead], self.worker_id)

    def _run_concurrently(self, task: Task) -> None:
        started = time.monotonic()
        try:
            self._run(task)
            self._note_runtime(time.monotonic() - started)
        except Exception:
            # Only a lost connection that cannot be replaced gets here; the
            # task stays started and is handed back when the worker stops.
            logger.exception(
                "task %d: its outcome could not be stored",
                task.id,
                extra=task_extra(task, self.worker_id),
            )
        finally:
            with self._slots:
                self._running_tasks.pop(task.id, None)

    def _one_finished(self) -> None:
        if self._waker is not None:
            self._waker.wake()  # a slot is free: look at the queues again

    def _pause(self, seconds: float) -> None:
        """Sleep, but return at once when stop() is called."""
        if self._waker is None:
            return
        if self._waker.fd in select_readable([self._waker.fd], seconds):
            self._waker.clear()

    def _open_own_pool(self) -> None:
        """Open the pool made for ``concurrency`` > 1, if any. A closed pool
        cannot be opened again, so a later receive() gets a new one."""
        pool = self._own_pool
        if pool is None:
            return
        if pool.closed:
            pool = ConnectionPool(
                pool.conninfo,
                min_size=pool.min_size,
                max_size=pool.max_size,
                kwargs=pool.kwargs,
                open=False,
                name=pool.name,
            )
            self._own_pool = self._connector.pool = pool
        pool.open(wait=True)

    def _release_lost_claims(self) -> None:
        """After a lost connection: a claim may have committed while its answer
        was lost, leaving a task started by this worker that it never saw."""
        if self.worker_id is None:
            return
        keep = list(self._running_tasks)
        current = self._in_hand.get()
        if current is not None:
            keep.append(current.task.id)
        # Tasks claimed ahead were claimed on the lost connection but are
        # known: keep them, they are processed next.
        keep += [t.id for t in self._ahead]
        # Finished, how they ended not written yet: still ours to write.
        keep += self._completer.pending_ids()
        released = self._store.task_release_held(self.worker_id, keep)
        if released:
            logger.warning(
                "worker %s: handed back %d task(s) whose claim was lost with the connection",
                self.worker_id,
                released,
            )

    def _persist(self, write: Callable[[], T], task: Task, recovered: T) -> T:
        """Run a write about ``task`` until it reaches the database: a finished
        task's outcome is kept through a lost connection, retried with backoff
        (the task stays held meanwhile, so nobody else takes it). When a try
        committed but its answer was lost, the next finds the task no longer
        held, by this very attempt: that is ``recovered``."""
        backoff = Backoff(self.reconnect_backoff, self.reconnect_backoff_cap)
        lost = False
        while True:
            try:
                result = write()
            except ConnectionFailed as ex:
                if not self._connector.reconnects:
                    raise
                lost = True
                delay = backoff.next()
                logger.warning(
                    "task %d: could not store its outcome (%s); trying again in %.1f s",
                    task.id,
                    _first_line(ex),
                    delay,
                    extra=task_extra(task, self.worker_id),
                )
                self._pause(delay)
                continue
            if not result and lost and self._stored_by_us(task):
                return recovered
            return result

    def _stored_by_us(self, task: Task) -> bool:
        info = self._store.task_info(task.id)
        return bool(
            info
            and info.status in (Status.FINISHED, Status.FAILED, Status.WAITING)
            and info.attempts == task.attempt
            and info.worker_id == self.worker_id
        )

    def _run(self, task: Task) -> None:
        in_hand = _InHand(task)
        token = self._in_hand.set(in_hand)
        try:
            self.process(task)
        except Exception as ex:
            self._record_failure(task, ex)
        else:
            unmarked = not in_hand.answered and not self._completer.add(
                TaskEnd(task.id, task.attempt, DONE)
            )
            if unmarked and not self._persist(
                lambda: self._store.task_done(task.id, task.attempt), task, True
            ):
                logger.warning(
                    "task %d was revived while it ran; not marked done",
                    task.id,
                    extra=task_extra(task, self.worker_id),
                )
        finally:
            self._in_hand.reset(token)

    def _record_failure(self, task: Task, ex: Exception) -> None:
        if isinstance(ex, TaskNotHeld):
            logger.warning("%s", ex, extra=task_extra(task, self.worker_id))
            return
        error = {
            "type": type(ex).__qualname__,
            "message": str(ex),
            "traceback": "".join(traceback.format_exception(ex)),
            "attempt": task.attempt,
        }
        delay = self.retry_delay(task, ex)
        text = _codec.encode(error, "error")
        if self._completer.add(TaskEnd(task.id, task.attempt, ERROR, text, delay, repr(ex))):
            return
        recovered: Status | None = Status.WAITING
        status = self._persist(
            lambda: self._store.task_fail_attempt(task.id, task.attempt, text, self.retries, delay),
            task,
            recovered,
        )
        if status is None:
            logger.warning(
                "task %d raised %r but was revived meanwhile",
                task.id,
                ex,
                extra=task_extra(task, self.worker_id),
            )
        elif status == Status.WAITING:
            logger.warning(
                "task %d attempt %d raised %r; retrying in %.1f s",
                task.id,
                task.attempt,
                ex,
                delay,
                extra=task_extra(task, self.worker_id),
            )
        else:
            logger.error(
                "task %d failed after %d attempts: %r",
                task.id,
                task.attempt,
                ex,
                extra=task_extra(task, self.worker_id),
            )

    @contextmanager
    def _listening_connection(self) -> Iterator[Connection[Any]]:
        if self._connector.pool is not None or self.listen_dsn:
            # Work goes through the pool (or elsewhere); listening needs a
            # connection that is never handed to anyone else.
            conn = connect(self.listen_dsn or self._connector.conninfo, **CLIENT_KEEPALIVES)
            try:
                yield conn
            finally:
                conn.close()
        else:
            with self._connector.listening() as conn:
                yield conn

    def _open_listener(self, conn: Connection[Any]) -> Listener:
        listener = Listener(conn, self._waker)
        if self._patterns:
            # First, so a queue created from now on is heard of.
            listener.listen(NEW_QUEUE_CHANNEL)
        for name in self._served:
            listener.listen(queue_channel(name))
        self._subscribe(listener)
        self._listener = listener
        return listener

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _install_signal_handlers(self) -> Any:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self._signals_seen += 1
            if self._signals_seen > 1:
                # Second signal, or the grace period is over: stop now,
                # exiting as a shell reports death by that signal. The task
                # in hand is never marked done; receive() hands it back.
                reason = (
                    "shutdown grace period is over"
                    if self._grace_expired
                    else f"second {signal.Signals(signum).name}"
                )
                logger.warning("%s: stopping now", reason)
                raise SystemExit(128 + signum)
            logger.info(
                "%s: finishing the task in hand (up to %.0f s), then stopping",
                signal.Signals(signum).name,
                self.shutdown_grace,
            )
            self.stop()
            self._start_grace_timer(signum)

        for sig in _STOP_SIGNALS:
            signal.signal(sig, on_signal)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _start_grace_timer(self, signum: int) -> None:
        main = threading.main_thread().ident
        assert main is not None

        def grace_over() -> None:
            with self._grace_lock:
                if self._grace_timer is None:
                    return  # receive() has returned meanwhile
                self._grace_timer = None
                self._grace_expired = True
            signal.pthread_kill(main, signum)

        with self._grace_lock:
            self._grace_timer = threading.Timer(self.shutdown_grace, grace_over)
            self._grace_timer.daemon = True
            self._grace_timer.start()

    def _cancel_grace_timer(self) -> None:
        with self._grace_lock:
            if self._grace_timer is not None:
                self._grace_timer.cancel()
                self._grace_timer = None


def _subscriptions(names: str | Sequence[str] | None) -> list[str]:
    if names is None:
        raise ValueError("no queue: pass queue= to the worker or set it on the class")
    if isinstance(names, str):
        names = [names]
    queues = [validate_subscription(q) for q in names]
    if not queues:
        raise ValueError("queue list is empty")
    return queues


def _first_line(ex: BaseException) -> str:
    text = str(ex).strip()
    return text.splitlines()[0] if text else type(ex).__name__


def _whole(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, not {value!r}")
    return value


def _positive(name: str, value: float, zero_ok: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value >= 0 if zero_ok else value > 0)
        or value == float("inf")
    ):
        what = "a number >= 0" if zero_ok else "a positive number"
        raise ValueError(f"{name} must be {what} of seconds/days, not {value!r}")
    return float(value)
