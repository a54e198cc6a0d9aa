"""Cron expressions and time zones for schedules: checked once, ticks computed.

The expressions are read by cronsim (the library healthchecks.io runs),
never by a parser of our own: five fields (minute, hour, day of month,
month, day of week), or six with seconds first, plus the usual
``@hourly``-style nicknames. A schedule's ticks are read in its time zone
(an IANA name, ``"Europe/Oslo"``; default ``"UTC"``), with Debian cron's
rules across a DST change, as cronsim implements them:

- a tick at a fixed local time that does not exist (the hour skipped when
  clocks go forward) runs at the first minute after the gap (02:30 on that
  day runs at 03:00);
- a tick at a fixed local time that happens twice (the hour repeated when
  clocks go back) runs once, at its first occurrence;
- expressions with ``*`` in the minute or hour field (``*/15 * * * *``)
  run by elapsed time, so none is skipped or doubled.

No I/O here: the Store and Admin compute with it, and tests check the
policy as plain functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from ._options import send_options

#: The nicknames cron knows, as the expressions they stand for.
NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

#: The longest schedule name (it goes into each task's unique key).
MAX_NAME = 200


def expression(cron: str) -> str:
    """``cron`` with a nickname replaced by its expression and spaces normalised."""
    if not isinstance(cron, str):
        raise TypeError(f"cron must be a string, not {cron!r}")
    text = " ".join(cron.split())
    return NICKNAMES.get(text.lower(), text)


def zone(timezone: str) -> ZoneInfo:
    """The time zone of that IANA name.

    :raises ValueError: no such zone.
    """
    if not isinstance(timezone, str) or not timezone:
        raise ValueError(f"timezone must be an IANA zone name like 'Europe/Oslo', not {timezone!r}")
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as ex:
        raise ValueError(f"unknown time zone {timezone!r} ({ex})") from None


def next_tick(cron: str, timezone: str, after: datetime) -> datetime:
    """The first tick of ``cron`` strictly after ``after``, read in ``timezone``,
    as an aware datetime in UTC.

    :raises ValueError: a malformed expression, an unknown zone, or an
        expression that never matches (the 30th of February).
    """
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    text = expression(cron)
    local = after.astimezone(zone(timezone))
    try:
        tick = next(CronSim(text, local))
    except CronSimError as ex:
        raise ValueError(f"bad cron expression {cron!r}: {ex}") from None
    except StopIteration:
        raise ValueError(f"cron expression {cron!r} never matches") from None
    return tick.astimezone(UTC)


def check(cron: str, timezone: str) -> str:
    """The expression of ``cron`` (nicknames replaced) once it and
    ``timezone`` are known good.

    :raises ValueError: as :func:`next_tick`.
    """
    text = expression(cron)
    next_tick(text, timezone, datetime.now(UTC))
    return text


def check_name(name: object) -> str:
    """``name`` if it can name a schedule: a non-empty string, printable, at most 200 characters.

    :raises ValueError: it cannot.
    """
    if not isinstance(name, str) or not name.strip() or not name.isprintable():
        raise ValueError(f"a schedule's name must be a printable, non-empty string, not {name!r}")
    if len(name) > MAX_NAME:
        raise ValueError(f"a schedule's name is at most {MAX_NAME} characters, not {len(name)}")
    return name


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule as code defines it (``@app.task(cron=...)``): what
    :meth:`Admin.schedule` is called with."""

    name: str
    cron: str
    queue: str
    data: Any = None
    timezone: str = "UTC"
    #: priority, attempts, title, grouping, remove_after (as Admin.schedule takes them).
    options: dict[str, Any] = field(default_factory=dict)


def schedule_options(
    *,
    priority: int = 0,
    attempts: int | None = None,
    title: str | None = None,
    grouping: str | None = None,
    remove_after: float | timedelta | None = None,
) -> dict[str, Any]:
    """The send options a schedule gives each of its tasks, checked as
    ``send`` checks them, as query parameters.

    The others make no sense once per tick: ``delay``/``run_after`` (the
    tick is the time), ``unique_key`` (each tick has its own),
    ``parents``, and a ``remove_after`` that is a date.

    :raises ValueError, TypeError: as :func:`job_machine._options.send_options`.
    """
    if isinstance(remove_after, datetime):
        raise TypeError("a schedule's remove_after is a duration (seconds or a timedelta)")
    options = send_options(
        priority=priority,
        attempts=attempts,
        title=title,
        grouping=grouping,
        remove_after=remove_after,
    )
    return {k: options[k] for k in ("priority", "max_attempts", "title", "grouping", "keep_for")}
