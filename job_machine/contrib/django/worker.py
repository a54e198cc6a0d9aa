"""DjangoTaskWorker: a job_machine worker that runs the Django tasks a
JobMachineBackend enqueued (``manage.py job_machine_worker`` runs one)."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from typing import Any

from django.db import close_old_connections
from django.utils import timezone

from job_machine import Task, TaskNotHeld, Worker

from ._compat import (
    FAILED,
    RUNNING,
    SUCCESSFUL,
    TaskContext,
    TaskError,
    TaskResult,
    normalize_json,
    task_finished,
    task_started,
)
from ._compat import (
    Task as DjangoTask,
)
from .backend import JobMachineBackend, parse_data, resolve_task, with_options, worker_ids

logger = logging.getLogger("job_machine.django")


class DjangoTaskWorker(Worker):
    """Serves the queues of a :class:`JobMachineBackend`: imports each task's
    function by its path, calls it with the task's arguments (and a
    ``TaskContext`` first when the task ``takes_context``), and replies with
    its return value, normalised for JSON as Django does. An exception is the
    attempt's error: the task is retried after a backoff while attempts remain
    (the backend's ``ATTEMPTS``, else :attr:`retries` + 1), then FAILED.

    Django's ``task_started`` and ``task_finished`` signals are sent around
    each run (``task_finished`` once the task is SUCCESSFUL or FAILED, not
    after an attempt that will be retried); a receiver that raises is logged
    and changes nothing of the task. Django's database connections of
    the thread are closed around each task when unusable or past their
    ``CONN_MAX_AGE``, as around a request.

    :param backend: the backend whose tasks to run.
    :param dsn: where the worker connects (default: ``backend.worker_dsn()``).
    :param queue: job_machine queue names or patterns to serve (default:
        ``backend.worker_queues()``).
    :param options: any other :class:`job_machine.Worker` option
        (``concurrency``, ``retries``, ``max_runtime``...).
    """

    def __init__(
        self,
        backend: JobMachineBackend,
        dsn: str | None = None,
        queue: str | Sequence[str] | None = None,
        **options: Any,
    ) -> None:
        self.backend = backend
        super().__init__(
            dsn or backend.worker_dsn(),
            queue if queue is not None else backend.worker_queues(),
            **options,
        )

    def process(self, task: Task) -> None:
        call = parse_data(task.data)
        if call is None:
            raise ValueError(
                f"task {task.id} of queue {task.queue!r} is not a Django task "
                '(its data is not {"task": path, "args": [...], "kwargs": {...}})'
            )
        path, args, kwargs = call
        django_task: DjangoTask[Any, Any] = with_options(
            resolve_task(path),
            priority=task.priority,
            queue_name=self.backend.django_queue(task.queue) or task.queue,
            backend=self.backend.alias,
        )
        started = timezone.now()
        result: TaskResult[Any] = TaskResult(
            task=django_task,
            id=str(task.id),
            status=RUNNING,
            enqueued_at=task.created,
            started_at=started,
            finished_at=None,
            last_attempted_at=started,
            args=args,
            kwargs=kwargs,
            backend=self.backend.alias,
            errors=[],
            worker_ids=worker_ids(self.worker_id, task.attempt),
        )
        close_old_connections()
        _signal(task_started, self.backend, result)
        try:
            if django_task.takes_context:
                value = django_task.call(TaskContext(task_result=result), *args, **kwargs)
            else:
                value = django_task.call(*args, **kwargs)
            value = normalize_json(value)
            self.reply(value)
        except TaskNotHeld:
            raise  # revived while it ran: another attempt owns its outcome
        except Exception as ex:
            if task.attempt >= (task.max_attempts or self.retries + 1):
                object.__setattr__(result, "status", FAILED)
                object.__setattr__(result, "finished_at", timezone.now())
                result.errors.append(_error(ex))
                # Sent while the exception is handled: Django's receiver logs it.
                _signal(task_finished, self.backend, result)
            raise
        finally:
            close_old_connections()
        object.__setattr__(result, "status", SUCCESSFUL)
        object.__setattr__(result, "finished_at", timezone.now())
        object.__setattr__(result, "_return_value", value)
        _signal(task_finished, self.backend, result)


def _signal(signal: Any, backend: JobMachineBackend, result: TaskResult[Any]) -> None:
    """Send a task signal; a receiver that raises is logged, and changes
    nothing of the task (its answer may be written already)."""
    for receiver, outcome in signal.send_robust(type(backend), task_result=result):
        if isinstance(outcome, Exception):
            logger.error(
                "task %s: a receiver of Django's task signal raised: %r",
                result.id,
                receiver,
                exc_info=outcome,
            )


def _error(ex: BaseException) -> TaskError:
    """The error as Django records it, for the signal's TaskResult."""
    kind = type(ex)
    return TaskError(
        exception_class_path=f"{kind.__module__}.{kind.__qualname__}",
        traceback="".join(traceback.format_exception(ex)),
    )
