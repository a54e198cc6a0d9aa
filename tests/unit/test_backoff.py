"""The backoff of retries and reconnects: exponential, capped, jittered."""

from __future__ import annotations

import pytest

from job_machine._backoff import Backoff, backoff_delay


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(1, 0.5, 1.0), (2, 1.0, 2.0), (3, 2.0, 4.0), (6, 16.0, 32.0), (7, 30.0, 60.0)],
)
def test_delay_doubles_then_stops_at_the_cap(attempt: int, low: float, high: float) -> None:
    delays = [backoff_delay(attempt, base=1.0, cap=60.0) for _ in range(200)]
    assert all(low <= d <= high for d in delays)
    assert max(delays) - min(delays) > (high - low) / 4  # jittered, not constant


def test_delay_never_exceeds_the_cap_even_after_many_failures() -> None:
    assert all(backoff_delay(10_000, base=0.5, cap=30.0) <= 30.0 for _ in range(100))
    assert all(backoff_delay(10_000, base=0.5, cap=30.0) >= 15.0 for _ in range(100))


def test_zero_base_means_at_once() -> None:
    assert backoff_delay(5, base=0.0, cap=10.0) == 0.0


def test_backoff_counts_failures_and_resets() -> None:
    b = Backoff(base=1.0, cap=8.0)
    first, second, third = b.next(), b.next(), b.next()
    assert 0.5 <= first <= 1.0 and 1.0 <= second <= 2.0 and 2.0 <= third <= 4.0
    assert b.failures == 3
    b.reset()
    assert 0.5 <= b.next() <= 1.0
