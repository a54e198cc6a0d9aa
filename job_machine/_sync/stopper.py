# DO NOT EDIT: generated from job_machine/_async/stopper.py by tools/async_to_sync.py.
# Change the async source and run `python tools/async_to_sync.py`.
"""The stop room: a worker asked to stop, and the grace of its tasks in hand.

``stop()`` (from any thread), the ``stop`` command and SIGTERM/SIGINT all
make the worker stop claiming and give the tasks in hand ``shutdown_grace``
seconds. With the signal handlers installed (``receive()`` on the main
thread) the grace is kept by their timer, whose end exits the process
(``job_machine/_shutdown.py``); otherwise the worker keeps it itself: past
it, the attempts still running are stopped and their tasks handed back,
waiting again with a :class:`~job_machine.WorkerStopped` error (the serving
loop's :meth:`Stopper.join_within_grace`, or at concurrency 1 the side
loop, which asks :meth:`Stopper.grace_left`).

A worker process of a supervisor (``exit_on_stop``) whose attempt was
stopped (time limit, cancel) ends itself here (:meth:`Stopper.on_stopped`):
it hands back what it holds and exits with ``EXIT_TASK_STOPPED``, and the
supervisor starts a fresh one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from .._shutdown import GracefulShutdown
from ..errors import WorkerStopped
from ..logging import task_extra
from ..supervisor import EXIT_TASK_STOPPED
from ..task import Task
from .sideloop import READ_WHILE_BUSY
from .store import Store

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger("job_machine.worker")


class Stopper:
    """Whether one worker was asked to stop, and its grace (see the module's
    docstring)."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        #: Whether the worker was asked to stop (it claims nothing more).
        self.stopping = False
        #: When stop() was first asked during this receive(): the grace's start.
        self.since: float | None = None
        #: The stop signals' handlers and their grace timer.
        self.signals = GracefulShutdown(self.request)

    def request(self) -> None:
        """Stop claiming; return after the task in hand (safe from a signal handler)."""
        self.stopping = True
        self._worker._wake()

    def stop(self) -> None:
        """The worker's ``stop()``: stop claiming, and start the grace."""
        worker = self._worker
        if self.since is None:
            self.since = time.monotonic()
        self.request()
        if not self.signals.begin_grace(worker.shutdown_grace):
            worker._side_loop.poke()  # it keeps the grace

    def reset(self) -> None:
        """``receive()`` has returned: a later one serves again."""
        self.stopping = False
        self.since = None

    def grace_left(self) -> float | None:
        """Seconds of the grace the worker keeps itself (a stop() without
        the signal handlers) left for the tasks in hand, or None when none runs."""
        since = self.since
        if since is None or not self.stopping or self.signals.installed:
            return None
        return since + self._worker.shutdown_grace - time.monotonic()

    def hand_back_running(self, store: Store) -> None:
        """The grace is over: stop the attempts still running, hand their tasks back."""
        worker = self._worker
        worker._executor.hand_back(
            store,
            WorkerStopped(
                f"worker {worker.worker_id} was stopped and the attempt did not finish "
                f"within its shutdown_grace ({worker.shutdown_grace:g} s)"
            ),
        )

    def join_within_grace(self) -> None:
        """Wait for the tasks running in slots; past the grace (kept by the
        worker), hand back those still running and wait a little more."""
        slots = self._worker._slots
        left = self.grace_left()
        if left is None or not slots:
            slots.join()
            return
        if not slots.join(max(0.0, left)):
            self.hand_back_running(self._worker._store)
            slots.join(READ_WHILE_BUSY)

    def on_cancel(self, task_id: int, attempt: int) -> None:
        """From the liveness thread: a task this worker holds was cancelled;
        its attempt is stopped (and :meth:`on_stopped` called once its end
        is written)."""
        self._worker._executor.cancel(task_id, attempt)

    def on_stopped(self, task: Task, reason: Exception) -> None:
        """An attempt was stopped and its end written (any thread). In a
        worker process of a supervisor (``exit_on_stop``), end the process:
        hand back what it holds, then exit with EXIT_TASK_STOPPED; the
        supervisor starts a fresh one."""
        worker = self._worker
        if not worker.exit_on_stop:
            return
        logger.warning(
            "worker %s: ending this worker process to stop task %d (%s)",
            worker.worker_id,
            task.id,
            type(reason).__name__,
            extra=task_extra(task, worker.worker_id),
        )
        worker.stop()  # claim nothing more meanwhile
        # In a thread of its own: the liveness thread (a cancel's caller)
        # cannot wait for itself to stop.
        threading.Thread(target=self._exit_now, name="job_machine-exit", daemon=True).start()

    def _exit_now(self) -> None:
        liveness = self._worker._liveness
        if liveness is not None:
            with contextlib.suppress(Exception):
                liveness.stop(unclaim=self._worker._producer.forget())
        logging.shutdown()
        os._exit(EXIT_TASK_STOPPED)
