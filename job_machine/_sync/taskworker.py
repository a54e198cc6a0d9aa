# DO NOT EDIT: generated from job_machine/_async/taskworker.py by tools/async_to_sync.py.
# Change the async source and run `python tools/async_to_sync.py`.
"""TaskWorker: the worker that runs an App's task functions."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Generator, Sequence
from functools import partial
from typing import Any

from .. import _codec, _cron
from .._acompat import RUNS_COROUTINES, run_blocking
from .._convert import to_json
from .._db_errors import INSUFFICIENT_PRIVILEGE
from .._taskdef import TaskDef, TaskTable
from ..channels import Exact
from ..errors import DatabaseError, TaskNotHeld, TaskRejected
from ..logging import task_extra
from ..task import Task
from .worker import Worker

logger = logging.getLogger("job_machine.worker")


class TaskWorker(Worker):
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

    When it starts, it registers the app's cron schedules
    (``@app.task(cron=...)``, docs/schedules.md), idempotently; a role that
    may not define schedules (``jobmachine_worker``) logs a warning and
    serves all the same. A subclass that overrides :meth:`startup` calls
    ``super().startup()``.

    :param tasks: the app's task functions.
    :param schedules: the app's cron schedules, registered at start.
    :param queue: the queues to serve (default: every queue of ``tasks``).
        Every function of ``tasks`` can run whichever queue its task came by.
    :param options: any other option of :class:`Worker` (``dsn``,
        ``pool``, ``concurrency``, ``retries``...).
    """

    def __init__(
        self,
        dsn: str | None = None,
        queue: str | Sequence[str] | None = None,
        *,
        tasks: TaskTable,
        schedules: Sequence[_cron.ScheduleSpec] = (),
        **options: Any,
    ) -> None:
        if not RUNS_COROUTINES:
            coroutines = [d.name for d in tasks if d.is_async]
            if coroutines:
                raise TypeError(
                    f"task function {coroutines[0]} is a coroutine function, which a sync Worker "
                    "cannot run: serve the app with app.async_worker() (job-machine worker "
                    "--app does so by itself when a function is async)"
                )
        #: The task functions served, by name.
        self.tasks = tasks
        #: The cron schedules registered when the worker starts.
        self.schedules = list(schedules)
        if queue is None:
            # The functions' queues by name: one named "reports.*" is no pattern.
            queue = [Exact(q) for q in tasks.queues()]
            if not queue:
                raise ValueError("the app has no task functions (decorate some with @app.task)")
        super().__init__(dsn, queue, **options)

    def startup(self) -> None:
        """Register the app's cron schedules (idempotently: an unchanged
        schedule is not written, a paused one stays paused)."""
        for spec in self.schedules:
            try:
                self._store.schedule_upsert(
                    spec.name,
                    cron=spec.cron,
                    timezone=spec.timezone,
                    queue=spec.queue,
                    parameters=_codec.encode(spec.data),
                    options=_cron.schedule_options(**spec.options),
                )
            except DatabaseError as ex:
                if ex.sqlstate != INSUFFICIENT_PRIVILEGE:
                    raise
                logger.warning(
                    "this worker's role may not define cron schedules: %d schedule(s) of the "
                    "app not registered; run app.register_schedules() as the admin role",
                    len(self.schedules),
                )
                return
        if self.schedules:
            logger.info("registered %d cron schedule(s)", len(self.schedules))

    def process(self, task: Task) -> None:
        """Call the function the task names and reply with what it returns."""
        try:
            taskdef, args, kwargs = self.tasks.resolve(task)
        except TaskRejected as ex:
            self._reject(task, ex)
            return
        if taskdef.streams:
            result = self._stream(taskdef, args, kwargs)
        else:
            result = self._call(taskdef, args, kwargs)
        self.reply(to_json(result))

    def _call(self, taskdef: TaskDef, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if taskdef.is_async:
            return taskdef.fn(*args, **kwargs)
        return run_blocking(partial(taskdef.fn, *args, **kwargs))

    def _stream(self, taskdef: TaskDef, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Run a generator task function: each value it yields is sent as a
        part (:meth:`send_part`) as soon as it is yielded; what a ``def``
        generator returns is the reply (an ``def`` one returns None)."""
        generator = taskdef.fn(*args, **kwargs)
        if taskdef.is_async:
            for item in generator:
                self.send_part(to_json(item))
            return None
        try:
            while True:
                done, value = run_blocking(partial(_step, generator))
                if done:
                    return value
                self.send_part(to_json(value))
        finally:
            generator.close()

    def _reject(self, task: Task, ex: TaskRejected) -> None:
        """Fail the task now: no retry can make its data fit."""
        error = {
            "type": type(ex).__qualname__,
            "message": str(ex),
            "traceback": "".join(traceback.format_exception(ex)),
            "attempt": task.attempt,
        }
        text = _codec.encode(error, "error")
        if not self._store.task_fail_now(task.id, task.attempt, text):
            raise TaskNotHeld(f"task {task.id} is no longer held by this worker")
        self._executor.mark_answered()
        logger.error(
            "task %d failed without retries: %s",
            task.id,
            ex,
            extra=task_extra(task, self.worker_id),
        )


def _step(generator: Generator[Any, None, Any]) -> tuple[bool, Any]:
    """The generator's next value ``(False, value)``, or ``(True, what it
    returned)`` (StopIteration cannot cross a thread's future)."""
    try:
        return False, next(generator)
    except StopIteration as end:
        return True, end.value
