"""The exceptions job_machine raises; all derive from JobMachineError."""

from __future__ import annotations

from typing import Any

from ._validate import is_number


class JobMachineError(Exception):
    """Unexpected job_machine error."""

    __module__ = "job_machine"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class InvalidQueueName(JobMachineError, ValueError):
    """The queue name is not valid."""

    __module__ = "job_machine"


class InvalidData(JobMachineError, TypeError):
    """The data cannot be encoded as JSON."""

    __module__ = "job_machine"


class UnknownTask(JobMachineError, LookupError):
    """There is no task with that id."""

    __module__ = "job_machine"


class NoCurrentTask(JobMachineError):
    """No task id was given and this object has no current task."""

    __module__ = "job_machine"


class TaskNotHeld(JobMachineError):
    """The task is no longer held by this worker (it was revived and may be running elsewhere)."""

    __module__ = "job_machine"


class Retry(JobMachineError):
    """Raise it from ``process()`` to try the task again later: the attempt counts,
    and the task waits ``after`` seconds (the worker's backoff when None)."""

    __module__ = "job_machine"

    def __init__(self, after: float | None = None, reason: str = "retry requested") -> None:
        if after is not None and (not is_number(after) or not after >= 0):
            raise ValueError(f"Retry(after=...) must be a number of seconds >= 0, not {after!r}")
        self.after = after
        super().__init__(reason)


class TaskFailed(JobMachineError):
    """The task failed: every attempt raised an error."""

    __module__ = "job_machine"

    def __init__(self, task_id: int, error: object) -> None:
        self.task_id = task_id
        #: The newest error result: ``{"type", "message", "traceback"}`` for
        #: errors stored by job_machine, whatever was stored otherwise.
        self.error = error
        detail: object
        if error is None:
            detail = "no attempts left after its worker stopped answering (no error was stored)"
        else:
            detail = error.get("message") if isinstance(error, dict) else error
        super().__init__(f"task {task_id} failed: {detail}")


class TaskCancelled(TaskFailed):
    """The task was cancelled (:meth:`Admin.cancel`, :meth:`Client.cancel`):
    it ended failed with an error of type ``Cancelled``, without retries."""

    __module__ = "job_machine"


class TaskExpired(TaskFailed):
    """The task was not started before it expired (``send(expire_after=...)``
    or ``expires_at=``): it never ran, and ended failed with an error of
    type ``TaskExpired``."""

    __module__ = "job_machine"


def task_failed(task_id: int, error: object) -> TaskFailed:
    """The exception for a failed task: :class:`TaskCancelled` or
    :class:`TaskExpired` when its newest error says so, else :class:`TaskFailed`."""
    kind = error.get("type") if isinstance(error, dict) else None
    if kind == "Cancelled":
        return TaskCancelled(task_id, error)
    if kind == "TaskExpired":
        return TaskExpired(task_id, error)
    return TaskFailed(task_id, error)


class TimeLimitExceeded(JobMachineError):
    """The attempt ran longer than its time limit (``send(time_limit=...)`` or
    the worker's ``time_limit``). The worker stops it (the async worker
    cancels its coroutine; in a thread, ``task.check_cancelled()`` raises
    it) and stores it as the attempt's error: retried or failed like any."""

    __module__ = "job_machine"


class WorkerStopped(JobMachineError):
    """The worker was stopped (:meth:`Worker.stop`, ``Admin.stop_workers``,
    a signal) and the attempt did not finish within its ``shutdown_grace``:
    the worker stops it (the async worker cancels its coroutine; in a
    thread, ``task.check_cancelled()`` raises it) and hands the task back,
    waiting again with this error (failed when it has used its attempts).
    What the attempt writes afterwards is refused."""

    __module__ = "job_machine"


class Cancelled(JobMachineError):
    """The task was cancelled while it ran (:meth:`Admin.cancel`): the
    worker stops the attempt (the async worker cancels its coroutine; in a
    thread, ``task.check_cancelled()`` raises it). The task has already
    failed, and is not retried."""

    __module__ = "job_machine"


class TaskRejected(JobMachineError):
    """A task function's worker cannot run the task: its data names no task
    function the worker knows, or its arguments do not fit the function. The
    task fails at once, without retries (trying again cannot help)."""

    __module__ = "job_machine"


class WaitTimeout(JobMachineError, TimeoutError):
    """No reply arrived in time."""

    __module__ = "job_machine"


class ConnectionFailed(JobMachineError):
    """Could not connect to PostgreSQL."""

    __module__ = "job_machine"


class ConnectionLost(ConnectionFailed):
    """The connection to PostgreSQL was lost during the call; the call may or may not
    have taken effect. A client or worker opened with a DSN reconnects on its next
    call."""

    __module__ = "job_machine"


class ServerReadOnly(ConnectionLost):
    """The server refused a write (SQLSTATE 25006): it is a standby, or a
    primary that was demoted or made read-only. A client or worker opened with
    a DSN drops that connection and reconnects on its next call: give a
    multi-host DSN with ``target_session_attrs=read-write`` so that it finds
    the new primary (docs/ha.md)."""

    __module__ = "job_machine"


class StatementFailed(JobMachineError):
    """A statement failed for a reason that may pass by itself: nothing it did
    was committed and the connection is still usable, so the same call can be
    tried again (a worker does, with backoff, keeping the tasks it holds)."""

    __module__ = "job_machine"


class StatementTimeout(StatementFailed):
    """The statement was canceled: ``statement_timeout``, ``lock_timeout`` or
    ``pg_cancel_backend()``; nothing it did was committed."""

    __module__ = "job_machine"


class TransactionConflict(StatementFailed):
    """The transaction was rolled back by a deadlock or a serialization
    failure; nothing it did was committed."""

    __module__ = "job_machine"


class PoolExhausted(StatementFailed):
    """No connection of the pool became free in time (psycopg_pool's
    ``PoolTimeout``); the statement did not run."""

    __module__ = "job_machine"


class DatabaseError(JobMachineError):
    """PostgreSQL refused a statement, or psycopg failed, for a reason
    job_machine has no error of its own for: a privilege the role lacks
    (SQLSTATE 42501), a check, trigger or rule of your own on its tables, a
    value out of range. :attr:`sqlstate` names it (None when psycopg raised
    it itself), :attr:`message_primary` is the server's message, and
    ``__cause__`` is psycopg's exception. Nothing the statement did was
    committed; the same call will most likely fail the same way."""

    __module__ = "job_machine"

    def __init__(
        self,
        message: str | None = None,
        sqlstate: str | None = None,
        message_primary: str | None = None,
    ) -> None:
        #: The five-character SQLSTATE code (``"42501"``), None for an
        #: error psycopg raised without the server.
        self.sqlstate = sqlstate
        #: The server's primary message (without DETAIL, HINT or CONTEXT).
        self.message_primary = message_primary
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.sqlstate, self.message_primary))


class DatabaseUnavailable(DatabaseError):
    """The database could not run the statement for a reason of its own, not
    the statement's: out of disk or memory, an I/O error, shutting down, an
    object in use (psycopg's ``OperationalError`` on a connection that still
    works, SQLSTATE classes 53, 55, 57, 58 among others). It may pass by
    itself: a worker that meets it reconnects with backoff and carries on,
    as after a lost connection."""

    __module__ = "job_machine"


class SchemaMissing(JobMachineError):
    """Schema `jobmachine` is not installed: run `job-machine install`,
    `psql -f sql/create_tables.sql` or job_machine.install_schema()."""

    __module__ = "job_machine"
