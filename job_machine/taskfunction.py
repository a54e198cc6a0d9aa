"""Task functions: what ``@app.task`` makes of a function (see
:mod:`job_machine.app` and docs/tasks.md).

:class:`TaskFunction` (a ``def``) and :class:`AsyncTaskFunction` (an
``async def``) send calls through their :class:`~job_machine.App`'s clients
(``send``, ``asend``, ``send_many``), wait for replies (``call``, ``acall``,
``result``, ``aresult``), and run the function here when called directly.
They are generic in the function's parameters and return type, so a type
checker sees ``add.call(1, 2)`` as what ``add`` returns.
"""

from __future__ import annotations

import enum
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
)
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, Self, TypeVar, cast, overload

from ._taskdef import TaskDef
from .task import Part

if TYPE_CHECKING:
    from .app import App

P = ParamSpec("P")
R = TypeVar("R")
P2 = ParamSpec("P2")
R2 = TypeVar("R2")

#: How long ``call`` waits for the reply by default, in seconds.
DEFAULT_TIMEOUT = 30.0


class _Keep(enum.Enum):
    KEEP = "keep"


KEEP = _Keep.KEEP

#: The options of Client.send a task function passes on; send_many takes
#: all but the last two.
_SEND = (
    "priority",
    "run_after",
    "delay",
    "attempts",
    "title",
    "grouping",
    "remove_after",
    "time_limit",
    "expire_after",
    "expires_at",
    "unique_key",
    "parents",
)
_SEND_MANY = _SEND[:-2]


class TaskArgs:
    """The arguments of one call, for :meth:`TaskFunction.send_many` when
    they include keywords: ``add.send_many([add.args(1, b=2)])``."""

    __slots__ = ("args", "kwargs")

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return f"TaskArgs(args={self.args!r}, kwargs={self.kwargs!r})"


