"""The stop room's policy, without a database: the grace a worker keeps
itself when no signal handler keeps it (job_machine/_async/stopper.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import job_machine as jm
from job_machine.task import Task


def _worker(**options: Any) -> jm.Worker:
    return jm.Worker("postgresql://nowhere/db", queue="q", handle_signals=False, **options)


def test_the_grace_runs_from_the_first_stop_until_receive_returns() -> None:
    w = _worker(shutdown_grace=5)
    stopper = w._stopper
    assert stopper.grace_left() is None  # not stopping
    before = time.monotonic()
    w.stop()
    assert stopper.stopping and stopper.since is not None and stopper.since >= before
    first = stopper.grace_left()
    assert first is not None and 4 < first <= 5
    since = stopper.since
    w.stop()  # a second stop does not restart the grace
    assert stopper.since == since
    stopper.reset()  # receive() returned
    assert not stopper.stopping and stopper.since is None and stopper.grace_left() is None


def test_with_the_signal_handlers_installed_their_timer_keeps_the_grace() -> None:
    w = _worker(shutdown_grace=5)
    w.stop()
    w._stopper.signals.installed = True  # as receive() on the main thread
    try:
        assert w._stopper.grace_left() is None
    finally:
        w._stopper.signals.installed = False
    assert w._stopper.grace_left() is not None


def test_a_stopped_attempt_ends_only_a_supervisors_worker_process() -> None:
    w = _worker()
    task = Task(id=1, queue="q", data=None, attempt=1, created=datetime.now(UTC))
    w._stopper.on_stopped(task, TimeoutError())
    assert not w._stopper.stopping  # exit_on_stop is off: nothing happens
