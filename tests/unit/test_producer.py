"""The producer room's idle policy, without a database: how long a worker
sleeps when the queues gave nothing (job_machine/_async/producer.py)."""

from __future__ import annotations

from typing import Any

import pytest

import job_machine as jm
from job_machine._async.producer import LOCKED_POLLS_MAX


def _producer() -> Any:
    return jm.Worker("postgresql://nowhere/db", queue="q", handle_signals=False)._producer


def test_it_sleeps_until_the_next_task_is_due_or_the_timeout() -> None:
    p = _producer()
    assert p.idle_wait(None, 30) == 30  # nothing waits
    assert p.idle_wait(2.0, 30) == pytest.approx(2.005)  # just after it falls due
    assert p.idle_wait(60.0, 30) == 30


def test_a_due_task_whose_row_is_locked_is_looked_at_again_backing_off() -> None:
    p = _producer()
    waits = [p.idle_wait(0.0, 30) for _ in range(LOCKED_POLLS_MAX + 2)]
    assert waits[:3] == [0.01, 0.02, 0.04]
    assert waits[-3:] == [1.28, 1.28, 1.28]  # capped
    assert p.idle_wait(0.0, 0.05) == 0.05  # never past the timeout
    assert p.idle_wait(1.0, 30) == pytest.approx(1.005)  # no longer locked: starts over
    assert p.idle_wait(0.0, 30) == 0.01
