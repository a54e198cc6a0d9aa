"""A task's states and what a worker is handed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any

from .errors import task_failed


class Status(IntEnum):
    """The life of a task; the numbers are Perl Job::Machine's.

    ``BLOCKED -> WAITING`` when its last parent is done (``-> FAILED`` when
    a parent fails); ``WAITING -> STARTED`` when a worker claims it; ``STARTED -> FINISHED``
    when the worker replies, stores a result or returns; ``STARTED -> WAITING``
    when ``process`` raised and attempts remain, or when housekeeping revives
    a task whose worker went silent; ``STARTED -> FAILED`` when the last
    attempt raised. See docs/state_machine.md.
    """

    WAITING = 0  #: entered, waiting for a worker (the only state Perl workers claim)
    BLOCKED = 10  #: waiting for its parent tasks to be done (job_machine only)
    STARTED = 100  #: a worker claimed it and is processing it
    FINISHED = 200  #: done: replied, stored a result, or returned
    FAILED = 900  #: given up after its last attempt raised


class StopFlag:
    """Whether the attempt running a task must stop, and why: raised once,
    from any thread (the worker's time-limit timer, a cancel heard from the
    database), by the first of :meth:`stop` and :meth:`settle`."""

    __slots__ = ("_callbacks", "_lock", "_settled", "reason")

    def __init__(self) -> None:
        #: Why the attempt must stop (TimeLimitExceeded, Cancelled), or None.
        self.reason: Exception | None = None
        self._settled = False
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def stop(self, reason: Exception) -> bool:
        """Ask the attempt to stop; False when it was stopped or had ended
        already (then nothing happens)."""
        with self._lock:
            if self._settled or self.reason is not None:
                return False
            self.reason = reason
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback()
        return True

    def settle(self) -> bool:
        """The attempt ended by itself: a later :meth:`stop` does nothing.
        False when it had been stopped first."""
        with self._lock:
            self._settled = True
            return self.reason is None

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the thread that stops it) when stopped; at
        once if it is already."""
        with self._lock:
            stopped = self.reason is not None
            if not stopped:
                self._callbacks.append(callback)
        if stopped:
            callback()


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
    #: Its priority (higher runs first).
    priority: int = 0
    #: How many attempts it may have in all (None: the worker's ``retries + 1``).
    max_attempts: int | None = None
    #: Job::Machine's title and grouping columns, as given to ``send``.
    title: str | None = None
    grouping: str | None = None
    #: The sender's trace context (W3C traceparent, tracestate), when it traced.
    trace_context: str | None = field(repr=False, default=None)
    #: When it became due: the latest of its sending, its ``run_after`` and
    #: its retry time (None when not read from a claim).
    due: datetime | None = field(repr=False, default=None)
    #: Seconds this attempt may run, as sent (None: the worker's
    #: ``time_limit``, if any).
    time_limit: float | None = None
    #: Set by the worker when this attempt must stop (see :attr:`cancelled`).
    stop: StopFlag = field(repr=False, compare=False, default_factory=StopFlag)

    @property
    def cancelled(self) -> Exception | None:
        """Why this attempt must stop, or None while it may go on: a
        :class:`~job_machine.TimeLimitExceeded` past its time limit, a
        :class:`~job_machine.Cancelled` when it was cancelled. The async
        worker cancels the coroutine itself; code running in a thread (the
        sync worker) cannot be interrupted and should look at this (or call
        :meth:`check_cancelled`) between steps of long work."""
        return self.stop.reason

    def check_cancelled(self) -> None:
        """Raise :attr:`cancelled` if this attempt must stop, else return.
        Either way the attempt is already ended in the database: what it
        writes from now on is refused."""
        reason = self.stop.reason
        if reason is not None:
            raise reason


@dataclass(frozen=True, slots=True)
class Answered:
    """A task's answer, as :meth:`Client.as_completed` yields it."""

    #: The task.
    task_id: int
    #: Its newest reply or result, decoded (None when it finished without one
    #: or failed).
    reply: Any
    #: Its last error, decoded, when it failed (None otherwise).
    error: Any = None
    #: Whether it failed (its last attempt raised, it was cancelled, or a
    #: parent failed).
    failed: bool = False

    def value(self) -> Any:
        """The reply, or raise :class:`~job_machine.TaskFailed` for a failed task."""
        if self.failed:
            raise task_failed(self.task_id, self.error)
        return self.reply


