"""One :class:`~job_machine.App` for a Flask process, shared by every
request thread.

::

    from flask import Flask
    from job_machine.contrib.flask import init_app
    from myapp.tasks import add, app as tasks

    def create_app() -> Flask:
        web = Flask(__name__)
        init_app(web, tasks)            # dsn: web.config["JOB_MACHINE_DSN"], else the app's
        return web

    # in a view:  add.call(1, 2), or add.send(1, 2) and add.result(task_id) later

The app's sync :class:`~job_machine.Client` is safe to share between
threads: its statements take turns on its one connection, and every wait
of the process shares the one reply listener, so a thread blocked in
``call`` holds no connection. It is closed when the process exits. Make
the Flask app in each process (a forking server such as gunicorn must not
be given ``--preload``: a connection must not cross a fork).
"""

from __future__ import annotations

import atexit
from typing import TYPE_CHECKING

from ..app import App

if TYPE_CHECKING:
    from flask import Flask

#: The key of ``flask_app.extensions`` that holds the App.
EXTENSION = "job_machine"
#: The Flask config key read for the database.
CONFIG_DSN = "JOB_MACHINE_DSN"


def init_app(flask_app: Flask, app: App, *, dsn: str | None = None) -> App:
    """Serve ``app`` to ``flask_app``'s threads; its clients close at exit.

    :param dsn: point ``app`` at this database (default:
        ``flask_app.config["JOB_MACHINE_DSN"]`` when set, else the app's
        own ``dsn=``, else ``$JOB_MACHINE_DSN``).
    :returns: ``app``.
    """
    target = dsn or flask_app.config.get(CONFIG_DSN)
    if target:
        app.dsn = target
    flask_app.extensions[EXTENSION] = app
    atexit.register(app.close)
    return app


def current_app() -> App:
    """The App :func:`init_app` gave the current Flask app."""
    from flask import current_app as flask_app  # noqa: PLC0415

    app: App = flask_app.extensions[EXTENSION]
    return app
