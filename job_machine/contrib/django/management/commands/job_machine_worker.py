"""``manage.py job_machine_worker``: run the Django tasks of a JobMachineBackend."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from job_machine import InvalidQueueName
from job_machine.contrib.django._compat import task_backends
from job_machine.contrib.django.backend import JobMachineBackend
from job_machine.contrib.django.worker import DjangoTaskWorker


class Command(BaseCommand):  # type: ignore[misc]  # Django is untyped
    help = (
        "Run a job_machine worker that executes the Django tasks enqueued with "
        "JobMachineBackend, until SIGTERM or SIGINT (the task in hand finishes first)."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--backend", default="default", help="the alias of the backend in TASKS (default)"
        )
        parser.add_argument(
            "--queue",
            action="append",
            dest="queues",
            metavar="NAME",
            help="a Django queue to serve (repeat for more; default: the backend's QUEUES, "
            "or every queue below its QUEUE_PREFIX)",
        )
        parser.add_argument(
            "--concurrency", type=int, help="tasks run at once, in threads (default 1)"
        )
        parser.add_argument(
            "--retries",
            type=int,
            help="retries after a failed attempt, for tasks sent without ATTEMPTS (default 3)",
        )
        parser.add_argument(
            "--max-runtime", type=float, help="seconds after which a running task is given up on"
        )
        parser.add_argument(
            "--shutdown-grace",
            type=float,
            help="seconds the task in hand may take to finish after SIGTERM (default 30)",
        )
        parser.add_argument(
            "--dsn", help="connect here instead (default: the backend's DSN or database)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        alias = options["backend"]
        try:
            backend = task_backends[alias]
        except Exception as ex:
            raise CommandError(f"no task backend {alias!r} in TASKS: {ex}") from None
        if not isinstance(backend, JobMachineBackend):
            raise CommandError(
                f"TASKS[{alias!r}] is {type(backend).__module__}.{type(backend).__qualname__}, "
                "not job_machine.contrib.django.JobMachineBackend"
            )
        settings = {
            name: options[name]
            for name in ("concurrency", "retries", "max_runtime", "shutdown_grace")
            if options[name] is not None
        }
        try:
            queues = backend.worker_queues(options["queues"])
        except (InvalidQueueName, ImproperlyConfigured) as ex:
            raise CommandError(str(ex)) from None
        worker = DjangoTaskWorker(backend, dsn=options["dsn"], queue=queues, **settings)
        if options["verbosity"] > 0:
            self.stderr.write(f"job_machine worker: serving {', '.join(queues)}")
        try:
            worker.receive()
        finally:
            worker.close()
