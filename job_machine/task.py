"""A task's states and what a worker is handed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any


class Status(IntEnum):
    """The life of a task; the numbers are Perl Job::Machine's.

    ``WAITING -> STARTED`` when a worker claims it; ``STARTED -> FINISHED``
    when the worker replies, stores a result or returns; ``STARTED -> WAITING``
    when ``process`` raised and attempts remain, or when housekeeping revives
    a task whose worker went silent; ``STARTED -> FAILED`` when the last
    attempt raised. See docs/state_machine.md.
    """

    WAITING = 0  #: entered, waiting for a worker (the only state Perl workers claim)
    STARTED = 100  #: a worker claimed it and is processing it
    FINISHED = 200  #: done: replied, stored a result, or returned
    FAILED = 900  #: given up after its last attempt raised


@dataclass(frozen=True, slots=True)
class Task:
    """A task as handed to :meth:`Worker.process`."""

    #: The task id (``task.task_id`` in the database).
    id: int
    #: The queue it was sent to.
    queue: str
    #: The data given to ``send``, decoded from JSON.
    data: Any
    #: Which attempt this is, 1 for the first.
    attempt: int
    #: When it was sent.
    created: datetime
    #: Raw JSON of the data, as stored.
    parameters: str = field(repr=False, default="")


#: The word for each status, as task_info() reports it.
STATE_NAMES = {
    Status.WAITING: "waiting",
    Status.STARTED: "running",
    Status.FINISHED: "done",
    Status.FAILED: "failed",
}


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """What a client can see of a task (:meth:`Client.task_info`)."""

    #: The task id.
    id: int
    #: Its queue (None only if its class row was removed by hand).
    queue: str | None
    #: Its status; see :attr:`state` for a word.
    status: Status
    #: How many times a worker has claimed it.
    attempts: int
    #: The data it was sent with.
    data: Any
    #: Every error stored for it, oldest first: job_machine stores
    #: ``{"type", "message", "traceback", "attempt"}``.
    errors: list[Any]
    #: The newest reply or result, None when there is none.
    reply: Any
    created: datetime
    modified: datetime
    #: When it is due again (a retry in backoff), if set.
    run_after: datetime | None
    #: When its current or last attempt started.
    started: datetime | None
    #: The worker holding it while it runs: ``(worker_id, host, pid)``.
    worker: tuple[int, str, int] | None
    #: The id of the job_machine worker that claimed it last (None if none did).
    worker_id: int | None = None

    @property
    def state(self) -> str:
        """``"waiting"``, ``"running"``, ``"done"`` or ``"failed"``."""
        return STATE_NAMES[self.status]

    @property
    def last_error(self) -> Any:
        """The newest error, None when there is none."""
        return self.errors[-1] if self.errors else None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """How many tasks of one queue are in each state (:meth:`Admin.stats`)."""

    queue: str
    waiting: int  #: due now
    delayed: int  #: waiting, but not due yet (a retry in backoff)
    running: int
    done: int
    failed: int


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """One line of :meth:`Admin.list_tasks`."""

    id: int
    queue: str | None
    status: Status
    attempts: int
    created: datetime
    modified: datetime
    run_after: datetime | None
    worker_id: int | None
    #: The first 200 characters of the task's JSON data.
    parameters: str

    @property
    def state(self) -> str:
        """``"waiting"``, ``"running"``, ``"done"`` or ``"failed"``."""
        return STATE_NAMES[self.status]


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A registered worker (:meth:`Admin.workers`)."""

    id: int
    host: str
    pid: int
    queues: list[str]
    started: datetime
    #: Its last heartbeat.
    seen: datetime
    #: Whether PostgreSQL still holds its liveness lock (its session is open).
    alive: bool
    #: The ids of the tasks it is running.
    running: list[int]
