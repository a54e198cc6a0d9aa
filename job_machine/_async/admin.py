"""AsyncAdmin: look at the machine and act on tasks by hand (the CLI's engine)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from .. import _codec, _cron
from .._options import check_priority
from .._validate import is_int, is_number
from ..channels import is_pattern, validate_queue
from ..errors import SchemaMissing, UnknownTask
from ..task import (
    COUNTED_STATES,
    STATE_NAMES,
    HourStats,
    LockInfo,
    QueueLimit,
    ScheduleInfo,
    Stats,
    Status,
    TaskInfo,
    TaskPage,
    TaskSummary,
    WorkerInfo,
)
from .connection import AsyncConnector, AsyncConnectorOwner
from .store import AsyncStore

#: State words accepted by list_tasks(), to statuses.
STATES = {name: status for status, name in STATE_NAMES.items()}
#: State words accepted by purge(), to the statuses they remove.
PURGEABLE = {
    "finished": [Status.FINISHED, Status.FAILED],
    "done": [Status.FINISHED],
    "failed": [Status.FAILED],
}


#: On a standby, a worker seen within this many seconds counts as alive.
STANDBY_ALIVE_WITHIN = 15.0


class AsyncAdmin(AsyncConnectorOwner):
    """Operations for operators and dashboards: counts, history, listings,
    workers, cancel / retry / remove / purge of tasks, pausing queues,
    stopping workers and sending them commands, fleet-wide limits of queues,
    cron schedules, and resetting the whole machine.

    Takes ``dsn=``, ``conn=`` or ``pool=`` like :class:`AsyncClient`.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        conn: AsyncConnection[Any] | None = None,
        pool: AsyncConnectionPool | None = None,
        connect_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self._connector = AsyncConnector(
            dsn=dsn, conn=conn, pool=pool, connect_kwargs=connect_kwargs
        )
        self._store = AsyncStore(self._connector)

    async def stats(self) -> Stats:
        """The machine at a glance: per queue, how many tasks wait (due now),
        are delayed, blocked, running or failed, and whether it is paused;
        the done tasks kept; the workers alive, busy and idle. Cheap enough
        to call every second: it reads the indexes of the unfinished states,
        and estimates the done count once the table is large."""
        queues = await self._store.admin_stats()
        done, estimated = await self._store.admin_done()
        if estimated:  # an estimate of every row: take away the rows that are not done
            done = max(0, done - sum(getattr(q, s) for q in queues for s in COUNTED_STATES))
        alive = [w for w in await self._store.admin_workers() if w.alive]
        return Stats(
            queues=queues,
            done=done,
            done_estimated=estimated,
            workers=len(alive),
            busy=sum(1 for w in alive if w.busy),
        )

    async def oldest_waiting(self) -> dict[str, float]:
        """Per queue, how many seconds its oldest waiting task (due now, not
        delayed nor blocked) has waited since it became due; a queue with
        no task due is left out. Reads only the waiting tasks (an index of
        them), never the finished history: cheap enough for every metrics
        scrape. The age to alert on when workers fall behind or stop."""
        return await self._store.admin_oldest_waiting()

    async def status_string(self) -> str:
        """One line for a terminal or a log (the style of Perl job servers):
        ``W=12 D=3 B=0 R=2 F=4 done=1.23K workers=2/3`` (waiting, delayed,
        blocked, running, failed, done, busy/alive workers; ``~`` marks an
        estimated done count)."""
        return status_line(await self.stats())

    async def history(self) -> list[HourStats]:
        """Tasks done and failed in each of the last 24 hours (by when they
        finished), oldest hour first; hours without any are included."""
        return await self._store.admin_history()

    async def list_tasks(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        grouping: str | None = None,
        limit: int = 50,
        before_id: int | None = None,
        offset: int = 0,
    ) -> list[TaskSummary]:
        """A page of tasks, newest first, filtered by state, queue and grouping.

        For the next page pass the last id you got as ``before_id``: every
        page is then an index range scan, as fast on page 10,000 as on the
        first. ``offset`` also works, but skips its rows one by one.

        :param state: ``"waiting"``, ``"blocked"``, ``"running"``, ``"done"`` or ``"failed"``.
        :raises ValueError: an unknown state, a bad limit or offset.
        """
        _check_page(state, limit, offset)
        return await self._store.admin_list_tasks(
            STATES[state] if state is not None else None,
            validate_queue(queue) if queue is not None else None,
            before_id,
            limit,
            offset=offset,
            grouping=grouping,
        )

    async def search_tasks(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        title: str | None = None,
        before_id: int | None = None,
        limit: int = 50,
        scan: int = 10_000,
    ) -> TaskPage:
        """A page of tasks, newest first, filtered by state, queue and text in
        the title (any case), with the ``before_id`` of the next page.

        Without ``title`` it is :meth:`list_tasks`, and says whether there
        is a next page. With ``title``, each page looks at no more
        than the ``scan`` newest tasks of the state and queue below
        ``before_id``, so a title that matches nothing costs one bounded
        index scan, not a read of the whole history; when fewer than
        ``limit`` of them match, :attr:`TaskPage.window_ended` is set and
        ``next_before_id`` continues the search with older tasks.

        :param state: ``"waiting"``, ``"blocked"``, ``"running"``, ``"done"`` or ``"failed"``.
        :raises ValueError: an unknown state, a bad limit or scan.
        :raises InvalidQueueName: an empty queue name, or one with NUL.
        """
        _check_page(state, limit)
        status = STATES[state] if state is not None else None
        name = validate_queue(queue) if queue is not None else None
        if not title:  # one more than a page says whether there is a next one
            tasks = await self._store.admin_list_tasks(status, name, before_id, limit + 1)
            return TaskPage(tasks[:limit], tasks[limit - 1].id if len(tasks) > limit else None)
        if not is_int(scan) or not limit <= scan <= 1_000_000:
            raise ValueError(f"scan must be a whole number from limit to 1000000, not {scan!r}")
        hits, edge = await self._store.admin_search_tasks(
            title, status=status, queue=name, before_id=before_id, limit=limit, scan=scan
        )
        if len(hits) > limit:
            return TaskPage(hits[:limit], hits[limit - 1].id)
        return TaskPage(hits, edge, window_ended=edge is not None)

    async def task_info(self, task_id: int) -> TaskInfo:
        """Everything about one task (see :meth:`AsyncClient.task_info`).

        :raises UnknownTask: there is no such task.
        """
        info = await self._store.task_info(task_id)
        if info is None:
            raise UnknownTask(f"there is no task {task_id}")
        return info

    async def cancel(self, task_id: int) -> None:
        """Cancel a waiting, blocked or running task: it fails at once with a
        ``Cancelled`` error and is not retried, a waiting client gets
        :class:`~job_machine.TaskCancelled`, and its blocked children fail
        too. A running task's attempt is fenced out (what its worker writes
        from now on is refused) and its worker is told to stop it, on
        channel ``jmw:<worker_id>`` or else at its next heartbeat: the async
        worker cancels the coroutine, a thread sees ``task.cancelled``, a
        worker process (``--processes``) is terminated and replaced
        (docs/deadlines.md). A Perl worker running it is not told.

        :raises UnknownTask: there is no such task.
        :raises ValueError: the task is done or failed already.
        """
        if not await self._store.admin_cancel(task_id):
            raise ValueError(
                f"task {task_id} is {await self._state(task_id)}: "
                "only a waiting, blocked or running task can be cancelled"
            )

    async def retry(
        self, task_id: int, queue: str | None = None, priority: int | None = None
    ) -> None:
        """Send a done or failed task again, with a fresh budget of attempts
        (numbered on from the earlier ones: the attempt count is the
        fencing token, so a late answer of an earlier attempt is refused),
        optionally to another queue or with another priority. A task whose
        parents are not all done is blocked again until they are. Its
        earlier replies stay (``task_info().results``) but no longer answer
        it: ``check()`` is False and ``wait()`` waits until the new run
        answers.

        :raises UnknownTask: there is no such task.
        :raises ValueError: the task is waiting, blocked or running; another
            task holds its unique key.
        """
        name = validate_queue(queue) if queue is not None else None
        if priority is not None:
            check_priority("priority", priority)
        if not await self._store.admin_retry(task_id, name, priority):
            raise ValueError(
                f"task {task_id} is {await self._state(task_id)}: "
                "only a done or failed task can be retried"
            )

    async def remove(self, task_id: int) -> None:
        """Delete a task and its results.

        :raises UnknownTask: there is no such task.
        :raises ValueError: the task is running (stop or wait for it first).
        """
        if not await self._store.admin_remove(task_id):
            raise ValueError(
                f"task {task_id} is {await self._state(task_id)}: a running task cannot be removed"
            )

    async def purge(
        self,
        state: str = "finished",
        *,
        queue: str | None = None,
        older_than: float = 0.0,
        batch: int = 1000,
    ) -> int:
        """Delete finished tasks (``"done"``, ``"failed"`` or both:
        ``"finished"``), optionally of one queue and older than ``older_than``
        seconds, in batches of ``batch`` (no long lock). Returns how many.

        :raises ValueError: an unknown state, a negative ``older_than``, a
            ``batch`` that is not a whole number from 1 to 100000.
        """
        if state not in PURGEABLE:
            raise ValueError(f"state must be one of {', '.join(PURGEABLE)}, not {state!r}")
        if not is_number(older_than) or not older_than >= 0:
            raise ValueError(f"older_than must be a number of seconds >= 0, not {older_than!r}")
        if not is_int(batch) or not 1 <= batch <= 100_000:
            # 0 would delete nothing and never end; a negative LIMIT is an SQL error.
            raise ValueError(f"batch must be a whole number from 1 to 100000, not {batch!r}")
        name = validate_queue(queue) if queue is not None else None
        removed = 0
        while True:
            n = await self._store.admin_purge(PURGEABLE[state], name, float(older_than), batch)
            removed += n
            if n < batch:
                return removed

    async def reset(self, *, confirm: bool = False) -> dict[str, int]:
        """Delete every task (waiting, running or finished, with its
        results), every named lock and every cron schedule, in one
        transaction: the machine as just installed. Clients waiting for an
        unfinished task are told it was removed; a worker still running one
        finds it gone when it answers (as for any task no longer its own).
        Registered workers and queues (and whether each is paused) stay.

        Refused unless ``confirm=True``: nothing can bring the tasks back.
        Returns how many went: ``{"tasks": n, "locks": n}``, and
        ``"schedules"`` when the schema has them.

        :raises ValueError: ``confirm`` is not True.
        """
        if confirm is not True:
            raise ValueError(
                "reset() deletes every task, result, lock and schedule: "
                "pass confirm=True to mean it"
            )
        return await self._store.admin_reset()

    async def queues(self) -> list[str]:
        """Every queue name, in order: one read of the small queue table,
        however many tasks there are (for a menu of queues)."""
        return await self._store.queue_names()

    async def workers(self) -> list[WorkerInfo]:
        """The registered workers, whether each is alive, and what it runs.

        On a standby (see :meth:`read_only`) PostgreSQL's lock table is the
        standby's own, so a worker counts as alive when its heartbeat
        (replicated from the primary) is younger than 15 seconds, the
        default ``dead_after``, within which a worker heartbeats at least
        four times.
        """
        return await self._store.admin_workers(STANDBY_ALIVE_WITHIN)

    async def read_only(self) -> bool:
        """Whether the database this admin reads refuses writes: a streaming
        standby (a replica) or a read-only session. Reads answer there as
        on the primary; cancel, retry, remove, purge, reset, pause, resume,
        stop_workers, broadcast and set_limits raise
        :class:`~job_machine.ServerReadOnly`."""
        return (await self._store.server_role())[1]

    async def task_states(self, task_ids: Sequence[int]) -> dict[int, str]:
        """The state (``"waiting"``, ``"done"``...) of each of ``task_ids``
        that exists, in one statement (for a task's parents and children)."""
        found = await self._store.admin_task_states([int(i) for i in task_ids])
        return {task_id: STATE_NAMES[status] for task_id, status in found.items()}

    async def locks(self) -> list[LockInfo]:
        """The named locks (``lock()``/``unlock()``): per name, the holds
        that have not expired and when they do, and the expired holds not
        yet dropped."""
        return await self._store.admin_locks()

    async def pause(self, queue: str) -> None:
        """Pause a queue: it still takes tasks, but no worker claims them
        (tasks already running go on) until :meth:`resume`.

        :raises ValueError: there is no such queue.
        """
        if not await self._store.admin_pause(validate_queue(queue), True):
            raise ValueError(f"there is no queue {queue!r}")

    async def resume(self, queue: str) -> None:
        """Resume a paused queue; its workers are woken at once.

        :raises ValueError: there is no such queue.
        """
        if not await self._store.admin_pause(validate_queue(queue), False):
            raise ValueError(f"there is no queue {queue!r}")

    async def stop_workers(self, worker_id: int | None = None) -> int:
        """Ask one worker (or every registered one) to stop after the task in
        hand, as SIGTERM would; each reads it with its next heartbeat (within
        ``dead_after / 4`` seconds). Returns how many workers were asked."""
        return await self._store.admin_worker_command("stop", worker_id)

    async def broadcast(
        self, command: str, args: Any = None, worker_ids: Sequence[int] | None = None
    ) -> int:
        """Send ``command`` with ``args`` (any JSON value) to the workers
        ``worker_ids`` (None: every registered worker); each is woken on its
        channel and takes it at once (at the latest with its next heartbeat,
        ``dead_after / 4`` seconds, if the notification is lost), once, in
        the order sent, and runs its handler for ``command``: built in are
        ``"concurrency"`` (``args``: the new number of tasks at once),
        ``"status"`` (log what the worker is doing) and ``"stop"``; others
        are registered with ``Worker.on_command`` (docs/features.md, Worker
        commands). A worker that has no handler for it logs a warning.
        Returns how many workers it was left for (a worker id that is not
        registered gets nothing).

        :raises ValueError: an empty command, or one longer than 200 characters.
        :raises InvalidData: ``args`` cannot be encoded as JSON.
        """
        if not isinstance(command, str) or not command or len(command) > 200:
            raise ValueError(
                f"command must be a non-empty string of up to 200 characters, not {command!r}"
            )
        if "\x00" in command:
            raise ValueError(f"command {command!r} contains NUL")
        ids = None
        if worker_ids is not None:
            if isinstance(worker_ids, str | bytes) or not all(is_int(i) for i in worker_ids):
                raise ValueError(f"worker_ids must be a list of worker ids, not {worker_ids!r}")
            ids = [int(i) for i in worker_ids]
        text = None if args is None else _codec.encode(args, "the command's args")
        return await self._store.admin_broadcast(command, text, ids)

    # -- fleet-wide limits (docs/limits.md) ----------------------------------------

    async def set_limits(
        self,
        queue: str,
        concurrency: int | None = None,
        rate: int | None = None,
        per: float = 1.0,
        per_grouping: bool = False,
    ) -> QueueLimit | None:
        """Limit ``queue`` across every worker: at most ``concurrency`` of
        its tasks started at once (running, or claimed ahead by a worker),
        at most ``rate`` claimed per ``per`` seconds (a sliding window);
        with ``per_grouping``, each ``grouping`` value of its tasks (None is
        one value) gets these limits of its own, so one tenant cannot take
        the others' turn. Replaces the queue's limits; with neither
        ``concurrency`` nor ``rate`` it removes them. The queue need not
        exist yet. Enforced by the claim, race-free across workers; only
        the queue of exactly this name (not the queues below it). Perl
        workers do not honour limits. The limits set, or None when removed.

        :raises ValueError: a number that is not a whole number >= 1, a
            ``per`` that is not a positive number of seconds, ``per``
            or ``per_grouping`` without a limit, a queue name that is a
            pattern (pass ``Exact(name)`` for a queue named so).
        :raises InvalidQueueName: an empty queue name, or one with NUL.
        """
        name = validate_queue(queue)
        if is_pattern(name):
            raise ValueError(
                f"limits apply to one queue by its exact name, and {name!r} is a pattern: "
                "set each queue's limits, or pass Exact(name) for a queue named so"
            )
        for what, value in (("concurrency", concurrency), ("rate", rate)):
            if value is not None and (not is_int(value) or not 1 <= value < 2**31):
                raise ValueError(f"{what} must be a whole number >= 1 or None, not {value!r}")
        if not is_number(per) or not math.isfinite(per) or per <= 0:
            raise ValueError(f"per must be a positive number of seconds, not {per!r}")
        if not isinstance(per_grouping, bool):
            raise ValueError(f"per_grouping must be True or False, not {per_grouping!r}")
        if rate is None and per != 1.0:
            raise ValueError("per is the window of rate: give rate too")
        if concurrency is None and rate is None:
            if per_grouping:
                raise ValueError("per_grouping needs a limit: give concurrency or rate")
            await self._store.admin_limits_clear(name)
            return None
        await self._store.admin_limits_set(name, concurrency, rate, float(per), per_grouping)
        return QueueLimit(name, concurrency, rate, float(per), per_grouping)

    async def limits(self) -> list[QueueLimit]:
        """Every queue's limits, by name, with how many of its tasks are
        started now and, for a rate, how many were claimed in the window."""
        return await self._store.admin_limits()

    # -- cron schedules (docs/schedules.md) ----------------------------------------
    # A schedule's pause and resume are pause_schedule()/resume_schedule(),
    # not pause()/resume(): those take a queue name, and a schedule is often
    # named like its queue (a task function's schedule and queue both carry
    # the function's name), so one name could mean either.

    async def schedule(
        self,
        name: str,
        cron: str,
        queue: str,
        data: Any = None,
        *,
        timezone: str = "UTC",
        priority: int = 0,
        attempts: int | None = None,
        title: str | None = None,
        grouping: str | None = None,
        remove_after: float | timedelta | None = None,
    ) -> ScheduleInfo:
        """Send a task with ``data`` to ``queue`` at every tick of ``cron``,
        read in ``timezone``; or replace the schedule of that name (a paused
        one stays paused; its next tick stays unless the cron or zone changed).

        The fleet's housekeeper sends each tick's task once, within a
        heartbeat (``dead_after / 4``) of the tick, with the unique key
        ``cron:<name>@<tick in UTC>``, the schedule's name as default title,
        and notes ``{"schedule": name, "tick": ...}``. Ticks missed while no
        worker ran are run once: one task, for the earliest of them.

        :param cron: five fields (minute hour day month weekday), six with
            seconds first, or ``@hourly``, ``@daily``...
        :param timezone: an IANA zone (``"Europe/Oslo"``); DST as Debian cron.
        :param priority, attempts, title, grouping, remove_after: the options
            of each task, as for ``send`` (``remove_after`` a duration).
        :raises ValueError: a bad name, expression, zone, queue or option.
        """
        cron = _cron.check(cron, timezone)
        options = _cron.schedule_options(
            priority=priority,
            attempts=attempts,
            title=title,
            grouping=grouping,
            remove_after=remove_after,
        )
        await self._store.schedule_upsert(
            _cron.check_name(name),
            cron=cron,
            timezone=timezone,
            queue=validate_queue(queue),
            parameters=_codec.encode(data),
            options=options,
        )
        found = await self._store.schedule_list(name)
        if not found:  # removed at the same moment
            raise ValueError(f"there is no schedule {name!r}")
        return found[0]

    async def unschedule(self, name: str) -> None:
        """Remove a schedule: no tick of it is sent any more. The tasks it
        sent stay.

        :raises ValueError: there is no such schedule.
        """
        if not await self._store.schedule_delete(name):
            raise ValueError(f"there is no schedule {name!r}")

    async def pause_schedule(self, name: str) -> None:
        """Pause a schedule: it sends nothing, and the ticks that pass are
        skipped (not made up on :meth:`resume_schedule`). Tasks it sent already
        are not touched.

        :raises ValueError: there is no such schedule.
        """
        if not await self._store.schedule_pause(name):
            raise ValueError(f"there is no schedule {name!r}")

    async def resume_schedule(self, name: str) -> None:
        """Resume a paused schedule from its next tick after now. A schedule
        that is not paused is left as it is.

        :raises ValueError: there is no such schedule.
        """
        if not await self._store.schedule_resume(name):
            raise ValueError(f"there is no schedule {name!r}")

    async def schedules(self) -> list[ScheduleInfo]:
        """Every cron schedule, by name: what it sends, its next tick, and
        the last task it sent."""
        return await self._store.schedule_list()

    async def schema_version(self) -> int | None:
        """The installed schema version; None when the schema is not installed."""
        try:
            return await self._store.schema_version()
        except SchemaMissing:
            return None

    async def _state(self, task_id: int) -> str:
        info = await self._store.task_info(task_id)
        if info is None:
            raise UnknownTask(f"there is no task {task_id}")
        return repr(info.state)


def status_line(stats: Stats) -> str:
    """The line of :meth:`AsyncAdmin.status_string`, from stats already read."""
    done = ("~" if stats.done_estimated else "") + _short(stats.done)
    return (
        f"W={_short(stats.total('waiting'))} D={_short(stats.total('delayed'))} "
        f"B={_short(stats.total('blocked'))} R={_short(stats.total('running'))} "
        f"F={_short(stats.total('failed'))} done={done} "
        f"workers={stats.busy}/{stats.workers}"
    )


def _check_page(state: str | None, limit: int, offset: int = 0) -> None:
    """The arguments of a listing: a known state, a sane limit and offset."""
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, not {state!r}")
    if not is_int(limit) or not 1 <= limit <= 10_000:
        raise ValueError(f"limit must be a whole number from 1 to 10000, not {limit!r}")
    if not is_int(offset) or offset < 0:
        raise ValueError(f"offset must be a whole number >= 0, not {offset!r}")


def _short(n: int) -> str:
    """12 -> "12", 1234 -> "1.23K", 5_600_000 -> "5.6M"."""
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "K")):
        if n >= size:
            return f"{n / size:.3g}{suffix}"
    return str(n)
