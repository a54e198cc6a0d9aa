"""Run queued tasks inside a test, with no worker process, thread or sleep.

::

    from job_machine.testing import run_tasks

    def test_add(job_machine_dsn):           # the pytest plugin's fixture
        with app.using(job_machine_dsn):
            task_id = add.send(1, 2)
            ran = run_tasks(app)            # runs add(1, 2) here, now
            assert [r.reply for r in ran] == [3]
            assert add.result(task_id) == 3

:func:`run_tasks` claims and runs every task that is due on the worker's
queues, one at a time in the calling thread, until none is left, and
returns what ran, in order. Tasks due later (``delay=``, a retry's
backoff) are not waited for: pass ``retries=0`` (or ``retry_backoff=0``)
to see a failing task fail at once. A task that sends other tasks has
them run too, in the same call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _codec
from ._async.worker import AsyncWorker
from .app import App
from .errors import TaskFailed
from .task import STATE_NAMES, Status, Task

if TYPE_CHECKING:
    from . import Worker

#: At most this many tasks per call by default: a task that keeps sending
#: itself would otherwise never let run_tasks return.
LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Ran:
    """One task :func:`run_tasks` ran, and how it ended."""

    #: The task as the worker was handed it.
    task: Task
    #: Where it stands now: ``"done"``, ``"failed"``, or ``"waiting"`` (it
    #: raised and will be retried after its backoff).
    state: str
    #: Its newest reply, decoded JSON (what a task function returned), or None.
    reply: Any
    #: Its newest error (``{"type", "message", "traceback", "attempt"}``), or None.
    error: Any

    @property
    def id(self) -> int:
        """The task's id."""
        return self.task.id

    @property
    def name(self) -> str | None:
        """The task function it called (the payload's ``task``), if any."""
        data = self.task.data
        name = data.get("task") if isinstance(data, dict) else None
        return name if isinstance(name, str) else None

    def value(self) -> Any:
        """The reply; :class:`~job_machine.TaskFailed` if the task failed."""
        if self.state == "failed":
            raise TaskFailed(self.task.id, self.error)
        return self.reply


def _ran(task: Task, answer: Any) -> Ran:
    status = Status(answer.status) if answer is not None else Status.FAILED
    return Ran(
        task=task,
        state=STATE_NAMES.get(status, str(status)),
        reply=_codec.decode(answer.reply) if answer is not None else None,
        error=_codec.decode(answer.error) if answer is not None else None,
    )


def run_tasks(
    app_or_worker: App | Worker, *, limit: int = LIMIT, **worker_options: Any
) -> list[Ran]:
    """Run every due task of the worker's queues here, until none is left;
    return what ran, in order.

    :param app_or_worker: an :class:`~job_machine.App` (its task functions'
        worker is made, used and closed here; one with ``async def``
        functions is run on a new event loop, so call this from sync code
        or use :func:`arun_tasks`), or a :class:`~job_machine.Worker` of
        yours (it stays open: close it yourself).
    :param limit: raise RuntimeError after this many tasks.
    :param worker_options: for an App, options of its worker (``queues``,
        ``retries``, ``retry_backoff``...).
    """
    if isinstance(app_or_worker, App):
        if app_or_worker.needs_asyncio:
            return asyncio.run(_on_a_loop_of_its_own(app_or_worker, limit, worker_options))
        worker = app_or_worker.worker(**_quiet(worker_options))
        try:
            return _run(worker, limit)
        finally:
            worker.close()
    if isinstance(app_or_worker, AsyncWorker):
        raise TypeError("an AsyncWorker: use `await arun_tasks(worker)`")
    if worker_options:
        raise TypeError("worker options are for an App; set them on your worker")
    return _run(app_or_worker, limit)


async def _on_a_loop_of_its_own(app: App, limit: int, options: dict[str, Any]) -> list[Ran]:
    """arun_tasks on a loop that ends with it: an AsyncClient the tasks made
    the app open (an ``asend`` in an async function) is closed before."""
    try:
        return await arun_tasks(app, limit=limit, **options)
    finally:
        await app._aclose_async_face()


def _run(worker: Worker, limit: int) -> list[Ran]:
    handed: list[Task] = []
    process = worker.process

    def recording(task: Task) -> None:
        handed.append(task)
        process(task)

    ran: list[Ran] = []
    worker.process = recording  # type: ignore[method-assign]
    try:
        while worker.work_once():
            if handed:
                task = handed.pop()
                ran.append(_ran(task, worker._store.task_answer(task.id)))
            if len(ran) >= limit:
                raise RuntimeError(f"run_tasks: still tasks to run after {limit}")
    finally:
        del worker.process
    return ran


async def arun_tasks(
    app_or_worker: App | AsyncWorker, *, limit: int = LIMIT, **worker_options: Any
) -> list[Ran]:
    """:func:`run_tasks` for asyncio tests: an App's :meth:`~App.async_worker`
    (``async def`` functions awaited, plain ones in a thread), or an
    :class:`~job_machine.AsyncWorker` of yours."""
    if isinstance(app_or_worker, App):
        worker = app_or_worker.async_worker(**_quiet(worker_options))
        try:
            return await _arun(worker, limit)
        finally:
            await worker.close()
    if not isinstance(app_or_worker, AsyncWorker):
        raise TypeError("a sync Worker: use run_tasks(worker)")
    if worker_options:
        raise TypeError("worker options are for an App; set them on your worker")
    return await _arun(app_or_worker, limit)


async def _arun(worker: AsyncWorker, limit: int) -> list[Ran]:
    handed: list[Task] = []
    process = worker.process

    async def recording(task: Task) -> None:
        handed.append(task)
        await process(task)

    ran: list[Ran] = []
    worker.process = recording  # type: ignore[method-assign]
    try:
        while await worker.work_once():
            if handed:
                task = handed.pop()
                answer = await worker._store.task_answer(task.id)
                ran.append(_ran(task, answer))
            if len(ran) >= limit:
                raise RuntimeError(f"arun_tasks: still tasks to run after {limit}")
    finally:
        del worker.process
    return ran


def _quiet(options: dict[str, Any]) -> dict[str, Any]:
    """A test's worker installs no signal handlers."""
    return {"handle_signals": False} | options
