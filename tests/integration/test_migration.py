"""Upgrading a database of schema version 2 (the previous release's
sql/create_tables.sql, kept as tests/fixtures/create_tables_v2.sql) to
the current version in place: nothing lost, the claim index replaced,
idempotent, and Perl Job::Machine and Python clients and workers working on
it after. Likewise from version 3 (tests/fixtures/create_tables_v3.sql) to
version 4, and from version 4 (tests/fixtures/create_tables_v4.sql) to
version 5 (streamed parts), and from version 6
(tests/fixtures/create_tables_v6.sql) to version 7 (task.trace_context), and
from version 7 (tests/fixtures/create_tables_v7.sql) to version 8 (the
housekeeping policy on the task) and version 10 (queue limits, worker
commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

import job_machine as jm
from job_machine._schema_sql import SCHEMA_VERSION
from tests.integration.test_perl_compat import Answer, Perl

V2_SCHEMA = Path(__file__).resolve().parents[1] / "fixtures" / "create_tables_v2.sql"
V3_SCHEMA = Path(__file__).resolve().parents[1] / "fixtures" / "create_tables_v3.sql"
V4_SCHEMA = Path(__file__).resolve().parents[1] / "fixtures" / "create_tables_v4.sql"
V6_SCHEMA = Path(__file__).resolve().parents[1] / "fixtures" / "create_tables_v6.sql"
V7_SCHEMA = Path(__file__).resolve().parents[1] / "fixtures" / "create_tables_v7.sql"
ALL_VERSIONS = [(v,) for v in range(1, SCHEMA_VERSION + 1)]

TASK_V2_COLUMNS = (
    "task_id, transaction_id, class_id, grouping, title, parameters, status, run_after,"
    " remove_after, created, modified, attempts, worker_id, started"
)

WORKER_V2 = "SELECT worker_id, host, pid, queues, started, seen FROM jobmachine.worker"


def rows(conn: psycopg.Connection[Any], query: str) -> list[tuple[Any, ...]]:
    return conn.execute(query).fetchall()


def indexes(conn: psycopg.Connection[Any]) -> dict[str, str]:
    return {
        name: definition
        for name, definition in conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'jobmachine'"
        )
    }


def catalog(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """What an install creates: columns, indexes, triggers, functions, versions."""
    return {
        "columns": rows(
            conn,
            "SELECT table_name, column_name, data_type, column_default, is_nullable"
            " FROM information_schema.columns WHERE table_schema = 'jobmachine'"
            " ORDER BY 1, 2",
        ),
        "indexes": sorted(indexes(conn).items()),
        "triggers": rows(
            conn,
            "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger"
            " WHERE tgrelid = 'jobmachine.task'::regclass AND NOT tgisinternal ORDER BY 1",
        ),
        "functions": rows(
            conn,
            "SELECT p.proname, md5(pg_get_functiondef(p.oid)) FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'jobmachine'"
            " ORDER BY 1",
        ),
        "versions": rows(
            conn, "SELECT version, description, installed FROM jobmachine.schema_version ORDER BY 1"
        ),
    }


@pytest.fixture
def v2(empty_dsn: str) -> dict[str, Any]:
    """A version 2 database holding a done task with its reply, a waiting
    one, a delayed one, one running for a live-looking worker, and a failed
    one, in two queues."""
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        c.execute(V2_SCHEMA.read_text("utf-8"))
        assert rows(c, "SELECT version FROM jobmachine.schema_version ORDER BY 1") == [(1,), (2,)]
        assert "task_waiting_idx" in indexes(c)
        q1, q2 = (
            r[0]
            for r in c.execute(
                "INSERT INTO jobmachine.class (name) VALUES ('mig.q'), ('mig.other')"
                " RETURNING class_id"
            )
        )
        (worker,) = c.execute(
            "INSERT INTO jobmachine.worker (host, pid, queues)"
            " VALUES ('old-host', 4242, '{mig.q}') RETURNING worker_id"
        ).fetchone()  # type: ignore[misc]

        def task(class_id: int, data: str, status: int, **extra: Any) -> int:
            cols = ", ".join(["class_id", "parameters", "status", *extra])
            marks = ", ".join(["%s"] * (3 + len(extra)))
            row = c.execute(
                f"INSERT INTO jobmachine.task ({cols}) VALUES ({marks}) RETURNING task_id",
                (class_id, data, status, *extra.values()),
            ).fetchone()
            assert row is not None
            return int(row[0])

        ids = {
            "done": task(q1, '"done"', 200, attempts=1, title="t", grouping="g"),
            "waiting": task(q1, '{"n": 1}', 0),
            "running": task(q1, '"running"', 100, attempts=1, worker_id=worker),
            "failed": task(q2, '"failed"', 900, attempts=3),
            "waiting2": task(q2, '{"n": 2}', 0),
        }
        c.execute(
            "UPDATE jobmachine.task SET started = now() WHERE task_id = %s", (ids["running"],)
        )
        c.execute(
            "INSERT INTO jobmachine.result (task_id, result, resulttype) VALUES"
            " (%s, '\"the reply\"', 'json'), (%s, '{\"type\": \"ValueError\"}', 'error')",
            (ids["done"], ids["failed"]),
        )
    return {"dsn": empty_dsn, "ids": ids, "worker": worker}


def test_install_schema_upgrades_a_v2_database_in_place(v2: dict[str, Any], dsn: str) -> None:
    fresh_dsn = dsn
    dsn = v2["dsn"]
    with psycopg.connect(dsn, autocommit=True) as c:
        tasks = rows(c, f"SELECT {TASK_V2_COLUMNS} FROM jobmachine.task ORDER BY task_id")
        results = rows(c, "SELECT * FROM jobmachine.result ORDER BY result_id")
        classes = rows(c, "SELECT class_id, name, created FROM jobmachine.class ORDER BY 1")
        workers = rows(c, WORKER_V2)
        v1_v2 = rows(c, "SELECT * FROM jobmachine.schema_version ORDER BY 1")

        jm.install_schema(dsn)

        versions = rows(c, "SELECT version FROM jobmachine.schema_version ORDER BY 1")
        assert versions == ALL_VERSIONS
        assert rows(c, "SELECT * FROM jobmachine.schema_version WHERE version < 3") == v1_v2
        with jm.Admin(dsn) as admin:
            assert admin.schema_version() == SCHEMA_VERSION
        # No task, result, queue or worker lost or changed.
        assert rows(c, f"SELECT {TASK_V2_COLUMNS} FROM jobmachine.task ORDER BY task_id") == tasks
        assert rows(c, "SELECT * FROM jobmachine.result ORDER BY result_id") == results
        assert rows(c, "SELECT class_id, name, created FROM jobmachine.class ORDER BY 1") == classes
        assert rows(c, WORKER_V2) == workers
        # The new columns have their defaults on the old rows.
        assert rows(
            c,
            "SELECT DISTINCT priority, max_attempts, keep_for, parents, has_children, notes,"
            " unique_key, uncounted_attempts FROM jobmachine.task",
        ) == [(0, None, None, None, False, None, None, 0)]
        assert rows(c, "SELECT DISTINCT paused FROM jobmachine.class") == [(False,)]
        assert rows(c, "SELECT DISTINCT command FROM jobmachine.worker") == [(None,)]
        # The claim index replaced; the new ones there.
        idx = indexes(c)
        assert "task_waiting_idx" not in idx
        assert "(class_id, priority DESC, task_id) WHERE (status = 0)" in idx["task_ready_idx"]
        # Everything else as a fresh install has it.
        with psycopg.connect(fresh_dsn, autocommit=True) as f:
            fresh = catalog(f)
        got = catalog(c)
        for part in ("columns", "indexes", "triggers", "functions"):
            assert got[part] == fresh[part], part
        assert [v[:2] for v in got["versions"]] == [v[:2] for v in fresh["versions"]]
        assert rows(c, "SELECT count(*) FROM jobmachine.lock") == [(0,)]

        # Twice (through a DSN, then a connection): nothing changes at all.
        before = catalog(c)
        tasks3 = rows(c, "SELECT * FROM jobmachine.task ORDER BY task_id")
        jm.install_schema(dsn)
        jm.install_schema(c)
        assert catalog(c) == before
        assert rows(c, "SELECT * FROM jobmachine.task ORDER BY task_id") == tasks3

    # The old tasks are served and read as before.
    ids = v2["ids"]
    with jm.Client(dsn, queue="mig.q") as client:
        assert client.receive(ids["done"]) == "the reply"
        with Answer(dsn, queue=["mig.q", "mig.other"]) as w:
            while w.work_once():
                pass
        assert [t.id for t in w.seen] == [ids["waiting"], ids["waiting2"]]
        assert client.receive(ids["waiting"]) == {"data": {"got": {"n": 1}, "by": "python"}}
        info = client.task_info(ids["running"])
        assert (info.state, info.worker_id) == ("running", v2["worker"])


def test_psql_style_upgrade_is_one_transaction(v2: dict[str, Any]) -> None:
    """A failing upgrade (a duplicate queue name, here) leaves version 2
    exactly as it was: the file is all or nothing."""
    dsn = v2["dsn"]
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DROP INDEX jobmachine.class_name_key")
        c.execute("INSERT INTO jobmachine.class (name) VALUES ('mig.q')")
        before = catalog(c)
        with pytest.raises(jm.DatabaseError, match="duplicate queue names"):
            jm.install_schema(dsn)
        assert catalog(c) == before
        assert "task_waiting_idx" in indexes(c)


def test_perl_and_python_on_an_upgraded_v2_database(v2: dict[str, Any]) -> None:
    dsn = v2["dsn"]
    jm.install_schema(dsn)
    perl = Perl(dsn)
    try:
        # A Perl client inserts (class_id, parameters, status) only; a Python
        # worker takes its task, after the older waiting one.
        from_perl = perl.send("mig.q", {"data": "from perl"})
        row = perl.conn.execute(
            "SELECT status, priority, has_children, parents, unique_key FROM jobmachine.task"
            " WHERE task_id = %s",
            (from_perl,),
        ).fetchone()
        assert row == (0, 0, False, None, None)
        with Answer(dsn, queue="mig.q") as w:
            while w.work_once():
                pass
        assert [t.id for t in w.seen] == [v2["ids"]["waiting"], from_perl]
        assert perl.receive(from_perl) == {"got": {"data": "from perl"}, "by": "python"}

        # A Perl worker claims status 0 only: never a blocked task.
        with jm.Client(dsn, queue="perl.q") as client:
            parent = client.send({"data": "parent"})
            child = client.send({"data": "child"}, parents=[parent])
            assert client.task_info(child).state == "blocked"
            claimed = perl.claim("perl.q")
            assert claimed is not None and claimed["task_id"] == parent
            assert perl.claim("perl.q") is None  # the child is blocked
            assert client.task_info(child).state == "blocked"
            # The Perl worker's reply (status 200 by a plain UPDATE) releases it.
            perl.reply(parent, {"data": "parent done"})
            assert client.task_info(child).state == "waiting"
            claimed = perl.claim("perl.q")
            assert claimed is not None and claimed["task_id"] == child
            perl.reply(child, {"data": "child done"})
            assert client.wait(child, timeout=5) == {"data": "child done"}
            assert perl.claim("perl.q") is None
    finally:
        perl.close()


def test_install_schema_upgrades_a_v3_database_in_place(empty_dsn: str, dsn: str) -> None:
    """Version 4 adds task.uncounted_attempts (default 0): a v3 task keeps
    its attempts and budget, a running attempt can still finish, and a
    retried one counts afresh; nothing else changes."""
    fresh_dsn, dsn = dsn, empty_dsn
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(V3_SCHEMA.read_text("utf-8"))
        assert rows(c, "SELECT version FROM jobmachine.schema_version ORDER BY 1") == [
            (1,),
            (2,),
            (3,),
        ]
        # As a v3 client sent them (this release's client needs the
        # functions of its own create_tables.sql, jobmachine.queue_find()).
        running, failed = (
            r[0]
            for r in rows(
                c,
                "WITH cls AS (INSERT INTO jobmachine.class (name) VALUES ('mig.q')"
                " RETURNING class_id)"
                " INSERT INTO jobmachine.task (class_id, parameters, max_attempts)"
                " SELECT class_id, p, n FROM cls, (VALUES ('\"running\"', 3), ('\"failed\"', 2))"
                " AS v (p, n) ORDER BY v.n DESC RETURNING task_id",
            )
        )
        c.execute(
            "UPDATE jobmachine.task SET status = 100, attempts = 2, started = now()"
            " WHERE task_id = %s",
            (running,),
        )
        c.execute(
            "UPDATE jobmachine.task SET status = 900, attempts = 2 WHERE task_id = %s", (failed,)
        )
        tasks = rows(c, "SELECT * FROM jobmachine.task ORDER BY task_id")

        jm.install_schema(dsn)

        assert rows(c, "SELECT version FROM jobmachine.schema_version ORDER BY 1") == ALL_VERSIONS
        # The old columns untouched; the new ones 0 (nothing uncounted) and NULL.
        # (Versions 4, 7, 8 and 9 append eight columns.)
        assert [r[:-8] for r in rows(c, "SELECT * FROM jobmachine.task ORDER BY task_id")] == tasks
        assert rows(
            c,
            "SELECT DISTINCT uncounted_attempts, retry_at, trace_context, max_runtime,"
            " orphan_after, time_limit, expires_at, cancelled_at FROM jobmachine.task",
        ) == [(0, None, None, None, None, None, None, None)]
        with psycopg.connect(fresh_dsn, autocommit=True) as f:
            fresh = catalog(f)
        got = catalog(c)
        for part in ("columns", "indexes", "triggers", "functions"):
            assert got[part] == fresh[part], part
        before = catalog(c)
        jm.install_schema(c)
        assert catalog(c) == before

    with jm.Client(dsn, queue="mig.q") as client:
        # The running attempt (2) still holds its task.
        with jm.Admin(dsn) as admin:
            admin.retry(failed)
        with Answer(dsn, queue="mig.q") as w:
            assert w.work_once()
        assert [(t.id, t.attempt) for t in w.seen] == [(failed, 3)]
        assert client.task_info(failed).state == "done"
        assert client.task_info(running).state == "running"


class _Streams(jm.Worker):
    """Sends its data's items as parts, then replies with their count."""

    handle_signals = False

    def process(self, task: jm.Task) -> None:
        for item in task.data:
            self.send_part(item)
        self.reply(len(task.data))


