"""AsyncTaskWorker: the worker that runs an App's task functions."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from functools import partial
from typing import Any

from .. import _codec
from .._acompat import ARUNS_COROUTINES, arun_blocking
from .._convert import to_json
from .._taskdef import TaskDef, TaskTable
from ..errors import TaskNotHeld, TaskRejected
from ..logging import task_extra
from ..task import Task
from .worker import AsyncWorker

logger = logging.getLogger("job_machine.worker")


class AsyncTaskWorker(AsyncWorker):
    """Serves task functions: each task names its function (the payload's
    ``task`` key), which is called with the task's arguments; its return
    value is the reply, an exception it raises is the task's error (retried
    with backoff as with any worker, then :class:`~job_machine.TaskFailed`
    for the caller).

    Make one with :meth:`App.worker` (the sync face) or
    :meth:`App.async_worker` (asyncio) rather than directly. The asyncio one
    awaits coroutine functions on its event loop and runs plain functions in
    a thread each (``asyncio.to_thread``), so it serves a mix; the sync one
    runs plain functions only, and refuses a coroutine function when it is
    made.

    A task whose data names a function the worker does not know, or whose
    arguments do not fit the function, fails at once, without retries, with
    a :class:`~job_machine.TaskRejected` error saying why.

    :param tasks: the app's task functions.
    :param queue: the queues to serve (default: every queue of ``tasks``).
        Every function of ``tasks`` can run whichever queue its task came by.
    :param options: any other option of :class:`AsyncWorker` (``dsn``,
        ``pool``, ``concurrency``, ``retries``...).
    """

    def __init__(
        self,
        dsn: str | None = None,
        queue: str | Sequence[str] | None = None,
        *,
        tasks: TaskTable,
        **options: Any,
    ) -> None:
        if not ARUNS_COROUTINES:
            coroutines = [d.name for d in tasks if d.is_async]
            if coroutines:
                raise TypeError(
                    f"task function {coroutines[0]} is a coroutine function, which a sync Worker "
                    "cannot run: serve the app with app.async_worker() (job-machine worker "
                    "--app does so by itself when a function is async)"
                )
        #: The task functions served, by name.
        self.tasks = tasks
        if queue is None:
            queue = tasks.queues()
            if not queue:
                raise ValueError("the app has no task functions (decorate some with @app.task)")
        super().__init__(dsn, queue, **options)

    async def process(self, task: Task) -> None:
        """Call the function the task names and reply with what it returns."""
        try:
            taskdef, args, kwargs = self.tasks.resolve(task)
        except TaskRejected as ex:
            await self._reject(task, ex)
            return
        result = await self._call(taskdef, args, kwargs)
        await self.reply(to_json(result))

    async def _call(self, taskdef: TaskDef, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if taskdef.is_async:
            return await taskdef.fn(*args, **kwargs)
        return await arun_blocking(partial(taskdef.fn, *args, **kwargs))

    async def _reject(self, task: Task, ex: TaskRejected) -> None:
        """Fail the task now: no retry can make its data fit."""
        error = {
            "type": type(ex).__qualname__,
            "message": str(ex),
            "traceback": "".join(traceback.format_exception(ex)),
            "attempt": task.attempt,
        }
        text = _codec.encode(error, "error")
        if not await self._store.task_fail_now(task.id, task.attempt, text):
            raise TaskNotHeld(f"task {task.id} is no longer held by this worker")
        in_hand = self._in_hand.get()
        if in_hand is not None:
            in_hand.answered = True
        logger.error(
            "task %d failed without retries: %s",
            task.id,
            ex,
            extra=task_extra(task, self.worker_id),
        )
