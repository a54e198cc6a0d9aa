"""Worker processes: ``job-machine worker ... --processes N``.

A supervisor starts N worker processes, each the plain one-process
``job-machine worker`` command (run as ``python -m job_machine.cli worker``
with the same arguments, less ``--processes``), and:

- enforces ``time_limit`` and cancellation: a child that must stop a
  task's attempt ends itself (after writing the attempt's end and handing
  back what else it holds) with :data:`EXIT_TASK_STOPPED`, and a fresh
  child is started at once, without backoff;
- restarts a child that dies (killed, crashed, exited non-zero), after a
  backoff that doubles while the same slot keeps dying; a child that
  stopped gracefully (exit 0: ``job-machine workers stop`` asked it) is not
  replaced;
- gives up on a crash loop (:attr:`Supervisor.crash_limit` deaths within
  :attr:`Supervisor.crash_window` seconds, or a child that reports a usage
  error): it stops the other children gracefully and ends with a clear
  error, exit 1;
- forwards SIGTERM and SIGINT to the children, which finish the task in
  hand within their ``shutdown_grace`` and exit 0; a second signal is
  forwarded too, and they stop at once (the task goes back to waiting);
- exits 0 when every child stopped gracefully, 128 + the signal when one
  had to be stopped at once.

Why processes started with :mod:`subprocess` (a fresh interpreter each),
not forked: nothing is inherited (no connection, no thread such as the
liveness one, no lock held by another thread at the fork), so each child
is exactly the tested one-process worker, with its own signal handling and
exit codes, for a Worker class, an AsyncWorker or an App alike. The
supervisor itself only watches pids and exit codes; it opens no database
connection.

The children run in a process group of their own, so a Ctrl-C at a
terminal reaches the supervisor alone, which forwards it once (a second
SIGINT straight from the terminal would stop them at once). Each child
watches its parent (:func:`watch_supervisor`): when the supervisor is gone
(killed with SIGKILL, say), the child stops gracefully instead of serving
on as an orphan.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType

from .errors import JobMachineError

logger = logging.getLogger("job_machine.supervisor")

#: Set in a child's environment to the supervisor's pid (see :func:`watch_supervisor`).
ENV_SUPERVISOR = "JOB_MACHINE_SUPERVISOR_PID"

#: The exit code of a usage error of the ``job-machine`` command.
_EXIT_USAGE = 2
#: The exit code of a worker process that ended itself to stop a task's
#: attempt (its time limit passed, or it was cancelled; see
#: ``AsyncWorker.exit_on_stop``): replaced at once, not counted as a death.
EXIT_TASK_STOPPED = 3
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class CrashLoop(JobMachineError):
    """The worker processes keep dying: the supervisor gave up."""


@dataclass
class _Slot:
    """One of the N places of a worker process, and its history."""

    number: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    #: Deaths in a row (reset once a child lived longer than the crash window).
    deaths_in_row: int = 0
    #: When to start the next child (monotonic), while waiting to restart.
    restart_at: float | None = None
    #: Whether this slot is done (stopped gracefully, or the supervisor stops).
    retired: bool = False
    exit_codes: list[int] = field(default_factory=list)


def describe_exit(code: int) -> str:
    """``exited with code 1``, ``was killed by SIGKILL``."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


