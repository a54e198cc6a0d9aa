# DO NOT EDIT: generated from job_machine/_async/store.py by tools/async_to_sync.py.
# Change the async source and run `python tools/async_to_sync.py`.
"""The only code that talks SQL: one method per named query of queries.sql."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import Connection, errors, sql
from psycopg.rows import dict_row

from .. import _codec, _cron
from .._db_errors import translate
from .._dsn import describe_target
from .._lock_keys import CHORE_LOCK_KEY
from .._queries import queries
from .._worker_config import TaskPolicy
from ..channels import worker_channel
from ..errors import JobMachineError, SchemaMissing, ServerReadOnly, UnknownTask
from ..task import (
    STATE_NAMES,
    HourStats,
    LockInfo,
    Part,
    QueueLimit,
    QueueStats,
    ScheduleInfo,
    Status,
    Task,
    TaskEnd,
    TaskInfo,
    TaskSummary,
    WorkerInfo,
)
from .connection import Connector

#: The send options task_insert_many takes (unique keys and parents are per task).
_MANY_OPTIONS = (
    "priority",
    "run_after",
    "delay",
    "max_attempts",
    "title",
    "grouping",
    "remove_after",
    "keep_for",
    "time_limit",
    "expire_after",
    "expires_at",
)

#: The send options only task_insert_full takes.
_FULL_ONLY = ("unique_key", "parents")

#: Housekeeping removes a queue (its class row) once it has had no task,
#: not been paused, and been neither created nor paused or resumed for this
#: many seconds (a day): long enough that a client between looking a queue
#: up and inserting into it (Perl's two statements) is long done, and that
#: a daily queue is not removed and created again every day.
QUEUE_PRUNE_AFTER = 86400.0

#: When most of the fleet looks dead at once (an outage, not deaths), the
#: reaper waits this many reconnect graces (``dead_after / 2``) before it
#: takes their tasks: 5 x ``dead_after``, 75 s by default. docs/liveness.md.
OUTAGE_GRACES = 10

#: Seconds after which a claim looks again whether its queues have
#: fleet-wide limits (queue_limited): a limit set on a queue is honoured at
#: once, but a worker busy with other queues claims the limited queue's
#: tasks only once it has noticed (docs/limits.md).
LIMITS_RECHECK = 1.0
#: The same after a claim that came back short (the worker is about to
#: wait): soon, not at every claim of a worker that gets one task at a time.
LIMITS_RECHECK_SHORT = 0.2

#: Most schedules one dispatch round sends (the rest in the next round).
SCHEDULES_PER_ROUND = 100

schedule_logger = logging.getLogger("job_machine.schedules")


@dataclass(frozen=True, slots=True)
class Answer:
    """What the database holds for a client waiting on a task."""

    status: Status
    reply: str | None  #: JSON of the newest reply or result, if any
    error: str | None  #: JSON of the newest error result, if any


@dataclass(frozen=True, slots=True)
class ChoreCounts:
    """What one round of housekeeping did."""

    ran: bool  #: False when another worker held the housekeeping lock
    revived: int = 0  #: tasks put back to waiting
    failed: int = 0  #: tasks failed because they had used all their attempts
    removed: int = 0  #: finished tasks deleted
    reaped: int = 0  #: dead workers whose tasks were rescued
    pruned: int = 0  #: empty, unused queues removed
    scheduled: int = 0  #: tasks sent by cron schedules
    expired: int = 0  #: tasks failed because they were not started before they expired
    outage: bool = False  #: most of the fleet looked dead at once (an outage)


@dataclass(frozen=True, slots=True)
class Registration:
    """A worker's row in jobmachine.worker."""

    worker_id: int
    locked: bool  #: whether this session holds the worker's liveness lock


