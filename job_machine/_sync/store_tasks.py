# DO NOT EDIT: generated from job_machine/_async/store_tasks.py by tools/async_to_sync.py.
# Change the async source and run `python tools/async_to_sync.py`.
"""The Store's statements that send and claim tasks, and read one task
whole: jobmachine.task and its class (queue) rows."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .. import _codec
from .._worker_config import TaskPolicy
from ..errors import UnknownTask
from ..task import Task, TaskInfo
from .connection import Connector
from .store_base import StoreBase

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

#: Seconds after which a claim looks again whether its queues have
#: fleet-wide limits (queue_limited): a limit set on a queue is honoured at
#: once, but a worker busy with other queues claims the limited queue's
#: tasks only once it has noticed (docs/limits.md).
LIMITS_RECHECK = 1.0
#: The same after a claim that came back short (the worker is about to
#: wait): soon, not at every claim of a worker that gets one task at a time.
LIMITS_RECHECK_SHORT = 0.2


class TaskStatements(StoreBase):
    """Sending, claiming and reading tasks."""

    def __init__(self, connector: Connector) -> None:
        super().__init__(connector)
        #: Per list of queues claimed from: whether one of them had limits
        #: when last looked up, and when (time.monotonic()).
        self._limits_known: dict[tuple[str, ...], tuple[bool, float]] = {}

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

    def task_begin(self, task_id: int, attempt: int) -> bool:
        """Restart the clock of a task claimed ahead, about to run; False if
        this attempt no longer holds it (given up or revived meanwhile)."""
        return self._one("task_begin", {"task_id": task_id, "attempt": attempt}) is not None

    def task_next_due(self, queues: Sequence[str], min_priority: int | None = None) -> float | None:
        """Seconds until the next claimable task of ``queues`` is due, 0.0 if
        one is due now; None if none is waiting."""
        params = {
            "queues": list(queues),
            "min_priority": -(2**31) if min_priority is None else min_priority,
        }
        row = self._one("task_next_due", params)
        return None if row is None or row["wait"] is None else max(0.0, float(row["wait"]))

    def queue_names(self) -> list[str]:
        """Every known queue name."""
        return [r["name"] for r in self._all("queue_names", {})]

    def task_info(self, task_id: int) -> TaskInfo | None:
        """Everything about a task; None if there is no such task."""
        row = self._one("task_info", {"task_id": task_id})
        if row is None:
            return None
        return TaskInfo.from_row(
            row,
            data=_codec.decode(row["parameters"]),
            notes=_codec.decode(row["notes"]) or {},
            errors=[_codec.decode(e) for e in row["errors"]],
            results=[_codec.decode(r) for r in row["results"]],
            children=[int(c) for c in row["children"]],
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
