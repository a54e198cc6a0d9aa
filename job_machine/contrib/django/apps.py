"""The Django app: add ``"job_machine.contrib.django"`` to INSTALLED_APPS for
the ``job_machine_worker`` management command."""

from __future__ import annotations

from django.apps import AppConfig


class JobMachineConfig(AppConfig):  # type: ignore[misc]  # Django is untyped
    name = "job_machine.contrib.django"
    label = "job_machine"
    verbose_name = "job_machine"