class TaskFunctionBase(Generic[P, R]):
    """What sync and async task functions share: sending, calling, waiting."""

    def __init__(
        self,
        app: App,
        definition: TaskDef,
        options: dict[str, Any],
        queue: str,
        timeout: float | None,
    ) -> None:
        self.app = app
        #: How it travels: its name, queue, the function itself.
        self.definition = definition
        self._options = options
        self._queue = queue
        self._timeout = timeout
        self.__doc__ = getattr(definition.fn, "__doc__", None)
        self.__name__ = getattr(definition.fn, "__name__", definition.name)
        self.__qualname__ = getattr(definition.fn, "__qualname__", definition.name)
        self.__module__ = getattr(definition.fn, "__module__", __name__)
        self.__wrapped__ = definition.fn

    @property
    def name(self) -> str:
        """The name its tasks carry (the payload's ``task`` key)."""
        return self.definition.name

    @property
    def queue(self) -> str:
        """The queue its tasks are sent to."""
        return self._queue

    def __repr__(self) -> str:
        return f"<task function {self.name} on queue {self.queue}>"

    def configure(
        self,
        *,
        queue: str | None = None,
        priority: int | None = None,
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
        timeout: float | _Keep | None = KEEP,
    ) -> Self:
        """The same function with other options for what it sends: every
        option of :meth:`Client.send` (None keeps the current one), the queue,
        and ``timeout``, the seconds :meth:`call` and :meth:`result` wait
        (None: forever). The function itself is not changed::

            add.configure(priority=9, delay=5, timeout=10).call(1, 2)
        """
        given = {
            "priority": priority,
            "run_after": run_after,
            "delay": delay,
            "attempts": attempts,
            "title": title,
            "grouping": grouping,
            "remove_after": remove_after,
            "unique_key": unique_key,
            "parents": list(parents) if parents is not None else None,
            "time_limit": time_limit,
            "expire_after": expire_after,
            "expires_at": expires_at,
        }
        options = self._options | {k: v for k, v in given.items() if v is not None}
        if queue is not None:
            from .channels import validate_queue  # noqa: PLC0415

            validate_queue(queue)
        return type(self)(
            self.app,
            self.definition,
            options,
            queue if queue is not None else self._queue,
            self._timeout if timeout is KEEP else timeout,
        )

    def args(self, *args: P.args, **kwargs: P.kwargs) -> TaskArgs:
        """One call's arguments, for :meth:`send_many` (type-checked like a call)."""
        return TaskArgs(args, kwargs)

    # -- sending ----------------------------------------------------------------

    def _payload(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        return self.definition.payload(args, kwargs)

    def _many(self, calls: Iterable[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        extra = [k for k in self._options if k not in _SEND_MANY]
        if extra:
            raise ValueError(f"send_many() cannot send with {', '.join(extra)}")
        payloads = []
        for call in calls:
            if isinstance(call, TaskArgs):
                payloads.append(self._payload(call.args, call.kwargs))
            elif isinstance(call, tuple):
                payloads.append(self._payload(call, {}))
            else:
                payloads.append(self._payload((call,), {}))
        return payloads, self._options

    def send(self, *args: P.args, **kwargs: P.kwargs) -> int:
        """Send a call as a task (nothing runs here) and return its id.

        :raises TypeError: the arguments do not fit the function (nothing is sent).
        :raises InvalidData: an argument cannot be encoded as JSON; the
            message names it (nothing is sent).
        """
        return self.app.client.send(self._payload(args, kwargs), self._queue, **self._options)

    async def asend(self, *args: P.args, **kwargs: P.kwargs) -> int:
        """:meth:`send` through the app's :class:`AsyncClient`."""
        client = self.app.async_client
        return await client.send(self._payload(args, kwargs), self._queue, **self._options)

    def send_many(self, calls: Iterable[Any]) -> list[int]:
        """Send many calls in one statement; their task ids in the same order.

        Each item is a tuple of positional arguments (``(1, 2)``), a
        :class:`TaskArgs` from :meth:`args` (keywords too), or else the one
        positional argument. Every argument is checked before anything is
        sent. ``unique_key`` and ``parents`` cannot be used here.
        """
        payloads, options = self._many(calls)
        return self.app.client.send_many(payloads, self._queue, **options)

    async def asend_many(self, calls: Iterable[Any]) -> list[int]:
        """:meth:`send_many` through the app's :class:`AsyncClient`."""
        payloads, options = self._many(calls)
        return await self.app.async_client.send_many(payloads, self._queue, **options)

    # -- calling ------------------------------------------------------------------

    def call(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Send the call and wait for its reply: what the function returned
        in the worker (dataclasses and pydantic models rebuilt from its
        return annotation).

        :raises TaskFailed: the function raised in its last attempt (the
            error's type, message and traceback are in ``.error``).
        :raises WaitTimeout: no reply within the timeout (30 s by default,
            see :meth:`configure`); the task still runs.
        """
        return self.result(self.send(*args, **kwargs))

    async def acall(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """:meth:`call` on asyncio, through the app's :class:`AsyncClient`."""
        return await self.aresult(await self.asend(*args, **kwargs))

    def result(self, task_id: int) -> R:
        """Wait for the reply of a task sent by :meth:`send` and return it as
        :meth:`call` does (at once when it is there already)."""
        raw = self.app.client.wait(task_id, timeout=self._timeout)
        return cast(R, self.definition.reply_value(raw))

    async def aresult(self, task_id: int) -> R:
        """:meth:`result` on asyncio."""
        raw = await self.app.async_client.wait(task_id, timeout=self._timeout)
        return cast(R, self.definition.reply_value(raw))

    # -- streaming ----------------------------------------------------------------

    def parts(self, task_id: int) -> Iterator[Part]:
        """The parts a generator task function yields in the task sent by
        :meth:`send`, as they arrive (:meth:`Client.parts`; each part's
        ``data`` converted from the yield type of its annotation, as
        ``Generator[Y, None, R]`` or ``Iterator[Y]``); the iteration ends
        when the task is answered, and :meth:`result` then returns its reply
        at once::

            task_id = count.send(3)
            for part in count.parts(task_id):
                print(part.data)
            print(count.result(task_id))

        :raises TaskFailed: the task failed (after its last attempt's parts).
        :raises WaitTimeout: not answered within the timeout (see :meth:`configure`).
        """
        convert = self.definition.part_value
        for part in self.app.client.parts(task_id, timeout=self._timeout):
            yield replace(part, data=convert(part.data))

    async def aparts(self, task_id: int) -> AsyncIterator[Part]:
        """:meth:`parts` on asyncio (``async for``)."""
        convert = self.definition.part_value
        async for part in self.app.async_client.parts(task_id, timeout=self._timeout):
            yield replace(part, data=convert(part.data))


class TaskFunction(TaskFunctionBase[P, R]):
    """A plain function made a task function by :meth:`App.task`.

    Calling it runs it here, as before; :meth:`send`, :meth:`call` and
    :meth:`acall` run it in a worker.
    """

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here, in this process (no task)."""
        return cast(R, self.definition.fn(*args, **kwargs))


class AsyncTaskFunction(TaskFunctionBase[P, R]):
    """An ``async def`` made a task function by :meth:`App.task`; only an
    asyncio worker (:meth:`App.async_worker`) runs it. Awaiting it runs it
    here; :meth:`send`, :meth:`call` and :meth:`acall` run it in a worker."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Run the function here, in this process (no task)."""
        return cast(Coroutine[Any, Any, R], self.definition.fn(*args, **kwargs))


class GeneratorTaskFunction(TaskFunctionBase[P, R]):
    """A generator function (``def`` with ``yield``) made a task function by
    :meth:`App.task`: what it yields is streamed to the caller as parts
    (:meth:`parts`), what it returns is the reply, so :meth:`call` and
    :meth:`result` are typed as its ``Generator[Y, S, R]``'s ``R``.
    Calling it makes the generator here, as before."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Generator[Any, Any, R]:
        """Make the generator here, in this process (no task)."""
        return cast(Generator[Any, Any, R], self.definition.fn(*args, **kwargs))


class AsyncGeneratorTaskFunction(TaskFunctionBase[P, None]):
    """An ``async def`` generator made a task function by :meth:`App.task`;
    only an asyncio worker runs it. What it yields is streamed to the caller
    as parts (:meth:`aparts`); Python gives it no return value, so its reply
    is None. Calling it makes the async generator here, as before."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[Any, None]:
        """Make the async generator here, in this process (no task)."""
        return cast(AsyncGenerator[Any, None], self.definition.fn(*args, **kwargs))


class TaskDecorator(Protocol):
    """What ``@app.task(...)`` returns: it makes the function a task function."""

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P2, Coroutine[Any, Any, R2]], /
    ) -> AsyncTaskFunction[P2, R2]: ...
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P2, AsyncIterator[Any]], /
    ) -> AsyncGeneratorTaskFunction[P2]: ...
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P2, Generator[Any, Any, R2]], /
    ) -> GeneratorTaskFunction[P2, R2]: ...
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P2, Iterator[Any]], /
    ) -> GeneratorTaskFunction[P2, Any]: ...
    @overload
    def __call__(self, fn: Callable[P2, R2], /) -> TaskFunction[P2, R2]: ...
