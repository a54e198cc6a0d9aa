"""The slots room: the tasks a worker with ``concurrency`` > 1 runs at once.

Each task runs as an asyncio task (``AsyncWorker``) or on a task thread
(``Worker``); the slots keep them by task id until they end, so the worker
knows how many slots are free, which tasks are in hand (they are kept on a
reconnect's hand-back), and what a graceful stop must wait for.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable

from .._acompat import AHandle, ajoin_all, aspawn


class AsyncSlots:
    """The tasks running at once, by task id. Thread-safe: a sync worker's
    task threads free their slot as they end."""

    def __init__(self) -> None:
        #: The running tasks by task id (read it for a snapshot only).
        self.running: dict[int, AHandle] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.running)

    def free(self, concurrency: int) -> int:
        """How many of ``concurrency`` slots are free (0 or fewer: none)."""
        return concurrency - len(self.running)

    def ids(self) -> list[int]:
        """The ids of the tasks running."""
        with self._lock:
            return list(self.running)

    def start(
        self,
        task_id: int,
        run: Callable[[], Awaitable[None]],
        finished: Callable[[], None],
    ) -> None:
        """Run ``run()`` in a slot of its own; its slot frees as it ends (before
        ``finished`` is called)."""

        async def in_slot() -> None:
            try:
                await run()
            finally:
                with self._lock:
                    self.running.pop(task_id, None)

        # Held while spawning: a thread that finishes at once must not
        # remove its entry before it is there (it would stay forever).
        with self._lock:
            self.running[task_id] = aspawn(in_slot, finished)

    async def join(self, timeout: float | None = None) -> bool:
        """Wait until every task running now has ended (True), or ``timeout``
        seconds have passed (False)."""
        with self._lock:
            handles = list(self.running.values())
        return await ajoin_all(handles, timeout)
