"""Workers for tests/integration/test_deadlines.py, run as real processes by
``python -m job_machine.cli worker tests.deadline_workers:CLASS`` from the
repository root (alone, or as the children of ``--processes N``).

Each notes on its task what it saw (``notes`` are not fenced, so a stopped
attempt can still say how it ended): ``pid``, then ``stopped_by`` (the type
of ``task.cancelled`` it saw) or ``refused`` (its late reply was refused).
Data ``{"quick": true}`` is answered at once with ``{"pid": pid}``.
"""

from __future__ import annotations

import os
import time

import job_machine as jm


class _Noting(jm.Worker):
    def process(self, task: jm.Task) -> None:
        self.note(pid=os.getpid())
        if isinstance(task.data, dict) and task.data.get("quick"):
            self.reply({"pid": os.getpid()})
            return
        self.work(task)

    def work(self, task: jm.Task) -> None:
        raise NotImplementedError


class Cooperative(_Noting):
    """Long work in small steps, looking at task.check_cancelled() between them."""

    def work(self, task: jm.Task) -> None:
        try:
            for _ in range(600):
                task.check_cancelled()
                time.sleep(0.05)
        except (jm.TimeLimitExceeded, jm.Cancelled) as ex:
            self.note(stopped_by=type(ex).__name__)
            raise
        self.reply("finished")


class Oblivious(_Noting):
    """Never looks: sleeps ``data["sleep"]`` seconds, then replies (late)."""

    def work(self, task: jm.Task) -> None:
        time.sleep(float(task.data["sleep"]))
        try:
            self.reply("late")
        except jm.TaskNotHeld:
            self.note(refused=True)
            raise


class Spin(_Noting):
    """CPU-bound and never looks at task.cancelled: only ending the
    process stops it."""

    def work(self, task: jm.Task) -> None:
        n = 0
        while True:
            n += 1
