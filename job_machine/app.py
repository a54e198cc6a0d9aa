"""Task functions: call a function that runs in another process.

::

    import job_machine

    app = job_machine.App()                 # JOB_MACHINE_DSN, or App(dsn=...), pool=, conn=

    @app.task                               # queue and name: "myapp.tasks.add"
    def add(a: int, b: int) -> int:
        return a + b

    add.call(1, 2)                          # 3, computed by a worker (typed: int)
    task_id = add.send(1, 2)                # send only; add.result(task_id) waits for it
    await add.acall(1, 2)                   # the asyncio face
    add.configure(priority=9, timeout=10).call(1, 2)
    add.send_many([(1, 2), (3, 4)])

    app.worker().receive()                  # a worker serving every task function
    # or: job-machine worker --app myapp.tasks:app

See docs/tasks.md. On the wire a task function's task is plain JSON,
``{"task": "myapp.tasks.add", "args": [1, 2], "kwargs": {}}`` (see
job_machine/_taskdef.py), so a Perl client may send it and a Perl worker
answer it.
"""

from __future__ import annotations

import enum
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, Self, TypeVar, cast, overload

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from ._async.client import AsyncClient
from ._async.taskworker import AsyncTaskWorker
from ._taskdef import TaskDef, TaskTable
from .errors import JobMachineError

if TYPE_CHECKING:
    from . import Client, TaskWorker

P = ParamSpec("P")
R = TypeVar("R")
P2 = ParamSpec("P2")
R2 = TypeVar("R2")

#: Where an App without ``dsn``, ``pool`` or ``conn`` finds its database.
ENV_DSN = "JOB_MACHINE_DSN"
#: How long ``call`` waits for the reply by default, in seconds.
DEFAULT_TIMEOUT = 30.0


class _Keep(enum.Enum):
    KEEP = "keep"


KEEP = _Keep.KEEP

#: The options of Client.send a task function passes on; send_many takes the first seven.
_SEND = (
    "priority",
    "run_after",
    "delay",
    "attempts",
    "title",
    "grouping",
    "remove_after",
    "unique_key",
    "parents",
)
_SEND_MANY = _SEND[:7]


class TaskArgs:
    """The arguments of one call, for :meth:`TaskFunction.send_many` when
    they include keywords: ``add.send_many([add.args(1, b=2)])``."""

    __slots__ = ("args", "kwargs")

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return f"TaskArgs(args={self.args!r}, kwargs={self.kwargs!r})"


class _TaskFunctionBase(Generic[P, R]):
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


class TaskFunction(_TaskFunctionBase[P, R]):
    """A plain function made a task function by :meth:`App.task`.

    Calling it runs it here, as before; :meth:`send`, :meth:`call` and
    :meth:`acall` run it in a worker.
    """

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here, in this process (no task)."""
        return cast(R, self.definition.fn(*args, **kwargs))


class AsyncTaskFunction(_TaskFunctionBase[P, R]):
    """An ``async def`` made a task function by :meth:`App.task`; only an
    asyncio worker (:meth:`App.async_worker`) runs it. Awaiting it runs it
    here; :meth:`send`, :meth:`call` and :meth:`acall` run it in a worker."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Run the function here, in this process (no task)."""
        return cast(Coroutine[Any, Any, R], self.definition.fn(*args, **kwargs))


class TaskDecorator(Protocol):
    """What ``@app.task(...)`` returns: it makes the function a task function."""

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P2, Coroutine[Any, Any, R2]], /
    ) -> AsyncTaskFunction[P2, R2]: ...
    @overload
    def __call__(self, fn: Callable[P2, R2], /) -> TaskFunction[P2, R2]: ...


