"""The prefetch budget's policy, without a database."""

from __future__ import annotations

import pytest

from job_machine._prefetch import BUFFER_SLACK, PrefetchBudget


def _after(*runs: float) -> PrefetchBudget:
    budget = PrefetchBudget()
    for took in runs:
        budget.note(took)
    return budget


def test_one_task_until_a_task_has_run() -> None:
    assert PrefetchBudget().batch_size(100, 0.2) == 1


@pytest.mark.parametrize(
    ("took", "expected"), [(0.001, 100), (0.02, 10), (0.5, 1), (0.0, 100), (0.0001, 100)]
)
def test_what_one_slot_gets_through_in_prefetch_seconds(took: float, expected: int) -> None:
    assert _after(took).batch_size(100, 0.2) == expected


def test_more_slots_claim_more_and_prefetch_caps_it() -> None:
    assert _after(0.02).batch_size(100, 0.2, concurrency=4) == 40
    assert _after(0.02).batch_size(25, 0.2, concurrency=4) == 25
    assert _after(0.02).batch_size(1, 0.2, concurrency=4) == 1


def test_the_average_moves_a_fifth_of_the_way_to_each_run() -> None:
    budget = _after(0.1, 0.2)
    assert budget.avg_runtime == pytest.approx(0.12)


def test_a_task_waiting_longer_than_a_batch_lasts_is_claimed_again() -> None:
    assert not PrefetchBudget.must_reclaim(0.0, 0.2)
    assert not PrefetchBudget.must_reclaim(BUFFER_SLACK * 0.2 - 0.001, 0.2)
    assert PrefetchBudget.must_reclaim(BUFFER_SLACK * 0.2, 0.2)
