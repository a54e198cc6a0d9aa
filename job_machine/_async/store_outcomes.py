"""The Store's statements for how a task ends and what its client reads:
done marks, results and errors (jobmachine.result), answers, and the parts
a task streams (jobmachine.part)."""

from __future__ import annotations

from collections.abc import Sequence

from .. import _codec
from ..task import Part, Status, TaskEnd
from .store_base import Answer, AsyncStoreBase


class AsyncOutcomeStatements(AsyncStoreBase):
    """Ends, answers and parts of tasks."""

    async def task_finish(self, task_id: int, attempt: int, result: str, notify: bool) -> bool:
        """Store a result and mark the task done; False if this attempt no longer holds it."""
        params = {"task_id": task_id, "attempt": attempt, "result": result, "notify": notify}
        return await self._one("task_finish", params) is not None

    async def task_done(self, task_id: int, attempt: int) -> bool:
        """Mark the task done without a result; False if this attempt no longer holds it."""
        return await self._one("task_done", {"task_id": task_id, "attempt": attempt}) is not None

    async def task_done_many(self, tasks: Sequence[tuple[int, int]]) -> set[int]:
        """Mark held tasks ``(task_id, attempt)`` done; the ids this marked."""
        params = {"task_ids": [t for t, _ in tasks], "attempts": [a for _, a in tasks]}
        return {int(r["task_id"]) for r in await self._all("task_done_many", params)}

    async def task_complete_many(self, ends: Sequence[TaskEnd], retries: int) -> dict[int, Status]:
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
        rows = await self._all("task_complete_many", params)
        return {int(r["task_id"]): Status(r["status"]) for r in rows}

    async def result_insert_error(self, task_id: int, attempt: int, result: str) -> bool:
        """Store an error result, status unchanged; False if this attempt no longer holds it."""
        params = {"task_id": task_id, "attempt": attempt, "result": result}
        return await self._one("result_insert_error", params) is not None

    async def task_fail_attempt(
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
        row = await self._one("task_fail_attempt", params)
        return None if row is None else Status(row["status"])

    async def task_fail_now(self, task_id: int, attempt: int, error: str) -> bool:
        """Store the error and fail the task without retrying; False if this
        attempt no longer holds it."""
        params = {"task_id": task_id, "attempt": attempt, "result": error}
        return await self._one("task_fail_now", params) is not None

    async def task_answer(self, task_id: int) -> Answer | None:
        """Status, newest reply and newest error of a task; None if there is no such task."""
        row = await self._one("task_answer", {"task_id": task_id})
        if row is None:
            return None
        return Answer(Status(row["status"]), row["reply"], row["error"])

    async def task_answers(self, task_ids: Sequence[int]) -> dict[int, Answer]:
        """:meth:`task_answer` of several tasks; a task missing does not exist."""
        rows = await self._all("task_answers", {"task_ids": list(task_ids)})
        return {
            int(r["task_id"]): Answer(Status(r["status"]), r["reply"], r["error"]) for r in rows
        }

    async def task_answered(self, task_id: int) -> bool | None:
        """Whether the task has a reply or has finished; None if there is no such task."""
        row = await self._one("task_answered", {"task_id": task_id})
        return None if row is None else bool(row["answered"])

    async def part_insert(self, task_id: int, attempt: int, seq: int, data: str) -> bool:
        """Store part ``seq`` of a held task and notify ``jmr:<task_id>``
        ('part'); False if this attempt no longer holds it."""
        params = {"task_id": task_id, "attempt": attempt, "seq": seq, "data": data}
        return await self._one("part_insert", params) is not None

    async def part_insert_many(
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
        rows = await self._all("part_insert_many", params)
        return {(int(r["task_id"]), int(r["attempt"]), int(r["seq"])) for r in rows}

    async def part_read(
        self, task_id: int, attempt: int, seq: int, limit: int
    ) -> tuple[Answer, int, list[Part]] | None:
        """In one snapshot: the task's answer, its current attempt, and up to
        ``limit`` parts of that attempt in order (from ``seq`` on if it is
        ``attempt``, else from the first); None if there is no such task."""
        params = {"task_id": task_id, "attempt": attempt, "seq": seq, "limit": limit}
        row = await self._one("part_read", params)
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
