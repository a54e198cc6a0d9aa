"""The few things that really differ between the async core and its sync twin.

job_machine/_async/ is the only hand-written implementation; the sync modules
in job_machine/_sync/ are generated from it by tools/async_to_sync.py, which
renames each async name here to its sync partner (``asleep`` -> ``sleep``,
``aselect_readable`` -> ``select_readable``, ``arun_blocking`` ->
``run_blocking``). Keep every difference that a rename cannot express in
this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import select
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .task import StopFlag

T = TypeVar("T")


#: Whether this face can run ``async def`` task functions: the asyncio one
#: awaits them, the sync one cannot.
ARUNS_COROUTINES = True
RUNS_COROUTINES = False


def sleep(seconds: float) -> None:
    """Block the thread for ``seconds``."""
    time.sleep(seconds)


async def asleep(seconds: float) -> None:
    """Suspend the task for ``seconds``."""
    await asyncio.sleep(seconds)


def run_blocking(fn: Callable[[], T]) -> T:
    """Run a blocking function (here: simply call it)."""
    return fn()


async def arun_blocking(fn: Callable[[], T]) -> T:
    """Run a blocking function in a thread, so the event loop goes on meanwhile."""
    return await asyncio.to_thread(fn)


def select_readable(fds: Sequence[int], timeout: float | None) -> list[int]:
    """Block until one of ``fds`` is readable or ``timeout`` passes; return the readable ones."""
    readable, _, _ = select.select(fds, [], [], timeout)
    return list(readable)


async def aselect_readable(fds: Sequence[int], timeout: float | None) -> list[int]:
    """Wait, without blocking the loop, until one of ``fds`` is readable or ``timeout`` passes."""
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()
    ready: list[int] = []

    def on_readable(fd: int) -> None:
        ready.append(fd)
        if not woken.done():
            woken.set_result(None)

    for fd in fds:
        loop.add_reader(fd, on_readable, fd)
    try:
        await asyncio.wait_for(woken, timeout)
    except TimeoutError:
        pass
    finally:
        for fd in fds:
            loop.remove_reader(fd)
    return ready


class Wakeup:
    """A flag a waiter sleeps on and any thread may raise (a threading.Event)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        """Raise the flag: a current or the next :meth:`wait` returns. Any thread."""
        self._event.set()

    def clear(self) -> None:
        """Lower the flag (from the waiter)."""
        self._event.clear()

    def wait(self, timeout: float | None) -> bool:
        """Sleep until the flag is raised or ``timeout`` passes; whether it was raised."""
        return self._event.wait(timeout)


class AWakeup:
    """A flag an asyncio waiter sleeps on and any thread may raise: the
    raise is handed to the waiter's event loop. (A future and a timer, not
    ``asyncio.wait_for``, which would start a task per wait.)"""

    __slots__ = ("_flag", "_future", "_loop", "_thread")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._flag = False
        self._future: asyncio.Future[None] | None = None

    def set(self) -> None:
        """Raise the flag: a current or the next :meth:`wait` returns. Any thread."""
        if threading.get_ident() == self._thread:
            self._raise()
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self._loop.call_soon_threadsafe(self._raise)

    def _raise(self) -> None:
        self._flag = True
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    def clear(self) -> None:
        """Lower the flag (from the waiter)."""
        self._flag = False

    async def wait(self, timeout: float | None) -> bool:
        """Sleep until the flag is raised or ``timeout`` passes; whether it was raised."""
        if self._flag:
            return True
        future = self._future = self._loop.create_future()
        timer = None
        if timeout is not None:
            timer = self._loop.call_later(max(0.0, timeout), _settle, future)
        try:
            await future
        finally:
            self._future = None
            if timer is not None:
                timer.cancel()
        return self._flag


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def shield(value: T) -> T:
    """The sync face has no cancellation to shield from: the value itself."""
    return value


async def ashield(aw: Awaitable[T]) -> T:
    """Await ``aw`` to its end even if the caller is cancelled meanwhile."""
    return await asyncio.shield(aw)


