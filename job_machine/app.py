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

    @app.task(cron="0 3 * * *", cron_timezone="Europe/Oslo")
    def nightly() -> None: ...              # sent at 03:00 Oslo time (docs/schedules.md)

    app.worker().receive()                  # a worker serving every task function
    # or: job-machine worker --app myapp.tasks:app

See docs/tasks.md. On the wire a task function's task is plain JSON,
``{"task": "myapp.tasks.add", "args": [1, 2], "kwargs": {}}`` (see
job_machine/_taskdef.py), so a Perl client may send it and a Perl worker
answer it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, Self, TypeVar, overload

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from . import _cron
from ._async.client import AsyncClient
from ._async.taskworker import AsyncTaskWorker
from ._taskdef import TaskDef, TaskTable
from .errors import JobMachineError
from .taskfunction import (
    DEFAULT_TIMEOUT,
    AsyncGeneratorTaskFunction,
    AsyncTaskFunction,
    GeneratorTaskFunction,
    TaskDecorator,
    TaskFunction,
    TaskFunctionBase,
)

if TYPE_CHECKING:
    from . import Client, TaskWorker

P = ParamSpec("P")
R = TypeVar("R")

#: Where an App without ``dsn``, ``pool`` or ``conn`` finds its database.
ENV_DSN = "JOB_MACHINE_DSN"


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
        self._functions: dict[str, TaskFunctionBase[Any, Any]] = {}
        self._schedules: dict[str, _cron.ScheduleSpec] = {}
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
    def task(  # type: ignore[overload-overlap]
        self, fn: Callable[P, AsyncIterator[Any]], /
    ) -> AsyncGeneratorTaskFunction[P]: ...
    @overload
    def task(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Generator[Any, Any, R]], /
    ) -> GeneratorTaskFunction[P, R]: ...
    @overload
    def task(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Iterator[Any]], /
    ) -> GeneratorTaskFunction[P, Any]: ...
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
        cron: str | None = None,
        cron_timezone: str = "UTC",
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
        cron: str | None = None,
        cron_timezone: str = "UTC",
    ) -> Any:
        """Make a function (``def`` or ``async def``) a task function of this app.
        A generator function streams what it yields as parts (docs/tasks.md,
        Streaming).

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
        :param cron: also call it, without arguments, at every tick of this
            cron expression (``"*/5 * * * *"``, ``"@daily"``), read in
            ``cron_timezone`` (an IANA zone, default UTC): a schedule named
            after the function, with its queue and defaults, which the
            app's workers register when they start (:meth:`register_schedules`
            does it by hand). See docs/schedules.md.
        :raises InvalidQueueName: the queue (or the default one) is not a
            valid queue name.
        :raises ValueError: another function of the app has that name; a
            bad cron expression or zone.
        :raises TypeError: a ``cron`` function that needs arguments.
        """
        if cron is not None:
            cron = _cron.check(cron, cron_timezone)
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
            function: TaskFunctionBase[Any, Any]
            if definition.streams and definition.is_async:
                function = AsyncGeneratorTaskFunction(
                    self, definition, options, definition.queue, timeout
                )
            elif definition.streams:
                function = GeneratorTaskFunction(
                    self, definition, options, definition.queue, timeout
                )
            elif definition.is_async:
                function = AsyncTaskFunction(self, definition, options, definition.queue, timeout)
            else:
                function = TaskFunction(self, definition, options, definition.queue, timeout)
            spec = None
            if cron is not None:
                try:
                    data = definition.payload((), {})
                except TypeError as ex:
                    raise TypeError(
                        f"{ex}: a function with cron= is called without arguments"
                    ) from None
                spec = _cron.ScheduleSpec(
                    definition.name, cron, definition.queue, data, cron_timezone, options
                )
            with self._lock:
                self._table.add(definition)
                self._functions[definition.name] = function
                if spec is not None:
                    self._schedules[spec.name] = spec
            return function

        return register if fn is None else register(fn)

    @property
    def functions(self) -> dict[str, TaskFunctionBase[Any, Any]]:
        """The task functions, by name."""
        return dict(self._functions)

    @property
    def schedules(self) -> list[_cron.ScheduleSpec]:
        """The cron schedules of the task functions (``@app.task(cron=...)``)."""
        with self._lock:
            return list(self._schedules.values())

    def register_schedules(self, **where: Any) -> list[str]:
        """Make or update the schedules of the task functions in the database
        (:meth:`Admin.schedule` each: idempotent; a schedule paused by an
        operator stays paused). The app's workers do it when they start;
        call this where they may not (a worker logged in as the
        ``jobmachine_worker`` role, which may not define schedules: run it
        at deploy as the admin role). A schedule whose ``cron=`` was taken
        out of the code stays until :meth:`Admin.unschedule`.

        :param where: ``dsn=``, ``pool=`` or ``conn=`` for the :class:`Admin`
            (default: the app's ``dsn``, else its sync pool).
        :returns: the names of the schedules.
        """
        from . import Admin  # noqa: PLC0415  (the sync face is generated)

        specs = self.schedules
        with Admin(**self._worker_args(True, where)) as admin:
            for spec in specs:
                admin.schedule(
                    spec.name,
                    spec.cron,
                    spec.queue,
                    spec.data,
                    timezone=spec.timezone,
                    **spec.options,
                )
        return [spec.name for spec in specs]

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
            queue=_queue_list(queues),
            tasks=self._table,
            schedules=self.schedules,
            **self._worker_args(True, options),
        )

    def async_worker(
        self, queues: str | Iterable[str] | None = None, **options: Any
    ) -> AsyncTaskWorker:
        """An :class:`AsyncTaskWorker` serving the app's task functions; run
        ``await worker.receive()``. It awaits ``async def`` functions and runs
        plain ones in a thread each (``asyncio.to_thread``), so it serves a
        mix. Options as for :meth:`worker` (an async pool)."""
        return AsyncTaskWorker(
            queue=_queue_list(queues),
            tasks=self._table,
            schedules=self.schedules,
            **self._worker_args(False, options),
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
