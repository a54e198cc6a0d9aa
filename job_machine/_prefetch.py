"""The worker's prefetch budget: how many tasks to claim in one statement,
and when a task claimed ahead must be claimed again before it runs.

Pure policy, neither sync nor async, so one hand-written module serves both
worker faces and unit tests need no database (tests/unit/test_prefetch_budget.py).
"""

from __future__ import annotations

#: A task claimed ahead that waited this many times ``prefetch_seconds`` in
#: the worker is claimed again before it runs (see :meth:`PrefetchBudget.must_reclaim`).
BUFFER_SLACK = 2.0


class PrefetchBudget:
    """Claims as many tasks as the worker's slots get through in
    ``prefetch_seconds`` by the average run time of its tasks so far, at most
    ``prefetch``: with one slot and the defaults (100, 0.2 s), a hundred
    tasks of a millisecond, ten of 20 ms, long tasks one by one."""

    def __init__(self) -> None:
        #: Moving average of process() time in seconds; None until a task ran.
        self.avg_runtime: float | None = None

    def note(self, took: float) -> None:
        """Count one task's run time into the average."""
        # A moving average; from several threads at once a lost update only
        # drops one sample.
        avg = self.avg_runtime
        self.avg_runtime = took if avg is None else 0.8 * avg + 0.2 * took

    def batch_size(self, prefetch: int, prefetch_seconds: float, concurrency: int = 1) -> int:
        """How many tasks to claim at once: what ``concurrency`` slots get
        through in ``prefetch_seconds`` by the average run time (one until a
        task has run), at least one, at most ``prefetch``."""
        avg = self.avg_runtime
        if avg is None:
            return 1
        fits = prefetch_seconds * concurrency / avg if avg > 0 else prefetch
        return max(1, min(prefetch, int(fits)))

    @staticmethod
    def must_reclaim(waited: float, prefetch_seconds: float) -> bool:
        """Whether a task claimed ``waited`` seconds ago must be claimed again
        before it runs: it waited in the worker longer than a batch is meant
        to last (``BUFFER_SLACK * prefetch_seconds``), so it may have been
        given up or revived meanwhile, and its ``max_runtime`` clock must
        start now. One that waited less runs at once: its clock started at
        most that long before process()."""
        return waited >= BUFFER_SLACK * prefetch_seconds
