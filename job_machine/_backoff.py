"""Capped exponential backoff with jitter, for reconnects and retries."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """The delay before try number ``attempt + 1`` (``attempt`` >= 1 failed so far).

    ``base * 2 ** (attempt - 1)``, capped at ``cap``, then "equal jitter":
    a random point in the upper half, so a fleet that failed together does
    not come back together, and no delay is ever near zero.
    """
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 62))
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 (not crypto)


class Backoff:
    """Successive delays for one run of failures; :meth:`reset` after a success."""

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next(self) -> float:
        """The delay to wait after one more failure."""
        self.failures += 1
        return backoff_delay(self.failures, self.base, self.cap)

    def reset(self) -> None:
        """Start again from ``base`` (the last try succeeded)."""
        self.failures = 0
