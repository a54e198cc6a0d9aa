"""Django settings of the test project.

The database comes from ``$JOB_MACHINE_DJANGO_DSN`` (a libpq DSN or URL, see
:func:`database`); the test process configures Django with
:func:`configure` instead, and the worker processes it starts read this module
(``--settings tests.django_project.settings``).
"""

from __future__ import annotations

import os
from typing import Any

from psycopg.conninfo import conninfo_to_dict


def database(dsn: str) -> dict[str, Any]:
    """Django's DATABASES entry for a libpq connection string."""
    params = conninfo_to_dict(dsn)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.get("dbname", ""),
        "USER": params.get("user", ""),
        "PASSWORD": params.get("password", ""),
        "HOST": params.get("host", ""),
        "PORT": params.get("port", ""),
    }


def settings(dsn: str, log: bool = False) -> dict[str, Any]:
    """Every setting of the project, for ``settings.configure(**settings(dsn))``.

    ``log``: send job_machine's and the tasks' log to stderr (the worker
    processes); without it Django leaves logging alone (the test process).
    """
    try:
        import django.tasks  # noqa: F401, PLC0415

        tasks_app: list[str] = []
    except ImportError:
        tasks_app = ["django_tasks"]  # the backport's app (its checks and signals)
    project: dict[str, Any] = {
        "SECRET_KEY": "job_machine tests",
        "USE_TZ": True,
        "INSTALLED_APPS": [*tasks_app, "job_machine.contrib.django"],
        "DATABASES": {"default": database(dsn)},
        "TASKS": {
            "default": {
                "BACKEND": "job_machine.contrib.django.JobMachineBackend",
                "QUEUES": ["default", "emails"],
                # One attempt: an exception fails the task at once.
                "OPTIONS": {"ATTEMPTS": 1},
            },
            "retrying": {
                "BACKEND": "job_machine.contrib.django.JobMachineBackend",
                "QUEUES": [],
                "OPTIONS": {"QUEUE_PREFIX": "retrying.", "ATTEMPTS": 2},
            },
        },
        "LOGGING_CONFIG": None,
    }
    if log:
        del project["LOGGING_CONFIG"]
        project["LOGGING"] = {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"stderr": {"class": "logging.StreamHandler"}},
            "loggers": {
                "job_machine": {"handlers": ["stderr"], "level": "INFO"},
                "django_tasks": {"handlers": ["stderr"], "level": "INFO"},
                "django.tasks": {"handlers": ["stderr"], "level": "INFO"},
            },
        }
    return project


if "JOB_MACHINE_DJANGO_DSN" in os.environ:
    globals().update(settings(os.environ["JOB_MACHINE_DJANGO_DSN"], log=True))
