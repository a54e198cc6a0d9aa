"""The options of ``send``: checked once, for the sync and asyncio clients alike."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

_INT32 = 2**31 - 1


def send_options(
    *,
    priority: int = 0,
    run_after: datetime | None = None,
    delay: float | timedelta | None = None,
    attempts: int | None = None,
    title: str | None = None,
    grouping: str | None = None,
    remove_after: float | timedelta | datetime | None = None,
    unique_key: str | None = None,
    parents: Iterable[int] | None = None,
    time_limit: float | timedelta | None = None,
    expire_after: float | timedelta | None = None,
    expires_at: datetime | None = None,
) -> dict[str, Any]:
    """Check the options of a task and return them as query parameters.

    :raises ValueError: an option is out of range or contradicts another
        (the message names it); nothing is written.
    :raises TypeError: an option has the wrong type.
    """
    check_priority("priority", priority)
    if run_after is not None and delay is not None:
        raise ValueError("give run_after or delay, not both")
    _aware("run_after", run_after)
    seconds = _seconds("delay", delay) if delay is not None else None
    if attempts is not None and (
        isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= _INT32
    ):
        raise ValueError(f"attempts must be a whole number >= 1, not {attempts!r}")
    for name, text in (("title", title), ("grouping", grouping), ("unique_key", unique_key)):
        if text is not None and not isinstance(text, str):
            raise TypeError(f"{name} must be a string, not {text!r}")
    if unique_key == "":
        raise ValueError("unique_key is empty")
    remove_at: datetime | None = None
    keep_for: float | None = None
    if isinstance(remove_after, datetime):
        remove_at = _aware("remove_after", remove_after)
    elif remove_after is not None:
        keep_for = _seconds("remove_after", remove_after)
    ids = _task_ids(parents) if parents is not None else None
    limit = _seconds("time_limit", time_limit) if time_limit is not None else None
    if limit == 0:
        raise ValueError("time_limit must be more than 0 seconds")
    if expire_after is not None and expires_at is not None:
        raise ValueError("give expire_after or expires_at, not both")
    expiry = _seconds("expire_after", expire_after) if expire_after is not None else None
    _aware("expires_at", expires_at)
    return {
        "priority": priority,
        "run_after": run_after,
        "delay": seconds,
        "max_attempts": attempts,
        "title": title,
        "grouping": grouping,
        "remove_after": remove_at,
        "keep_for": keep_for,
        "unique_key": unique_key,
        "parents": ids or None,
        "time_limit": limit,
        "expire_after": expiry,
        "expires_at": expires_at,
    }


def check_priority(name: str, value: object) -> int:
    """``value`` if it is a priority (an int within PostgreSQL's integer).

    :raises TypeError: not an int. :raises ValueError: out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if not -_INT32 <= value <= _INT32:
        raise ValueError(f"{name} must be within +-{_INT32}, not {value}")
    return value


def _aware(name: str, when: datetime | None) -> datetime | None:
    if when is not None:
        if not isinstance(when, datetime):
            raise TypeError(f"{name} must be a datetime, not {when!r}")
        if when.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware (datetime.now(timezone.utc) + ...)")
    return when


def _task_ids(parents: Iterable[int]) -> list[int]:
    if isinstance(parents, str | bytes) or not isinstance(parents, Iterable):
        raise TypeError(f"parents must be a list of task ids, not {parents!r}")
    ids: list[int] = []
    for p in parents:
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise ValueError(f"parents must be task ids (whole numbers >= 1), not {p!r}")
        if p not in ids:
            ids.append(p)
    return ids


def _seconds(name: str, value: float | timedelta) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value < float("inf")
    ):
        raise ValueError(f"{name} must be a number of seconds >= 0 or a timedelta, not {value!r}")
    return float(value)
