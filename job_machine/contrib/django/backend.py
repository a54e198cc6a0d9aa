"""JobMachineBackend: Django's tasks framework on job_machine (docs/django.md).

Enqueueing is one job_machine ``send`` on Django's own database connection,
so it is part of the caller's transaction: a task enqueued inside
``transaction.atomic()`` exists, and its notification reaches a worker, only
if that transaction commits. Results are read from the task's row, from any
process. The data of a task is plain JSON::

    {"task": "myapp.tasks.send_welcome", "args": [42], "kwargs": {"lang": "en"}}

``task`` is the module path of the task function (``Task.module_path``),
which the worker imports; ``args`` and ``kwargs`` are the arguments as
Django normalises them for JSON (tuples become lists).
"""

from __future__ import annotations

import builtins
import dataclasses
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import psycopg
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.utils import timezone
from django.utils.module_loading import import_string
from psycopg.conninfo import make_conninfo
from psycopg.pq import Conninfo, TransactionStatus

from job_machine import (
    Client,
    InvalidQueueName,
    Status,
    TaskInfo,
    UnknownTask,
    validate_queue,
)

from ..._validate import is_int
from ._compat import (
    FAILED,
    READY,
    RUNNING,
    SUCCESSFUL,
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_enqueued,
)

P = ParamSpec("P")
T = TypeVar("T")

#: The OPTIONS a JobMachineBackend takes, and their defaults.
DEFAULT_OPTIONS: dict[str, Any] = {
    # The Django database alias whose connection enqueues and reads results.
    "DATABASE": "default",
    # Prepended to a Django queue name to make the job_machine queue name.
    "QUEUE_PREFIX": "django.",
    # How many times a task may run in all (None: the worker's retries + 1).
    "ATTEMPTS": None,
    # The connection string of the worker (None: built from DATABASE's settings).
    "DSN": None,
}

#: How job_machine's states show as Django's.
STATUSES: dict[Status, TaskResultStatus] = {
    Status.WAITING: READY,
    Status.BLOCKED: READY,
    Status.STARTED: RUNNING,
    Status.FINISHED: SUCCESSFUL,
    Status.FAILED: FAILED,
}


class WorkerError(Exception):
    """The class of an error that job_machine stored without a Python exception
    behind it: the worker died or was stopped during the attempt
    (``WorkerDied``, ``WorkerStopped``), the attempt ran past ``max_runtime``
    (``MaxRuntimeExceeded``), or a worker in another language stored it.
    ``TaskError.exception_class_path`` names this class for such errors; its
    ``traceback`` holds job_machine's type and message."""

    __module__ = "job_machine.contrib.django"


WORKER_ERROR_PATH = f"{WorkerError.__module__}.{WorkerError.__qualname__}"