def test_install_schema_upgrades_a_v4_database_with_the_schedule_table(
    empty_dsn: str, dsn: str
) -> None:
    """Version 5's cron schedules (a table and a function of their own) and
    version 6's streamed parts (a table), added beside a v4 database's
    tasks, which stay as they were."""
    fresh_dsn, dsn = dsn, empty_dsn
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(V4_SCHEMA.read_text("utf-8"))
        assert rows(c, "SELECT max(version) FROM jobmachine.schema_version") == [(4,)]
        assert rows(c, "SELECT to_regclass('jobmachine.schedule')") == [(None,)]
        assert rows(c, "SELECT to_regclass('jobmachine.part')") == [(None,)]
        # A v4 database's task, written as v4's client did (this release's
        # client needs functions v4 lacks: queue_find()).
        waiting = c.execute(
            "WITH cls AS (INSERT INTO jobmachine.class (name) VALUES ('mig.q') RETURNING class_id)"
            " INSERT INTO jobmachine.task (class_id, parameters, status)"
            " SELECT class_id, '{\"n\": 1}', 0 FROM cls RETURNING task_id"
        ).fetchone()[0]  # type: ignore[index]
        tasks = rows(c, "SELECT * FROM jobmachine.task ORDER BY task_id")

        jm.install_schema(dsn)

        assert rows(c, "SELECT version FROM jobmachine.schema_version WHERE version = 5") == [(5,)]
        # Version 7 appends task.trace_context, version 8 task.max_runtime
        # and task.orphan_after, version 9 task.time_limit, expires_at and
        # cancelled_at: NULL for the tasks already there.
        assert rows(c, "SELECT * FROM jobmachine.task ORDER BY task_id") == [
            (*t, None, None, None, None, None, None) for t in tasks
        ]
        assert rows(c, "SELECT count(*) FROM jobmachine.schedule") == [(0,)]
        with psycopg.connect(fresh_dsn, autocommit=True) as f:
            fresh = catalog(f)
        got = catalog(c)
        for part in ("columns", "indexes", "triggers", "functions"):
            assert got[part] == fresh[part], part
        before = catalog(c)
        jm.install_schema(c)
        assert catalog(c) == before

    with jm.Admin(dsn) as admin:
        admin.schedule("mig.cron", "@daily", "mig.q")
        assert [s.name for s in admin.schedules()] == ["mig.cron"]
    with jm.Client(dsn, queue="mig.q") as client, Answer(dsn, queue="mig.q") as w:
        assert w.work_once()
        assert client.task_info(waiting).state == "done"
        streamed = client.send(["a", "b"], queue="mig.parts")
        with _Streams(dsn, queue="mig.parts") as s:
            assert s.work_once()
        assert [p.data for p in client.parts(streamed, timeout=5)] == ["a", "b"]
        assert client.receive(streamed) == 2


