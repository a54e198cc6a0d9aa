"""The tick computation of cron schedules (job_machine/_cron.py) as plain
functions: nicknames, seconds, bad input, and the DST policy of a schedule
in a zone that changes its clocks (Debian cron's, as cronsim implements it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import job_machine as jm
from job_machine import _cron


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def ticks(cron: str, zone: str, start: datetime, n: int) -> list[datetime]:
    """The next ``n`` ticks after ``start``, each computed from the one before
    (as the dispatcher advances a schedule)."""
    out = []
    for _ in range(n):
        start = _cron.next_tick(cron, zone, start)
        out.append(start)
    return out


def test_the_next_tick_is_strictly_after_and_in_utc() -> None:
    assert _cron.next_tick("0 * * * *", "UTC", utc(2026, 1, 1, 10)) == utc(2026, 1, 1, 11)
    assert _cron.next_tick("0 * * * *", "UTC", utc(2026, 1, 1, 10, 0, 0)) > utc(2026, 1, 1, 10)
    tick = _cron.next_tick("*/5 * * * *", "Asia/Kolkata", utc(2026, 1, 1, 10, 1, 30))
    assert tick == utc(2026, 1, 1, 10, 5) and tick.tzinfo is UTC
    # Six fields: seconds first.
    assert ticks("*/20 * * * * *", "UTC", utc(2026, 1, 1, 10, 0, 5), 3) == [
        utc(2026, 1, 1, 10, 0, 20),
        utc(2026, 1, 1, 10, 0, 40),
        utc(2026, 1, 1, 10, 1, 0),
    ]


def test_nicknames_and_spaces() -> None:
    assert _cron.expression("@daily") == "0 0 * * *"
    assert _cron.expression(" @HOURLY ") == "0 * * * *"
    assert _cron.expression("0   3 * *  *") == "0 3 * * *"
    assert _cron.check("@weekly", "Europe/Oslo") == "0 0 * * 0"
    assert _cron.next_tick("@monthly", "UTC", utc(2026, 1, 15)) == utc(2026, 2, 1)


@pytest.mark.parametrize(
    ("cron", "zone", "message"),
    [
        ("61 * * * *", "UTC", "Bad minute"),
        ("* * * *", "UTC", "Wrong number of fields"),
        ("0 0 30 2 *", "UTC", "day-of-month"),
        ("@sometimes", "UTC", "bad cron expression"),
        ("* * * * *", "Mars/Olympus", "unknown time zone"),
        ("* * * * *", "", "IANA zone"),
        ("* * * * *", "../etc/passwd", "unknown time zone"),
    ],
)
def test_bad_expressions_and_zones_are_refused(cron: str, zone: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _cron.check(cron, zone)


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _cron.next_tick("* * * * *", "UTC", datetime(2026, 1, 1))


# -- DST: Europe/Oslo goes forward on 2026-03-29 02:00 -> 03:00 and back on
# 2026-10-25 03:00 -> 02:00; America/New_York on 2026-03-08 and 2026-11-01.


def test_a_fixed_time_in_the_skipped_hour_runs_at_the_end_of_the_gap() -> None:
    # 02:30 does not exist on the 29th: it runs at 03:00 CEST (01:00 UTC),
    # once; the days around it at 02:30 local (01:30 UTC in CET, 00:30 in CEST).
    assert ticks("30 2 * * *", "Europe/Oslo", utc(2026, 3, 27, 12), 3) == [
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 30, 0, 30),
    ]


def test_a_fixed_time_in_the_repeated_hour_runs_once() -> None:
    # 02:30 happens twice on 2026-10-25 (CEST, then CET): one tick, the first.
    assert ticks("30 2 * * *", "Europe/Oslo", utc(2026, 10, 24, 12), 3) == [
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
        utc(2026, 10, 27, 1, 30),
    ]


def test_a_daily_time_keeps_the_wall_clock_across_dst() -> None:
    got = ticks("0 9 * * *", "America/New_York", utc(2026, 3, 6, 20), 4)
    assert got == [
        utc(2026, 3, 7, 14),  # 09:00 EST
        utc(2026, 3, 8, 13),  # 09:00 EDT, the day clocks went forward
        utc(2026, 3, 9, 13),
        utc(2026, 3, 10, 13),
    ]
    assert ticks("0 9 * * *", "America/New_York", utc(2026, 10, 31, 20), 2) == [
        utc(2026, 11, 1, 14),  # back to EST
        utc(2026, 11, 2, 14),
    ]


@pytest.mark.parametrize(
    "start", [utc(2026, 3, 28, 23, 0), utc(2026, 10, 24, 23, 0)], ids=["forward", "back"]
)
def test_an_interval_runs_by_elapsed_time_none_skipped_or_doubled(start: datetime) -> None:
    # Every 30 minutes through the night of a change: always 30 minutes
    # apart in real time, as many ticks as on any other night.
    got = ticks("*/30 * * * *", "Europe/Oslo", start, 12)
    assert {b - a for a, b in zip([start, *got], got, strict=False)} == {timedelta(minutes=30)}
    assert len(set(got)) == 12


def test_the_missed_ticks_policy_runs_once_then_resumes_after_now() -> None:
    """The dispatcher sends one task for the earliest missed tick (the
    schedule's next_run), then advances to the first tick after now: here a
    fleet down from 00:10 to 05:40 UTC on the night Oslo went forward."""
    due = utc(2026, 3, 29, 0, 15)
    now = utc(2026, 3, 29, 5, 40)
    assert due <= now
    assert _cron.next_tick("15 * * * *", "Europe/Oslo", now) == utc(2026, 3, 29, 6, 15)


# -- @app.task(cron=...) -------------------------------------------------------------------


def test_app_task_cron_makes_a_schedule_of_the_function() -> None:
    app = jm.App(dsn="postgresql://unused")

    @app.task(cron="@hourly", cron_timezone="Europe/Oslo", queue="cron.jobs", priority=2)
    def tidy(keep: int = 3) -> int:
        return keep

    @app.task(queue="cron.jobs")
    def plain() -> None: ...

    (spec,) = app.schedules
    assert (spec.name, spec.cron, spec.timezone, spec.queue) == (
        tidy.name,
        "0 * * * *",
        "Europe/Oslo",
        "cron.jobs",
    )
    assert spec.data == {"task": tidy.name, "args": [], "kwargs": {}}
    assert spec.options == {"priority": 2}

    with pytest.raises(TypeError, match="called without arguments"):

        @app.task(cron="* * * * *", queue="cron.jobs")
        def needs(x: int) -> int:
            return x

    with pytest.raises(ValueError, match="unknown time zone"):

        @app.task(cron="* * * * *", cron_timezone="Nowhere/Town", queue="cron.jobs")
        def nowhere() -> None: ...

    assert [s.name for s in app.schedules] == [tidy.name]


def test_schedule_options_refuse_what_makes_no_sense_per_tick() -> None:
    assert _cron.schedule_options(priority=1, attempts=2, remove_after=timedelta(hours=1)) == {
        "priority": 1,
        "max_attempts": 2,
        "title": None,
        "grouping": None,
        "keep_for": 3600.0,
    }
    with pytest.raises(TypeError, match="duration"):
        _cron.schedule_options(remove_after=utc(2027, 1, 1))
    with pytest.raises(ValueError, match="attempts"):
        _cron.schedule_options(attempts=0)
    with pytest.raises(TypeError):
        _cron.schedule_options(delay=5)  # type: ignore[call-arg]
