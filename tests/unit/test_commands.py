"""The commands room's policy, without a database: a registered handler
wins over a built-in one, the built-in ``concurrency``, ``status`` and
``stop``, and the refusals (job_machine/_async/commands.py)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

import job_machine as jm

NOWHERE = "postgresql://nowhere/db"


def _worker(concurrency: int = 1) -> jm.Worker:
    return jm.Worker(NOWHERE, queue="q", concurrency=concurrency, handle_signals=False)


def test_a_registered_handler_wins_over_the_built_in_one() -> None:
    w = _worker()
    seen: list[Any] = []

    @w.on_command("status")
    def status(args: Any) -> None:
        seen.append(args)

    reload = seen.append
    assert w.on_command("reload", reload) is reload
    w.handle_command("status", {"a": 1})
    w.handle_command("reload", [2])
    assert seen == [{"a": 1}, [2]]
    with pytest.raises(ValueError, match="a command name is a non-empty string"):
        w.on_command("")


def test_status_is_logged_as_json(caplog: pytest.LogCaptureFixture) -> None:
    w = _worker()
    with caplog.at_level(logging.INFO, "job_machine.worker"):
        w.handle_command("status", None)
    (record,) = [r for r in caplog.records if "status" in r.getMessage()]
    logged = json.loads(record.getMessage().split("status ", 1)[1])
    assert logged == {
        "worker_id": None,
        "queues": ["q"],
        "concurrency": 1,
        "running": [],
        "claimed_ahead": 0,
        "stopping": False,
    }
    assert logged == w.status()


def test_concurrency_is_noted_for_the_serving_loop_and_applied_there() -> None:
    w = _worker(concurrency=3)
    w.handle_command("concurrency", 2)
    assert w.concurrency == 3 and w._commands.wanted_concurrency == 2
    w._commands.apply_concurrency()  # the serving loop's next turn
    assert w.concurrency == 2 and w._commands.wanted_concurrency is None
    w._commands.apply_concurrency()  # nothing asked: nothing changes
    assert w.concurrency == 2


def test_concurrency_refusals_are_raised_by_the_method_and_logged_for_a_command(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = _worker()
    with pytest.raises(ValueError, match="started with concurrency 1"):
        w.set_concurrency(2)
    for bad in (0, True, "2"):
        with pytest.raises(ValueError, match="concurrency must be a whole number >= 1"):
            _worker(concurrency=2).set_concurrency(bad)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, "job_machine.worker"):
        w.handle_command("concurrency", 2)
        w.handle_command("frobnicate", None)
    assert w._commands.wanted_concurrency is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("command concurrency: concurrency 2 refused" in m for m in messages)
    assert any("unknown command 'frobnicate' ignored" in m for m in messages)
    w.set_concurrency(1)  # one at a time is always allowed
    assert w._commands.wanted_concurrency == 1


def test_stop_by_broadcast_or_registry_stops_once(caplog: pytest.LogCaptureFixture) -> None:
    w = _worker()
    with caplog.at_level(logging.INFO, "job_machine.worker"):
        w.handle_command("stop", None)
        w._commands.from_registry("stop")
        w._commands.from_registry("pause")
    assert w._stopper.stopping and w.status()["stopping"]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("asked to stop" in m for m in messages) == 1
    assert any("unknown command 'pause' ignored" in m for m in messages)
