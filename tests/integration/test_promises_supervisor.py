"""README, "--processes N": the supervisor restarts a slot that keeps dying
after a doubling backoff, and a worker process stopped by
``Admin.stop_workers()`` is not replaced. Real processes (tests/support/supervisor.py),
as in test_supervisor.py."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import job_machine as jm
from tests.support.procs import wait_until
from tests.support.supervisor import QUEUE, gone, supervisor


def test_a_slot_that_keeps_dying_is_restarted_after_a_doubling_backoff(
    dsn: str, tmp_path: Path
) -> None:
    """Killed three times in a row, one slot is restarted after 0.5, 1 and
    2 s (the log says so, and no replacement registers sooner)."""
    args = ("tests.support.cli_workers:Slow", "-q", QUEUE, "--processes", "1")
    gaps: list[float] = []
    with supervisor(dsn, tmp_path, *args) as sup, jm.Admin(dsn) as admin:
        (child,) = sup.wait_children(admin, 1)
        for _ in range(3):
            os.kill(child, signal.SIGKILL)
            killed = time.monotonic()
            (child,) = wait_until(
                lambda old=child: (c := sup.alive_children(admin)) and old not in c and c,
                30,
                "the killed worker process replaced",
            )
            gaps.append(time.monotonic() - killed)
        delays = [
            float(d)
            for d in re.findall(r"was killed by SIGKILL; restarting it in ([\d.]+) s", sup.log())
        ]
        assert delays == [0.5, 1.0, 2.0], sup.log()
        for gap, delay in zip(gaps, delays, strict=True):
            assert gap >= delay, (gaps, sup.log())


def test_worker_processes_stopped_by_stop_workers_are_not_replaced(
    dsn: str, tmp_path: Path
) -> None:
    """``Admin.stop_workers()`` stops each worker process of a supervisor
    (exit 0, within ``dead_after / 4`` plus start-up slack); the supervisor
    does not replace them, and exits 0 once they are all gone."""
    dead_after = 2.0
    args = ("tests.support.cli_workers:Slow", "-q", QUEUE, "--processes", "2")
    with (
        supervisor(dsn, tmp_path, *args, "--dead-after", str(dead_after)) as sup,
        jm.Admin(dsn) as admin,
    ):
        children = sup.wait_children(admin, 2)
        asked = time.monotonic()
        admin.stop_workers()
        wait_until(
            lambda: all(gone(pid) for pid in children),
            dead_after / 4 + 5,
            "the worker processes to stop",
        )
        assert sup.proc.wait(10) == 0, sup.log()
        assert time.monotonic() - asked <= dead_after / 4 + 10
        log = sup.log()
        assert log.count("stopped gracefully; not replaced") == 2, log
        assert "restarting" not in log, log
        assert admin.workers() == [] or not any(w.alive for w in admin.workers())
