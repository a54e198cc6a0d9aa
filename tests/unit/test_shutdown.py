"""The shutdown room's policy, in this process: the first stop signal asks
for a stop and starts the grace timer, the second exits at once."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from job_machine._shutdown import GracefulShutdown


def test_first_signal_stops_second_exits_and_handlers_come_back() -> None:
    stops: list[bool] = []
    shutdown = GracefulShutdown(lambda: stops.append(True))
    before = signal.getsignal(signal.SIGTERM)
    restore = shutdown.install(grace=60)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stops == [True] and shutdown.signals_seen == 1
        with pytest.raises(SystemExit) as exited:
            os.kill(os.getpid(), signal.SIGINT)
        assert exited.value.code == 128 + signal.SIGINT
        assert not shutdown.grace_expired
    finally:
        shutdown.cancel_timer()
        restore()
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_end_of_the_grace_period_exits_as_the_signal_did() -> None:
    shutdown = GracefulShutdown(lambda: None)
    restore = shutdown.install(grace=0.05)
    try:
        with pytest.raises(SystemExit) as exited:
            os.kill(os.getpid(), signal.SIGTERM)
            threading.Event().wait(10)  # the timer's signal interrupts this wait
        assert exited.value.code == 128 + signal.SIGTERM
        assert shutdown.grace_expired
    finally:
        shutdown.cancel_timer()
        restore()


def test_nothing_is_installed_when_disabled_or_off_the_main_thread() -> None:
    shutdown = GracefulShutdown(lambda: None)
    before = signal.getsignal(signal.SIGTERM)
    shutdown.install(grace=1, enabled=False)()
    assert signal.getsignal(signal.SIGTERM) is before
    restores: list[object] = []
    t = threading.Thread(target=lambda: restores.append(shutdown.install(grace=1)))
    t.start()
    t.join()
    assert signal.getsignal(signal.SIGTERM) is before