class Supervisor:
    """Runs ``processes`` copies of a worker command and keeps them running.

    :param command: the child's command line (``python -m job_machine.cli
        worker ...``).
    :param env: the child's environment (the DSN goes there, not on a
        command line that ``ps`` shows).
    :param processes: how many children.
    :param shutdown_grace: the children's grace period: a child still
        running this long (plus :attr:`grace_margin`) after the stop signal
        gets it again, then SIGKILL.
    """

    #: Seconds before the first restart of a slot; doubles while it keeps dying.
    restart_backoff: float = 0.5
    #: Longest wait before a restart, seconds.
    restart_backoff_cap: float = 30.0
    #: Seconds of the crash window (see :attr:`crash_limit`).
    crash_window: float = 60.0
    #: Seconds a child is given beyond its grace period before it is stopped at once.
    grace_margin: float = 5.0
    #: How often the supervisor looks at its children, seconds.
    poll_interval: float = 0.05

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        processes: int,
        *,
        shutdown_grace: float = 30.0,
        crash_limit: int | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be at least 1, not {processes}")
        self.command = list(command)
        self.env = dict(env)
        self.processes = processes
        self.shutdown_grace = shutdown_grace
        #: Deaths within :attr:`crash_window` that end the supervisor
        #: (default: each slot may die twice, and at least 5 in all).
        self.crash_limit = crash_limit if crash_limit is not None else max(5, 2 * processes)
        self._slots = [_Slot(n) for n in range(1, processes + 1)]
        self._deaths: list[float] = []
        self._signals: list[int] = []
        self._stop_signal: int | None = None
        self._stopped_at: float | None = None
        self._forwarded = 0
        self._killed = False

    # -- running ------------------------------------------------------------------

    def run(self) -> int:
        """Start the children and supervise them until they all have exited.

        Returns the exit code: 0 when each stopped gracefully, 128 + the
        signal when one had to be stopped at once.

        :raises CrashLoop: the children kept dying; the others were stopped.
        """
        restore = self._install_signal_handlers()
        failure: str | None = None
        try:
            for slot in self._slots:
                self._start(slot)
            while any(s.proc is not None or not s.retired for s in self._slots):
                self._handle_signals()
                failure = self._reap() or failure
                if failure is not None and self._stop_signal is None:
                    logger.error("%s: stopping the other worker processes", failure)
                    self._begin_stop(signal.SIGTERM)
                self._enforce_grace()
                self._restart_due()
                time.sleep(self.poll_interval)
        finally:
            self._kill_all()
            restore()
        if failure is not None:
            raise CrashLoop(failure)
        # A child the stop signal reached before its handlers were in place
        # (still starting) had no task in hand: that is a graceful stop too.
        graceful = (0, *(-sig for sig in _STOP_SIGNALS))
        codes = [c for s in self._slots for c in s.exit_codes[-1:]]
        if all(c in graceful for c in codes):
            logger.info("every worker process stopped gracefully")
            return 0
        sig = self._stop_signal or signal.SIGTERM
        return 128 + sig if any(c == 128 + sig for c in codes) else 1

    def _start(self, slot: _Slot) -> None:
        slot.restart_at = None
        slot.proc = subprocess.Popen(  # noqa: S603 (our own command, no shell)
            self.command,
            env=self.env,
            stdin=subprocess.DEVNULL,
            # Not in the terminal's foreground group: a Ctrl-C reaches the
            # supervisor alone, which forwards it once.
            process_group=0,
        )
        slot.started = time.monotonic()
        logger.info(
            "started worker process %d of %d: pid %d",
            slot.number,
            self.processes,
            slot.proc.pid,
        )

    def _reap(self) -> str | None:
        """Collect the children that exited; schedule restarts. A reason to
        give up, or None."""
        failure: str | None = None
        now = time.monotonic()
        for slot in self._slots:
            if slot.proc is None:
                continue
            code = slot.proc.poll()
            if code is None:
                continue
            pid = slot.proc.pid
            slot.proc = None
            slot.exit_codes.append(code)
            if self._stop_signal is not None:
                slot.retired = True
                logger.info("worker process %d (pid %d) %s", slot.number, pid, describe_exit(code))
                continue
            if code == 0:
                slot.retired = True
                logger.info(
                    "worker process %d (pid %d) stopped gracefully; not replaced",
                    slot.number,
                    pid,
                )
                continue
            if code == EXIT_TASK_STOPPED:
                logger.info(
                    "worker process %d (pid %d) ended to stop a task (time limit or cancel); "
                    "starting a fresh one",
                    slot.number,
                    pid,
                )
                slot.restart_at = now
                continue
            if code == _EXIT_USAGE:
                slot.retired = True
                return (
                    f"worker process {slot.number} (pid {pid}) {describe_exit(code)}, "
                    "a usage error: restarting it would not help"
                )
            if now - slot.started > self.crash_window:
                slot.deaths_in_row = 0
            self._deaths = [t for t in self._deaths if now - t <= self.crash_window] + [now]
            if len(self._deaths) >= self.crash_limit:
                slot.retired = True
                failure = (
                    f"worker processes keep dying: {len(self._deaths)} deaths within "
                    f"{self.crash_window:.0f} s (the last, pid {pid}, {describe_exit(code)}); "
                    "giving up (see the log above for why)"
                )
                continue
            delay = min(self.restart_backoff_cap, self.restart_backoff * 2**slot.deaths_in_row)
            slot.deaths_in_row += 1
            slot.restart_at = now + delay
            logger.warning(
                "worker process %d (pid %d) %s; restarting it in %.1f s",
                slot.number,
                pid,
                describe_exit(code),
                delay,
            )
        return failure

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.restart_at is not None and slot.restart_at <= now and not slot.retired:
                self._start(slot)

    # -- stopping -----------------------------------------------------------------

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self._signals.append(signum)  # acted on by the loop, not here

        for sig in _STOP_SIGNALS:
            signal.signal(sig, on_signal)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            name = signal.Signals(signum).name
            if self._stop_signal is None:
                logger.info(
                    "%s: the worker processes finish their tasks in hand (up to %.0f s), then stop",
                    name,
                    self.shutdown_grace,
                )
                self._begin_stop(signum)
            else:
                logger.warning("second %s: the worker processes stop now", name)
                self._forward(signum)

    def _begin_stop(self, signum: int) -> None:
        self._stop_signal = signum
        self._stopped_at = time.monotonic()
        for slot in self._slots:
            slot.retired = True
            slot.restart_at = None
        self._forward(signum)

    def _forward(self, signum: int) -> None:
        self._forwarded += 1
        for slot in self._slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.send_signal(signum)

    def _enforce_grace(self) -> None:
        """A child still running after its grace period (and the margin)
        gets the signal again, which stops it at once; after another
        margin, SIGKILL."""
        if self._stopped_at is None or self._stop_signal is None:
            return
        overdue = time.monotonic() - self._stopped_at - self.shutdown_grace
        if overdue > self.grace_margin and self._forwarded < 2:
            logger.warning("worker processes still running after the grace period: stopping now")
            self._forward(self._stop_signal)
        elif overdue > 2 * self.grace_margin and not self._killed:
            self._killed = True
            for slot in self._slots:
                if slot.proc is not None and slot.proc.poll() is None:
                    logger.error("worker process pid %d does not stop: SIGKILL", slot.proc.pid)
                    slot.proc.kill()

    def _kill_all(self) -> None:
        """On the way out (an exception of the supervisor's own): no orphans."""
        for slot in self._slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.kill()
                slot.proc.wait()


def child_command(args: Sequence[str]) -> list[str]:
    """The command of a worker process: this interpreter, the same
    job_machine (``-m job_machine.cli``), the worker command and ``args``."""
    return [sys.executable, "-m", "job_machine.cli", "worker", *args]


def watch_supervisor() -> bool:
    """In a worker process a supervisor started: stop gracefully (SIGTERM to
    ourselves) when the supervisor is gone, or exit 0 at once if it is gone
    already; True. Does nothing in a worker started any other way: False."""
    value = os.environ.pop(ENV_SUPERVISOR, None)  # not for the worker's own children
    if not value or not value.isdigit():
        return False
    parent = int(value)
    if os.getppid() != parent:  # gone already: serve nothing
        logger.warning("the supervisor (pid %d) is gone: not starting", parent)
        raise SystemExit(0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        logger.warning("the supervisor (pid %d) is gone: stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="job_machine-supervisor-watch", daemon=True).start()
    return True
