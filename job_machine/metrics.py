"""Prometheus metrics of the machine (docs/observability.md), read on scrape.

Needs the ``metrics`` extra (``pip install job_machine[metrics]``, which
brings prometheus-client). Nothing runs in the background: each scrape reads
the database through :class:`~job_machine.Admin` (``stats()``,
``oldest_waiting()``, ``workers()``, ``locks()``: the indexes of the
unfinished tasks and the small worker and lock tables, never the finished
history), so a scrape costs a few
cheap statements and shows the machine as it is at that moment.

Served by the dashboard at ``GET /metrics`` (behind its access token: a
scraper sends ``Authorization: Bearer <token>``) and by ``job-machine
metrics --port`` on its own. In a program of your own::

    from prometheus_client import REGISTRY, start_http_server
    from job_machine.metrics import JobMachineCollector

    REGISTRY.register(JobMachineCollector(job_machine.Admin(dsn)))
    start_http_server(9187, "127.0.0.1")

The metrics (all gauges):

- ``job_machine_tasks{queue, state}``: tasks of each queue by state
  (``waiting``: due now, ``delayed``, ``blocked``, ``running``, ``failed``).
- ``job_machine_oldest_waiting_seconds{queue}``: how long the oldest task
  due now has waited (0 when none is due).
- ``job_machine_queue_paused{queue}``: 1 while the queue is paused.
- ``job_machine_done_tasks``: done tasks kept (an estimate on a large table,
  see ``job_machine_done_tasks_estimated``).
- ``job_machine_failed_tasks``: failed tasks kept, all queues.
- ``job_machine_workers{state}``: registered workers ``running`` a task,
  ``idle``, or ``dead`` (registered, but their liveness lock is gone).
- ``job_machine_lock_holds{name}``: unexpired holds of each named lock
  (``lock(name, limit=N)``: at most N at once).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from . import Admin, AsyncAdmin
from .task import COUNTED_STATES, LockInfo, Stats, WorkerInfo

__all__ = [
    "CONTENT_TYPE_LATEST",
    "STATES",
    "JobMachineCollector",
    "Snapshot",
    "families",
    "render_async",
]

#: The task states of ``job_machine_tasks`` (done is ``job_machine_done_tasks``).
STATES = COUNTED_STATES


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one scrape read: the stats, the oldest waiting age of each queue,
    the registered workers and the named locks."""

    stats: Stats
    oldest_waiting: dict[str, float]
    workers: list[WorkerInfo]
    locks: list[LockInfo]


def families(snap: Snapshot) -> list[Metric]:
    """The metric families of a snapshot (the exposition of one scrape)."""
    tasks = GaugeMetricFamily(
        "job_machine_tasks",
        "Tasks by queue and state (waiting: due now; done tasks are job_machine_done_tasks).",
        labels=["queue", "state"],
    )
    oldest = GaugeMetricFamily(
        "job_machine_oldest_waiting_seconds",
        "Seconds the oldest task due now has waited since it became due (0: none due).",
        labels=["queue"],
    )
    paused = GaugeMetricFamily(
        "job_machine_queue_paused", "1 while the queue is paused, else 0.", labels=["queue"]
    )
    for q in snap.stats.queues:
        for state in STATES:
            tasks.add_metric([q.queue, state], getattr(q, state))
        oldest.add_metric([q.queue], snap.oldest_waiting.get(q.queue, 0.0))
        paused.add_metric([q.queue], 1 if q.paused else 0)
    done = GaugeMetricFamily(
        "job_machine_done_tasks",
        "Done tasks kept, all queues (an estimate on a large table: see *_estimated).",
        value=snap.stats.done,
    )
    estimated = GaugeMetricFamily(
        "job_machine_done_tasks_estimated",
        "1 when job_machine_done_tasks is the planner's estimate, 0 when exact.",
        value=1 if snap.stats.done_estimated else 0,
    )
    failed = GaugeMetricFamily(
        "job_machine_failed_tasks",
        "Failed tasks kept, all queues.",
        value=snap.stats.total("failed"),
    )
    workers = GaugeMetricFamily(
        "job_machine_workers",
        "Registered workers: running a task, idle, or dead (their liveness lock is gone).",
        labels=["state"],
    )
    alive = [w for w in snap.workers if w.alive]
    busy = sum(1 for w in alive if w.busy)
    workers.add_metric(["running"], busy)
    workers.add_metric(["idle"], len(alive) - busy)
    workers.add_metric(["dead"], len(snap.workers) - len(alive))
    holds = GaugeMetricFamily(
        "job_machine_lock_holds",
        "Unexpired holds of each named lock (lock(name, limit=N) allows N at once).",
        labels=["name"],
    )
    for lock in snap.locks:
        holds.add_metric([lock.name], lock.held)
    return [tasks, oldest, paused, done, estimated, failed, workers, holds]


class JobMachineCollector:
    """A prometheus_client collector that reads the machine through ``admin``
    on every scrape (register it in a ``CollectorRegistry``). Scrapes that
    arrive together take turns on the admin's connection."""

    def __init__(self, admin: Admin) -> None:
        self._admin = admin
        self._lock = threading.Lock()

    def read(self) -> Snapshot:
        """One snapshot, read now."""
        with self._lock:
            admin = self._admin
            return Snapshot(admin.stats(), admin.oldest_waiting(), admin.workers(), admin.locks())

    def collect(self) -> Iterable[Metric]:
        """The metric families, read now (prometheus_client calls it per scrape)."""
        return families(self.read())

    def describe(self) -> Iterable[Metric]:
        """Nothing: registering the collector reads no database (the registry
        then skips its check of names already taken)."""
        return []


class _Fixed:
    """A collector of families already read (for one rendering)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics


async def read_async(admin: AsyncAdmin) -> Snapshot:
    """One snapshot, read now through an :class:`~job_machine.AsyncAdmin`."""
    return Snapshot(
        await admin.stats(),
        await admin.oldest_waiting(),
        await admin.workers(),
        await admin.locks(),
    )


async def render_async(admin: AsyncAdmin) -> bytes:
    """The text exposition format of one scrape, read through ``admin``
    (what the dashboard's ``/metrics`` answers; its media type is
    :data:`CONTENT_TYPE_LATEST`)."""
    return generate_latest(_Fixed(families(await read_async(admin))))
