"""Flask views that call task functions (examples/tasks.py), every request
thread sharing the process's one App (job_machine.contrib.flask).

    JOB_MACHINE_DSN=postgresql://app@db/app flask --app examples.flask_tasks run --with-threads
    JOB_MACHINE_DSN=... job-machine worker --app examples.tasks:app
"""

from __future__ import annotations

from flask import Blueprint, Flask, request
from flask.typing import ResponseReturnValue

from examples.tasks import add
from examples.tasks import app as tasks
from job_machine.contrib.flask import init_app

views = Blueprint("tasks", __name__)


def create_app(dsn: str | None = None) -> Flask:
    """The Flask app; the task functions' database is ``dsn``, else
    ``JOB_MACHINE_DSN`` (Flask config or environment)."""
    web = Flask(__name__)
    init_app(web, tasks, dsn=dsn)
    web.register_blueprint(views)
    return web


@views.get("/add")
def sum_of() -> ResponseReturnValue:
    """Computed by a worker; this thread waits for the reply."""
    a, b = int(request.args["a"]), int(request.args["b"])
    return {"sum": add.call(a, b)}
