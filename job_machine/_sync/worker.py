# DO NOT EDIT: generated from job_machine/_async/worker.py by tools/async_to_sync.py.
# Change the async source and run `python tools/async_to_sync.py`.
"""Worker: subclass it, override process(), and run receive()."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import partial
from typing import Any

from psycopg import Connection
from psycopg_pool import ConnectionPool

from .. import _codec
from .._acompat import run_blocking, select_readable
from .._backoff import Backoff, backoff_delay
from .._format import first_line
from .._waker import Waker
from .._worker_config import TaskPolicy, WorkerConfig, WorkerSettings
from ..channels import NEW_QUEUE_CHANNEL
from ..errors import ConnectionFailed, DatabaseUnavailable, Retry, StatementFailed, TaskNotHeld
from ..liveness import CLIENT_KEEPALIVES, Liveness
from ..logging import task_extra
from ..task import Task
from .commands import Commands
from .completer import Completer
from .connection import Connector, ConnectorOwner
from .executor import Executor
from .housekeeper import Housekeeper
from .listener import Listener
from .locks import LocksAndNotes
from .ownpool import OwnPool
from .parts import PartGroup
from .producer import Producer
from .sideloop import SideLoop
from .slots import Slots
from .stopper import Stopper
from .store import ChoreCounts, Store
from .subscriber import Subscriber

#: What a lost or unreachable database raises, or one that cannot serve for
#: now (DatabaseUnavailable: out of disk, shutting down): reconnect and carry
#: on. A statement that failed on a live connection (StatementFailed: a timeout or
#: cancel, a deadlock, no pooled connection in time) is not one of them: it
#: is tried again on the same connections, and no claimed task is dropped.
_CONNECTION_ERRORS = (ConnectionFailed, DatabaseUnavailable)


logger = logging.getLogger("job_machine.worker")


class Worker(WorkerSettings, LocksAndNotes, ConnectorOwner):
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

    Every setting of :class:`~job_machine._worker_config.WorkerSettings`
    (``timeout``, ``retries``, ``shutdown_grace``...) can be given to the
    constructor or set as a class attribute of the subclass.
    """

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
        time_limit: float | None = None,
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
        self.queues: list[str] = WorkerConfig.check_queues(
            queue if queue is not None else type(self).queue
        )
        # The constructor's parameters are named as WorkerConfig's settings
        # (tests/unit/test_worker_config.py holds them to it).
        for name, value in WorkerConfig.check_given(locals()).items():
            setattr(self, name, value)
        kwargs = CLIENT_KEEPALIVES | (connect_kwargs or {})
        self._connect_kwargs = kwargs
        #: The pool the worker makes for itself to run several tasks at once.
        self._own_pool = OwnPool(dsn, self.concurrency, kwargs)
        if self._own_pool.pool is not None:
            dsn, pool = None, self._own_pool.pool
        self._connector = Connector(dsn=dsn, conn=conn, pool=pool, connect_kwargs=kwargs)
        self._store = Store(self._connector)
        #: The queues served (patterns resolved), and the listener.
        self._subscriber = Subscriber(
            self.queues, self._store, self._connector, worker_id=lambda: self.worker_id
        )
        #: At concurrency 1, what looks after the worker while a task runs.
        self._side_loop = SideLoop(self)
        self.listen_dsn = listen_dsn
        #: This worker's id in jobmachine.worker while :meth:`receive` runs.
        self.worker_id: int | None = None
        self._liveness: Liveness | None = None
        self._waker: Waker | None = None
        #: Stopping: stop(), the stop signals, the grace of the tasks in hand.
        self._stopper = Stopper(self)
        #: Tasks running concurrently (concurrency > 1), by task id.
        self._slots = Slots()
        #: Claims, and holds the tasks claimed ahead (prefetch).
        self._producer = Producer(
            self._store,
            claim=lambda limit: self._claim(limit),  # noqa: PLW0108 (a test may replace _claim)
            settings=lambda: (self.prefetch, self.prefetch_seconds, self.concurrency),
        )
        #: When the task in hand of a one-at-a-time worker started, if one runs.
        self._busy_since: float | None = None
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
        #: Runs one task: the task in hand, its outcome persisted.
        self._executor = Executor(
            self._store,
            self._completer,
            # Looked up at each call: a process() or retry_delay() set on the
            # instance after construction holds.
            process=lambda task: self.process(task),  # noqa: PLW0108
            retry_delay=lambda task, error: self.retry_delay(task, error),  # noqa: PLW0108
            retries=lambda: self.retries,
            backoff=lambda: Backoff(self.reconnect_backoff, self.reconnect_backoff_cap),
            pause=self._pause,
            can_reconnect=lambda: self._connector.reconnects,
            must_reclaim=self._producer.must_reclaim,
            name=f"job_machine_task_{id(self)}",
            time_limit=lambda: self.time_limit,
            on_stopped=self._stopper.on_stopped,
        )
        #: Writes the parts of tasks streaming at the same moment together.
        self._parts = PartGroup(self._store)
        self._started = False
        #: Whether tasks run in slots (concurrency > 1 when receive() started):
        #: fixed while serving, whatever concurrency a command sets.
        self._slotted = self.concurrency > 1
        #: The commands of Admin.broadcast and stop_workers, and live tuning.
        self._commands = Commands(self)
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
        return self._executor.current()

    def reply(self, data: Any) -> None:
        """Store ``data`` as the task's result, mark it done and notify the client.

        :raises InvalidData: ``data`` cannot be encoded as JSON (nothing is written).
        :raises TaskNotHeld: the task was revived and is no longer this worker's.
        """
        self._executor.finish(data, notify=True)

    def result(self, data: Any) -> None:
        """Store ``data`` as the task's result and mark it done, without notifying."""
        self._executor.finish(data, notify=False)

    def note(self, **notes: Any) -> None:
        """Attach metadata to the task in hand (see :meth:`Client.note`):
        each keyword is set, or removed when given as None."""
        self._note(self.task.id, notes)

    def send_part(self, data: Any) -> None:
        """Stream a partial reply (any JSON value) to the client before the
        answer: stored as the task's next part (``seq`` 0, 1, 2...) and
        announced on ``jmr:<task_id>``, in one statement (with the parts
        other tasks of this worker send at the same moment); clients read the
        parts in order with :meth:`Client.parts`. Parts belong to this
        attempt: if it fails and the task is retried, readers go on with
        the next attempt's parts (docs/tasks.md, Streaming).

        :raises InvalidData: ``data`` cannot be encoded as JSON (nothing is written).
        :raises TaskNotHeld: the task is answered already, or was revived
            and is no longer this worker's (the part is refused).
        """
        text = _codec.encode(data, "part data")
        task, seq = self._executor.next_part()
        if not self._parts.send(task.id, task.attempt, seq, text):
            raise TaskNotHeld(f"task {task.id} is no longer held by this worker")

    def error_result(self, data: Any) -> None:
        """Store ``data`` as an error result; the task's status does not change."""
        self._executor.error_result(data)

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
        :meth:`stop` and the ``stop`` command (``Admin.stop_workers``) start
        the same grace: with the signal handlers installed its end exits as
        SIGTERM's does (code 143); otherwise (a worker off the main thread)
        the worker stops the attempts still running and hands their tasks
        back, waiting again with a :class:`~job_machine.WorkerStopped`
        error, and returns once their process() has returned (the async
        worker cancels it; a thread sees ``task.cancelled``).
        """
        self._waker = Waker()
        self._slotted = self.concurrency > 1
        if self._stopper.stopping:  # stop() was called before receive()
            self._waker.wake()
        restore = self._stopper.signals.install(self.shutdown_grace, enabled=self.handle_signals)
        liveness = Liveness(
            self.listen_dsn or self._connector.conninfo,
            self.queues,
            dead_after=self.dead_after,
            retries=self.retries,
            max_runtime=self.max_runtime,
            orphan_after=self.orphan_after,
            remove_after_days=self.remove_after,
            housekeeping_interval=self.housekeeping_interval,
            on_command=self._commands.from_registry,
            on_broadcast=self.handle_command,
            held=self._executor.held,
            on_cancel=self._stopper.on_cancel,
        )
        try:
            self._own_pool.open(self._connector)
            self.worker_id = run_blocking(liveness.start)
            self._liveness = liveness
            # The caller's connection (conn=) in autocommit while serving:
            # the loop commits each claim and answer (outside receive(),
            # calls on it join the caller's transaction instead).
            with self._connector.serving(), self._side_loop.running():
                if self.listen_dsn:
                    self._store.check_registered_here(self.worker_id, self.listen_dsn)
                if not self._started:
                    self.startup()
                    self._started = True
                self._serve_reconnecting()
                # A graceful stop: let the tasks in hand finish.
                self._stopper.join_within_grace()
                self._completer.flush()
        finally:
            self._stopper.signals.cancel_timer()
            restore()
            if self._liveness is not None:
                # Leaving in a hurry: one try to record the tasks that did
                # finish, before the hand-back would run them again.
                finished = self._completer.take()
                if finished:
                    with contextlib.suppress(Exception):
                        self._store.task_complete_many(finished, self.retries)
                ahead = self._producer.forget()
                run_blocking(partial(self._liveness.stop, unclaim=ahead))
                self._liveness = None
            self.worker_id = None
            self._connector.close()
            self._own_pool.close()
            self._waker.close()
            self._waker = None
            self._stopper.reset()  # a later receive() serves again

    def _serve_reconnecting(self) -> None:
        backoff = Backoff(self.reconnect_backoff, self.reconnect_backoff_cap)
        while self._running():
            try:
                with self._subscriber.listening(self.listen_dsn, self._waker) as listener:
                    if backoff.failures:
                        logger.info("worker %s: reconnected; draining", self.worker_id)
                        # Finished tasks whose ends are not written yet are
                        # still ours to write.
                        keep = self._running_ids() + self._completer.pending_ids()
                        self._producer.release_lost(self.worker_id, keep)
                    backoff.reset()
                    self._serve_through_failures(listener)
            except _CONNECTION_ERRORS as ex:
                if not self._running():
                    break
                if not self._connector.reconnects:
                    raise  # the caller's connection: only the caller can replace it
                delay = backoff.next()
                logger.warning(
                    "worker %s: database connection lost (%s); reconnecting in %.1f s",
                    self.worker_id,
                    first_line(ex),
                    delay,
                )
                self._pause(delay)

    def _serve_through_failures(self, listener: Listener) -> None:
        """Serve; a statement that failed on a live connection (a timeout or
        cancel, a deadlock, no pooled connection free) is tried again after a
        backoff on the same connections: no reconnect, and the tasks claimed
        ahead stay claimed and are run (a claim never replaces them)."""
        backoff = Backoff(self.reconnect_backoff, self.reconnect_backoff_cap)
        while True:
            try:
                self._serve(listener, backoff)
                return
            except StatementFailed as ex:
                if not self._running():
                    return  # receive() hands back what is still claimed
                delay = backoff.next()
                logger.warning(
                    "worker %s: %s; trying again in %.1f s", self.worker_id, first_line(ex), delay
                )
                self._pause(delay)

    def _serve(self, listener: Listener, backoff: Backoff | None = None) -> None:
        looked = time.monotonic()
        while self._running():
            self._drain()
            if backoff is not None:
                backoff.reset()
            if not self._running():
                break
            heard = listener.wait(self._next_wait())
            now = time.monotonic()
            if heard is None or now - looked >= self.timeout:
                # Nothing heard for a while, or a steady stream of
                # notifications for `timeout` seconds: prove the listening
                # connection still works (a half-open one raises here), then
                # look again (at the queues too: a Perl sender creates them
                # silently). At least every `timeout`, however busy.
                looked = now
                listener.ping()
                self._subscriber.subscribe(listener)
            elif self._subscriber.patterns and any(n.channel == NEW_QUEUE_CHANNEL for n in heard):
                self._subscriber.subscribe(listener)

    def stop(self) -> None:
        """Ask :meth:`receive` to return after the task in hand, which gets
        :attr:`shutdown_grace` seconds to finish (as on SIGTERM: see
        :meth:`receive`). Safe from any thread."""
        self._stopper.stop()

    def work_once(self, task_id: int | None = None) -> bool:
        """Claim and process one waiting task, if there is one; True if there was.

        With ``task_id``, that task only: it is claimed if it waits (due,
        not blocked, of a queue this worker serves and that is not paused,
        within the queue's limits, at :attr:`min_priority` or above), else
        nothing is done and False returned (Minion's ``dequeue(id => ...)``).

        Useful in tests and scripts; :meth:`receive` is the service loop.
        Outside :meth:`receive` the worker is not registered, so a task it
        claims is judged by :attr:`orphan_after` like a Perl worker's.

        :raises ValueError: ``task_id`` is not a whole number.
        """
        if task_id is not None and (isinstance(task_id, bool) or not isinstance(task_id, int)):
            raise ValueError(f"task_id must be a task id (a whole number), not {task_id!r}")
        self._subscriber.subscribe(None)
        self._own_pool.open(self._connector)
        tasks = self._claim(1, task_id)
        for task in tasks:
            self._run(task)
        self._completer.flush()
        return bool(tasks)

    def close(self) -> None:
        """Close the connections this worker opened itself (its pool too)."""
        super().close()
        self._own_pool.close()

    def housekeeping(self) -> ChoreCounts:
        """Run the fleet's chores now: rescue the tasks of dead workers, give up
        on tasks past their max_runtime, revive unowned tasks untouched for
        their orphan_after, remove finished tasks whose time has come. Each
        task is judged by the settings of the worker that claimed it (stamped
        on it at the claim); this worker's :attr:`max_runtime`,
        :attr:`orphan_after`, :attr:`retries` and :attr:`remove_after` apply
        only to tasks that carry none (claimed by Perl Job::Machine or an
        older job_machine, or finished without a claim). A running worker
        fleet does this by itself (one housekeeper at a time); this call does
        nothing when another worker is doing it (``ran`` is False)."""
        return Housekeeper(self._store).run(
            retries=self.retries,
            remove_after_days=self.remove_after,
            grace=self.dead_after / 2,
            max_runtime=self.max_runtime,
            orphan_after=self.orphan_after,
        )

    # -- internals -----------------------------------------------------------

    def _running(self) -> bool:
        return not self._stopper.stopping and self.keep_running()

    def _next_wait(self) -> float:
        """How long to sleep when the queues gave nothing: until the next
        task falls due, or the timeout (see Producer.idle_wait)."""
        if self._slotted and self._slots.free(self.concurrency) <= 0:
            # No free slot: a finishing task wakes the wait; done marks
            # still pending are written within prefetch_seconds.
            return self.prefetch_seconds if self._completer.pending else self.timeout
        due = self._store.task_next_due(self._subscriber.served, self.min_priority)
        return self._producer.idle_wait(due, self.timeout)

    def _claim(self, limit: int, task_id: int | None = None) -> list[Task]:
        return self._store.task_claim(
            self._subscriber.served,
            limit=limit,
            worker_id=self.worker_id,
            min_priority=self.min_priority,
            task_id=task_id,
            # This worker's housekeeping settings travel with the tasks it
            # claims: the fleet's housekeeper judges them by these.
            policy=TaskPolicy(self.retries, self.max_runtime, self.orphan_after, self.remove_after),
        )

    # -- commands of Admin.broadcast ------------------------------------------

    def on_command(
        self, name: str, handler: Callable[[Any], object] | None = None
    ) -> Callable[[Any], object]:
        """Run ``handler(args)`` when :meth:`Admin.broadcast` sends this
        worker the command ``name`` (while :meth:`receive` runs), instead of
        the built-in handler of that name, if any. Usable as a decorator::

            @worker.on_command("reload")
            def reload(args): ...

        The handler runs in the worker's registry thread, once per command,
        as soon as the broadcast wakes it (at the latest within ``dead_after
        / 4`` seconds): it must be quick
        and thread-safe (set a flag, wake something); what it raises is
        logged. Returns the handler.
        """
        register = self._commands.register(name)
        return register if handler is None else register(handler)

    def handle_command(self, name: str, args: Any) -> None:
        """Called in the worker's registry thread with each command that
        :meth:`Admin.broadcast` sent this worker, and its args (a JSON
        value). Runs the handler registered with :meth:`on_command`, else a
        built-in one: ``"concurrency"`` (args: how many tasks at once from
        now on; see :meth:`set_concurrency`), ``"status"`` (logs what the
        worker is doing, at INFO), ``"stop"`` (as :meth:`stop`); an unknown
        command is logged and ignored. Override it to dispatch otherwise."""
        self._commands.handle(name, args)

    def set_concurrency(self, concurrency: int) -> None:
        """Run up to ``concurrency`` tasks at once from now on (the serving
        loop applies it at its next turn; tasks already running go on). A
        worker started with ``concurrency`` above 1 takes any number from 1
        (its own pool grows to match); one started with 1 runs its tasks one
        by one on its one connection and stays at 1. Safe from any thread.

        :raises ValueError: not a whole number >= 1, or above 1 for a worker
            started with 1.
        """
        self._commands.want_concurrency(concurrency)

    def status(self) -> dict[str, Any]:
        """What the worker is doing now (the ``"status"`` command logs it):
        its id, the queues it serves, its concurrency, the tasks it runs,
        how many it holds claimed ahead, whether it is stopping."""
        return self._commands.status()

    def _drain(self) -> None:
        self._commands.apply_concurrency()
        if not self._slotted:
            self._drain_one_by_one()
            return
        while self._running():
            if self._completer.due(bool(self._producer.ahead), self.concurrency):
                self._completer.flush()
            free = self._slots.free(self.concurrency)
            if free <= 0:
                return  # the wait wakes when one of them finishes
            # Short tasks: claim ahead what the slots get through in about
            # prefetch_seconds, to start them without a statement.
            exhausted = self._producer.fill(free)
            starting, waited = self._producer.take(free)
            for task in starting:
                # A slot that frees wakes the wait: look at the queues again.
                run = partial(self._run_concurrently, task, waited)
                self._slots.start(task.id, run, self._wake)
            if exhausted or not starting:
                return

    def _drain_one_by_one(self) -> None:
        """Claim and process tasks one at a time; while they are short, claim
        several per statement (one claim statement costs about as much as
        ten claimed rows)."""
        producer = self._producer
        while self._running():
            producer.fill()
            if not producer.ahead:
                return
            # A batch of short tasks: how they end (answers, errors, done
            # marks) is written together, one statement and one commit, at
            # the end of the batch or once the oldest waited prefetch_seconds.
            # A batch of one (an idle worker's task) is written at once.
            self._completer.collecting = len(producer.ahead) > 1
            try:
                while producer.ahead:
                    if not self._running():
                        producer.give_back(self.worker_id)
                        break
                    [task], waited = producer.take(1)
                    started = self._busy_since = time.monotonic()
                    try:
                        self._run(task, waited)
                    finally:
                        self._busy_since = None
                    producer.budget.note(time.monotonic() - started)
                    if self._completer.due(bool(producer.ahead), self.prefetch):
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

    def _run_concurrently(self, task: Task, waited: float) -> None:
        started = time.monotonic()
        try:
            self._run(task, waited)
            self._producer.budget.note(time.monotonic() - started)
        except Exception:
            # Only a lost connection that cannot be replaced gets here; the
            # task stays started and is handed back when the worker stops.
            logger.exception(
                "task %d: its outcome could not be stored",
                task.id,
                extra=task_extra(task, self.worker_id),
            )

    def _wake(self) -> None:
        """Wake the serving loop's wait, if it serves (any thread, a signal handler)."""
        if self._waker is not None:
            self._waker.wake()

    def _pause(self, seconds: float) -> None:
        """Sleep, but return at once when stop() is called."""
        if self._waker is None:
            return
        if self._waker.fd in select_readable([self._waker.fd], seconds):
            self._waker.clear()

    def _run(self, task: Task, waited: float = 0.0) -> None:
        self._executor.run(task, waited)

    def _running_ids(self) -> list[int]:
        """The tasks whose process() runs now: in slots, or the one in hand."""
        running = self._slots.ids()
        current = self._executor.current_id()
        if current is not None and current not in running:
            running.append(current)
        return running
