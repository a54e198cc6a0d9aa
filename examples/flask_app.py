"""A Flask service (threads) that hands slow work to a job_machine worker.

The same endpoints as examples/fastapi_app.py:

    POST /reports                      send a task; 202 with its id at once
    GET  /reports/{id}                 poll: 202 while pending, 200 with the report
    GET  /reports/{id}/wait?timeout=S  await the reply (woken by NOTIFY, no
                                       polling): 200 with the report, 504 after
                                       S seconds (default 10, at most 60)

A failed task answers 500 with its error (both GETs); an unknown id, 404.

Run it (with a worker serving queue "report.build", e.g. ReportWorker below):

    JOB_MACHINE_DSN=postgresql://app@db/app flask --app examples.flask_app run --with-threads
    JOB_MACHINE_DSN=... gunicorn --threads 32 'examples.flask_app:create_app()'
    JOB_MACHINE_DSN=... job-machine worker examples.flask_app:ReportWorker

:func:`create_app` makes one :class:`job_machine.Client` for the process; every
request thread shares it. A sync client is safe to share between threads: its
statements take turns on its one connection, and every wait() of the process
shares one reply listener (docs/asyncio.md, "How many connections a process
uses"), so a thread blocked in wait() holds no connection of its own. Make the
app in each process (a forking server such as gunicorn must not be given
``--preload``: a connection must not cross a fork). Requests always name their
task id: the client's "current task" (``client.id``) is shared by every thread.
"""

from __future__ import annotations

import atexit
import os
from typing import Any

from flask import Blueprint, Flask, current_app, request
from flask.typing import ResponseReturnValue

import job_machine as jm

QUEUE = "report.build"
#: Where the app keeps its client, in ``app.extensions``.
EXTENSION = "job_machine"
#: Longest ``?timeout=`` a wait may ask for, in seconds.
MAX_WAIT = 60.0

reports = Blueprint("reports", __name__)


def create_app(dsn: str | None = None) -> Flask:
    """The app, with the process's one client (``JOB_MACHINE_DSN`` by default).

    The client opens its connection on first use, and is closed when the
    process exits (or call ``shared_client(app).close()`` yourself)."""
    app = Flask(__name__)
    client = jm.Client(dsn or os.environ["JOB_MACHINE_DSN"], queue=QUEUE)
    app.extensions[EXTENSION] = client
    atexit.register(client.close)
    app.register_blueprint(reports)
    return app


def shared_client(app: Flask | None = None) -> jm.Client:
    """The client :func:`create_app` made (for the current app by default)."""
    client: jm.Client = (app or current_app).extensions[EXTENSION]
    return client


@reports.post("/reports")
def start_report() -> ResponseReturnValue:
    """Send the work to the queue; answer at once with the task id."""
    params: Any = request.get_json()
    if not isinstance(params, dict):
        return {"detail": "the body must be a JSON object"}, 400
    return {"task_id": shared_client().send(params)}, 202


@reports.get("/reports/<int:task_id>")
def report(task_id: int) -> ResponseReturnValue:
    """Poll: 202 while the task waits or runs, 200 with the reply, 500 if it failed."""
    client = shared_client()
    try:
        if not client.check(task_id):
            return {"state": "pending"}, 202
        return {"state": "done", "report": client.receive(task_id)}
    except jm.TaskFailed as failed:
        return {"state": "failed", "error": failed.error}, 500
    except jm.UnknownTask:
        return {"detail": f"no task {task_id}"}, 404


@reports.get("/reports/<int:task_id>/wait")
def wait_for_report(task_id: int) -> ResponseReturnValue:
    """Await the reply, woken by the worker's notification: 200 with it, 504
    when ``?timeout=`` seconds (default 10) pass first, 500 if the task failed."""
    try:
        timeout = float(request.args.get("timeout", 10.0))
    except ValueError:
        timeout = -1.0
    if not 0 < timeout <= MAX_WAIT:
        return {"detail": f"timeout must be a number of seconds in (0, {MAX_WAIT:g}]"}, 400
    try:
        return {"state": "done", "report": shared_client().wait(task_id, timeout=timeout)}
    except jm.WaitTimeout:
        return {"detail": f"task {task_id}: no reply within {timeout:g} s"}, 504
    except jm.TaskFailed as failed:
        return {"state": "failed", "error": failed.error}, 500
    except jm.UnknownTask:
        return {"detail": f"no task {task_id}"}, 404


class ReportWorker(jm.Worker):
    """The other side: builds the report (here, a sum) and replies."""

    queue = QUEUE

    def process(self, task: jm.Task) -> None:
        """Build the report for ``task.data`` and reply with it."""
        self.reply({"total": sum(task.data.get("amounts", []))})