class JobMachineBackend(BaseTaskBackend):  # type: ignore[misc, unused-ignore]  # Any without django-tasks
    """A Django tasks backend (the ``TASKS`` setting) that stores tasks in
    job_machine's tables and runs them with ``manage.py job_machine_worker``.

    ``OPTIONS`` (all optional): ``DATABASE``, the alias of the Django database
    to enqueue on (``"default"``); ``QUEUE_PREFIX``, what the job_machine queue
    name of a Django queue starts with (``"django."``: queue ``"emails"`` is
    ``django.emails``); ``ATTEMPTS``, how many times a task may run in all
    (default: the worker's retries + 1, 4 unless changed); ``DSN``, the
    worker's connection string (default: built from the database's settings).
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        given = dict(params.get("OPTIONS") or {})
        unknown = sorted(set(given) - set(DEFAULT_OPTIONS))
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS']: unknown option(s) {', '.join(unknown)} "
                f"(JobMachineBackend takes {', '.join(DEFAULT_OPTIONS)})"
            )
        options = DEFAULT_OPTIONS | given
        self.database: str = _text(alias, "DATABASE", options["DATABASE"])
        self.queue_prefix: str = _text(alias, "QUEUE_PREFIX", options["QUEUE_PREFIX"], empty=True)
        attempts = options["ATTEMPTS"]
        if attempts is not None and (not is_int(attempts) or attempts < 1):
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS']['ATTEMPTS'] must be a whole number >= 1 or None, "
                f"not {attempts!r}"
            )
        self.attempts: int | None = attempts
        dsn = options["DSN"]
        self.dsn: str | None = None if dsn is None else _text(alias, "DSN", dsn)

    # -- queues -------------------------------------------------------------

    def queue_for(self, queue_name: str) -> str:
        """The job_machine queue of a Django queue name."""
        return self.queue_prefix + queue_name

    def django_queue(self, queue: str | None) -> str | None:
        """The Django queue name of a job_machine queue, None if it is not
        below this backend's prefix. (Not checked against ``QUEUES``: the
        result of a task is read even after its queue left the setting.)"""
        if queue is None or not queue.startswith(self.queue_prefix):
            return None
        return queue[len(self.queue_prefix) :] or None

    def worker_queues(self, queue_names: Iterable[str] | None = None) -> list[str]:
        """What a worker serves: the given Django queues, else the backend's
        ``QUEUES``, else every queue below the prefix (``django.**``).

        :raises ImproperlyConfigured: nothing to serve (no QUEUES, and a
            prefix that is not a branch of the queue hierarchy).
        """
        names = list(queue_names) if queue_names is not None else sorted(self.queues)
        if names:
            return [validate_queue(self.queue_for(name)) for name in names]
        if self.queue_prefix.endswith("."):
            return [self.queue_prefix + "**"]
        raise ImproperlyConfigured(
            f"TASKS[{self.alias!r}]: name the queues to serve (QUEUES, or --queue) when "
            "QUEUE_PREFIX is not a dotted branch such as 'django.'"
        )

    # -- the Django API -------------------------------------------------------

    def validate_task(self, task: Task[Any, Any]) -> None:
        """Django's checks, and that the queue name makes a job_machine queue name."""
        super().validate_task(task)
        try:
            validate_queue(self.queue_for(task.queue_name))
        except InvalidQueueName as ex:
            raise InvalidTask(f"queue {task.queue_name!r}: {ex}") from None

    def enqueue(
        self,
        task: Task[P, T],
        args: P.args,  # type: ignore[valid-type]
        kwargs: P.kwargs,  # type: ignore[valid-type]
    ) -> TaskResult[T]:
        """Send the task on Django's connection (inside the caller's
        transaction, if any) and return its result, READY.

        :raises InvalidTask: the task is not valid for this backend.
        :raises TypeError, ValueError: an argument cannot be encoded as JSON.
        """
        self.validate_task(task)
        # The result normalises the arguments for JSON (and refuses what cannot be).
        result: TaskResult[T] = TaskResult(
            task=task,
            id="",
            status=READY,
            enqueued_at=None,
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        data = {"task": task.module_path, "args": result.args, "kwargs": result.kwargs}
        with self._client() as client:
            task_id = client.send(
                data,
                self.queue_for(task.queue_name),
                priority=task.priority,
                run_after=_aware(task.run_after),
                attempts=self.attempts,
            )
        object.__setattr__(result, "id", str(task_id))
        object.__setattr__(result, "enqueued_at", timezone.now())
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult[Any]:
        """The task's result as it stands now, read from its row.

        :raises TaskResultDoesNotExist: no such task (never sent, removed
            after its retention, or not a Django task of this backend).
        """
        task_id = _task_id(result_id)
        if task_id is None:
            raise TaskResultDoesNotExist(result_id)
        with self._client() as client:
            try:
                info = client.task_info(task_id)
            except UnknownTask:
                raise TaskResultDoesNotExist(result_id) from None
        return self.task_result(info)

    def check(self, **kwargs: Any) -> Iterable[checks.CheckMessage]:
        """System checks: the database must be PostgreSQL through psycopg 3."""
        yield from super().check(**kwargs)
        where = f"TASKS[{self.alias!r}]"
        if self.database not in connections.settings:
            yield checks.Error(
                f"{where}: OPTIONS['DATABASE'] names {self.database!r}, which is not in DATABASES",
                id="job_machine.E001",
            )
            return
        wrapper = connections[self.database]
        if wrapper.vendor != "postgresql":
            yield checks.Error(
                f"{where}: database {self.database!r} is {wrapper.vendor}, not PostgreSQL",
                id="job_machine.E002",
            )
        elif not _is_psycopg3():
            yield checks.Error(
                f"{where}: database {self.database!r} uses psycopg2; job_machine needs psycopg 3",
                hint="pip install 'psycopg[binary]' (Django prefers it when both are installed)",
                id="job_machine.E003",
            )

    # -- for the worker -------------------------------------------------------

    def worker_dsn(self) -> str:
        """The connection string a worker opens: OPTIONS['DSN'], else the
        libpq parameters of the Django database (name, user, password, host,
        port, and OPTIONS such as sslmode)."""
        if self.dsn:
            return self.dsn
        params = connections[self.database].get_connection_params()
        known = {d.keyword.decode() for d in Conninfo.get_defaults()}
        libpq = {
            k: v
            for k, v in params.items()
            if k in known and v is not None and isinstance(v, str | int) and k != "client_encoding"
        }
        return make_conninfo("", **libpq)

    def task_result(self, info: TaskInfo) -> TaskResult[Any]:
        """A job_machine task as Django sees it.

        :raises TaskResultDoesNotExist: it is not a Django task of this backend.
        """
        call = parse_data(info.data)
        queue_name = self.django_queue(info.queue)
        if call is None or queue_name is None:
            raise TaskResultDoesNotExist(
                f"task {info.id} is not a Django task of backend {self.alias!r}"
            )
        path, args, kwargs = call
        task: Task[Any, Any] = with_options(
            resolve_task(path),
            priority=info.priority,
            queue_name=queue_name,
            run_after=info.run_after,
            backend=self.alias,
        )
        status = STATUSES[info.status]
        finished = status in (SUCCESSFUL, FAILED)
        result: TaskResult[Any] = TaskResult(
            task=task,
            id=str(info.id),
            status=status,
            enqueued_at=info.created,
            started_at=info.started,
            finished_at=info.modified if finished else None,
            last_attempted_at=info.started,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[task_error(e) for e in info.errors],
            worker_ids=worker_ids(info.worker_id, info.attempts),
        )
        if status == SUCCESSFUL:
            object.__setattr__(result, "_return_value", info.reply)
        return result

    # -- the connection -------------------------------------------------------

    @contextmanager
    def _client(self) -> Iterator[Client]:
        """A job_machine Client on Django's connection of this thread, opened
        if it is not yet, and joined to the transaction Django has open."""
        wrapper = connections[self.database]
        # As the ORM does: refuse to run in an atomic block that saw an error.
        wrapper.validate_no_broken_transaction()
        wrapper.ensure_connection()
        raw = wrapper.connection
        if not isinstance(raw, psycopg.Connection):
            raise ImproperlyConfigured(
                f"TASKS[{self.alias!r}] enqueues on Django's connection to database "
                f"{self.database!r}, which must be PostgreSQL through psycopg 3 "
                f"(it is {type(raw).__module__}.{type(raw).__qualname__})"
            )
        if not raw.autocommit and raw.info.transaction_status == TransactionStatus.IDLE:
            # In atomic() (or with AUTOCOMMIT off) Django leaves BEGIN to the
            # first statement, and psycopg's transaction(), which the Client
            # runs its statement in, would commit a transaction of its own on
            # a connection idle like this one. Begin Django's transaction
            # first: the statement then joins it, as a savepoint.
            raw.execute("SELECT 1")
        client = Client(conn=raw)
        try:
            yield client
        finally:
            client.close()


def parse_data(data: Any) -> tuple[str, list[Any], dict[str, Any]] | None:
    """``(path, args, kwargs)`` of a Django task's data, None if it is not one."""
    if not isinstance(data, dict):
        return None
    path, args, kwargs = data.get("task"), data.get("args", []), data.get("kwargs", {})
    if not isinstance(path, str) or not isinstance(args, list) or not isinstance(kwargs, dict):
        return None
    return path, args, kwargs


def resolve_task(path: str) -> Task[Any, Any]:
    """The Task object at ``path`` (the module attribute that ``@task`` made).

    :raises ImportError: there is nothing at ``path``.
    :raises TypeError: what is there is not a Django task.
    """
    found = import_string(path)
    if not isinstance(found, Task):
        raise TypeError(f"{path!r} is not a Django task (decorate the function with @task)")
    return found


def with_options(task: Task[P, T], **changes: Any) -> Task[P, T]:
    """A copy of ``task`` with other options, not validated again: a result
    is read whatever the reader's backend would accept now. (Not
    ``copy.copy``: Django 6.1 copies a Task by importing it again.)"""
    clone = object.__new__(type(task))
    for field in dataclasses.fields(task):
        value = changes.pop(field.name, getattr(task, field.name))
        object.__setattr__(clone, field.name, value)
    if changes:
        raise TypeError(f"Task has no option(s) {', '.join(sorted(changes))}")
    return clone


def worker_ids(worker_id: int | None, attempts: int) -> list[str]:
    """Django counts attempts as ``len(worker_ids)``; job_machine keeps the
    worker of the latest attempt only, so it stands for each of them."""
    return [str(worker_id) if worker_id is not None else ""] * attempts


def task_error(error: Any) -> TaskError:
    """One of job_machine's stored errors as a Django TaskError."""
    if isinstance(error, dict):
        kind, message, trace = error.get("type"), error.get("message"), error.get("traceback")
        if isinstance(kind, str) and isinstance(trace, str) and trace:
            text = message if isinstance(message, str) else None
            path = exception_path(kind, trace, text)
            return TaskError(exception_class_path=path, traceback=trace)
        text = f"{kind}: {message}" if kind else str(message)
        return TaskError(exception_class_path=WORKER_ERROR_PATH, traceback=text)
    return TaskError(exception_class_path=WORKER_ERROR_PATH, traceback=str(error))


def exception_path(qualname: str, trace: str, message: str | None = None) -> str:
    """The import path of the exception class named ``qualname``, found in
    its traceback: Python prints the module before the class name on the
    exception's line (``pkg.mod.Boom: message``), except for builtins and
    __main__ (whose line has the bare name: a name with no module line
    is one of those). Given the exception's ``message`` (``str(ex)``), only
    a line that ends with it counts."""
    name = rf"((?:[\w.]+\.)?{re.escape(qualname)})"
    if message is None:
        rest = "(?::.*)?"
    else:
        rest = re.escape(": " + message.split("\n")[0]) if message else ""
    # "  | " starts the lines of an exception group
    line = re.compile(rf"(?: *\| )?{name}{rest}")
    for text in reversed(trace.splitlines()):
        found = line.fullmatch(text)
        if found and found.group(1) != qualname:
            return found.group(1)
    if "." not in qualname and isinstance(getattr(builtins, qualname, None), type):
        return f"builtins.{qualname}"
    return f"__main__.{qualname}"


def _task_id(result_id: object) -> int | None:
    if isinstance(result_id, str) and result_id.isascii() and result_id.isdigit():
        return int(result_id)
    return None


def _aware(when: datetime | None) -> datetime | None:
    """Django accepts a naive run_after when USE_TZ is off: it is in the current time zone."""
    if when is not None and timezone.is_naive(when):
        aware: datetime = timezone.make_aware(when)
        return aware
    return when


def _text(alias: str, name: str, value: object, empty: bool = False) -> str:
    if not isinstance(value, str) or not (value or empty):
        raise ImproperlyConfigured(
            f"TASKS[{alias!r}]['OPTIONS'][{name!r}] must be a "
            f"{'' if empty else 'non-empty '}string, not {value!r}"
        )
    return value


def _is_psycopg3() -> bool:
    from django.db.backends.postgresql.psycopg_any import is_psycopg3  # noqa: PLC0415

    return bool(is_psycopg3)
