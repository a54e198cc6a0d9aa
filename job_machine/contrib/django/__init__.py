"""Django's tasks framework on job_machine (docs/django.md).

In settings::

    INSTALLED_APPS = [..., "job_machine.contrib.django"]
    TASKS = {"default": {"BACKEND": "job_machine.contrib.django.JobMachineBackend"}}

then ``python manage.py job_machine_worker`` runs the tasks. Works with
Django 6's ``django.tasks`` and with the ``django-tasks`` backport (Django
5.2 on Python 3.11).
"""

from __future__ import annotations

from .backend import JobMachineBackend, WorkerError
from .worker import DjangoTaskWorker

__all__ = ["DjangoTaskWorker", "JobMachineBackend", "WorkerError"]
