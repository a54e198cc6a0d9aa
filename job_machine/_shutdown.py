"""The worker's shutdown room: SIGTERM/SIGINT handling and the grace timer.

Neither sync nor async (signal handlers run in the main thread, the timer in
a thread of its own), so one hand-written module serves both worker faces.

The first SIGTERM or SIGINT asks the worker to stop (it finishes the task in
hand) and starts a timer of ``grace`` seconds. A second signal, or the
timer's end (which sends the first signal again to the main thread), raises
``SystemExit(128 + signal)`` there: the worker leaves at once, exiting as a
shell reports death by that signal, and hands the unfinished task back.
:meth:`GracefulShutdown.begin_grace` starts the same grace for a stop asked
otherwise (``stop()``, the ``stop`` command) while the handlers are
installed; without them the worker keeps the grace itself.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

logger = logging.getLogger("job_machine.worker")

#: The signals that stop a worker.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulShutdown:
    """Installs the stop-signal handlers for one :meth:`receive` run.

    :param stop: asks the worker to stop after the task in hand (safe from a
        signal handler).
    """

    def __init__(self, stop: Callable[[], None]) -> None:
        self._stop = stop
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        #: Stop signals received during this run.
        self.signals_seen = 0
        #: Whether the grace period ran out (the second "signal" is the timer's).
        self.grace_expired = False
        #: Whether the handlers are installed (receive() on the main thread).
        self.installed = False

    def install(self, grace: float, enabled: bool = True) -> Callable[[], None]:
        """Handle SIGTERM/SIGINT with ``grace`` seconds for the task in hand;
        return what restores the previous handlers. Does nothing (but count
        afresh) when not ``enabled`` or outside the main thread."""
        self.signals_seen = 0
        self.grace_expired = False
        if not enabled or threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
        self.installed = True

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.signals_seen += 1
            if self.signals_seen > 1:
                # Second signal, or the grace period is over: stop now,
                # exiting as a shell reports death by that signal. The task
                # in hand is never marked done; receive() hands it back.
                reason = (
                    "shutdown grace period is over"
                    if self.grace_expired
                    else f"second {signal.Signals(signum).name}"
                )
                logger.warning("%s: stopping now", reason)
                raise SystemExit(128 + signum)
            logger.info(
                "%s: finishing the task in hand (up to %.0f s), then stopping",
                signal.Signals(signum).name,
                grace,
            )
            self._stop()
            self._start_timer(signum, grace)

        for sig in STOP_SIGNALS:
            signal.signal(sig, on_signal)

        def restore() -> None:
            self.installed = False
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def begin_grace(self, grace: float) -> bool:
        """A stop asked otherwise than by a signal (``stop()`` from another
        thread, the ``stop`` command): start the grace as the first SIGTERM
        does, whose end raises ``SystemExit(143)`` in the main thread. False
        when the handlers are not installed (the worker keeps the grace
        itself); a grace already running is left as it is."""
        with self._lock:
            if not self.installed:
                return False
            if self.signals_seen or self._timer is not None:
                return True
            self.signals_seen = 1
        logger.info("finishing the task in hand (up to %.0f s), then stopping", grace)
        self._start_timer(signal.SIGTERM, grace)
        return True

    def _start_timer(self, signum: int, grace: float) -> None:
        main = threading.main_thread().ident
        assert main is not None

        def grace_over() -> None:
            with self._lock:
                if self._timer is None:
                    return  # receive() has returned meanwhile
                self._timer = None
                self.grace_expired = True
            signal.pthread_kill(main, signum)

        with self._lock:
            self._timer = threading.Timer(grace, grace_over)
            self._timer.daemon = True
            self._timer.start()

    def cancel_timer(self) -> None:
        """Stop the grace timer, if running (receive() is returning)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
