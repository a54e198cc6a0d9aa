"""A worker for tests/integration/test_logs.py, run as ``job-machine worker
tests.support.log_workers:Chatty --log-format json`` from the repository root.

It logs ``said <data>`` through a logger of its own from inside process(),
replies with its data, and raises ``RuntimeError(message)`` for data
``{"fail": message}``.
"""

from __future__ import annotations

import logging

import job_machine as jm

logger = logging.getLogger("tests.chatty")


class Chatty(jm.Worker):
    """Logs what each task says (a record of the user's own, about the task)."""

    queue = "logs.q"

    def process(self, task: jm.Task) -> None:
        if isinstance(task.data, dict) and "fail" in task.data:
            raise RuntimeError(task.data["fail"])
        logger.info("said %s", task.data)
        self.reply(task.data)
