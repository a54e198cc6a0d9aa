"""The Store's statements for administration: statistics, listing and
searching tasks, cancel, retry, remove and purge, pausing queues and their
fleet-wide limits, commands to workers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import DatabaseError
from ..task import (
    HourStats,
    LockInfo,
    QueueLimit,
    QueueStats,
    Status,
    TaskSummary,
    WorkerInfo,
)
from .store_tasks import AsyncTaskStatements

#: The SQLSTATE of a unique index refusing a row (a retry whose unique key
#: another task holds).
_UNIQUE_VIOLATION = "23505"


class AsyncAdminStatements(AsyncTaskStatements):
    """What Admin, the CLI and the dashboard read and do (on top of the
    task statements: a retry refused for its unique key reads the task)."""

    async def admin_stats(self) -> list[QueueStats]:
        """Counts of the tasks that are not done, by queue and state."""
        return [QueueStats(**r) for r in await self._all("admin_stats", {}, prepare=False)]

    async def admin_done(self, exact_below: int = 100_000) -> tuple[int, bool]:
        """How many done tasks there are, and whether that is an estimate."""
        row = await self._one("admin_done_estimate", {})
        rows = int(row["rows"]) if row else -1
        if 0 <= rows < exact_below or rows < 0:
            exact = await self._one("admin_done_count", {})
            assert exact is not None
            return int(exact["done"]), False
        return rows, True

    async def admin_oldest_waiting(self) -> dict[str, float]:
        """Per queue with due tasks, the seconds its oldest due task has waited."""
        rows = await self._all("admin_oldest_waiting", {}, prepare=False)
        return {r["queue"]: max(0.0, float(r["age"])) for r in rows}

    async def admin_history(self) -> list[HourStats]:
        """Done and failed tasks per hour, over the last 24 hours."""
        return [HourStats(**r) for r in await self._all("admin_history", {}, prepare=False)]

    async def admin_list_tasks(
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
        rows = await self._all("admin_list_tasks", params, prepare=False)
        return [self._task_summary(r) for r in rows]

    async def admin_search_tasks(
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
        rows = await self._all("admin_search_tasks", params, prepare=False)
        edge = next((int(r["task_id"]) for r in rows if r["n"] == scan), None)
        return [self._task_summary(r) for r in rows if r["hit"]], edge

    async def admin_task_page(
        self,
        task_id: int,
        *,
        max_text: int,
        max_label: int,
        max_parents: int,
        children_after: int,
        children: int,
    ) -> dict[str, Any] | None:
        """The row of one task for the dashboard's task page, every value cut
        to the bounds given (web/task_page.py reads it); None if there is none."""
        params = {
            "task_id": task_id,
            "max_text": max_text,
            "max_label": max_label,
            "max_parents": max_parents,
            "children_after": children_after,
            "children": children,
        }
        return await self._one("admin_task_page", params)

    async def admin_task_page_results(
        self, task_id: int, *, errors: bool, before: int, max_text: int, limit: int
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` results (or errors) of a task below the result id
        ``before``, newest first, each cut at ``max_text`` characters."""
        params = {
            "task_id": task_id,
            "errors": errors,
            "before": before,
            "max_text": max_text,
            "limit": limit,
        }
        return await self._all("admin_task_page_results", params)

    async def admin_result_text(self, task_id: int, result_id: int, max_raw: int) -> str | None:
        """The text of one result or error of a task (at most ``max_raw``
        characters); None if the task has no such result."""
        params = {"task_id": task_id, "result_id": result_id, "max_raw": max_raw}
        row = await self._one("admin_result_text", params)
        return None if row is None else str(row["result"] or "")

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

    async def admin_task_states(self, ids: Sequence[int]) -> dict[int, Status]:
        """The status of each of ``ids`` that exists."""
        rows = await self._all("admin_task_states", {"ids": list(ids)})
        return {int(r["task_id"]): Status(r["status"]) for r in rows}

    async def admin_locks(self) -> list[LockInfo]:
        """The holds of each named lock."""
        return [LockInfo(**r) for r in await self._all("admin_locks", {})]

    async def admin_cancel(self, task_id: int) -> bool:
        """Fail a waiting, blocked or running task as cancelled (telling the
        worker holding it); False if it had finished (or does not exist)."""
        return await self._one("admin_cancel", {"task_id": task_id}) is not None

    async def admin_retry(self, task_id: int, queue: str | None, priority: int | None) -> bool:
        """Make a finished task wait again; False if it was not finished.

        :raises ValueError: another task holds its unique key.
        """
        params = {"task_id": task_id, "queue": queue, "priority": priority}
        try:
            return await self._one("admin_retry", params) is not None
        except DatabaseError as ex:
            if ex.sqlstate != _UNIQUE_VIOLATION:
                raise
            info = await self.task_info(task_id)
            holder = None
            if info is not None and info.unique_key is not None:
                holder = await self._one(
                    "task_unique_holder",
                    {"queue": queue or info.queue, "unique_key": info.unique_key},
                )
            which = f"task {holder['task_id']}" if holder else "another task"
            raise ValueError(
                f"task {task_id} cannot be retried: {which} holds its unique key "
                f"{info.unique_key if info else None!r} (waiting, blocked or running)"
            ) from None

    async def admin_remove(self, task_id: int) -> bool:
        """Delete a task that is not running; False if there was none to delete."""
        return await self._one("admin_remove", {"task_id": task_id}) is not None

    async def admin_reset(self) -> dict[str, int]:
        """Delete every task, named lock and cron schedule in one
        transaction; how many of each (``tasks``, ``locks``, ``schedules``)."""
        rows = await self._all("admin_reset", {})
        return {row["what"]: int(row["removed"]) for row in rows}

    async def admin_purge(
        self, statuses: Sequence[Status], queue: str | None, older_than: float, limit: int
    ) -> int:
        """Delete one batch of finished tasks; how many."""
        params = {
            "statuses": [int(s) for s in statuses],
            "queue": queue,
            "older_than": older_than,
            "limit": limit,
        }
        return len(await self._all("admin_purge", params))

    async def admin_pause(self, queue: str, paused: bool) -> bool:
        """Pause or resume a queue; False if there is no such queue."""
        return await self._one("admin_pause", {"queue": queue, "paused": paused}) is not None

    async def admin_limits_set(
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
        await self._all("admin_limits_set", params)

    async def admin_limits_clear(self, queue: str) -> bool:
        """Remove a queue's limits; False when it had none."""
        return bool(await self._all("admin_limits_clear", {"queue": queue}))

    async def admin_limits(self) -> list[QueueLimit]:
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
            for r in await self._all("admin_limits", {})
        ]

    async def admin_worker_command(self, command: str | None, worker_id: int | None) -> int:
        """Leave a command for one worker (or all); how many got it."""
        params = {"command": command, "worker_id": worker_id}
        return len(await self._all("admin_worker_command", params))

    async def admin_broadcast(
        self, command: str, args: str | None, worker_ids: Sequence[int] | None
    ) -> int:
        """Leave a command for the workers named (None: every registered
        one); how many got it."""
        params = {
            "command": command,
            "args": args,
            "worker_ids": None if worker_ids is None else list(worker_ids),
        }
        return len(await self._all("admin_broadcast", params))

    async def admin_workers(self, seen_within: float = 15.0) -> list[WorkerInfo]:
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
            for r in await self._all("admin_workers", {"seen_within": seen_within})
        ]