class Store:
    """Runs job_machine's statements on connections from a Connector."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self._q = queries()
        #: Whether a missing schedule table (schema version 4) was reported.
        self._warned_schedules = False
        #: Per list of queues claimed from: whether one of them had limits
        #: when last looked up, and when (time.monotonic()).
        self._limits_known: dict[tuple[str, ...], tuple[bool, float]] = {}

    @contextmanager
    def _cursor(
        self, conn: Connection[Any] | None = None
    ) -> Iterator[psycopg.Cursor[dict[str, Any]]]:
        """A dict-row cursor whose psycopg errors are raised as job_machine's
        (job_machine/_db_errors.py: ConnectionLost, ServerReadOnly,
        SchemaMissing, a StatementFailed kind, DatabaseError)."""
        used: list[Connection[Any]] = []
        try:
            if conn is not None:
                used.append(conn)
                with conn.cursor(row_factory=dict_row) as cur:
                    yield cur
            else:
                with self.connector.connection() as c, c.cursor(row_factory=dict_row) as cur:
                    used.append(c)
                    yield cur
        except errors.UniqueViolation:
            # Left to the method that expects it (admin_retry names the task
            # holding the unique key); every other insert is ON CONFLICT.
            raise
        except psycopg.Error as ex:
            ours = translate(ex, used[0] if used else None)
            if (
                isinstance(ours, ServerReadOnly)
                and used
                and self.connector.reconnects
                and not used[0].closed
            ):
                # A standby, or a primary demoted or made read-only: a lost
                # connection for us. Ours is dropped, so the next call connects
                # again (to the new primary, given target_session_attrs=read-write).
                used[0].close()
            raise ours from ours.__cause__

    def _one(
        self, name: str, params: dict[str, Any], conn: Connection[Any] | None = None
    ) -> dict[str, Any] | None:
        with self._cursor(conn) as cur:
            cur.execute(self._q[name], params)
            return cur.fetchone()

    def _all(
        self,
        name: str,
        params: dict[str, Any],
        conn: Connection[Any] | None = None,
        prepare: bool | None = None,
    ) -> list[dict[str, Any]]:
        with self._cursor(conn) as cur:
            cur.execute(self._q[name], params, prepare=prepare)
            return cur.fetchall()

    # -- tasks ------------------------------------------------------------

    def task_insert(
        self, queue: str, parameters: str, channel: str, options: dict[str, Any]
    ) -> int:
        """Insert a task (options: see job_machine/_options.py) and notify
        ``channel``; return its id, or the id of the task that holds its
        unique key.

        :raises UnknownTask: a parent task does not exist (nothing is inserted).
        """
        params = {"queue": queue, "parameters": parameters, "channel": channel, **options}
        params["trace_context"] = options.get("trace_context")
        if not options["parents"] and options["unique_key"] is None:
            params = {k: v for k, v in params.items() if k not in _FULL_ONLY}
            row = self._one("task_insert", params)
            if row is None:
                # Another sender created the queue's class row at the same
                # moment; it is committed now, so the second try finds it.
                row = self._one("task_insert", params)
            assert row is not None, "task_insert returned no row twice"
            return int(row["task_id"])
        for _ in range(10):
            row = self._one("task_insert_full", params)
            assert row is not None
            if not row["has_class"]:
                # Another sender created the queue's class row at the same
                # moment; it is committed now, so the next try finds it.
                continue
            parents = options["parents"] or []
            missing = sorted(set(parents) - set(row["parents_found"] or []))
            if missing:
                listed = ", ".join(str(m) for m in missing)
                raise UnknownTask(f"parent task(s) {listed} do not exist; nothing was sent")
            if row["task_id"] is not None:
                return int(row["task_id"])
            holder = self._one(
                "task_unique_holder", {"queue": queue, "unique_key": options["unique_key"]}
            )
            if holder is not None:
                return int(holder["task_id"])
            # The holder of the key finished meanwhile: the key is free again.
        raise RuntimeError(f"task_insert into {queue!r} did not settle after 10 tries")

    def task_insert_many(
        self,
        queue: str,
        parameters: Sequence[str],
        channel: str,
        options: dict[str, Any],
        trace_contexts: Sequence[str | None] | None = None,
    ) -> list[int]:
        """Insert waiting tasks in order, notify ``channel`` once; return their ids.

        Each task's trace context is its item of ``trace_contexts`` when given
        (the send group's tasks, each sent in its own span), else the
        options' one.
        """
        params: dict[str, Any] = {
            "queue": queue,
            "parameters": list(parameters),
            "channel": channel,
        }
        params |= {k: options[k] for k in _MANY_OPTIONS}
        params["trace_context"] = options.get("trace_context")
        params["trace_contexts"] = None if trace_contexts is None else list(trace_contexts)
        row = self._one("task_insert_many", params)
        if row is None:
            # Another sender created the queue's class row at the same moment.
            row = self._one("task_insert_many", params)
        assert row is not None, "task_insert_many returned no row twice"
        return [int(i) for i in row["ids"]]

    def task_claim(
        self,
        queues: Sequence[str],
        limit: int = 1,
        worker_id: int | None = None,
        now: datetime | None = None,
        min_priority: int | None = None,
        *,
        task_id: int | None = None,
        policy: TaskPolicy | None = None,
    ) -> list[Task]:
        """Claim up to ``limit`` waiting tasks of ``queues``, best first, for
        ``worker_id`` (only ``task_id``, when given), within the queues'
        fleet-wide limits, stamping ``policy`` (the claiming worker's
        housekeeping settings) on them; without one the housekeeper's
        settings apply.

        task_claim leaves the queues that have limits alone, at the cost of
        one key probe; whether any of ``queues`` has some is looked up when
        a claim comes back short, and at least every :data:`LIMITS_RECHECK`
        seconds, and then task_claim_limited claims from them (and from the
        others, while they have limits). A limit set on a queue a worker is
        busy with elsewhere is thus noticed within that time: until then its
        tasks are left waiting, never claimed past the limit.
        """
        params = {
            "queues": list(queues),
            "limit": limit,
            "worker_id": worker_id,
            "now": now,
            "min_priority": -(2**31) if min_priority is None else min_priority,
            "task_id": task_id,
            **(TaskPolicy.NONE if policy is None else policy.claim_params()),
        }
        key = tuple(queues)
        limited, looked = self._limits_known.get(key, (False, -LIMITS_RECHECK))
        if limited:
            rows = self._all("task_claim_limited", params)
            if rows and not rows[0]["limited"]:
                self._know_limits(key, False)
            return self._claimed(rows)
        tasks = self._claimed(self._all("task_claim", params))
        now_ = time.monotonic()
        short = len(tasks) < limit
        # One task asked for by id: looked up at once (a call of its own).
        if (short and (task_id is not None or now_ - looked >= LIMITS_RECHECK_SHORT)) or (
            now_ - looked >= LIMITS_RECHECK
        ):
            row = self._one("queue_limited", {"queues": list(queues)})
            limited = bool(row and row["limited"])
            self._know_limits(key, limited)
            if limited and short:
                params["limit"] = limit - len(tasks)
                tasks += self._claimed(self._all("task_claim_limited", params))
                tasks.sort(key=lambda t: (-t.priority, t.id))  # best first, as one claim
        return tasks

    def _know_limits(self, key: tuple[str, ...], limited: bool) -> None:
        if len(self._limits_known) > 64:  # served queues come and go (patterns)
            self._limits_known.clear()
        self._limits_known[key] = (limited, time.monotonic())

    @staticmethod
    def _claimed(rows: list[dict[str, Any]]) -> list[Task]:
        """The tasks of task_claim's rows (task_claim_limited's row of NULLs is none)."""
        return [
            Task(
                id=int(r["task_id"]),
                queue=r["queue"],
                data=_codec.decode(r["parameters"]),
                attempt=int(r["attempts"]),
                created=r["created"],
                parameters=r["parameters"] or "",
                priority=int(r["priority"]),
                max_attempts=r["max_attempts"],
                title=r["title"],
                grouping=r["grouping"],
                trace_context=r["trace_context"],
                due=r["due"],
                time_limit=r["time_limit"],
            )
            for r in rows
            if r["task_id"] is not None
        ]

    def task_finish(self, task_id: int, attempt: int, result: str, notify: bool) -> bool:
        """Store a result and mark the task done; False if this attempt no longer holds it."""
        params = {"task_id": task_id, "attempt": attempt, "result": result, "notify": notify}
        return self._one("task_finish", params) is not None

    def task_begin(self, task_id: int, attempt: int) -> bool:
        """Restart the clock of a task claimed ahead, about to run; False if
        this attempt no longer holds it (given up or revived meanwhile)."""
        return self._one("task_begin", {"task_id": task_id, "attempt": attempt}) is not None

    def task_done(self, task_id: int, attempt: int) -> bool:
        """Mark the task done without a result; False if this attempt no longer holds it."""
        return self._one("task_done", {"task_id": task_id, "attempt": attempt}) is not None

    def task_done_many(self, tasks: Sequence[tuple[int, int]]) -> set[int]:
        """Mark held tasks ``(task_id, attempt)`` done; the ids this marked."""
        params = {"task_ids": [t for t, _ in tasks], "attempts": [a for _, a in tasks]}
        return {int(r["task_id"]) for r in self._all("task_done_many", params)}

    def task_complete_many(self, ends: Sequence[TaskEnd], retries: int) -> dict[int, Status]:
        """Store how held tasks ended, in one statement (see the completer);
        the new status of each task written (a task missing was revived)."""
        params = {
            "task_ids": [e.task_id for e in ends],
            "attempts": [e.attempt for e in ends],
            "kinds": [e.kind for e in ends],
            "results": [e.data for e in ends],
            "delays": [e.delay for e in ends],
            "retries": retries,
        }
        rows = self._all("task_complete_many", params)
        return {int(r["task_id"]): Status(r["status"]) for r in rows}

    def result_insert_error(self, task_id: int, attempt: int, result: str) -> bool:
        """Store an error result, status unchanged; False if this attempt no longer holds it."""
        params = {"task_id": task_id, "attempt": attempt, "result": result}
        return self._one("result_insert_error", params) is not None

    def task_fail_attempt(
        self, task_id: int, attempt: int, error: str, retries: int, delay: float = 0.0
    ) -> Status | None:
        """Store the error of a failed attempt; the task waits again, due in ``delay``
        seconds, or fails when ``attempt > retries``. The new status, or None if this
        attempt no longer holds it."""
        params = {
            "task_id": task_id,
            "attempt": attempt,
            "result": error,
            "retries": retries,
            "delay": delay,
        }
        row = self._one("task_fail_attempt", params)
        return None if row is None else Status(row["status"])

    def task_fail_now(self, task_id: int, attempt: int, error: str) -> bool:
        """Store the error and fail the task without retrying; False if this
        attempt no longer holds it."""
        params = {"task_id": task_id, "attempt": attempt, "result": error}
        return self._one("task_fail_now", params) is not None

    def task_answer(self, task_id: int, conn: Connection[Any] | None = None) -> Answer | None:
        """Status, newest reply and newest error of a task; None if there is no such task.

        :param conn: read on this connection (the one a waiting client listens
            on) instead of taking another.
        """
        row = self._one("task_answer", {"task_id": task_id}, conn)
        if row is None:
            return None
        return Answer(Status(row["status"]), row["reply"], row["error"])

    def task_answers(self, task_ids: Sequence[int]) -> dict[int, Answer]:
        """:meth:`task_answer` of several tasks; a task missing does not exist."""
        rows = self._all("task_answers", {"task_ids": list(task_ids)})
        return {
            int(r["task_id"]): Answer(Status(r["status"]), r["reply"], r["error"]) for r in rows
        }

    def part_insert(self, task_id: int, attempt: int, seq: int, data: str) -> bool:
        """Store part ``seq`` of a held task and notify ``jmr:<task_id>``
        ('part'); False if this attempt no longer holds it."""
        params = {"task_id": task_id, "attempt": attempt, "seq": seq, "data": data}
        return self._one("part_insert", params) is not None

    def part_insert_many(
        self, parts: Sequence[tuple[int, int, int, str]]
    ) -> set[tuple[int, int, int]]:
        """Store parts ``(task_id, attempt, seq, data)`` of held tasks in one
        statement; the ``(task_id, attempt, seq)`` stored (the others were refused)."""
        params = {
            "task_ids": [p[0] for p in parts],
            "attempts": [p[1] for p in parts],
            "seqs": [p[2] for p in parts],
            "datas": [p[3] for p in parts],
        }
        rows = self._all("part_insert_many", params)
        return {(int(r["task_id"]), int(r["attempt"]), int(r["seq"])) for r in rows}

    def part_read(
        self, task_id: int, attempt: int, seq: int, limit: int
    ) -> tuple[Answer, int, list[Part]] | None:
        """In one snapshot: the task's answer, its current attempt, and up to
        ``limit`` parts of that attempt in order (from ``seq`` on if it is
        ``attempt``, else from the first); None if there is no such task."""
        params = {"task_id": task_id, "attempt": attempt, "seq": seq, "limit": limit}
        row = self._one("part_read", params)
        if row is None:
            return None
        current = int(row["attempts"])
        parts = [
            Part(task_id, current, int(n), _codec.decode(data), created)
            for n, data, created in zip(
                row["seqs"] or [], row["datas"] or [], row["created"] or [], strict=True
            )
        ]
        return Answer(Status(row["status"]), row["reply"], row["error"]), current, parts

    def task_answered(self, task_id: int) -> bool | None:
        """Whether the task has a reply or has finished; None if there is no such task."""
        row = self._one("task_answered", {"task_id": task_id})
        return None if row is None else bool(row["answered"])

    def task_info(self, task_id: int) -> TaskInfo | None:
        """Everything about a task; None if there is no such task."""
        row = self._one("task_info", {"task_id": task_id})
        if row is None:
            return None
        status = Status(row["status"])
        worker = None
        if status == Status.STARTED and row["worker_host"] is not None:
            worker = (int(row["worker_id"]), row["worker_host"], int(row["worker_pid"]))
        return TaskInfo(
            id=int(row["task_id"]),
            queue=row["queue"],
            status=status,
            attempts=int(row["attempts"]),
            data=_codec.decode(row["parameters"]),
            errors=[_codec.decode(e) for e in row["errors"]],
            reply=_codec.decode(row["results"][-1]) if row["results"] else None,
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
            notes=_codec.decode(row["notes"]) or {},
            parents=[int(p) for p in row["parents"] or []],
            children=[int(c) for c in row["children"]],
            results=[_codec.decode(r) for r in row["results"]],
            remove_after=row["remove_after"],
            keep_for=row["keep_for"],
            time_limit=row["time_limit"],
            expires_at=row["expires_at"],
            cancelled_at=row["cancelled_at"],
        )

    def task_note(self, task_id: int, notes: dict[str, str | None]) -> bool:
        """Set notes (JSON texts) and remove those given as None; False if
        there is no such task."""
        kept = {k: v for k, v in notes.items() if v is not None}
        params = {
            "task_id": task_id,
            "set": "{" + ",".join(f"{_codec.encode(k)}:{v}" for k, v in kept.items()) + "}",
            "remove": [k for k, v in notes.items() if v is None],
        }
        row = self._one("task_note", params)
        return row is not None and row["task_id"] is not None

    def lock_take(self, name: str, expire: float, limit: int) -> int | None:
        """Take a hold of a named lock: its id (0 for a check), None if all are held."""
        row = self._one("lock_take", {"name": name, "expire": expire, "limit": limit})
        return None if row is None or row["lock_id"] is None else int(row["lock_id"])

    def lock_release(self, name: str, lock_id: int | None) -> bool:
        """Release a hold of a named lock; False if there was none."""
        row = self._one("lock_release", {"name": name, "lock_id": lock_id})
        return row is not None and row["lock_id"] is not None

    def queue_names(self, conn: Connection[Any] | None = None) -> list[str]:
        """Every known queue name."""
        return [r["name"] for r in self._all("queue_names", {}, conn)]

    def task_next_due(self, queues: Sequence[str], min_priority: int | None = None) -> float | None:
        """Seconds until the next claimable task of ``queues`` is due, 0.0 if
        one is due now; None if none is waiting."""
        params = {
            "queues": list(queues),
            "min_priority": -(2**31) if min_priority is None else min_priority,
        }
        row = self._one("task_next_due", params)
        return None if row is None or row["wait"] is None else max(0.0, float(row["wait"]))

    # -- administration ---------------------------------------------------

    def admin_stats(self) -> list[QueueStats]:
        """Counts of the tasks that are not done, by queue and state."""
        return [QueueStats(**r) for r in self._all("admin_stats", {}, prepare=False)]

    def admin_done(self, exact_below: int = 100_000) -> tuple[int, bool]:
        """How many done tasks there are, and whether that is an estimate."""
        row = self._one("admin_done_estimate", {})
        rows = int(row["rows"]) if row else -1
        if 0 <= rows < exact_below or rows < 0:
            exact = self._one("admin_done_count", {})
            assert exact is not None
            return int(exact["done"]), False
        return rows, True

    def admin_oldest_waiting(self) -> dict[str, float]:
        """Per queue with due tasks, the seconds its oldest due task has waited."""
        rows = self._all("admin_oldest_waiting", {}, prepare=False)
        return {r["queue"]: max(0.0, float(r["age"])) for r in rows}

    def admin_history(self) -> list[HourStats]:
        """Done and failed tasks per hour, over the last 24 hours."""
        return [HourStats(**r) for r in self._all("admin_history", {}, prepare=False)]

    def admin_list_tasks(
        self,
        status: Status | None,
        queue: str | None,
        before_id: int | None,
        limit: int,
        *,
        offset: int = 0,
        grouping: str | None = None,
    ) -> list[TaskSummary]:
        """A page of tasks, newest first."""
        params = {
            "status": status,
            "queue": queue,
            "before_id": before_id,
            "limit": limit,
            "offset": offset,
            "grouping": grouping,
        }
        rows = self._all("admin_list_tasks", params, prepare=False)
        return [self._task_summary(r) for r in rows]

    def task_cancelled_held(
        self,
        held: Sequence[tuple[int, int]],
        conn: Connection[Any] | None = None,
    ) -> list[tuple[int, int]]:
        """Of the attempts ``held`` ((task id, attempt) pairs a worker runs),
        those whose task was cancelled meanwhile."""
        params = {"task_ids": [h[0] for h in held], "attempts": [h[1] for h in held]}
        rows = self._all("task_cancelled_held", params, conn)
        return [(int(r["task_id"]), int(r["attempt"])) for r in rows]

    def worker_listen(self, worker_id: int, conn: Connection[Any]) -> None:
        """LISTEN on the worker's own channel ``jmw:<worker_id>`` (cancels of
        the tasks it runs), on its registry connection."""
        with self._cursor(conn) as cur:
            cur.execute(sql.SQL("LISTEN {}").format(sql.Identifier(worker_channel(worker_id))))

    def admin_cancel(self, task_id: int) -> bool:
        """Fail a waiting, blocked or running task as cancelled (telling the
        worker holding it); False if it had finished (or does not exist)."""
        return self._one("admin_cancel", {"task_id": task_id}) is not None

    def admin_retry(self, task_id: int, queue: str | None, priority: int | None) -> bool:
        """Make a finished task wait again; False if it was not finished.

        :raises ValueError: another task holds its unique key.
        """
        params = {"task_id": task_id, "queue": queue, "priority": priority}
        try:
            return self._one("admin_retry", params) is not None
        except errors.UniqueViolation:
            info = self.task_info(task_id)
            holder = None
            if info is not None and info.unique_key is not None:
                holder = self._one(
                    "task_unique_holder",
                    {"queue": queue or info.queue, "unique_key": info.unique_key},
                )
            which = f"task {holder['task_id']}" if holder else "another task"
            raise ValueError(
                f"task {task_id} cannot be retried: {which} holds its unique key "
                f"{info.unique_key if info else None!r} (waiting, blocked or running)"
            ) from None

    def admin_pause(self, queue: str, paused: bool) -> bool:
        """Pause or resume a queue; False if there is no such queue."""
        return self._one("admin_pause", {"queue": queue, "paused": paused}) is not None

    def admin_worker_command(self, command: str | None, worker_id: int | None) -> int:
        """Leave a command for one worker (or all); how many got it."""
        params = {"command": command, "worker_id": worker_id}
        return len(self._all("admin_worker_command", params))

    def admin_broadcast(
        self, command: str, args: str | None, worker_ids: Sequence[int] | None
    ) -> int:
        """Leave a command for the workers named (None: every registered
        one); how many got it."""
        params = {
            "command": command,
            "args": args,
            "worker_ids": None if worker_ids is None else list(worker_ids),
        }
        return len(self._all("admin_broadcast", params))

    def worker_commands_take(
        self, worker_id: int, conn: Connection[Any] | None = None
    ) -> list[tuple[str, str | None]]:
        """Take the commands left for this worker, oldest first: (command, args JSON)."""
        rows = self._all("worker_commands_take", {"worker_id": worker_id}, conn)
        return [(r["command"], r["args"]) for r in rows]

    def admin_limits_set(
        self,
        queue: str,
        concurrency: int | None,
        rate: int | None,
        per: float,
        per_grouping: bool,
    ) -> None:
        """Set (replace) a queue's limits."""
        params = {
            "queue": queue,
            "concurrency": concurrency,
            "rate": rate,
            "per": per,
            "per_grouping": per_grouping,
        }
        self._all("admin_limits_set", params)

    def admin_limits_clear(self, queue: str) -> bool:
        """Remove a queue's limits; False when it had none."""
        return bool(self._all("admin_limits_clear", {"queue": queue}))

    def admin_limits(self) -> list[QueueLimit]:
        """Every queue's limits, by name."""
        return [
            QueueLimit(
                queue=r["queue"],
                concurrency=r["concurrency"],
                rate=r["rate"],
                per=float(r["per"]),
                per_grouping=bool(r["per_grouping"]),
                running=int(r["running"]),
                recent=int(r["recent"]),
            )
            for r in self._all("admin_limits", {})
        ]

    def admin_remove(self, task_id: int) -> bool:
        """Delete a task that is not running; False if there was none to delete."""
        return self._one("admin_remove", {"task_id": task_id}) is not None

    def admin_reset(self) -> dict[str, int]:
        """Delete every task, named lock and cron schedule in one
        transaction; how many of each (``tasks``, ``locks``, ``schedules``)."""
        rows = self._all("admin_reset", {})
        return {row["what"]: int(row["removed"]) for row in rows}

    def admin_purge(
        self, statuses: Sequence[Status], queue: str | None, older_than: float, limit: int
    ) -> int:
        """Delete one batch of finished tasks; how many."""
        params = {
            "statuses": [int(s) for s in statuses],
            "queue": queue,
            "older_than": older_than,
            "limit": limit,
        }
        return len(self._all("admin_purge", params))

    def admin_workers(self, seen_within: float = 15.0) -> list[WorkerInfo]:
        """The registered workers; on a standby, a worker is alive when seen
        within ``seen_within`` seconds (locks are not replicated)."""
        return [
            WorkerInfo(
                id=int(r["worker_id"]),
                host=r["host"],
                pid=int(r["pid"]),
                queues=list(r["queues"]),
                started=r["started"],
                seen=r["seen"],
                alive=bool(r["alive"]),
                running=[int(t) for t in r["running"]],
                command=r["command"],
            )
            for r in self._all("admin_workers", {"seen_within": seen_within})
        ]

    def server_role(self) -> tuple[bool, bool]:
        """(whether the server is a standby, whether it refuses writes)."""
        row = self._one("server_role", {})
        assert row is not None
        return bool(row["standby"]), bool(row["standby"] or row["read_only"])

    # -- workers ----------------------------------------------------------

    def worker_register(
        self,
        host: str,
        pid: int,
        queues: Sequence[str],
        conn: Connection[Any],
        *,
        dead_after: float | None = None,
    ) -> Registration:
        """Register a worker and take its liveness lock on ``conn`` (its registry
        session); ``dead_after`` gives it its own reconnect grace when reaped."""
        params = {"host": host, "pid": pid, "queues": list(queues), "dead_after": dead_after}
        row = self._one("worker_register", params, conn)
        assert row is not None
        return Registration(int(row["worker_id"]), bool(row["locked"]))

    def check_registered_here(self, worker_id: int, registry: str) -> None:
        """Check that the worker registered through ``registry`` (its
        ``listen_dsn``) is in the database this store works on.

        :raises JobMachineError: it is not: ``registry`` reaches another
            database, where the worker's liveness lock and heartbeat mean
            nothing to the housekeeping of the database its tasks are in
            (they would be rescued from under it), and where it listens for
            notifications the work database never sends.
        """
        row = self._one("worker_registered", {"worker_id": worker_id})
        if row is not None and row["registered"]:
            return
        raise JobMachineError(
            f"listen_dsn ({describe_target(registry)}) reaches another database than the "
            f"work connection ({describe_target(self.connector.conninfo)}): worker "
            f"{worker_id}, registered through listen_dsn, is not in the work database; "
            "point listen_dsn at the same database (directly, past the pooler)"
        )

    def worker_heartbeat(
        self,
        worker_id: int,
        host: str,
        pid: int,
        queues: Sequence[str],
        conn: Connection[Any],
        *,
        dead_after: float | None = None,
    ) -> tuple[bool, str | None, str | None]:
        """Mark the worker seen and (re)take its liveness lock: whether ``conn``
        holds it, the command left for the worker, if any, and which life of
        the server this is (it changes with a restart or a promotion)."""
        params = {
            "worker_id": worker_id,
            "host": host,
            "pid": pid,
            "queues": list(queues),
            "dead_after": dead_after,
        }
        row = self._one("worker_heartbeat", params, conn)
        if row is None:
            return False, None, None
        return bool(row["locked"]), row["command"], row["server_life"]

    def task_release_held(self, worker_id: int, keep: Sequence[int] = ()) -> int:
        """Put back to waiting the started tasks of ``worker_id`` other than ``keep``;
        how many there were."""
        params = {"worker_id": worker_id, "keep": list(keep)}
        return len(self._all("task_release_held", params))

    def task_unclaim(
        self, task_ids: Sequence[int], worker_id: int, conn: Connection[Any] | None = None
    ) -> int:
        """Give back claimed tasks that never started; how many there were."""
        if not task_ids:
            return 0
        params = {"task_ids": list(task_ids), "worker_id": worker_id}
        return len(self._all("task_unclaim", params, conn))

    def leader_lock(self, conn: Connection[Any]) -> bool:
        """Try to become (or stay) the fleet's housekeeper on ``conn``'s session."""
        row = self._one("leader_lock", {"key": CHORE_LOCK_KEY}, conn)
        return bool(row and row["got"])

    def worker_reap(
        self,
        *,
        grace: float,
        retries: int,
        worker_id: int | None = None,
        now: datetime | None = None,
        conn: Connection[Any] | None = None,
        outage: bool = False,
    ) -> tuple[int, int, int, bool]:
        """Remove dead workers (or the one given) and rescue their started tasks:
        (workers removed, tasks put back to waiting, tasks failed, whether
        it was judged an outage). Each worker is judged by its own reconnect
        grace (``grace`` for one registered by an older job_machine), each
        task by its own attempts (``retries`` + 1 where it has none). When
        most of the fleet looks dead at once, or ``outage`` says an outage
        has just ended, only those unseen for ``OUTAGE_GRACES`` graces are
        removed."""
        params = {
            "grace": grace,
            "outage_graces": OUTAGE_GRACES,
            "retries": retries,
            "worker_id": worker_id,
            "now": now,
            "outage": outage,
        }
        rows = self._all("worker_reap", params, conn)
        workers = sum(1 for r in rows if r["task_id"] is None and r["worker_id"] is not None)
        failed = sum(1 for r in rows if r["status"] == Status.FAILED)
        revived = sum(1 for r in rows if r["status"] == Status.WAITING)
        return workers, revived, failed, any(r["outage"] for r in rows)

    # -- housekeeping -----------------------------------------------------

    def chores(
        self,
        *,
        retries: int,
        remove_after_days: float,
        grace: float,
        max_runtime: float | None,
        orphan_after: float,
        cleanup: bool = True,
        reap: bool = True,
        outage: bool = False,
        remove_limit: int = 1000,
        max_batches: int = 50,
        expire_limit: int = 1000,
        now: datetime | None = None,
        conn: Connection[Any] | None = None,
    ) -> ChoreCounts:
        """One round of housekeeping, in one transaction, unless another worker is
        doing it right now: rescue dead workers' tasks, give up on tasks past
        their ``max_runtime``, and with ``cleanup`` also revive unowned tasks
        untouched for their ``orphan_after``; then remove finished tasks whose
        time has come, in batches of ``remove_limit``. Each task is judged by
        the policy its claiming worker stamped on it; the settings given here
        (``retries``, ``max_runtime``, ``orphan_after``, ``remove_after_days``,
        and ``grace`` for workers) apply only where it has none: tasks
        claimed by Perl Job::Machine or an older job_machine, finished tasks
        no worker claimed (cancelled, failed with a parent). Without ``reap`` dead
        workers are not judged this round (the judge itself has not been
        connected long enough to tell an outage from deaths). Then send the
        tasks of the cron schedules whose tick has come
        (:meth:`schedules_dispatch`). Every round also fails up to
        ``expire_limit`` waiting tasks whose ``expires_at`` has passed."""
        with ExitStack() as stack:
            if conn is None:
                conn = stack.enter_context(self.connector.connection())
            with self.connector.unit(conn):
                got = self._one("chore_lock", {"key": CHORE_LOCK_KEY}, conn)
                if not (got and got["got"]):
                    return ChoreCounts(ran=False)
                reaped = revived = failed = 0
                in_outage = False
                if reap:
                    reaped, revived, failed, in_outage = self.worker_reap(
                        grace=grace, retries=retries, now=now, conn=conn, outage=outage
                    )
                params = {"max_runtime": max_runtime, "retries": retries, "now": now}
                rows = self._all("task_give_up", params, conn)
                if cleanup:
                    params = {"orphan_after": orphan_after, "retries": retries, "now": now}
                    rows += self._all("task_revive", params, conn)
                # Deadlines: every round, so that a client waiting on an
                # expired task hears of it within a heartbeat.
                expired = len(self._all("task_expire", {"now": now, "limit": expire_limit}, conn))
            failed += sum(1 for r in rows if r["status"] == Status.FAILED)
            revived += sum(1 for r in rows if r["status"] == Status.WAITING)
            removed = 0
            if cleanup:
                # Retention: bounded batches, each its own short transaction,
                # so neither a long lock nor one huge delete; at most
                # max_batches per round, the rest next round.
                params = {
                    "remove_after_days": remove_after_days,
                    "limit": remove_limit,
                    "now": now,
                }
                for _ in range(max_batches):
                    with self.connector.unit(conn):
                        batch = len(self._all("task_remove_old", params, conn))
                    removed += batch
                    if batch < remove_limit:
                        break
            pruned = self.queue_prune(conn, now=now) if cleanup else 0
            scheduled = self.schedules_dispatch(now=now, conn=conn)
        return ChoreCounts(
            ran=True,
            revived=revived,
            failed=failed,
            removed=removed,
            reaped=reaped,
            pruned=pruned,
            scheduled=scheduled,
            expired=expired,
            outage=in_outage,
        )

    def queue_prune(
        self,
        conn: Connection[Any],
        *,
        older_than: float = QUEUE_PRUNE_AFTER,
        limit: int = 1000,
        max_batches: int = 50,
        now: datetime | None = None,
    ) -> int:
        """Remove queues without a task, not paused, created and last paused
        or resumed more than ``older_than`` seconds ago, in batches of
        ``limit`` (each its own short transaction); how many. A send to a
        removed queue creates it again."""
        params = {"older_than": older_than, "limit": limit, "now": now}
        pruned = 0
        for _ in range(max_batches):
            with self.connector.unit(conn):
                batch = len(self._all("queue_prune", params, conn))
            pruned += batch
            if batch < limit:
                break
        return pruned

    def session_set(self, settings: dict[str, str], conn: Connection[Any]) -> None:
        """Set configuration parameters for the rest of ``conn``'s session."""
        for name, value in settings.items():
            self._one("session_set", {"name": name, "value": value}, conn)

    def schema_version(self) -> int | None:
        """The installed schema version; raises SchemaMissing when there is none."""
        row = self._one("schema_version", {})
        return None if row is None else row["version"]

    def admin_search_tasks(
        self,
        title: str,
        *,
        status: Status | None,
        queue: str | None,
        before_id: int | None,
        limit: int,
        scan: int,
    ) -> tuple[list[TaskSummary], int | None]:
        """Up to ``limit + 1`` tasks whose title contains ``title``, newest
        first, among the ``scan`` newest tasks of the status and queue below
        ``before_id``; and the id of that window's last task when the search
        read the whole window (None when it stopped earlier or the tasks ran out)."""
        params = {
            "title": title,
            "status": status,
            "queue": queue,
            "before_id": before_id,
            "limit": limit,
            "scan": scan,
        }
        rows = self._all("admin_search_tasks", params, prepare=False)
        edge = next((int(r["task_id"]) for r in rows if r["n"] == scan), None)
        return [self._task_summary(r) for r in rows if r["hit"]], edge

    def admin_locks(self) -> list[LockInfo]:
        """The holds of each named lock."""
        return [LockInfo(**r) for r in self._all("admin_locks", {})]

    def admin_task_states(self, ids: Sequence[int]) -> dict[int, Status]:
        """The status of each of ``ids`` that exists."""
        rows = self._all("admin_task_states", {"ids": list(ids)})
        return {int(r["task_id"]): Status(r["status"]) for r in rows}

    @staticmethod
    def _task_summary(r: dict[str, Any]) -> TaskSummary:
        """A TaskSummary from a row of admin_list_tasks or admin_search_tasks."""
        return TaskSummary(
            id=int(r["task_id"]),
            queue=r["queue"],
            status=Status(r["status"]),
            attempts=int(r["attempts"]),
            created=r["created"],
            modified=r["modified"],
            run_after=r["run_after"],
            worker_id=r["worker_id"],
            parameters=r["parameters"] or "",
            priority=int(r["priority"]),
            title=r["title"],
            grouping=r["grouping"],
        )

    # -- cron schedules (docs/schedules.md) ----------------------------------

    def schedule_upsert(
        self,
        name: str,
        *,
        cron: str,
        timezone: str,
        queue: str,
        parameters: str,
        options: dict[str, object],
    ) -> None:
        """Make a schedule, or replace the one of that name (its paused state
        kept, and its next run unless the cron or zone changed)."""
        params = {
            "name": name,
            "cron": cron,
            "timezone": timezone,
            "queue": queue,
            "parameters": parameters,
            "next_run": _cron.next_tick(cron, timezone, self._db_now()),
            **options,
        }
        self._one("schedule_upsert", params)

    def schedule_delete(self, name: str) -> bool:
        """Remove a schedule; False if there was none."""
        return self._one("schedule_delete", {"name": name}) is not None

    def schedule_pause(self, name: str) -> bool:
        """Pause a schedule; False if there is none."""
        return self._one("schedule_pause", {"name": name}) is not None

    def schedule_resume(self, name: str) -> bool:
        """Resume a paused schedule from its next tick after now (and after
        the last tick it sent); False if there is none."""
        for _ in range(5):
            found = self.schedule_list(name)
            if not found:
                return False
            s = found[0]
            # Never a tick at or before the last one sent (a clock set back).
            after = max(self._db_now(), s.last_run or datetime.min.replace(tzinfo=UTC))
            params = {
                "name": name,
                "cron": s.cron,
                "timezone": s.timezone,
                "next_run": _cron.next_tick(s.cron, s.timezone, after),
            }
            if self._one("schedule_resume", params) is not None:
                return True
            # Its cron or zone changed since it was read: read it again.
        raise RuntimeError(f"schedule {name!r} changed under every try to resume it")

    def schedule_list(self, name: str | None = None) -> list[ScheduleInfo]:
        """Every schedule (or the one named), by name."""
        return [
            ScheduleInfo(
                name=r["name"],
                cron=r["cron"],
                timezone=r["timezone"],
                queue=r["queue"],
                data=_codec.decode(r["parameters"]),
                priority=int(r["priority"]),
                max_attempts=r["max_attempts"],
                title=r["title"],
                grouping=r["grouping"],
                remove_after=r["keep_for"],
                paused=bool(r["paused"]),
                next_run=r["next_run"],
                last_run=r["last_run"],
                last_task_id=r["last_task_id"],
                last_state=(
                    STATE_NAMES.get(Status(r["last_status"]))
                    if r["last_status"] is not None
                    else None
                ),
                created=r["created"],
                modified=r["modified"],
            )
            for r in self._all("schedule_list", {"name": name})
        ]

    def schedules_dispatch(
        self, *, now: datetime | None = None, conn: Connection[Any] | None = None
    ) -> int:
        """Send the task of every schedule whose tick has come, and advance
        each to its next tick after now, in one transaction under the
        housekeeping lock (nothing when another worker holds it); how many
        tasks were sent. Ticks missed while no worker ran are run once: one
        task, for the earliest. Each row is locked and checked again by
        schedule_fire, so a tick is sent once even when dispatchers race.

        :param now: the clock, for tests (None: the database's).
        """
        try:
            return self._dispatch(now, conn)
        except SchemaMissing as ex:
            if not self._warned_schedules:
                self._warned_schedules = True
                schedule_logger.warning("cron schedules are not dispatched: %s", ex)
            return 0

    def _dispatch(self, now: datetime | None, conn: Connection[Any] | None) -> int:
        sent = 0
        with ExitStack() as stack:
            if conn is None:
                conn = stack.enter_context(self.connector.connection())
            with self.connector.unit(conn):
                got = self._one("chore_lock", {"key": CHORE_LOCK_KEY}, conn)
                if not (got and got["got"]):
                    return 0
                params = {"now": now, "limit": SCHEDULES_PER_ROUND}
                for row in self._all("schedule_due", params, conn):
                    try:
                        following = _cron.next_tick(row["cron"], row["timezone"], row["now"])
                    except ValueError as ex:
                        # Only a row edited by hand can hold a bad expression or zone.
                        schedule_logger.error("schedule %s cannot run: %s", row["name"], ex)
                        continue
                    fire = {
                        "schedule_id": row["schedule_id"],
                        "tick": row["next_run"],
                        "cron": row["cron"],
                        "timezone": row["timezone"],
                        "next_run": following,
                        "now": now,
                    }
                    fired = self._one("schedule_fire", fire, conn)
                    task_id = fired["task_id"] if fired else None
                    if task_id:
                        sent += 1
                        schedule_logger.info(
                            "schedule %s: task %d sent for %s; next at %s",
                            row["name"],
                            task_id,
                            row["next_run"].isoformat(),
                            following.isoformat(),
                        )
        return sent

    def _db_now(self) -> datetime:
        """The database's clock (ticks are computed from it, as the dispatcher does)."""
        row = self._one("schedule_now", {})
        assert row is not None
        return row["now"]  # type: ignore[no-any-return]
