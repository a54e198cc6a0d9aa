"""AsyncAdmin: look at the machine and act on tasks by hand (the CLI's engine)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from ..channels import validate_queue
from ..errors import SchemaMissing, UnknownTask
from ..task import STATE_NAMES, QueueStats, Status, TaskInfo, TaskSummary, WorkerInfo
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


class AsyncAdmin(AsyncConnectorOwner):
    """Operations for operators and dashboards: counts, listings, workers, and
    cancel / retry / remove / purge of tasks.

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

    async def stats(self) -> list[QueueStats]:
        """How many tasks each queue has in each state."""
        return await self._store.admin_stats()

    async def status_string(self) -> str:
        """One line for a terminal or a log: totals over all queues, e.g.
        ``W=12 D=3 R=2 done=1.23K F=4 workers=3``."""
        stats = await self.stats()
        workers = await self._store.admin_workers()

        def total(field: str) -> str:
            return _short(sum(getattr(q, field) for q in stats))

        return (
            f"W={total('waiting')} D={total('delayed')} R={total('running')} "
            f"done={total('done')} F={total('failed')} "
            f"workers={sum(1 for w in workers if w.alive)}"
        )

    async def list_tasks(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[TaskSummary]:
        """A page of tasks, newest first. For the next page pass the last id
        you got as ``before_id``; every page is an index range scan.

        :param state: ``"waiting"``, ``"running"``, ``"done"`` or ``"failed"``.
        :raises ValueError: an unknown state, a bad limit.
        """
        if state is not None and state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, not {state!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise ValueError(f"limit must be a whole number from 1 to 10000, not {limit!r}")
        return await self._store.admin_list_tasks(
            STATES[state] if state is not None else None,
            validate_queue(queue) if queue is not None else None,
            before_id,
            limit,
        )

    async def task_info(self, task_id: int) -> TaskInfo:
        """Everything about one task (see :meth:`AsyncClient.task_info`).

        :raises UnknownTask: there is no such task.
        """
        info = await self._store.task_info(task_id)
        if info is None:
            raise UnknownTask(f"there is no task {task_id}")
        return info

    async def cancel(self, task_id: int) -> None:
        """Cancel a waiting task: it fails with a ``Cancelled`` error and a
        waiting client is told.

        :raises UnknownTask: there is no such task.
        :raises ValueError: the task is not waiting (running, done or failed).
        """
        if not await self._store.admin_cancel(task_id):
            raise ValueError(
                f"task {task_id} is {await self._state(task_id)}: "
                "only a waiting task can be cancelled"
            )

    async def retry(self, task_id: int, queue: str | None = None) -> None:
        """Send a done or failed task again, with a fresh count of attempts,
        optionally to another queue.

        :raises UnknownTask: there is no such task.
        :raises ValueError: the task is waiting or running.
        """
        name = validate_queue(queue) if queue is not None else None
        if not await self._store.admin_retry(task_id, name):
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
        seconds, in batches of ``batch`` (no long lock). Returns how many."""
        if state not in PURGEABLE:
            raise ValueError(f"state must be one of {', '.join(PURGEABLE)}, not {state!r}")
        if (
            isinstance(older_than, bool)
            or not isinstance(older_than, int | float)
            or not older_than >= 0
        ):
            raise ValueError(f"older_than must be a number of seconds >= 0, not {older_than!r}")
        name = validate_queue(queue) if queue is not None else None
        removed = 0
        while True:
            n = await self._store.admin_purge(PURGEABLE[state], name, float(older_than), batch)
            removed += n
            if n < batch:
                return removed

    async def workers(self) -> list[WorkerInfo]:
        """The registered workers, whether each is alive, and what it runs."""
        return await self._store.admin_workers()

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


def _short(n: int) -> str:
    """12 -> "12", 1234 -> "1.23K", 5_600_000 -> "5.6M"."""
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "K")):
        if n >= size:
            return f"{n / size:.3g}{suffix}"
    return str(n)
