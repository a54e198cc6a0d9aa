"""In-process workers for the database tests: a recording worker, and
running its receive() in a thread for the length of a ``with`` block.

A failed assert inside a worker's ``process()`` only fails the task (or
leaves it for a retry), so the test would see it late, as a timeout. A
:class:`Base` worker records it instead, and the test raises it where it
stands: :func:`serving` at the end of its block, :meth:`Observed.wait_idle`,
:meth:`Base.work_once`, and :func:`tests.support.procs.wait_until` given the
worker among its ``children``.

Tests about crashes and concurrency use real processes instead (tests/support/procs.py).
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import job_machine as jm
from tests.support.procs import wait_until


class Observed(jm.Worker):
    """A worker that says when it is idle: ``idle_rounds`` counts the times
    it went to sleep waiting for news (its queues drained, LISTENing), and
    :meth:`wait_idle` waits for the next one, so that a test sends a task to
    a worker it knows asleep instead of sleeping a guessed while itself."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.idle_rounds = 0
        self._idle = threading.Condition()
        #: The asserts that failed inside process(), for the test to raise.
        self.failures: list[AssertionError] = []

    def alive(self) -> bool:
        """False once an assert failed inside process(): ``wait_until``
        stops waiting at once for a worker among its ``children``."""
        return not self.failures

    def describe(self) -> str:
        """The asserts that failed inside process(), with their tracebacks."""
        return "\n".join("".join(traceback.format_exception(failure)) for failure in self.failures)

    def raise_failure(self) -> None:
        """Raise the first assert that failed inside process(), if any."""
        if self.failures:
            raise AssertionError(
                f"an assert failed inside process():\n{self.describe()}"
            ) from self.failures[0]

    def _failed(self, failure: AssertionError) -> None:
        with self._idle:
            self.failures.append(failure)
            self._idle.notify_all()

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
            went = self._idle.wait_for(lambda: self.idle_rounds > target or self.failures, timeout)
            self.raise_failure()
            if not went:
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
        try:
            self.handle(task)
        except AssertionError as failure:
            self._failed(failure)
            raise

    def work_once(self, task_id: int | None = None) -> bool:
        """The worker's ``work_once()``; raises an assert that failed inside process()."""
        worked = super().work_once(task_id)
        self.raise_failure()
        return worked

    def wait_drained(self, timeout: float = 10.0) -> int:
        """Wait until the worker, after the last task it processed, looked
        for more and went to sleep waiting for news."""
        return self.wait_idle(after=getattr(self, "rounds_at_last_task", 0), timeout=timeout)

    def handle(self, task: jm.Task) -> None:
        self.reply({"echo": task.data})


def waiting(client: jm.Client | jm.AsyncClient, task_id: int) -> bool:
    """Whether a wait of ``client`` for the task listens for its answer now,
    so that an answer from then on is heard by the notification, not found
    by the wait's first read of the table."""
    replies = client._replies
    return replies is not None and replies.listening_to(task_id)


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
            ready: threading.Event = w.ready  # type: ignore[attr-defined]

            def started() -> bool:
                assert not errors, errors
                return ready.is_set()

            wait_until(started, 10, "the worker to start")
        yield t
    finally:
        w.stop()
        t.join(10)
        if errors:
            # What broke receive() matters more than the test's own symptom.
            raise errors[0]
        # So does what failed inside process().
        if isinstance(w, Observed):
            w.raise_failure()
        assert not getattr(w, "failures", None), f"inside process(): {w.failures}"  # type: ignore[attr-defined]
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
