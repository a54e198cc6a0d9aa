"""``job-machine worker ... --processes N``: a supervisor and its worker
processes, all real processes (``python -m job_machine.cli`` from the
repository root), signalled with os.kill from the test."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

import job_machine as jm
from job_machine.supervisor import Supervisor, describe_exit
from tests.support.procs import wait_until
from tests.support.supervisor import QUEUE, gone, supervisor, task_state


def test_a_killed_worker_process_is_replaced_and_its_task_rescued(
    dsn: str, client: jm.Client, tmp_path: Path
) -> None:
    args = ("tests.support.cli_workers:Slow", "-q", QUEUE, "--processes", "2", "--dead-after", "2")
    with supervisor(dsn, tmp_path, *args) as sup, jm.Admin(dsn) as admin:
        first = sup.wait_children(admin, 2)
        assert sup.proc.pid not in first
        tid = client.send({"sleep": 120}, queue=QUEUE)
        victim = wait_until(
            lambda: next((pid for pid, run in sup.alive_children(admin).items() if run), None),
            15,
            "a worker process running the task",
        )
        os.kill(victim, signal.SIGKILL)

        # A fresh process takes its place; the task is rescued (dead_after 2 s)
        # and answered by a live one in its second attempt.
        now = wait_until(
            lambda: (c := sup.alive_children(admin)) and len(c) == 2 and victim not in c and set(c),
            30,
            "the killed worker process replaced",
        )
        assert len(now & set(first)) == 1, (first, now, sup.log())
        reply = client.wait(tid, timeout=30)
        assert reply["attempt"] == 2 and reply["pid"] in now, (reply, sup.log())
        assert "was killed by SIGKILL; restarting it" in sup.log()

        sup.proc.send_signal(signal.SIGTERM)
        assert sup.proc.wait(15) == 0, sup.log()
        assert all(gone(pid) for pid in now), sup.log()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_every_worker_process_after_the_task_in_hand(
    dsn: str, client: jm.Client, tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGTERM, and SIGINT passed on as SIGTERM (README, "--processes N")."""
    args = ("tests.support.cli_workers:Slow", "-q", QUEUE, "--processes", "2")
    with supervisor(dsn, tmp_path, *args) as sup, jm.Admin(dsn) as admin:
        children = sup.wait_children(admin, 2)
        tid = client.send({"sleep": 1.5}, queue=QUEUE)
        wait_until(lambda: task_state(admin, tid) == "running", 15, "the task to start")
        sup.proc.send_signal(sig)
        assert sup.proc.wait(20) == 0, sup.log()
        assert task_state(admin, tid) == "done", sup.log()
        assert client.receive(tid)["attempt"] == 1
        assert all(gone(pid) for pid in children), sup.log()
        assert "every worker process stopped gracefully" in sup.log()


def test_a_second_sigterm_stops_them_at_once_and_the_task_waits_again(
    dsn: str, client: jm.Client, tmp_path: Path
) -> None:
    args = ("tests.support.cli_workers:Slow", "-q", QUEUE, "--processes", "2")
    with supervisor(dsn, tmp_path, *args) as sup, jm.Admin(dsn) as admin:
        sup.wait_children(admin, 2)
        tid = client.send({"sleep": 60}, queue=QUEUE)
        wait_until(lambda: task_state(admin, tid) == "running", 15, "the task to start")
        sup.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "finish their tasks in hand" in sup.log(), 5, "the first SIGTERM")
        sup.proc.send_signal(signal.SIGTERM)
        assert sup.proc.wait(10) == 128 + signal.SIGTERM, sup.log()
        info = admin.task_info(tid)
        assert (info.state, [e["type"] for e in info.errors]) == (
            "waiting",
            ["WorkerStopped"],
        ), sup.log()


def test_a_crash_loop_ends_the_supervisor_with_a_clear_error(dsn: str, tmp_path: Path) -> None:
    args = ("tests.support.cli_workers:BrokenStartup", "--processes", "2")
    with supervisor(dsn, tmp_path, *args) as sup:
        t0 = time.monotonic()
        code = sup.proc.wait(60)
        log = sup.log()
        assert code == 1, log
        assert "startup failed on purpose" in log  # the children's own error
        last = log.strip().splitlines()[-1]
        # Two processes can die in one round of the supervisor's watch, so
        # the count that trips the limit (5) may read 6.
        tripped = re.match(r"Error: worker processes keep dying: (\d+) deaths within 60 s", last)
        assert tripped is not None and int(tripped.group(1)) in (5, 6), log
        assert time.monotonic() - t0 < 30, log


def test_worker_processes_stop_by_themselves_when_the_supervisor_is_killed(
    dsn: str, tmp_path: Path
) -> None:
    args = ("tests.support.cli_workers:Slow", "-q", QUEUE, "--processes", "1")
    with supervisor(dsn, tmp_path, *args) as sup, jm.Admin(dsn) as admin:
        (child,) = sup.wait_children(admin, 1)
        sup.proc.kill()
        sup.proc.wait(5)
        wait_until(lambda: gone(child), 10, "the orphaned worker process to stop")
        assert "the supervisor (pid" in sup.log() and "is gone: stopping" in sup.log()


@pytest.mark.parametrize(
    ("code", "text"),
    [(1, "exited with code 1"), (-9, "was killed by SIGKILL"), (-99, "was killed by signal 99")],
)
def test_describe_exit(code: int, text: str) -> None:
    assert describe_exit(code) == text


def test_the_supervisor_needs_a_process() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Supervisor(["true"], {}, 0)


def test_a_child_gets_the_workers_arguments_but_not_processes_nor_the_dsn() -> None:
    from job_machine.cli.worker import _child_args, worker  # noqa: PLC0415

    given = ["tests.support.cli_workers:Slow", "--processes", "3", "-q", "a.b", "--queue", "c.*"]
    given += ["--dsn", "postgresql://u:secret@h/db", "-c", "2", "--shutdown-grace", "5"]
    given += ["--log-level", "debug"]
    with worker.make_context("worker", given) as ctx:
        args = _child_args(ctx)
    assert args == [
        "tests.support.cli_workers:Slow",
        "-q",
        "a.b",
        "-q",
        "c.*",
        "-c",
        "2",
        "--shutdown-grace",
        "5.0",
        "--log-level",
        "debug",
    ]
    with worker.make_context("worker", ["--app", "m:app", "--processes", "2"]) as ctx:
        assert _child_args(ctx) == ["--app", "m:app"]