def test_install_schema_upgrades_a_v6_database_with_the_trace_context(
    empty_dsn: str, dsn: str
) -> None:
    """Version 7's task.trace_context (a nullable column) is added beside a
    v6 database's tasks, which keep their rows and run as before; the
    least-privilege roles install on the upgraded schema."""
    fresh_dsn, dsn = dsn, empty_dsn
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(V6_SCHEMA.read_text("utf-8"))
        assert rows(c, "SELECT max(version) FROM jobmachine.schema_version") == [(6,)]
        # A v6 database's task, written as v6's client did.
        waiting = c.execute(
            "WITH cls AS (INSERT INTO jobmachine.class (name) VALUES ('mig.q') RETURNING class_id)"
            " INSERT INTO jobmachine.task (class_id, parameters, status)"
            " SELECT class_id, '{\"n\": 1}', 0 FROM cls RETURNING task_id"
        ).fetchone()[0]  # type: ignore[index]
        tasks = rows(c, "SELECT * FROM jobmachine.task ORDER BY task_id")

        jm.install_schema(dsn)

        assert rows(c, "SELECT max(version) FROM jobmachine.schema_version") == [(SCHEMA_VERSION,)]
        # trace_context (7), max_runtime, orphan_after (8), time_limit,
        # expires_at, cancelled_at (9): NULL.
        assert rows(c, "SELECT * FROM jobmachine.task ORDER BY task_id") == [
            (*t, None, None, None, None, None, None) for t in tasks
        ]
        with psycopg.connect(fresh_dsn, autocommit=True) as f:
            fresh = catalog(f)
        got = catalog(c)
        for part in ("columns", "indexes", "triggers", "functions"):
            assert got[part] == fresh[part], part
        before = catalog(c)
        jm.install_schema(c)
        assert catalog(c) == before

    with jm.Client(dsn, queue="mig.q") as client, Answer(dsn, queue="mig.q") as w:
        assert w.work_once()
        assert client.task_info(waiting).state == "done"
        sent = client.send({"n": 2})
        assert w.work_once()
        assert client.wait(sent, timeout=5) == {"data": {"got": {"n": 2}, "by": "python"}}
        # Version 9's deadlines work on the upgraded schema.
        limited = client.send({"n": 3}, time_limit=5, expire_after=3600)
        assert w.work_once()
        assert client.wait(limited, timeout=5)["data"]["got"] == {"n": 3}
        client.send({"n": 4})
        with jm.Admin(dsn) as admin:
            admin.cancel(client.id)  # type: ignore[arg-type]
        with pytest.raises(jm.TaskCancelled):
            client.receive()