@dataclass(frozen=True, slots=True)
class Part:
    """One streamed partial reply of a task, as :meth:`Client.parts` yields it."""

    #: The task.
    task_id: int
    #: The attempt that sent it. Parts are read for the task's current
    #: attempt: when a failed attempt is retried, the next part read is the
    #: new attempt's first (``seq`` 0, a higher ``attempt``), so a reader
    #: that shows parts as they come can tell that the work started again.
    attempt: int
    #: Its place among its attempt's parts: 0, 1, 2...
    seq: int
    #: What the worker sent, decoded from JSON.
    data: Any
    #: When it was stored.
    created: datetime


#: The kinds of end: a stored answer that notifies as such, a stored answer
#: of result(), done without an answer, a failed attempt.
REPLY, RESULT, DONE, ERROR = "reply", "result", "done", "error"


@dataclass(frozen=True, slots=True)
class TaskEnd:
    """How one attempt of a task ended, waiting to be written."""

    task_id: int
    attempt: int
    kind: str
    #: JSON of the reply, result or error (None for DONE).
    data: str | None = None
    #: For ERROR: seconds before the retry.
    delay: float = 0.0
    #: For ERROR: what was raised, for the log.
    raised: str = ""
    #: The task's queue, for the log.
    queue: str = ""


#: The word for each status, as task_info() reports it.
STATE_NAMES = {
    Status.WAITING: "waiting",
    Status.BLOCKED: "blocked",
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
    priority: int = 0
    #: Its own limit of attempts (None: the worker's).
    max_attempts: int | None = None
    title: str | None = None
    grouping: str | None = None
    unique_key: str | None = None
    #: Metadata attached with ``note()``.
    notes: dict[str, Any] = field(default_factory=dict)
    #: The tasks it waits (or waited) for, and the tasks that name it as a
    #: parent, whatever their state.
    parents: list[int] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    #: Every reply or result stored, oldest first (:attr:`reply` is the last).
    results: list[Any] = field(default_factory=list)
    #: When it is removed: its own time, or seconds kept once finished.
    remove_after: datetime | None = None
    keep_for: float | None = None
    #: Its deadlines (docs/deadlines.md): seconds an attempt may run (None:
    #: the worker's), when it expires unless started, and when it was
    #: cancelled.
    time_limit: float | None = None
    expires_at: datetime | None = None
    cancelled_at: datetime | None = None

    @property
    def state(self) -> str:
        """``"waiting"``, ``"blocked"``, ``"running"``, ``"done"`` or ``"failed"``."""
        return STATE_NAMES[self.status]

    @property
    def last_error(self) -> Any:
        """The newest error, None when there is none."""
        return self.errors[-1] if self.errors else None

    @classmethod
    def from_row(
        cls,
        row: dict[str, Any],
        *,
        data: Any,
        notes: dict[str, Any],
        errors: list[Any],
        results: list[Any],
        children: list[int],
    ) -> TaskInfo:
        """A TaskInfo from a row of the task statements (``task_info``, the
        dashboard's ``admin_task_page``), given the values its reader
        decoded (whole, or cut to a page's bounds); results oldest first,
        the newest being the reply."""
        status = Status(row["status"])
        worker = None
        if status == Status.STARTED and row["worker_host"] is not None:
            worker = (int(row["worker_id"]), row["worker_host"], int(row["worker_pid"]))
        return cls(
            id=int(row["task_id"]),
            queue=row["queue"],
            status=status,
            attempts=int(row["attempts"]),
            data=data,
            errors=errors,
            reply=results[-1] if results else None,
            created=row["created"],
            modified=row["modified"],
            run_after=row["run_after"],
            started=row["started"],
            worker=worker,
            worker_id=row["worker_id"],
            priority=int(row["priority"]),
            max_attempts=row["max_attempts"],
            title=row["title"],
            grouping=row["grouping"],
            unique_key=row["unique_key"],
            notes=notes,
            parents=[int(p) for p in row["parents"] or []],
            children=children,
            results=results,
            remove_after=row["remove_after"],
            keep_for=row["keep_for"],
            time_limit=row["time_limit"],
            expires_at=row["expires_at"],
            cancelled_at=row["cancelled_at"],
        )


#: The states :class:`QueueStats` counts, in the order tables show them:
#: every state but done (and the order of its fields).
COUNTED_STATES = ("waiting", "delayed", "blocked", "running", "failed")


@dataclass(frozen=True, slots=True)
class QueueStats:
    """How many tasks of one queue are in each state but done (:meth:`Admin.stats`)."""

    queue: str
    waiting: int  #: due now
    delayed: int  #: waiting, but not due yet (delayed, or a retry in backoff)
    blocked: int  #: waiting for parent tasks
    running: int
    failed: int
    paused: bool = False  #: no worker claims its tasks until it is resumed


@dataclass(frozen=True, slots=True)
class Stats:
    """The whole machine at a glance (:meth:`Admin.stats`), cheap enough to
    read every second: it never counts the finished history row by row."""

    queues: list[QueueStats]
    #: Done tasks still kept: exact while the table is small (under 100,000
    #: rows), else the planner's estimate (see :attr:`done_estimated`).
    done: int
    done_estimated: bool
    #: Registered workers that are alive, and how many of them run a task.
    workers: int
    busy: int

    @property
    def idle(self) -> int:
        return self.workers - self.busy

    def total(self, state: str) -> int:
        """The sum over all queues of ``waiting``, ``delayed``, ``blocked``,
        ``running`` or ``failed``."""
        return sum(getattr(q, state) for q in self.queues)


@dataclass(frozen=True, slots=True)
class HourStats:
    """Tasks finished in one hour (:meth:`Admin.history`)."""

    hour: datetime  #: the start of the hour
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
    priority: int = 0
    title: str | None = None
    grouping: str | None = None

    @property
    def state(self) -> str:
        """``"waiting"``, ``"blocked"``, ``"running"``, ``"done"`` or ``"failed"``."""
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
    #: A command left for it (``"stop"``) that it has not acted on yet.
    command: str | None = None

    @property
    def busy(self) -> bool:
        return bool(self.running)


@dataclass(frozen=True, slots=True)
class QueueLimit:
    """A queue's fleet-wide limits (:meth:`Admin.set_limits`, :meth:`Admin.limits`)."""

    queue: str
    #: At most this many of its tasks started at once across the fleet (None: no limit).
    concurrency: int | None
    #: At most this many claimed per :attr:`per` seconds (None: no limit).
    rate: int | None
    per: float
    #: Whether the limits apply to each ``grouping`` of its tasks on its own.
    per_grouping: bool
    #: Its tasks started now (running, or claimed ahead by a worker).
    running: int = 0
    #: Its tasks claimed within the last :attr:`per` seconds (0 without a rate).
    recent: int = 0


@dataclass(frozen=True, slots=True)
class TaskPage:
    """One page of :meth:`Admin.search_tasks`, and where the next one starts."""

    #: The tasks of this page, newest first.
    tasks: list[TaskSummary]
    #: Pass it as ``before_id`` for the next (older) page; None when no
    #: older task can match.
    next_before_id: int | None
    #: Whether a title search read its whole window of ``scan`` tasks and
    #: found fewer matches than a page: older tasks may still match, from
    #: ``next_before_id`` on.
    window_ended: bool = False


@dataclass(frozen=True, slots=True)
class LockInfo:
    """The holds of one named lock (:meth:`Admin.locks`)."""

    name: str
    #: Holds that have not expired.
    held: int
    #: When the first and the last of those holds expire (None when none is held).
    next_expiry: datetime | None
    last_expiry: datetime | None
    #: Expired holds still in the table (the next ``lock()`` of the name drops them).
    expired: int


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A cron schedule (:meth:`Admin.schedules`): what it sends, when, and what it sent last."""

    name: str
    #: The cron expression, read in :attr:`timezone` (an IANA name).
    cron: str
    timezone: str
    queue: str
    #: The data of each task it sends.
    data: Any
    priority: int
    max_attempts: int | None
    #: The title of its tasks (None: the schedule's name).
    title: str | None
    grouping: str | None
    #: Seconds its tasks are kept once finished (None: the worker's remove_after).
    remove_after: float | None
    #: A paused schedule sends nothing; its ticks are skipped until resumed.
    paused: bool
    #: The next tick it sends (when not paused).
    next_run: datetime
    #: The last tick it sent, and that task (None: none yet).
    last_run: datetime | None
    last_task_id: int | None
    #: The state of that task (``"waiting"``, ``"done"``...; None once it is gone).
    last_state: str | None
    created: datetime
    modified: datetime
