"""Structured logs: one JSON object per line, with the task each record is
about (docs/observability.md).

job_machine logs through the standard :mod:`logging` module, under the
``job_machine`` logger (``job_machine.worker``, ``job_machine.liveness``,
``job_machine.web``...). Every record the worker writes about a task carries
the fields ``task_id``, ``queue``, ``attempt`` and ``worker_id`` (as
attributes of the record, for any formatter to use). ``job-machine worker
--log-format json`` (and ``web``) writes them with :class:`JsonFormatter`;
in a program of your own::

    import logging, sys
    from job_machine.logging import JsonFormatter, WorkerContext

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(dsn=dsn))  # dsn: its password is scrubbed
    worker = MyWorker(dsn)
    handler.addFilter(WorkerContext(worker))  # your own records inside process() too
    logging.basicConfig(level="INFO", handlers=[handler])
    worker.receive()

A line looks like::

    {"time": "2026-12-04T18:01:02.345678+00:00", "level": "ERROR",
     "logger": "job_machine.worker", "message": "task 42 failed after 3 attempts: ...",
     "task_id": 42, "queue": "mail", "attempt": 3, "worker_id": 7}

(on one line). Non-ASCII and control characters are ``\\uXXXX`` escapes, so a
title or error text a sender chose cannot start a fake line nor reach a
terminal as an escape sequence.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from ._scrub import Scrubber

if TYPE_CHECKING:
    from .task import Task

__all__ = ["TASK_FIELDS", "JsonFormatter", "WorkerContext", "task_extra"]

#: The fields of a record about a task, in the order a JSON line shows them.
TASK_FIELDS = ("task_id", "queue", "attempt", "worker_id")

#: A LogRecord's own attributes: everything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


#: Fields the formatter writes itself (a task field that is None is left out).
_OURS = frozenset((*TASK_FIELDS, "time", "level", "logger", "message"))


def task_extra(task: Task, worker_id: int | None = None) -> dict[str, Any]:
    """The ``extra=`` of a log call about ``task``: its id, queue, attempt and
    the id of the worker running it."""
    return {
        "task_id": task.id,
        "queue": task.queue,
        "attempt": task.attempt,
        "worker_id": worker_id,
    }


def end_extra(task_id: int, attempt: int, queue: str = "") -> dict[str, Any]:
    """The ``extra=`` of a log call about a task known by its end only (how
    a task ended, written after it left the worker's hands)."""
    extra: dict[str, Any] = {"task_id": task_id, "attempt": attempt}
    if queue:
        extra["queue"] = queue
    return extra


class _Worker(Protocol):
    @property
    def worker_id(self) -> int | None: ...

    @property
    def task(self) -> Task: ...


class WorkerContext(logging.Filter):
    """Adds ``worker_id`` to every record, and the fields of the task being
    processed (``task_id``, ``queue``, ``attempt``) to records logged from
    inside ``process()``, also by your own code, when they carry none. Add it
    to a handler (it sees every record the handler writes) of a process that
    runs one worker (a :class:`~job_machine.Worker` or
    :class:`~job_machine.AsyncWorker`)."""

    def __init__(self, worker: _Worker) -> None:
        super().__init__()
        self._worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "worker_id", None) is None:
            record.worker_id = self._worker.worker_id
        if getattr(record, "task_id", None) is None:
            try:
                task = self._worker.task
            except Exception:  # not inside process(): no task in hand
                return True
            record.task_id = task.id
            record.queue = task.queue
            record.attempt = task.attempt
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line: ``time`` (ISO 8601,
    UTC), ``level``, ``logger``, ``message``, the task fields when the record
    has them (:data:`TASK_FIELDS`), then any other ``extra=`` field, and
    ``exception`` / ``stack`` (a traceback, as one string) when there is one.

    Secrets are replaced by ``********`` in every text: the password of
    ``dsn`` (however the DSN is written; or of each DSN of a list, as a
    worker's ``listen_dsn``) and each of ``secrets`` (an access
    token, a password), as the dashboard scrubs its pages and logs. Every
    non-ASCII and control character is a JSON ``\\uXXXX`` escape.
    """

    def __init__(
        self, *, dsn: str | Iterable[str] | None = None, secrets: Iterable[str | None] = ()
    ) -> None:
        super().__init__()
        dsns = [dsn] if isinstance(dsn, str) else list(dsn or [])
        self._scrubbers = [Scrubber(d) for d in dsns] + [Scrubber("", secrets)]

    def _scrub(self, text: str) -> str:
        for scrub in self._scrubbers:
            text = scrub(text)
        return text

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": self._text(record.getMessage()),
        }
        for name in TASK_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        for name, value in record.__dict__.items():
            if name not in _STANDARD and name not in _OURS and not name.startswith("_"):
                line[name] = self._value(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = self._text(record.exc_text)
        if record.stack_info:
            line["stack"] = self._text(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=True, default=self._default)

    def _text(self, text: str) -> str:
        return self._scrub(text)

    def _value(self, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self._scrub(value)
        if isinstance(value, list | tuple):
            return [self._value(v) for v in value]
        if isinstance(value, dict):
            return {str(k): self._value(v) for k, v in value.items()}
        return self._scrub(str(value))

    def _default(self, value: Any) -> str:
        return self._scrub(str(value))