class Mutex:
    """A lock for ``with``, held across blocking calls (a threading.Lock)."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class AMutex:
    """A lock for ``async with``, held across awaits (an asyncio.Lock of the
    running loop: a new one when the object is used from another loop)."""

    __slots__ = ("_lock", "_loop")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._lock = loop, asyncio.Lock()
        await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()


class Handle:
    """A task being processed on one of the task threads; :meth:`join`
    waits for its end."""

    __slots__ = ("_finished",)

    def __init__(self) -> None:
        self._finished = threading.Event()

    def join(self, timeout: float | None = None) -> None:
        self._finished.wait(timeout)


#: A task being processed concurrently by an AsyncWorker.
AHandle = asyncio.Task[None]

#: Seconds an idle task thread waits for more work before it ends.
IDLE_THREAD_SECONDS = 30.0
_work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
_idle_threads = 0
_idle_lock = threading.Lock()


def _task_thread(job: Callable[[], None]) -> None:
    global _idle_threads  # noqa: PLW0603 (the pool's one counter, under _idle_lock)
    while True:
        job()
        with _idle_lock:
            _idle_threads += 1
        while True:
            try:
                job = _work.get(timeout=IDLE_THREAD_SECONDS)
                break
            except queue.Empty:
                with _idle_lock:
                    if _idle_threads > 0:  # no job is on its way to this thread
                        _idle_threads -= 1
                        return


def spawn(fn: Callable[[], None], done: Callable[[], None]) -> Handle:
    """Run ``fn`` on a task thread (in a copy of the caller's context), then
    call ``done``. Threads are reused while work comes (starting one per task
    cost more than a no-op task), and they are daemons: a worker told to exit
    at once is not held up by a task still running."""
    global _idle_threads  # noqa: PLW0603 (the pool's one counter, under _idle_lock)
    context = contextvars.copy_context()
    handle = Handle()

    def job() -> None:
        try:
            context.run(fn)
        finally:
            try:
                done()
            finally:
                handle._finished.set()

    with _idle_lock:
        reuse = _idle_threads > 0
        if reuse:
            _idle_threads -= 1  # that thread's next job is this one
    if reuse:
        _work.put(job)
    else:
        threading.Thread(
            target=_task_thread, args=(job,), name="job_machine-task", daemon=True
        ).start()
    return handle


def aspawn(fn: Callable[[], Coroutine[Any, Any, None]], done: Callable[[], None]) -> AHandle:
    """Run the coroutine ``fn()`` as an asyncio task, then call ``done``."""
    task = asyncio.get_running_loop().create_task(fn())
    task.add_done_callback(lambda _: done())
    return task


def join_all(handles: Sequence[Handle], timeout: float | None = None) -> bool:
    """Wait until every spawned thread has finished (True), or ``timeout``
    seconds have passed (False)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for thread in handles:
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if not thread._finished.is_set():
            return False
    return True


async def ajoin_all(handles: Sequence[AHandle], timeout: float | None = None) -> bool:
    """Wait until every spawned task has finished (True), or ``timeout``
    seconds have passed (False)."""
    if timeout is None:
        await asyncio.gather(*handles, return_exceptions=True)
        return True
    if not handles:
        return True
    _, pending = await asyncio.wait(handles, timeout=timeout)
    return not pending


def run_stoppable(fn: Callable[[], None], stop: StopFlag) -> None:
    """Run ``fn``. A thread cannot be interrupted safely: a stop is seen by
    the code itself (``task.cancelled``, ``task.check_cancelled()``), and
    the caller reads ``stop`` once ``fn`` returns."""
    fn()


async def arun_stoppable(fn: Callable[[], Awaitable[None]], stop: StopFlag) -> None:
    """Await ``fn()``; a stop (from any thread) cancels the asyncio task
    awaiting it, at the ``await`` inside ``fn`` where it is suspended, and
    only while ``fn`` runs: never the caller's own writes after it. The
    cancellation it caused is not raised (the caller reads ``stop``); a
    cancellation of the task by anyone else goes on as ever. (Not a task of
    its own for ``fn``: that would cost two turns of the event loop per task.)"""
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    state = _Stoppable()

    def interrupt() -> None:  # in the loop, between two steps of the tasks
        if state.running and current is not None and not current.done():
            state.cancelled = True
            current.cancel()

    def on_stop() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing runs
            loop.call_soon_threadsafe(interrupt)

    stop.on_stop(on_stop)
    try:
        await fn()
    except asyncio.CancelledError:
        state.running = False
        if not state.cancelled or current is None or current.uncancel() > 0:
            raise
        return
    finally:
        state.running = False
    if state.cancelled and current is not None and current.cancelling() > 0:
        current.uncancel()  # fn swallowed the cancellation


class _Stoppable:
    __slots__ = ("cancelled", "running")

    def __init__(self) -> None:
        self.running = True
        self.cancelled = False


class Timer:
    """Calls ``fn`` in a thread of its own after ``seconds``, unless
    :meth:`finish` came first."""

    __slots__ = ("_thread",)

    def __init__(self, seconds: float, fn: Callable[[], None]) -> None:
        self._thread = threading.Timer(seconds, fn)
        self._thread.name = "job_machine-time-limit"
        self._thread.daemon = True
        self._thread.start()

    def finish(self) -> None:
        """Cancel it, or, when ``fn`` has started, wait for its end."""
        self._thread.cancel()
        self._thread.join()


class ATimer:
    """Runs the coroutine ``fn()`` as an asyncio task after ``seconds``,
    unless :meth:`finish` came first."""

    __slots__ = ("_handle", "_task")

    def __init__(self, seconds: float, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._task: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(seconds, self._fire, loop, fn)

    def _fire(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        self._task = loop.create_task(fn())

    async def finish(self) -> None:
        """Cancel it, or, when ``fn`` has started, wait for its end."""
        self._handle.cancel()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
