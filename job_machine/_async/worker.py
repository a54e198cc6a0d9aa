"""AsyncWorker: subclass it, override process(), and run receive()."""

from __future__ import annotations

import logging
import signal
import threading
import traceback
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from types import FrameType
from typing import Any, ClassVar

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from .. import _codec
from ..channels import queue_channel, validate_queue
from ..errors import NoCurrentTask, TaskNotHeld
from ..task import Status, Task
from .connection import AsyncConnector, AsyncConnectorOwner, aconnect
from .listener import AsyncListener
from .store import AsyncStore, ChoreCounts

logger = logging.getLogger("job_machine.worker")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class AsyncWorker(AsyncConnectorOwner):
    """A service that takes tasks from one or more queues and answers them.

    Subclass it and override :meth:`process`; in it, call :meth:`reply`
    (store the answer, mark the task done, notify the client), :meth:`result`
    (the same without notifying) or :meth:`error_result` (store an error,
    status unchanged). Then run :meth:`receive`.

    :param dsn: PostgreSQL connection string. The worker keeps one connection
        of its own, which listens and does the work.
    :param queue: a queue name or a list of them.
    :param conn: use this connection instead (it must not be in a transaction
        when :meth:`receive` starts; it is switched to autocommit).
    :param pool: take connections for the work from this pool; listening
        uses one more connection of its own, opened from the pool's conninfo.
    :param timeout: seconds without a notification after which the worker
        does housekeeping and re-reads its queues (Perl's ``timeout``).
    :param max_runtime: seconds after which a started task that nobody
        touched is revived (put back to waiting).
    :param retries: how many times a task is retried after its first attempt
        raised; after the last one it fails (status 900).
    :param remove_after: days after which finished tasks are deleted.
    :param extra: other keyword arguments become attributes of the worker.

    Every default can also be set as a class attribute of the subclass.
    """

    #: The queue(s) to serve when none is given to the constructor.
    queue: ClassVar[str | Sequence[str] | None] = None
    #: Seconds without a notification before housekeeping runs.
    timeout: float = 300.0
    #: Seconds after which an untouched started task is revived.
    max_runtime: float = 1800.0
    #: Retries after the first attempt before a task fails.
    retries: int = 3
    #: Days after which finished tasks are removed.
    remove_after: float = 30.0
    #: Whether receive() installs SIGTERM/SIGINT handlers (main thread only).
    handle_signals: bool = True

    def __init__(
        self,
        dsn: str | None = None,
        queue: str | Sequence[str] | None = None,
        *,
        conn: AsyncConnection[Any] | None = None,
        pool: AsyncConnectionPool | None = None,
        timeout: float | None = None,
        max_runtime: float | None = None,
        retries: int | None = None,
        remove_after: float | timedelta | None = None,
        **extra: Any,
    ) -> None:
        names = queue if queue is not None else type(self).queue
        if names is None:
            raise ValueError("no queue: pass queue= to the worker or set it on the class")
        if isinstance(names, str):
            names = [names]
        self.queues: list[str] = [validate_queue(q) for q in names]
        if not self.queues:
            raise ValueError("queue list is empty")
        if timeout is not None:
            self.timeout = _positive("timeout", timeout)
        if max_runtime is not None:
            self.max_runtime = _positive("max_runtime", max_runtime)
        if retries is not None:
            if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
                raise ValueError(f"retries must be a whole number >= 0, not {retries!r}")
            self.retries = retries
        if remove_after is not None:
            if isinstance(remove_after, timedelta):
                remove_after = remove_after.total_seconds() / 86400
            self.remove_after = _positive("remove_after", remove_after)
        self._connector = AsyncConnector(dsn=dsn, conn=conn, pool=pool)
        self._store = AsyncStore(self._connector)
        self._listener: AsyncListener | None = None
        self._current: Task | None = None
        self._answered = False
        self._started = False
        self._stopping = False
        self._signals_seen = 0
        for name, value in extra.items():
            setattr(self, name, value)

    # -- to override --------------------------------------------------------

    async def startup(self) -> None:
        """Called once, before the first task. Override to set up resources."""

    async def process(self, task: Task) -> None:
        """Handle one task. Override this.

        Call :meth:`reply` (or :meth:`result`) to answer. If this returns
        without answering, the task is marked done with no result. If it
        raises, the error is stored and the task is retried, up to
        :attr:`retries` times, then failed.
        """
        raise NotImplementedError(f"{type(self).__name__} must override process(task)")

    def keep_running(self) -> bool:
        """Checked after every task and every wake-up; return False to make
        :meth:`receive` return. Override for a worker that stops by itself."""
        return True

    # -- answering, from inside process() -------------------------------------

    @property
    def task(self) -> Task:
        """The task being processed."""
        if self._current is None:
            raise NoCurrentTask("no task is being processed (call this from process())")
        return self._current

    async def reply(self, data: Any) -> None:
        """Store ``data`` as the task's result, mark it done and notify the client.

        :raises InvalidData: ``data`` cannot be encoded as JSON (nothing is written).
        :raises TaskNotHeld: the task was revived and is no longer this worker's.
        """
        await self._finish(data, notify=True)

    async def result(self, data: Any) -> None:
        """Store ``data`` as the task's result and mark it done, without notifying."""
        await self._finish(data, notify=False)

    async def error_result(self, data: Any) -> None:
        """Store ``data`` as an error result; the task's status does not change."""
        task = self.task
        text = _codec.encode(data, "error_result data")
        if not await self._store.result_insert_error(task.id, task.attempt, text):
            raise TaskNotHeld(f"task {task.id} is no longer held by this worker")

    async def _finish(self, data: Any, notify: bool) -> None:
        task = self.task
        text = _codec.encode(data, "reply data")
        if not await self._store.task_finish(task.id, task.attempt, text, notify):
            raise TaskNotHeld(f"task {task.id} is no longer held by this worker")
        self._answered = True

    # -- the service loop ---------------------------------------------------

    async def receive(self) -> None:
        """Serve the queues until stopped.

        Listens on ``jm:<queue>`` for each queue, processes what is already
        waiting, then sleeps until a notification arrives. After
        :attr:`timeout` seconds without one it does housekeeping and looks at
        the queues again. Returns after SIGTERM/SIGINT or :meth:`stop` (the
        task in hand is finished first), or when :meth:`keep_running` says so.
        """
        self._signals_seen = 0
        restore = self._install_signal_handlers()
        try:
            async with AsyncExitStack() as stack:
                conn = await stack.enter_async_context(self._listening_connection())
                listener = await self._open_listener(conn)
                stack.callback(self._close_listener)
                await self._serve(listener)
        finally:
            restore()
            await self._connector.close()
            self._stopping = False  # a later receive() serves again

    async def _serve(self, listener: AsyncListener) -> None:
        if not self._started:
            await self.startup()
            self._started = True
        while self._running():
            await self._drain()
            if not self._running():
                break
            woke = await listener.wait(self.timeout)
            if woke is None:
                try:
                    await self.housekeeping()
                except psycopg.Error:
                    if listener.conn.broken or listener.conn.closed:
                        raise
                    logger.exception("housekeeping failed; trying again after the next timeout")

    def stop(self) -> None:
        """Ask :meth:`receive` to return after the task in hand. Safe from any
        thread and from signal handlers."""
        self._stopping = True
        if self._listener is not None:
            self._listener.wake()

    async def work_once(self) -> bool:
        """Claim and process one waiting task, if there is one; True if there was.

        Useful in tests and scripts; :meth:`receive` is the service loop.
        """
        tasks = await self._store.task_claim(self.queues, limit=1)
        for task in tasks:
            await self._run(task)
        return bool(tasks)

    async def housekeeping(self) -> ChoreCounts:
        """Revive started tasks untouched for :attr:`max_runtime`, fail those
        that used all their attempts, remove finished tasks older than
        :attr:`remove_after` days. Only one worker of the fleet does it at a time."""
        counts = await self._store.chores(
            max_runtime=self.max_runtime,
            retries=self.retries,
            remove_after_days=self.remove_after,
        )
        if counts.revived or counts.failed or counts.removed:
            logger.info(
                "housekeeping: revived %d, failed %d, removed %d",
                counts.revived,
                counts.failed,
                counts.removed,
            )
        return counts

    # -- internals -----------------------------------------------------------

    def _running(self) -> bool:
        return not self._stopping and self.keep_running()

    async def _drain(self) -> None:
        while self._running() and await self.work_once():
            pass

    async def _run(self, task: Task) -> None:
        self._current, self._answered = task, False
        try:
            await self.process(task)
        except Exception as ex:
            await self._record_failure(task, ex)
        else:
            if not self._answered and not await self._store.task_done(task.id, task.attempt):
                logger.warning("task %d was revived while it ran; not marked done", task.id)
        finally:
            self._current = None

    async def _record_failure(self, task: Task, ex: Exception) -> None:
        error = {
            "type": type(ex).__qualname__,
            "message": str(ex),
            "traceback": "".join(traceback.format_exception(ex)),
            "attempt": task.attempt,
        }
        if isinstance(ex, TaskNotHeld):
            logger.warning("%s", ex)
            return
        status = await self._store.task_fail_attempt(
            task.id, task.attempt, _codec.encode(error, "error"), self.retries
        )
        if status is None:
            logger.warning("task %d raised %r but was revived meanwhile", task.id, ex)
        elif status == Status.FAILED:
            logger.error("task %d failed after %d attempts: %r", task.id, task.attempt, ex)
        else:
            logger.warning("task %d attempt %d raised %r; will retry", task.id, task.attempt, ex)

    @asynccontextmanager
    async def _listening_connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        if self._connector.pool is not None:
            # Work goes through the pool; listening needs a connection that
            # is never handed to anyone else.
            conn = await aconnect(self._connector.conninfo)
            try:
                yield conn
            finally:
                await conn.close()
        else:
            async with self._connector.listening() as conn:
                yield conn

    async def _open_listener(self, conn: AsyncConnection[Any]) -> AsyncListener:
        listener = AsyncListener(conn)
        for name in self.queues:
            await listener.listen(queue_channel(name))
        self._listener = listener
        if self._stopping:  # stop() was called before the listener existed
            listener.wake()
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
                # Second signal: stop now, exiting as a shell reports death
                # by that signal. The task in hand stays started and is
                # revived by housekeeping; it is never marked done.
                logger.warning("second %s: stopping now", signal.Signals(signum).name)
                raise SystemExit(128 + signum)
            logger.info(
                "%s: finishing the task in hand, then stopping", signal.Signals(signum).name
            )
            self.stop()

        for sig in _STOP_SIGNALS:
            signal.signal(sig, on_signal)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds/days, not {value!r}")
    return float(value)
