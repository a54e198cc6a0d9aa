"""``job-machine worker ... --processes N`` as a real process for the
supervisor tests: :func:`supervisor` starts it (``python -m job_machine.cli``
from the repository root) and stops it at the end; :class:`Supervised` reads
its log and waits for its worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import job_machine as jm
from tests.support.procs import ROOT, wait_until

#: The queue the supervisor tests' workers serve.
QUEUE = "sup.test"


class Supervised:
    """A supervisor process and its log."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log_path = log

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive_children(self, admin: jm.Admin) -> dict[int, list[int]]:
        """The registered, alive worker processes: pid -> tasks running."""
        return {w.pid: w.running for w in admin.workers() if w.alive}

    def wait_children(
        self, admin: jm.Admin, n: int, timeout: float = 30, without: int | None = None
    ) -> dict[int, list[int]]:
        """Wait until exactly ``n`` worker processes are registered and
        alive (none of them ``without``, a pid), and return them; fails at
        once if the supervisor exited."""

        def ready() -> dict[int, list[int]] | None:
            assert self.proc.poll() is None, (
                f"the supervisor exited {self.proc.returncode}:\n{self.log()}"
            )
            children = self.alive_children(admin)
            return children if len(children) == n and without not in children else None

        return wait_until(ready, timeout, f"{n} worker process(es)")  # type: ignore[no-any-return]


@contextmanager
def supervisor(dsn: str, tmp_path: Path, *args: str) -> Iterator[Supervised]:
    """``job-machine worker ARGS`` on ``dsn`` for the length of the block."""
    env = {k: v for k, v in os.environ.items() if k != "JOB_MACHINE_DSN"}
    env["JOB_MACHINE_DSN"] = dsn
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    log = tmp_path / "supervisor.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "job_machine.cli", "worker", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Supervised(proc, log)
    finally:
        if proc.poll() is None:
            # SIGKILL would orphan the children (they stop within a second
            # when they see it): two SIGTERMs stop them at once instead.
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def gone(pid: int) -> bool:
    """Whether the process has exited (a zombie not reaped yet counts)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def task_state(admin: jm.Admin, task_id: int) -> str:
    return admin.task_info(task_id).state
