"""An app with a cron task function, for tests/integration/test_schedules.py
(its own App, so the task functions of tests/support/taskfns.py are left as they are)."""

from __future__ import annotations

import os

import job_machine as jm

app = jm.App()


@app.task(name="cron.tick", queue="cron.fns", cron="* * * * * *")
def tick() -> int:
    """Runs every second; answers with the worker's pid."""
    return os.getpid()
