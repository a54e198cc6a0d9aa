"""Cron schedules (docs/schedules.md) on a real PostgreSQL: the Admin API,
the dispatch with a clock the test moves (the missed-ticks policy, paused
and removed schedules), dispatchers that race, a fleet of real worker
processes sending each tick once, @app.task(cron=...), the roles, the CLI
and the dashboard page."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

import job_machine as jm
from job_machine._sync.connection import Connector
from job_machine._sync.housekeeper import Housekeeper
from job_machine._sync.store import Store
from tests.integration.test_cli import cli, failed, ok, tsv
from tests.integration.test_roles import Logins, denied, drop_roles, make_logins
from tests.integration.test_web import _act, dashboard
from tests.support import procs
from tests.support.cronfns import app as cron_app
from tests.support.workers import serving


@pytest.fixture
def logins(conn: psycopg.Connection[Any], dsn: str) -> Iterator[Logins]:
    """The roles of sql/roles.sql, with a login user in each (as test_roles.py makes them)."""
    names: list[str] = []
    yield make_logins(conn, dsn, names)
    drop_roles(conn, names)


@pytest.fixture
def stores() -> Iterator[Callable[[str], Store]]:
    """Makes Stores (the housekeeper's statements) on a DSN; closed at the end."""
    made: list[Store] = []

    def make(dsn: str) -> Store:
        made.append(Store(Connector(dsn=dsn)))
        return made[-1]

    yield make
    for s in made:
        s.connector.close()


def cron_tasks(conn: psycopg.Connection[Any], name: str) -> list[tuple[Any, ...]]:
    """(task_id, unique_key, status) of the tasks a schedule sent, oldest first."""
    return conn.execute(
        "SELECT task_id, unique_key, status FROM jobmachine.task"
        " WHERE notes->>'schedule' = %s ORDER BY task_id",
        [name],
    ).fetchall()


def test_admin_makes_replaces_pauses_resumes_lists_and_removes(dsn: str) -> None:
    with jm.Admin(dsn) as admin:
        made = admin.schedule(
            "nightly",
            "0 3 * * *",
            "reports.nightly",
            {"kind": "full"},
            timezone="Europe/Oslo",
            priority=5,
            attempts=2,
            grouping="reports",
            remove_after=timedelta(days=7),
        )
        assert (made.cron, made.timezone, made.queue, made.data) == (
            "0 3 * * *",
            "Europe/Oslo",
            "reports.nightly",
            {"kind": "full"},
        )
        assert (made.priority, made.max_attempts, made.grouping, made.remove_after) == (
            5,
            2,
            "reports",
            7 * 86400.0,
        )
        assert not made.paused and made.last_run is None and made.last_state is None
        local = made.next_run.astimezone(ZoneInfo("Europe/Oslo"))
        assert (local.hour, local.minute) == (3, 0)
        assert made.next_run > datetime.now(UTC)

        # The same again changes nothing; a paused schedule replaced stays
        # paused and keeps its next tick while the cron and zone are the same.
        assert (
            admin.schedule(
                "nightly",
                "0 3 * * *",
                "reports.nightly",
                {"kind": "full"},
                timezone="Europe/Oslo",
                priority=5,
                attempts=2,
                grouping="reports",
                remove_after=timedelta(days=7),
            ).modified
            == made.modified
        )
        admin.pause_schedule("nightly")
        again = admin.schedule("nightly", "0 3 * * *", "reports.other", timezone="Europe/Oslo")
        assert again.paused and again.next_run == made.next_run and again.queue == "reports.other"
        assert again.data is None and again.priority == 0
        moved = admin.schedule("nightly", "@hourly", "reports.other")
        assert moved.cron == "0 * * * *" and moved.next_run <= made.next_run and moved.paused
        admin.resume_schedule("nightly")
        admin.schedule("a.first", "*/5 * * * *", "q")
        assert [(s.name, s.paused) for s in admin.schedules()] == [
            ("a.first", False),
            ("nightly", False),
        ]
        admin.unschedule("nightly")
        assert [s.name for s in admin.schedules()] == ["a.first"]

        for call in (
            lambda: admin.unschedule("nightly"),
            lambda: admin.pause_schedule("nightly"),
            lambda: admin.resume_schedule("nightly"),
        ):
            with pytest.raises(ValueError, match="there is no schedule 'nightly'"):
                call()
        for args, kwargs, message in (
            (("x", "61 * * * *", "q"), {}, "Bad minute"),
            (("x", "* * * * *", "q"), {"timezone": "Mars/Base"}, "unknown time zone"),
            (("x", "* * * * *", ""), {}, "empty"),
            (("", "* * * * *", "q"), {}, "name"),
            (("x", "* * * * *", "q", float("nan")), {}, "JSON"),
            (("x", "* * * * *", "q"), {"priority": 2**40}, "priority"),
        ):
            with pytest.raises((ValueError, jm.InvalidData), match=message):
                admin.schedule(*args, **kwargs)
        with pytest.raises(TypeError):
            admin.schedule("x", "* * * * *", "q", delay=5)  # type: ignore[call-arg]
        assert [s.name for s in admin.schedules()] == ["a.first"]


def test_each_tick_once_missed_ticks_run_once_paused_skip_removed_never(
    dsn: str, conn: psycopg.Connection[Any], stores: Callable[[str], Store]
) -> None:
    """The dispatch with the test's clock (``now``), as the housekeeper runs it."""
    s = stores(dsn)
    with jm.Admin(dsn) as admin:
        first = admin.schedule("hourly", "0 * * * *", "cron.q", {"n": 1}, remove_after=60)
        t0 = first.next_run
        assert s.schedules_dispatch() == 0  # not due yet
        assert s.schedules_dispatch(now=t0 - timedelta(seconds=1)) == 0
        assert s.schedules_dispatch(now=t0) == 1
        assert s.schedules_dispatch(now=t0 + timedelta(minutes=5)) == 0  # sent already
        (task_id, key, status) = cron_tasks(conn, "hourly")[0]
        assert key == f"cron:hourly@{t0.strftime('%Y-%m-%dT%H:%M:%SZ')}" and status == 0
        with jm.Client(dsn) as client:
            info = client.task_info(task_id)
        assert (info.queue, info.data, info.title) == ("cron.q", {"n": 1}, "hourly")
        assert info.keep_for == 60
        assert info.notes == {"schedule": "hourly", "tick": t0.strftime("%Y-%m-%dT%H:%M:%SZ")}
        listed = admin.schedules()[0]
        assert (listed.last_run, listed.last_task_id, listed.last_state) == (t0, task_id, "waiting")
        assert listed.next_run == t0 + timedelta(hours=1)

        # No worker for 5.5 hours: the five missed ticks are run once, as
        # the earliest of them, and the schedule goes on after now.
        later = t0 + timedelta(hours=5, minutes=30)
        assert s.schedules_dispatch(now=later) == 1
        assert s.schedules_dispatch(now=later) == 0
        sent = cron_tasks(conn, "hourly")
        assert len(sent) == 2
        tick = t0 + timedelta(hours=1)
        assert sent[1][1] == f"cron:hourly@{tick.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        assert admin.schedules()[0].next_run == t0 + timedelta(hours=6)

        # Paused: its ticks pass and are skipped; resumed, it goes on from
        # the next tick after (the real) now, making none of them up.
        admin.pause_schedule("hourly")
        assert s.schedules_dispatch(now=t0 + timedelta(days=3)) == 0
        admin.resume_schedule("hourly")
        # (The next tick after now, or after the last tick sent: this test's
        # clock ran ahead of the real one.)
        assert admin.schedules()[0].next_run == t0 + timedelta(hours=2)
        assert s.schedules_dispatch(now=t0 + timedelta(days=3)) == 1
        assert len(cron_tasks(conn, "hourly")) == 3

        # Removed: never again.
        admin.unschedule("hourly")
        assert s.schedules_dispatch(now=t0 + timedelta(days=30)) == 0
        assert len(cron_tasks(conn, "hourly")) == 3
        # The housekeeping round dispatches too.
        admin.schedule("daily", "@daily", "cron.q")
    counts = Housekeeper(s).run(
        retries=3,
        remove_after_days=30,
        grace=1,
        max_runtime=None,
        orphan_after=1800,
        now=datetime.now(UTC) + timedelta(days=1, hours=1),
    )
    assert counts.ran and counts.scheduled == 1
    assert len(cron_tasks(conn, "daily")) == 1


def test_a_tick_is_sent_once_however_many_dispatchers_race(
    dsn: str, conn: psycopg.Connection[Any], stores: Callable[[str], Store]
) -> None:
    with jm.Admin(dsn) as admin:
        t0 = admin.schedule("race", "* * * * *", "cron.race").next_run
    row = conn.execute(
        "SELECT schedule_id, next_run, cron, timezone FROM jobmachine.schedule"
    ).fetchone()
    assert row is not None
    schedule_id, tick, cron, zone = row
    barrier = threading.Barrier(6)
    results: list[Any] = []

    def fire() -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            barrier.wait()
            results.append(
                c.execute(
                    "SELECT jobmachine.schedule_fire(%s, %s, %s, %s, %s, %s)",
                    [schedule_id, tick, cron, zone, tick + timedelta(minutes=1), tick],
                ).fetchone()[0]  # type: ignore[index]
            )

    threads = [threading.Thread(target=fire) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results.count(None) == 5 and sum(1 for r in results if r) == 1, results
    assert len(cron_tasks(conn, "race")) == 1

    # Whole dispatch rounds at once (the housekeeping lock and the row lock).
    racers = [stores(dsn) for _ in range(4)]
    sent: list[int] = []
    go = threading.Barrier(4)

    def dispatch(s: Store) -> None:
        go.wait()
        sent.append(s.schedules_dispatch(now=t0 + timedelta(minutes=3)))

    threads = [threading.Thread(target=dispatch, args=(s,)) for s in racers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(sent) == [0, 0, 0, 1]
    assert len(cron_tasks(conn, "race")) == 2

    # A tick whose task still waits is never sent again, not even by a
    # schedule removed and made again: the unique key holds it.
    with jm.Admin(dsn) as admin:
        admin.unschedule("race")
        admin.schedule("race", "* * * * *", "cron.race")
    waiting_tick = conn.execute(
        "SELECT (notes->>'tick')::timestamptz FROM jobmachine.task ORDER BY task_id DESC LIMIT 1"
    ).fetchone()[0]  # type: ignore[index]
    conn.execute("UPDATE jobmachine.schedule SET next_run = %s", [waiting_tick])
    assert stores(dsn).schedules_dispatch(now=waiting_tick + timedelta(seconds=1)) == 0
    assert len(cron_tasks(conn, "race")) == 2
    with jm.Admin(dsn) as admin:
        assert admin.schedules()[0].next_run > waiting_tick


def _sent_since(conn: psycopg.Connection[Any], name: str, since: datetime) -> int:
    row = conn.execute(
        "SELECT count(*) FROM jobmachine.task WHERE notes->>'schedule' = %s AND created > %s",
        [name, since],
    ).fetchone()
    return int(row[0]) if row else 0


def _sent(conn: psycopg.Connection[Any], name: str) -> int:
    return len(cron_tasks(conn, name))


def _db_now(conn: psycopg.Connection[Any]) -> datetime:
    return conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]


def test_a_fleet_of_worker_processes_sends_each_tick_once(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Three worker processes, a schedule every second: each tick's task
    is sent once and run once, whichever worker is the housekeeper, also
    when it is killed; a paused schedule sends nothing, a removed one never
    again. "Nothing" is checked once a marker schedule (every second) has
    sent two tasks since: dispatch rounds have run."""
    conn = db
    q = "cron.fleet"
    workers = [
        procs.start_worker(dsn, q, tmp_path, f"w{i}", dead_after=1.0, kind=kind)
        for i, kind in enumerate(("sync", "async", "sync"))
    ]
    try:
        procs.wait_until(lambda: procs.started_count(conn) == 3, 30, "3 workers", workers)
        with jm.Admin(dsn) as admin:
            admin.schedule("every.second", "* * * * * *", q, {"seq": 1})
            procs.wait_until(lambda: _sent(conn, "every.second") >= 4, 30, "4 ticks sent", workers)
            # A worker killed (the first started: most likely the
            # housekeeper); the others go on dispatching.
            workers[0].kill()
            before = _sent(conn, "every.second")
            alive = workers[1:]
            procs.wait_until(
                lambda: _sent(conn, "every.second") >= before + 4, 30, "4 more ticks", alive
            )

            admin.pause_schedule("every.second")
            paused_at = _db_now(conn)
            admin.schedule("marker.one", "* * * * * *", "cron.marker")
            procs.wait_until(
                lambda: _sent(conn, "marker.one") >= 2, 30, "the marker sent twice", alive
            )
            assert _sent_since(conn, "every.second", paused_at) == 0
            admin.resume_schedule("every.second")
            resumed = _sent(conn, "every.second")
            procs.wait_until(
                lambda: _sent(conn, "every.second") >= resumed + 2, 30, "ticks again", alive
            )

            admin.unschedule("every.second")
            removed_at = _db_now(conn)
            admin.schedule("marker.two", "* * * * * *", "cron.marker")
            procs.wait_until(
                lambda: _sent(conn, "marker.two") >= 2, 30, "the second marker sent twice", alive
            )
            assert _sent_since(conn, "every.second", removed_at) == 0

            # Every task of the schedule ran, once each.
            ids = [t[0] for t in cron_tasks(conn, "every.second")]
            procs.wait_until(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM jobmachine.task"
                        " WHERE task_id = ANY(%s) AND status = 200",
                        [ids],
                    ).fetchone()[0]  # type: ignore[index]
                    == len(ids)
                ),
                30,
                "every scheduled task done",
                alive,
            )
        keys = [t[1] for t in cron_tasks(conn, "every.second")]
        assert len(keys) == len(set(keys)) >= 10
        runs = conn.execute(
            "SELECT task_id, count(*) FROM processed WHERE task_id = ANY(%s) GROUP BY 1",
            [ids],
        ).fetchall()
        # A task the killed worker was running may have run again on another.
        assert len(runs) == len(ids) and sum(n for _, n in runs) <= len(ids) + 1
        procs.terminate_and_check(alive, timeout=15)
    finally:
        procs.kill_all(workers)


def test_an_apps_workers_register_its_cron_functions_and_run_them(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with cron_app.using(dsn):
        worker = cron_app.worker(dead_after=1.0, handle_signals=False)
        assert [s.name for s in worker.schedules] == ["cron.tick"]
        with serving(worker, wait_ready=False):
            procs.wait_until(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM jobmachine.task"
                        " WHERE notes->>'schedule' = 'cron.tick' AND status = 200"
                    ).fetchone()[0]  # type: ignore[index]
                    >= 2
                ),
                30,
                "two ticks of cron.tick done",
            )
        with jm.Admin(dsn) as admin:
            (info,) = admin.schedules()
            assert (info.name, info.cron, info.queue) == ("cron.tick", "* * * * * *", "cron.fns")
            assert info.data == {"task": "cron.tick", "args": [], "kwargs": {}}
            admin.pause_schedule("cron.tick")
            (paused,) = admin.schedules()
            # Registering again (a worker restarted) writes nothing: it
            # stays paused, with its next tick.
            assert cron_app.register_schedules() == ["cron.tick"]
            assert admin.schedules() == [paused] and paused.paused


def test_roles_admin_manages_reader_reads_worker_dispatches(
    logins: Logins,
    conn: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
    stores: Callable[[str], Store],
) -> None:
    with jm.Admin(logins.admin) as admin:
        t0 = admin.schedule("roles.cron", "* * * * *", "roles.cron", {"n": 1}).next_run
        admin.pause_schedule("roles.cron")
        admin.resume_schedule("roles.cron")
    with jm.Admin(logins.reader) as reader:
        assert [s.name for s in reader.schedules()] == ["roles.cron"]
        for action in (
            lambda: reader.schedule("x", "* * * * *", "q"),
            lambda: reader.pause_schedule("roles.cron"),
            lambda: reader.unschedule("roles.cron"),
        ):
            denied(action)
    # The worker dispatches (through schedule_fire, as the schema's owner)
    # but defines no schedule and sends nothing else.
    assert stores(logins.worker).schedules_dispatch(now=t0) == 1
    with jm.Admin(logins.worker) as as_worker:
        denied(lambda: as_worker.schedule("x", "* * * * *", "q"))
        denied(lambda: as_worker.unschedule("roles.cron"))
    with psycopg.connect(logins.worker, autocommit=True) as w:
        for statement in (
            "UPDATE jobmachine.schedule SET next_run = now() - interval '1 day'",
            "INSERT INTO jobmachine.schedule (name, cron, queue, next_run)"
            " VALUES ('evil', '* * * * *', 'q', now())",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                w.execute(statement)
    assert len(cron_tasks(conn, "roles.cron")) == 1
    # An app's worker logged in as the worker role serves, with a warning.
    caplog.set_level("WARNING", logger="job_machine.worker")
    with cron_app.using(logins.worker), cron_app.worker(handle_signals=False) as worker:
        worker.startup()
    assert "may not define cron schedules" in caplog.text
    with jm.Admin(logins.admin) as admin:
        assert [s.name for s in admin.schedules()] == ["roles.cron"]
        admin.unschedule("roles.cron")


def test_cli_schedules_add_list_pause_resume_remove(dsn: str) -> None:
    out = ok(
        cli(
            "schedules", "add", "nightly", "0 3 * * *", "reports.nightly", '{"kind": "full"}',
            "--timezone", "Europe/Oslo", "--priority", "2", "--remove-after", "7d", dsn=dsn,
        )
    )  # fmt: skip
    assert out.startswith("schedule nightly: 0 3 * * * (Europe/Oslo) to reports.nightly, next at")
    rows = tsv(ok(cli("schedules", "list", dsn=dsn)))
    assert rows[0] == ["name", "cron", "timezone", "queue", "paused", "next", "last", "last task"]
    assert rows[1][:5] == ["nightly", "0 3 * * *", "Europe/Oslo", "reports.nightly", "no"]
    assert ok(cli("schedules", "pause", "nightly", dsn=dsn)) == "schedule nightly paused\n"
    assert tsv(ok(cli("schedules", "list", dsn=dsn)))[1][4] == "yes"
    assert ok(cli("schedules", "resume", "nightly", dsn=dsn)).startswith(
        "schedule nightly resumed: next at "
    )
    (listed,) = json.loads(ok(cli("schedules", "list", "--json", dsn=dsn)))
    assert (listed["data"], listed["priority"], listed["remove_after"]) == (
        {"kind": "full"},
        2,
        7 * 86400.0,
    )
    assert ok(cli("schedules", "remove", "nightly", dsn=dsn)) == "schedule nightly removed\n"
    gone = failed(cli("schedules", "remove", "nightly", dsn=dsn), 1)
    assert "there is no schedule 'nightly'" in gone
    assert "Bad minute" in failed(cli("schedules", "add", "x", "61 * * * *", "q", dsn=dsn), 1)
    assert tsv(ok(cli("schedules", "list", dsn=dsn)))[1:] == []


async def test_the_dashboard_lists_pauses_resumes_and_removes_schedules(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with jm.Admin(dsn) as admin:
        admin.schedule("nightly <b>", "0 3 * * *", "reports.nightly", timezone="Europe/Oslo")
    async with dashboard(dsn) as http:
        page = await http.get("/schedules")
        assert page.status_code == 200
        assert "nightly &lt;b&gt;" in page.text and "<code>0 3 * * *</code>" in page.text
        assert "Europe/Oslo" in page.text
        paused = await _act(http, "pause_schedule", "nightly <b>")
        assert "Schedule nightly &lt;b&gt; paused." in paused.text
        assert 'class="pill pill-warn">paused' in paused.text
        resumed = await _act(http, "resume_schedule", "nightly <b>")
        assert "Schedule nightly &lt;b&gt; resumed." in resumed.text
        assert (await http.get("/confirm/unschedule", params={"target": "nope"})).status_code == 404
        removed = await _act(http, "unschedule", "nightly <b>")
        assert "Schedule nightly &lt;b&gt; removed." in removed.text
        assert "No schedule" in removed.text
    assert conn.execute("SELECT count(*) FROM jobmachine.schedule").fetchone() == (0,)
    with jm.Admin(dsn) as admin:
        admin.schedule("kept", "@daily", "q")
    async with dashboard(dsn, read_only=True) as http:
        html = (await http.get("/schedules")).text
        assert "kept" in html and "/confirm/" not in html


async def test_the_asyncio_face(dsn: str, conn: psycopg.Connection[Any]) -> None:
    async with jm.AsyncAdmin(dsn) as admin:
        info = await admin.schedule("async.one", "*/10 * * * *", "cron.async", [1, 2])
        assert info.data == [1, 2] and not info.paused
        await admin.pause_schedule("async.one")
        assert [s.paused for s in await admin.schedules()] == [True]
        await admin.resume_schedule("async.one")
        await admin.unschedule("async.one")
        assert await admin.schedules() == []
    async with cron_app.ausing(dsn), cron_app.async_worker(handle_signals=False) as worker:
        await worker.startup()
    assert conn.execute("SELECT name FROM jobmachine.schedule").fetchall() == [("cron.tick",)]
