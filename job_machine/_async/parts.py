"""Parts of one worker's tasks that are sent together, written together.

A part (``send_part``) is one statement and one commit. A worker that runs
several tasks at once (``concurrency`` > 1) may have many of them streaming
at the same moment, and then the commits queue up on its connections. So
concurrent parts queue: whoever finds no write in progress becomes the
writer and writes every queued part in one statement (``part_insert_many``:
one commit, one notification per task), until the queue is empty; the
others wait to hear whether theirs was stored. A part alone (one task
streaming, the common case) pays a lock and its own statement, nothing more.

Each part is still fenced by its own attempt; the order of one task's parts
is kept, since a task's next part is sent only once its previous one is
written.
"""

from __future__ import annotations

import threading

from .._acompat import AWakeup, ashield
from .store import AsyncStore


class _Part:
    """One queued part and, once written, whether it was stored."""

    __slots__ = ("attempt", "data", "error", "seq", "stored", "task_id", "woken")

    def __init__(self, task_id: int, attempt: int, seq: int, data: str) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self.seq = seq
        self.data = data
        self.stored: bool | None = None
        self.error: BaseException | None = None
        self.woken = AWakeup()

    @property
    def done(self) -> bool:
        return self.stored is not None or self.error is not None


class AsyncPartGroup:
    """Writes a worker's concurrent parts together (see the module)."""

    def __init__(self, store: AsyncStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._queue: list[_Part] = []
        self._writing = False

    async def send(self, task_id: int, attempt: int, seq: int, data: str) -> bool:
        """Store part ``seq`` of a held task (encoded data); False when this
        attempt no longer holds the task (the part is refused)."""
        mine = _Part(task_id, attempt, seq, data)
        with self._lock:
            self._queue.append(mine)
        while not mine.done:
            with self._lock:
                lead = not self._writing
                if lead:
                    self._writing = True
            if lead:
                await self._write_queued()
                continue
            try:
                await mine.woken.wait(None)
            except BaseException:
                with self._lock:  # given up before its turn: never written
                    if mine in self._queue:
                        self._queue.remove(mine)
                raise
            mine.woken.clear()
        if mine.error is not None:
            raise mine.error
        return bool(mine.stored)

    async def _write_queued(self) -> None:
        """As the writer: write batches until the queue is empty, then hand
        the role back (waking a waiting part to take it, if one came late)."""
        try:
            while True:
                with self._lock:
                    batch, self._queue = self._queue, []
                    if not batch:
                        self._writing = False
                        return
                # Shielded: a writer cancelled mid-statement still finishes
                # the batch for the others in it.
                await ashield(self._write(batch))
        except BaseException:
            with self._lock:
                self._writing = False
                waiting = list(self._queue)
            for part in waiting[:1]:
                part.woken.set()  # someone must take over the queue
            raise

    async def _write(self, batch: list[_Part]) -> int:
        """Write a batch in one statement (a part alone: part_insert); how
        many parts were stored."""
        try:
            if len(batch) == 1:
                p = batch[0]
                ok = await self._store.part_insert(p.task_id, p.attempt, p.seq, p.data)
                stored = {(p.task_id, p.attempt, p.seq)} if ok else set()
            else:
                stored = await self._store.part_insert_many(
                    [(p.task_id, p.attempt, p.seq, p.data) for p in batch]
                )
        except Exception as ex:
            for p in batch:
                p.error = ex
        else:
            for p in batch:
                p.stored = (p.task_id, p.attempt, p.seq) in stored
        for p in batch:
            p.woken.set()
        return sum(1 for p in batch if p.stored)
