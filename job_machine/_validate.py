"""Checks of argument types shared by the sync and async faces (never twinned)."""

from __future__ import annotations

from typing import TypeGuard


def is_int(value: object) -> TypeGuard[int]:
    """Whether ``value`` is a whole number: an int, but not a bool (True is an
    int to Python, never a count or an id to job_machine)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """Whether ``value`` is an int or a float, but not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)
