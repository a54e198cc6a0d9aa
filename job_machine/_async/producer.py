"""The producer room: claiming tasks, and the tasks a worker claimed ahead.

A claim takes as many tasks as the prefetch budget allows (what the
worker's slots get through in ``prefetch_seconds``, see
:class:`~job_machine._prefetch.PrefetchBudget`); the ones not started at
once wait here, in claim order, and are handed to the slots or run one by
one. A new claim is made only when none is left: a claimed task is never
dropped for a newer claim. On a stop, the ones not started are handed back
as never claimed; after a lost connection, the tasks a claim may have taken
without the worker seeing them are handed back (:meth:`AsyncProducer.release_lost`).
When the queues gave nothing, :meth:`AsyncProducer.idle_wait` says how long
to sleep.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from .._prefetch import PrefetchBudget
from ..task import Task
from .store import AsyncStore

logger = logging.getLogger("job_machine.worker")

#: What one claim returns: the tasks claimed, best first.
Claimed = list[Task]

#: Most doublings of the short sleep while a due task's row is locked:
#: 10 ms doubling to 1.28 s.
LOCKED_POLLS_MAX = 8


class AsyncProducer:
    """Claims for one worker and holds what it claimed ahead.

    :param claim: the worker's claim of up to ``limit`` tasks.
    :param settings: the worker's current ``(prefetch, prefetch_seconds,
        concurrency)``, read at each claim.
    """

    def __init__(
        self,
        store: AsyncStore,
        *,
        claim: Callable[[int], Awaitable[Claimed]],
        settings: Callable[[], tuple[int, float, int]],
    ) -> None:
        self._store = store
        self._claim = claim
        self._settings = settings
        #: Tasks claimed ahead and not started yet, in claim order.
        self.ahead: list[Task] = []
        #: When the tasks in :attr:`ahead` were claimed (time.monotonic()).
        self.since = 0.0
        #: The average run time, which decides how many to claim.
        self.budget = PrefetchBudget()
        #: Sleeps in a row cut short because a due task was locked.
        self._locked_polls = 0

    def batch_size(self) -> int:
        """How many tasks to claim at once (see PrefetchBudget)."""
        prefetch, seconds, concurrency = self._settings()
        return self.budget.batch_size(prefetch, seconds, concurrency)

    def must_reclaim(self, waited: float) -> bool:
        """Whether a task that waited ``waited`` seconds here is claimed again
        before it runs (see PrefetchBudget.must_reclaim)."""
        return self.budget.must_reclaim(waited, self._settings()[1])

    async def fill(self, minimum: int = 1) -> bool:
        """Claim, unless tasks claimed before are still here (never over
        them: a statement that failed mid-batch leaves them, to run next),
        at least ``minimum`` and as many as the budget allows. Whether the
        claim came back short (the queues have no more now)."""
        if self.ahead:
            return False
        limit = max(minimum, self.batch_size())
        self.ahead = await self._claim(limit)
        self.since = time.monotonic()
        return len(self.ahead) < limit

    def take(self, n: int) -> tuple[list[Task], float]:
        """The next ``n`` tasks (fewer when fewer are here) and how long
        they waited since their claim."""
        taken, self.ahead = self.ahead[:n], self.ahead[n:]
        return taken, time.monotonic() - self.since

    def ids(self) -> list[int]:
        """The ids of the tasks held here."""
        return [t.id for t in self.ahead]

    def forget(self) -> list[int]:
        """Let go of the tasks held here (whoever hands them back); their ids."""
        ids, self.ahead = self.ids(), []
        return ids

    async def give_back(self, worker_id: int | None) -> None:
        """Hand the tasks held here back as never claimed (a stop). They are
        forgotten only once handed back: if that fails, they stay for the
        worker's final hand-back."""
        if self.ahead and worker_id is not None:
            await self._store.task_unclaim(self.ids(), worker_id)
        self.ahead = []

    async def release_lost(self, worker_id: int | None, keep: list[int]) -> None:
        """After a lost connection: a claim may have committed while its
        answer was lost, leaving a task started by this worker that it never
        saw. Hand back every task the worker holds but ``keep`` (the tasks
        in hand, or finished with their end not written yet) and those
        claimed ahead here (known, so processed next)."""
        if worker_id is None:
            return
        released = await self._store.task_release_held(worker_id, keep + self.ids())
        if released:
            logger.warning(
                "worker %s: handed back %d task(s) whose claim was lost with the connection",
                worker_id,
                released,
            )

    def idle_wait(self, due: float | None, timeout: float) -> float:
        """How long to sleep when the queues gave nothing, given when the
        next task falls ``due`` (seconds; None: none waits): until then, or
        ``timeout``. A task due already was skipped by the claim because a
        transaction held its row: look again soon, backing off (10 ms
        doubling to 1.28 s) while that transaction stays open."""
        if due is None or due > 0:
            self._locked_polls = 0
            return timeout if due is None else min(timeout, due + 0.005)
        self._locked_polls = min(self._locked_polls + 1, LOCKED_POLLS_MAX)
        return min(timeout, 0.005 * 2.0**self._locked_polls)
