# DO NOT EDIT: generated from job_machine/_async/housekeeper.py by tools/async_to_sync.py.
# Change the async source and run `python tools/async_to_sync.py`.
"""The fleet's housekeeping: what one round does, in which order, in which
transactions.

A round is a few small units, each one or a few of the Store's statements
(store_housekeeping.py):

1. under the housekeeping lock, in one transaction (the unit of work that
   decides which tasks wait again): rescue dead workers' tasks
   (:meth:`~Housekeeper.rescue_dead_workers`), give up on tasks past
   their max_runtime (:meth:`~Housekeeper.give_up`), revive orphans
   (:meth:`~Housekeeper.revive_orphans`), fail expired tasks
   (:meth:`~Housekeeper.expire`);
2. retention (:meth:`~Housekeeper.remove_finished`) and queue pruning
   (:meth:`~Housekeeper.prune_queues`): bounded batches, each its own
   short transaction, so neither a long lock nor one huge delete;
3. the cron schedules whose tick has come
   (:meth:`~Housekeeper.dispatch_schedules`).

:meth:`Housekeeper.run` runs a round and logs what it did; the fleet's
housekeeper (liveness.py) and ``Worker.housekeeping()`` call it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime
from typing import Any

from psycopg import Connection

from .store import ChoreCounts, Store

logger = logging.getLogger("job_machine.housekeeping")


class Housekeeper:
    """Runs housekeeping rounds through a Store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def run(
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
        """One round of housekeeping, unless another worker is doing it right
        now (``ran`` is False then): rescue dead workers' tasks, give up on
        tasks past their ``max_runtime``, and with ``cleanup`` also revive
        unowned tasks untouched for their ``orphan_after``, in one
        transaction; then remove finished tasks whose time has come, in
        batches of ``remove_limit`` (at most ``max_batches`` a round, the rest
        next round), and queues empty and unused for a day. Each task is
        judged by the policy its claiming worker stamped on it; the settings
        given here (``retries``, ``max_runtime``, ``orphan_after``,
        ``remove_after_days``, and ``grace`` for workers) apply only where it
        has none: tasks claimed by Perl Job::Machine or an older job_machine,
        finished tasks no worker claimed (cancelled, failed with a parent).
        Without ``reap`` dead workers are not judged this round (the judge
        itself has not been connected long enough to tell an outage from
        deaths). Every round also fails up to ``expire_limit`` waiting tasks
        whose ``expires_at`` has passed, and sends the tasks of the cron
        schedules whose tick has come.

        :param now: the clock, for tests (None: the database's).
        :param conn: run on this connection (the registry session of the
            fleet's housekeeper) instead of taking one.
        """
        store = self.store
        with ExitStack() as stack:
            if conn is None:
                conn = stack.enter_context(store.connector.connection())
            with store.connector.unit(conn):
                if not store.on(conn).chore_lock():
                    return ChoreCounts(ran=False)
                reaped, revived, failed, in_outage = 0, 0, 0, False
                if reap:
                    reaped, revived, failed, in_outage = self.rescue_dead_workers(
                        conn, grace=grace, retries=retries, outage=outage, now=now
                    )
                waiting, given_up = self.give_up(
                    conn, max_runtime=max_runtime, retries=retries, now=now
                )
                revived, failed = revived + waiting, failed + given_up
                if cleanup:
                    waiting, given_up = self.revive_orphans(
                        conn, orphan_after=orphan_after, retries=retries, now=now
                    )
                    revived, failed = revived + waiting, failed + given_up
                expired = self.expire(conn, limit=expire_limit, now=now)
            removed = pruned = 0
            if cleanup:
                removed = self.remove_finished(
                    conn,
                    remove_after_days=remove_after_days,
                    limit=remove_limit,
                    max_batches=max_batches,
                    now=now,
                )
                pruned = self.prune_queues(conn, now=now)
            scheduled = self.dispatch_schedules(conn, now=now)
        counts = ChoreCounts(
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
        log_round(counts)
        return counts

    # -- the units, in the order of a round ---------------------------------

    def rescue_dead_workers(
        self,
        conn: Connection[Any],
        *,
        grace: float,
        retries: int,
        outage: bool,
        now: datetime | None,
    ) -> tuple[int, int, int, bool]:
        """Remove dead workers and rescue their started tasks: (workers
        removed, tasks put back to waiting, tasks failed, whether it was
        judged an outage). See :meth:`Store.worker_reap`."""
        return self.store.on(conn).worker_reap(grace=grace, retries=retries, now=now, outage=outage)

    def give_up(
        self,
        conn: Connection[Any],
        *,
        max_runtime: float | None,
        retries: int,
        now: datetime | None,
    ) -> tuple[int, int]:
        """Give up on a live worker's tasks past their max_runtime: (tasks
        put back to waiting, tasks failed)."""
        return self.store.on(conn).task_give_up(max_runtime=max_runtime, retries=retries, now=now)

    def revive_orphans(
        self,
        conn: Connection[Any],
        *,
        orphan_after: float,
        retries: int,
        now: datetime | None,
    ) -> tuple[int, int]:
        """Put back to waiting the started tasks no job_machine worker holds,
        untouched for their orphan_after: (tasks put back to waiting, tasks
        failed)."""
        return self.store.on(conn).task_revive(orphan_after=orphan_after, retries=retries, now=now)

    def expire(self, conn: Connection[Any], *, limit: int, now: datetime | None) -> int:
        """Fail up to ``limit`` tasks whose deadline passed before they
        started; how many. Every round, so that a client waiting on an
        expired task hears of it within a heartbeat."""
        return self.store.on(conn).task_expire(limit=limit, now=now)

    def remove_finished(
        self,
        conn: Connection[Any],
        *,
        remove_after_days: float,
        limit: int,
        max_batches: int,
        now: datetime | None,
    ) -> int:
        """Retention: delete finished tasks whose time has come, in batches of
        ``limit``, each its own short transaction, at most ``max_batches``
        (the rest next round); how many."""
        return self._in_batches(
            conn,
            lambda: self.store.on(conn).task_remove_old(
                remove_after_days=remove_after_days, limit=limit, now=now
            ),
            limit=limit,
            max_batches=max_batches,
        )

    def prune_queues(
        self,
        conn: Connection[Any],
        *,
        limit: int = 1000,
        max_batches: int = 50,
        now: datetime | None,
    ) -> int:
        """Remove queues without a task, not paused, and neither created nor
        paused or resumed for a day (store.QUEUE_PRUNE_AFTER), in batches of
        ``limit``, each its own short transaction; how many."""
        return self._in_batches(
            conn,
            lambda: self.store.on(conn).queue_prune(limit=limit, now=now),
            limit=limit,
            max_batches=max_batches,
        )

    def dispatch_schedules(self, conn: Connection[Any], *, now: datetime | None) -> int:
        """Send the tasks of the cron schedules whose tick has come (in a
        transaction of their own, under the housekeeping lock); how many."""
        return self.store.on(conn).schedules_dispatch(now=now)

    def _in_batches(
        self,
        conn: Connection[Any],
        batch: Callable[[], int],
        *,
        limit: int,
        max_batches: int,
    ) -> int:
        """Run ``batch`` (it removes up to ``limit`` rows, and says how many)
        in a transaction of its own, again while it removes ``limit``, at most
        ``max_batches`` times; how many it removed in all."""
        done = 0
        for _ in range(max_batches):
            with self.store.connector.unit(conn):
                n = batch()
            done += n
            if n < limit:
                break
        return done


def log_round(counts: ChoreCounts) -> None:
    """Log what a round did, when it changed a task or a worker."""
    if counts.reaped or counts.revived or counts.failed or counts.removed:
        logger.info(
            "housekeeping: %d dead worker(s) reaped, %d task(s) back to waiting, "
            "%d failed, %d removed",
            counts.reaped,
            counts.revived,
            counts.failed,
            counts.removed,
        )