class App:
    """Task functions, and the clients and workers that run them.

    Where its database is, first given wins:

    * ``pool=``: a :class:`psycopg_pool.ConnectionPool` serves the sync face
      (``send``, ``call``), an :class:`~psycopg_pool.AsyncConnectionPool` the
      asyncio face (``asend``, ``acall``);
    * ``conn=``: a :class:`psycopg.Connection` serves the sync face, an
      :class:`~psycopg.AsyncConnection` the asyncio face (a send inside its
      transaction is sent only if it commits);
    * ``dsn=``: a connection string, for each face that ``pool``/``conn``
      does not serve (the face opens a connection of its own on first use)
      and for the workers;
    * else ``$JOB_MACHINE_DSN``, read on first use (so a module may make its
      App at import time and a test point it elsewhere with :meth:`using`).

    The app makes one :class:`Client` and one :class:`AsyncClient` for the
    process, each on first use, and shares them between threads (sync) and
    asyncio tasks (async). Every reply is awaited through the process's one
    reply listener. Close them with :meth:`close` (sync face) or
    :meth:`aclose` (both), or use the app as a context manager; a closed
    app makes new clients when used again. The async client belongs to the
    event loop it was first used on: :meth:`aclose` it before that loop ends
    (job_machine.contrib.fastapi's lifespan does).

    :param listen_dsn: where the reply listener connects, when the
        statements go through a PgBouncer in transaction mode.
    :param connect_kwargs: extra ``psycopg.connect`` arguments for the
        connections the clients open.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: ConnectionPool[Any] | AsyncConnectionPool[Any] | None = None,
        conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any] | None = None,
        listen_dsn: str | None = None,
        connect_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._table = TaskTable()
        self._functions: dict[str, _TaskFunctionBase[Any, Any]] = {}
        self._listen_dsn = listen_dsn
        self._connect_kwargs = connect_kwargs
        self._client: Client | None = None
        self._aclient: AsyncClient | None = None
        self._dsn: str | None
        self._dsn, self._pool, self._conn = _where(dsn, pool, conn)

    # -- task functions -----------------------------------------------------------

    @overload
    def task(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncTaskFunction[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R], /) -> TaskFunction[P, R]: ...
    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        attempts: int | None = None,
        remove_after: float | timedelta | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> TaskDecorator: ...
    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        attempts: int | None = None,
        remove_after: float | timedelta | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> Any:
        """Make a function (``def`` or ``async def``) a task function of this app.

        Use as ``@app.task`` or ``@app.task(queue=..., ...)``.

        :param name: the name its tasks carry (default ``module.function``;
            the worker must find the function under the same name, so
            define task functions in an importable module, not a script).
        :param queue: where its tasks go (default: its name). Several
            functions may share a queue.
        :param priority, attempts, remove_after: defaults of every send
            (as for :meth:`Client.send`; :meth:`TaskFunction.configure`
            overrides them).
        :param timeout: seconds :meth:`~TaskFunction.call` waits (None: forever).
        :raises InvalidQueueName: the queue (or the default one) is not a
            valid queue name.
        :raises ValueError: another function of the app has that name.
        """
        options = {
            k: v
            for k, v in {
                "priority": priority,
                "attempts": attempts,
                "remove_after": remove_after,
            }.items()
            if v is not None
        }

        def register(f: Callable[..., Any]) -> Any:
            definition = TaskDef.of(f, name, queue)
            function: _TaskFunctionBase[Any, Any]
            if definition.is_async:
                function = AsyncTaskFunction(self, definition, options, definition.queue, timeout)
            else:
                function = TaskFunction(self, definition, options, definition.queue, timeout)
            with self._lock:
                self._table.add(definition)
                self._functions[definition.name] = function
            return function

        return register if fn is None else register(fn)

    @property
    def functions(self) -> dict[str, _TaskFunctionBase[Any, Any]]:
        """The task functions, by name."""
        return dict(self._functions)

    @property
    def queues(self) -> list[str]:
        """The queues the task functions send to."""
        return self._table.queues()

    @property
    def dsn(self) -> str | None:
        """The connection string given to the app (None: ``$JOB_MACHINE_DSN``
        at first use). Set it before the clients are made: clients already
        made keep theirs until :meth:`close`."""
        return self._dsn

    @dsn.setter
    def dsn(self, dsn: str | None) -> None:
        with self._lock:
            self._dsn = _where(dsn, None, None)[0]

    # -- clients -----------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The app's :class:`Client` (sync face), made on first use."""
        with self._lock:
            if self._client is None:
                from . import Client  # noqa: PLC0415  (the sync face is generated)

                self._client = Client(**self._client_args(sync=True))
            return self._client

    @property
    def async_client(self) -> AsyncClient:
        """The app's :class:`AsyncClient` (asyncio face), made on first use."""
        with self._lock:
            if self._aclient is None:
                self._aclient = AsyncClient(**self._client_args(sync=False))
            return self._aclient

    def _client_args(self, sync: bool) -> dict[str, Any]:
        args: dict[str, Any] = {
            "listen_dsn": self._listen_dsn,
            "connect_kwargs": self._connect_kwargs,
        }
        pool_kind = ConnectionPool if sync else AsyncConnectionPool
        conn_kind = psycopg.Connection if sync else psycopg.AsyncConnection
        if isinstance(self._pool, pool_kind):
            return args | {"pool": self._pool}
        if isinstance(self._conn, conn_kind):
            return args | {"conn": self._conn}
        return args | {"dsn": self._need_dsn("sync" if sync else "asyncio")}

    def _need_dsn(self, face: str) -> str:
        dsn = self._dsn or os.environ.get(ENV_DSN)
        if dsn:
            return dsn
        given = self._pool if self._pool is not None else self._conn
        if given is not None:
            raise JobMachineError(
                f"this App's {type(given).__name__} cannot serve its {face} face: "
                "give the App a dsn= as well, or a pool/connection of that kind"
            )
        raise JobMachineError(
            f"this App has no database: pass dsn= (or pool=, conn=) or set {ENV_DSN}"
        )

    # -- workers --------------------------------------------------------------------

    def worker(self, queues: str | Iterable[str] | None = None, **options: Any) -> TaskWorker:
        """A sync :class:`TaskWorker` serving the app's task functions; run
        its ``receive()``. Plain ``def`` functions only (an ``async def``
        one raises TypeError: use :meth:`async_worker`).

        :param queues: the queues (or patterns) to serve; default: every
            task function's queue.
        :param options: :class:`Worker` options (``concurrency``, ``retries``...),
            and ``dsn``/``pool``/``conn`` to override the app's (default:
            the app's ``dsn``, else its sync pool).
        """
        from . import TaskWorker  # noqa: PLC0415  (the sync face is generated)

        return TaskWorker(
            queue=_queue_list(queues), tasks=self._table, **self._worker_args(True, options)
        )

    def async_worker(
        self, queues: str | Iterable[str] | None = None, **options: Any
    ) -> AsyncTaskWorker:
        """An :class:`AsyncTaskWorker` serving the app's task functions; run
        ``await worker.receive()``. It awaits ``async def`` functions and runs
        plain ones in a thread each (``asyncio.to_thread``), so it serves a
        mix. Options as for :meth:`worker` (an async pool)."""
        return AsyncTaskWorker(
            queue=_queue_list(queues), tasks=self._table, **self._worker_args(False, options)
        )

    @property
    def needs_asyncio(self) -> bool:
        """Whether a task function is an ``async def`` (then only
        :meth:`async_worker` serves them all)."""
        return any(d.is_async for d in self._table)

    def _worker_args(self, sync: bool, options: dict[str, Any]) -> dict[str, Any]:
        if any(options.get(k) is not None for k in ("dsn", "pool", "conn")):
            return options
        pool_kind = ConnectionPool if sync else AsyncConnectionPool
        dsn = self._dsn or os.environ.get(ENV_DSN)
        if dsn:
            return options | {"dsn": dsn}
        if isinstance(self._pool, pool_kind):
            return options | {"pool": self._pool}
        raise JobMachineError(
            f"no database for the worker: give the App a dsn=, set {ENV_DSN}, "
            "or pass dsn= to the worker"
        )

    # -- life ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the sync client (the asyncio one needs :meth:`aclose`).
        A pool or connection given to the app stays open."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close both clients."""
        try:
            await self._aclose_async_face()
        finally:
            self.close()

    async def _aclose_async_face(self) -> None:
        """Close the asyncio client only (run_tasks, when its event loop ends)."""
        with self._lock:
            aclient, self._aclient = self._aclient, None
        if aclient is not None:
            await aclient.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @contextmanager
    def using(
        self,
        dsn: str | None = None,
        *,
        pool: ConnectionPool[Any] | None = None,
        conn: psycopg.Connection[Any] | None = None,
    ) -> Iterator[Self]:
        """Point the app at another database for the ``with`` block (a
        test's: ``with app.using(job_machine_dsn): ...``); the clients it made
        there are closed at the end, and the app is as it was before. Sync
        face only: for the asyncio face use ``async with app.ausing(...)``.
        """
        saved = self._swap(_where(dsn, pool, conn))
        try:
            yield self
        finally:
            self.close()
            leaked = self._restore(saved)
            if leaked is not None:
                raise JobMachineError(
                    "the asyncio face was used inside app.using(): use "
                    "`async with app.ausing(...)` so that its client can be closed"
                )

    @asynccontextmanager
    async def ausing(
        self,
        dsn: str | None = None,
        *,
        pool: ConnectionPool[Any] | AsyncConnectionPool[Any] | None = None,
        conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any] | None = None,
    ) -> AsyncIterator[Self]:
        """:meth:`using` for asyncio code: both faces, both closed at the end."""
        saved = self._swap(_where(dsn, pool, conn))
        try:
            yield self
        finally:
            await self.aclose()
            self._restore(saved)

    def _swap(self, where: tuple[Any, Any, Any]) -> tuple[Any, ...]:
        with self._lock:
            saved = (self._dsn, self._pool, self._conn, self._client, self._aclient)
            self._dsn, self._pool, self._conn = where
            self._client = self._aclient = None
        return saved

    def _restore(self, saved: tuple[Any, ...]) -> AsyncClient | None:
        with self._lock:
            leaked = self._aclient
            self._dsn, self._pool, self._conn, self._client, self._aclient = saved
        return leaked


def _where(dsn: Any, pool: Any, conn: Any) -> tuple[Any, Any, Any]:
    if dsn is not None and not isinstance(dsn, str):
        raise TypeError(f"dsn must be a connection string, not {type(dsn).__name__}")
    if pool is not None and not isinstance(pool, ConnectionPool | AsyncConnectionPool):
        raise TypeError(f"pool must be a psycopg_pool pool, not {type(pool).__name__}")
    if conn is not None and not isinstance(conn, psycopg.Connection | psycopg.AsyncConnection):
        raise TypeError(f"conn must be a psycopg connection, not {type(conn).__name__}")
    if pool is not None and conn is not None:
        raise ValueError("give an App a pool or a connection, not both")
    return dsn, pool, conn


def _queue_list(queues: str | Iterable[str] | None) -> list[str] | None:
    if queues is None:
        return None
    return [queues] if isinstance(queues, str) else list(queues)
