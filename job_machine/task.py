"""A task's states and what a worker is handed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any


class Status(IntEnum):
    """The life of a task; the numbers are Perl Job::Machine's.

    ``WAITING -> STARTED`` when a worker claims it; ``STARTED -> FINISHED``
    when the worker replies, stores a result or returns; ``STARTED -> WAITING``
    when ``process`` raised and attempts remain, or when housekeeping revives
    a task whose worker went silent; ``STARTED -> FAILED`` when the last
    attempt raised. See docs/state_machine.md.
    """

    WAITING = 0  #: entered, waiting for a worker (the only state Perl workers claim)
    STARTED = 100  #: a worker claimed it and is processing it
    FINISHED = 200  #: done: replied, stored a result, or returned
    FAILED = 900  #: given up after its last attempt raised


@dataclass(frozen=True, slots=True)
class Task:
    """A task as handed to :meth:`Worker.process`."""

    #: The task id (``task.task_id`` in the database).
    id: int
    #: The queue it was sent to.
    queue: str
    #: The data given to ``send``, decoded from JSON.
    data: Any
    #: Which attempt this is, 1 for the first.
    attempt: int
    #: When it was sent.
    created: datetime
    #: Raw JSON of the data, as stored.
    parameters: str = field(repr=False, default="")