def test_install_schema_upgrades_a_v7_database_whose_rows_carry_no_policy(
    empty_dsn: str, dsn: str
) -> None:
    """Version 8 stamps each claimed task with its worker's housekeeping
    policy (task.max_runtime, task.orphan_after; max_attempts and keep_for
    where unset) and registers each worker's dead_after. Rows of a v7
    database carry none: the housekeeper's own settings apply to them, as
    before (its retries, grace, orphan_after and remove_after)."""
    fresh_dsn, dsn = dsn, empty_dsn
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(V7_SCHEMA.read_text("utf-8"))
        assert rows(c, "SELECT max(version) FROM jobmachine.schema_version") == [(7,)]
        assert "task_retention_idx" in indexes(c)
        # As a v7 fleet left them, three days ago: a worker registered (its
        # session long gone) holding a started task, a task claimed by
        # work_once(), and a done task.
        (worker,) = c.execute(
            "INSERT INTO jobmachine.worker (host, pid, queues, seen)"
            " VALUES ('old-host', 4242, '{mig.q}', now() - interval '3 days') RETURNING worker_id"
        ).fetchone()  # type: ignore[misc]
        (class_id,) = c.execute(
            "INSERT INTO jobmachine.class (name) VALUES ('mig.q') RETURNING class_id"
        ).fetchone()  # type: ignore[misc]
        old = "now() - interval '3 days'"
        held, orphan, done = (
            r[0]
            for r in rows(
                c,
                "INSERT INTO jobmachine.task (class_id, parameters, status, attempts, worker_id,"
                f" started, modified) VALUES ({class_id}, '1', 100, 1, {worker}, {old}, {old}),"
                f" ({class_id}, '2', 100, 1, NULL, {old}, {old}),"
                f" ({class_id}, '3', 200, 1, NULL, {old}, {old}) RETURNING task_id",
            )
        )
        tasks = rows(c, "SELECT * FROM jobmachine.task ORDER BY task_id")

        jm.install_schema(dsn)

        assert rows(c, "SELECT max(version) FROM jobmachine.schema_version") == [(SCHEMA_VERSION,)]
        assert rows(c, "SELECT * FROM jobmachine.task ORDER BY task_id") == [
            (*t, None, None, None, None, None) for t in tasks
        ]
        assert rows(c, "SELECT dead_after FROM jobmachine.worker") == [(None,)]
        assert "task_retention_idx" not in indexes(c)
        with psycopg.connect(fresh_dsn, autocommit=True) as f:
            fresh = catalog(f)
        got = catalog(c)
        for part in ("columns", "indexes", "triggers", "functions"):
            assert got[part] == fresh[part], part
        before = catalog(c)
        jm.install_schema(c)
        assert catalog(c) == before

        # The housekeeper's own settings judge them: its grace (1 s) the
        # old worker, its retries (1) the tasks, its orphan_after (60 s)
        # the orphan, its remove_after (1 day) the done task.
        keeper = jm.Worker(
            dsn, queue="mig.other", dead_after=2, retries=1, orphan_after=60, remove_after=1
        )
        with keeper:
            counts = keeper.housekeeping()
        assert (counts.reaped, counts.revived, counts.failed, counts.removed) == (1, 2, 0, 1)
        assert rows(c, "SELECT task_id, status FROM jobmachine.task ORDER BY task_id") == [
            (held, 0),
            (orphan, 0),
        ]
        assert done not in {r[0] for r in rows(c, "SELECT task_id FROM jobmachine.task")}


