"""The Store's statements of the fleet's housekeeping, one method per
statement: the chore lock, reaping dead workers, giving up, reviving,
expiring, and one batch each of retention and of queue pruning. The
policy (which run, in which transactions, how many batches) is the
housekeeper's (housekeeper.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .._lock_keys import CHORE_LOCK_KEY
from ..task import Status
from .store_base import AsyncStoreBase

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


def _ends(rows: list[dict[str, Any]]) -> tuple[int, int]:
    """(tasks put back to waiting, tasks failed) of rows that carry a status."""
    waiting = sum(1 for r in rows if r["status"] == Status.WAITING)
    return waiting, sum(1 for r in rows if r["status"] == Status.FAILED)


class AsyncHousekeepingStatements(AsyncStoreBase):
    """The statements of a housekeeping round."""

    async def chore_lock(self) -> bool:
        """Take the housekeeping lock for the transaction open on this
        Store's session (a Store from ``on(conn)``);
        False when another session holds it (a round runs elsewhere)."""
        got = await self._one("chore_lock", {"key": CHORE_LOCK_KEY})
        return bool(got and got["got"])

    async def worker_reap(
        self,
        *,
        grace: float,
        retries: int,
        worker_id: int | None = None,
        now: datetime | None = None,
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
        rows = await self._all("worker_reap", params)
        workers = sum(1 for r in rows if r["task_id"] is None and r["worker_id"] is not None)
        failed = sum(1 for r in rows if r["status"] == Status.FAILED)
        revived = sum(1 for r in rows if r["status"] == Status.WAITING)
        return workers, revived, failed, any(r["outage"] for r in rows)

    async def task_give_up(
        self,
        *,
        max_runtime: float | None,
        retries: int,
        now: datetime | None = None,
    ) -> tuple[int, int]:
        """Give up on a live worker's tasks started longer ago than their
        own max_runtime (else ``max_runtime``; None: never), as if the
        attempt had raised: (tasks put back to waiting, tasks failed)."""
        params = {"max_runtime": max_runtime, "retries": retries, "now": now}
        return _ends(await self._all("task_give_up", params))

    async def task_revive(
        self,
        *,
        orphan_after: float,
        retries: int,
        now: datetime | None = None,
    ) -> tuple[int, int]:
        """Put back to waiting (or fail, out of attempts) the started tasks
        no job_machine worker holds, untouched for their own orphan_after
        (else ``orphan_after``): (tasks put back to waiting, tasks failed)."""
        params = {"orphan_after": orphan_after, "retries": retries, "now": now}
        return _ends(await self._all("task_revive", params))

    async def task_expire(self, *, limit: int, now: datetime | None = None) -> int:
        """Fail up to ``limit`` waiting or blocked tasks whose expires_at has
        passed; how many."""
        return len(await self._all("task_expire", {"now": now, "limit": limit}))

    async def task_remove_old(
        self,
        *,
        remove_after_days: float,
        limit: int,
        now: datetime | None = None,
    ) -> int:
        """Delete one batch of up to ``limit`` finished tasks whose time has
        come (their own retention, else ``remove_after_days`` after they
        finished); how many."""
        params = {"remove_after_days": remove_after_days, "limit": limit, "now": now}
        return len(await self._all("task_remove_old", params))

    async def queue_prune(
        self,
        *,
        older_than: float = QUEUE_PRUNE_AFTER,
        limit: int,
        now: datetime | None = None,
    ) -> int:
        """Remove one batch of up to ``limit`` queues without a task, not
        paused, created and last paused or resumed more than ``older_than``
        seconds ago; how many. A send to a removed queue creates it again."""
        params = {"older_than": older_than, "limit": limit, "now": now}
        return len(await self._all("queue_prune", params))
