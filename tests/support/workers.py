"""In-process workers for the database tests: a recording worker, and
running its receive() in a thread for the length of a ``with`` block.

Tests about crashes and concurrency use real processes instead (tests/support/procs.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import job_machine as jm


class Observed(jm.Worker):
    """A worker that says when it is idle: ``idle_rounds`` counts the times
    it went to sleep waiting for news (its queues drained, LISTENing), and
    :meth:`wait_idle` waits for the next one, so that a test sends a task to
    a worker it knows asleep instead of sleeping a guessed while itself."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.idle_rounds = 0
        self._idle = threading.Condition()

    def _next_wait(self) -> float:
        # The serve loop asks how long to sleep right before it waits on its
        # listening connection: the worker is idle from here.
        wait = super()._next_wait()
        with self._idle:
            self.idle_rounds += 1
            self._idle.notify_all()
        return wait

    def wait_idle(self, after: int | None = None, timeout: float = 10.0) -> int:
        """Wait until the worker goes to sleep waiting for news more than
        ``after`` times (default: once more than now); the count then."""
        with self._idle:
            target = self.idle_rounds if after is None else after
            if not self._idle.wait_for(lambda: self.idle_rounds > target, timeout):
                raise AssertionError(f"the worker did not go idle within {timeout} s")
            return self.idle_rounds


class Base(Observed):
    """A worker for tests: records what it saw; ``ready`` is set by startup()."""

    handle_signals = False

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("queue", "job.task")
        super().__init__(*args, **kw)
        self.ready = threading.Event()
        self.seen: list[jm.Task] = []
        self.events: list[str] = []

    def startup(self) -> None:
        self.events.append("startup")
        self.ready.set()

    def process(self, task: jm.Task) -> None:
        self.events.append(f"process {task.id}")
        self.seen.append(task)
        self.rounds_at_last_task = self.idle_rounds
        self.handle(task)

    def wait_drained(self, timeout: float = 10.0) -> int:
        """Wait until the worker, after the last task it processed, looked
        for more and went to sleep waiting for news."""
        return self.wait_idle(after=getattr(self, "rounds_at_last_task", 0), timeout=timeout)

    def handle(self, task: jm.Task) -> None:
        self.reply({"echo": task.data})


@contextmanager
def serving(w: jm.Worker, wait_ready: bool = True) -> Iterator[threading.Thread]:
    """Run w.receive() in a thread; stop and join it at the end, re-raising its error.

    With ``wait_ready``, ``w`` must have a ``ready`` event its startup() sets."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            w.receive()
        except BaseException as ex:  # surfaced in the test thread below
            errors.append(ex)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        if wait_ready:
            # Only stop() after receive() is listening: a stop() that comes
            # before receive() starts is forgotten (receive resets it).
            deadline = time.monotonic() + 10
            ready: threading.Event = w.ready  # type: ignore[attr-defined]
            while not ready.wait(0.05):
                assert not errors, errors
                assert time.monotonic() < deadline, "worker did not start"
        yield t
    finally:
        w.stop()
        t.join(10)
        if errors:
            # What broke receive() matters more than the test's own symptom.
            raise errors[0]
    assert not t.is_alive(), "receive() did not return after stop()"


class Holding(Base):
    """Holds each task until ``release`` is set (``started`` is set once it
    has one, so a test can look at a busy worker), then replies "ok"."""

    def __init__(self, *args: Any, hold: float = 30, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.started = threading.Event()
        self.release = threading.Event()
        self.hold = hold

    def handle(self, task: jm.Task) -> None:
        self.started.set()
        self.release.wait(self.hold)
        self.reply("ok")