def test_install_schema_upgrades_a_v7_database_with_queue_limits_and_worker_commands(
    empty_dsn: str, dsn: str
) -> None:
    """Version 10's tables (queue_limit, queue_limit_start, worker_command)
    and functions are added beside a v7 database's tasks, which keep their
    rows and run as before, now within a limit set on their queue."""
    fresh_dsn, dsn = dsn, empty_dsn
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(V7_SCHEMA.read_text("utf-8"))
        assert rows(c, "SELECT max(version) FROM jobmachine.schema_version") == [(7,)]
        c.execute(
            "WITH cls AS (INSERT INTO jobmachine.class (name) VALUES ('mig.q') RETURNING class_id)"
            " INSERT INTO jobmachine.task (class_id, parameters, status)"
            " SELECT class_id, '{\"n\": 1}', 0 FROM cls UNION ALL"
            " SELECT class_id, '{\"n\": 2}', 0 FROM cls"
        )
        tasks = rows(c, "SELECT * FROM jobmachine.task ORDER BY task_id")

        jm.install_schema(dsn)

        assert rows(c, "SELECT max(version) FROM jobmachine.schema_version") == [(SCHEMA_VERSION,)]
        # Their columns as they were (version 8 adds two after them).
        got_tasks = rows(c, "SELECT * FROM jobmachine.task ORDER BY task_id")
        assert [t[: len(tasks[0])] for t in got_tasks] == tasks
        with psycopg.connect(fresh_dsn, autocommit=True) as f:
            fresh = catalog(f)
        got = catalog(c)
        for part in ("columns", "indexes", "triggers", "functions"):
            assert got[part] == fresh[part], part
        before = catalog(c)
        jm.install_schema(c)
        assert catalog(c) == before

    with jm.Admin(dsn) as admin, Answer(dsn, queue="mig.q") as w:
        admin.set_limits("mig.q", concurrency=1)
        (held,) = w._claim(5)
        assert w._claim(5) == []
        w._store.task_done(held.id, held.attempt)
        assert w.work_once()
