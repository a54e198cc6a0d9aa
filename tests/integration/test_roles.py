"""The least-privilege roles of sql/roles.sql (docs/roles.md), on a real
PostgreSQL: a login user per role, each doing its whole job through the
library's real API (a worker in a real process: the ``job-machine worker``
command), and failing with InsufficientPrivilege at anything more.

Roles are cluster-wide: every test makes its own, with a prefix of its own
(so tests running at once on one server never share them), and drops them
at the end.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.errors import InsufficientPrivilege, RaiseException

import job_machine as jm
from job_machine._lock_keys import WORKER_KEY
from job_machine._schema_sql import SCHEMA_VERSION
from job_machine._sync.connection import connect as jm_connect
from tests.integration.test_perl_compat import PERL_FETCH_RESULT, Perl
from tests.integration.test_perl_compat import run_psql as _run_psql_file
from tests.support.procs import wait_until
from tests.support.workers import Base, serving

ROOT = Path(__file__).resolve().parents[2]
ROLES_SQL = ROOT / "sql" / "roles.sql"
PERL_SCHEMA = ROOT / "tests" / "fixtures" / "perl_0_19_schema.sql"
V2_SCHEMA = ROOT / "tests" / "fixtures" / "create_tables_v2.sql"

_counter = itertools.count()

#: The table privileges besides SELECT (and PostgreSQL 17's MAINTAIN): the reader holds none.
WRITES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def unique_prefix() -> str:
    """A role prefix no other test, nor another test run on the same server, uses."""
    return f"jmt_{os.getpid()}_{next(_counter)}_{secrets.token_hex(2)}"


@dataclass
class Logins:
    """The group roles of one install, and a login user (by DSN) in each."""

    roles: jm.Roles
    sender: str
    worker: str
    reader: str
    admin: str


def drop_roles(conn: psycopg.Connection[Any], names: list[str]) -> None:
    """Drop roles that hold privileges in ``conn``'s database only."""
    existing = [
        r for r in names if conn.execute("SELECT to_regrole(%s)", [r]).fetchone() != (None,)
    ]
    if not existing:
        return
    idents = sql.SQL(", ").join(map(sql.Identifier, existing))
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s)",
        [existing],
    )
    conn.execute(sql.SQL("DROP OWNED BY {}").format(idents))
    conn.execute(sql.SQL("DROP ROLE {}").format(idents))


@pytest.fixture
def cleanup(conn: psycopg.Connection[Any]) -> Iterator[list[str]]:
    """Role names to drop at the end of the test (login users first)."""
    names: list[str] = []
    yield names
    drop_roles(conn, names)


def make_logins(conn: psycopg.Connection[Any], dsn: str, cleanup: list[str]) -> Logins:
    roles = jm.Roles(unique_prefix())
    logins = [f"{name}_login" for name in roles.all]
    cleanup += [*logins, *roles.all]
    jm.install_roles(dsn, prefix=roles.prefix)
    # As in a hardened database: the roles must not need what PUBLIC may
    # run by default (jobmachine.lock(), the trigger function).
    conn.execute("REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA jobmachine FROM PUBLIC")
    for login, role in zip(logins, roles.all, strict=True):
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw' IN ROLE {}").format(
                sql.Identifier(login), sql.Identifier(role)
            )
        )
    return Logins(
        roles,
        *(make_conninfo(dsn, user=login, password="pw") for login in logins),
    )


@pytest.fixture
def logins(conn: psycopg.Connection[Any], dsn: str, cleanup: list[str]) -> Logins:
    """The roles installed in the test's database, with a login user in each."""
    return make_logins(conn, dsn, cleanup)


class Answer(Base):
    """Notes the task, holds a named lock while it works, and replies with its
    data (an assert that fails here is raised by work_once() and serving())."""

    def handle(self, task: jm.Task) -> None:
        self.note(by="answer")
        hold = self.lock("answer", expire=10)
        assert hold and not self.lock_free("answer")
        assert self.unlock("answer", hold)
        self.reply(task.data)


def denied(call: Callable[[], Any]) -> None:
    """``call`` fails for want of a privilege: job_machine's DatabaseError
    with SQLSTATE 42501, psycopg's InsufficientPrivilege as its cause."""
    with pytest.raises(jm.DatabaseError) as raised:
        call()
    assert raised.value.sqlstate == "42501", raised.value
    assert isinstance(raised.value.__cause__, InsufficientPrivilege)


def denied_sql(dsn: str, *statements: str) -> None:
    """Each statement, run alone by the user of ``dsn``, fails for want of a privilege."""
    with psycopg.connect(dsn, autocommit=True) as c:
        for statement in statements:
            with pytest.raises(InsufficientPrivilege):
                c.execute(statement)


def one(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = conn.execute(query, params or None).fetchone()
    return None if row is None else row[0]


@contextmanager
def echo_worker(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, *args: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``job-machine worker tests.support.cli_workers:Echo ARGS`` in a process of its
    own, connected as the user of ``dsn``; yielded once it is registered."""
    log = tmp_path / "worker.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "job_machine.cli",
                "worker",
                "tests.support.cli_workers:Echo",
                *args,
            ],
            cwd=ROOT,
            env={**os.environ, "JOB_MACHINE_DSN": dsn},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:

        def registered() -> Any:
            assert proc.poll() is None, f"worker exited {proc.returncode}:\n{log.read_text()}"
            return one(conn, "SELECT count(*) FROM jobmachine.worker WHERE pid = %s", proc.pid)

        wait_until(registered, 30, "the worker to register", interval=0.05)
        yield proc
        assert "InsufficientPrivilege" not in log.read_text(), log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def echo(data: Any, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """What tests.support.cli_workers.Echo replies."""
    return {"echo": data, "pid": proc.pid, "kind": "sync"}


def acl(conn: psycopg.Connection[Any], roles: jm.Roles) -> list[tuple[Any, ...]]:
    """Every privilege the roles hold in the jobmachine schema, and their memberships."""
    return conn.execute(
        """
        SELECT o.name, o.col, a.privilege_type, g.rolname
          FROM (SELECT c.relname, NULL::name, c.relacl FROM pg_class c
                 WHERE c.relnamespace = 'jobmachine'::regnamespace
                UNION ALL
                SELECT c.relname, t.attname, t.attacl
                  FROM pg_attribute t JOIN pg_class c ON c.oid = t.attrelid
                 WHERE c.relnamespace = 'jobmachine'::regnamespace
                UNION ALL
                SELECT p.proname, NULL, p.proacl FROM pg_proc p
                 WHERE p.pronamespace = 'jobmachine'::regnamespace
                UNION ALL
                SELECT 'schema', NULL, n.nspacl FROM pg_namespace n
                 WHERE n.nspname = 'jobmachine') AS o (name, col, acl)
         CROSS JOIN aclexplode(o.acl) a
          JOIN pg_roles g ON g.oid = a.grantee
         WHERE g.rolname = ANY(%(r)s)
        UNION ALL
        SELECT 'member of', r.rolname, NULL, m.rolname
          FROM pg_auth_members am
          JOIN pg_roles r ON r.oid = am.roleid
          JOIN pg_roles m ON m.oid = am.member
         WHERE m.rolname = ANY(%(r)s)
         ORDER BY 1, 2, 3, 4
        """,
        {"r": list(roles.all)},
    ).fetchall()


def run_psql(dsn: str, prefix: str) -> subprocess.CompletedProcess[str]:
    """``psql -f sql/roles.sql`` with the role prefix set for the session
    (as ``PGOPTIONS='-c jobmachine.role_prefix=...'`` would)."""
    return _run_psql_file(
        make_conninfo(dsn, options=f"-c jobmachine.role_prefix={prefix}"), ROLES_SQL
    )


# -- installing ---------------------------------------------------------------------------


def test_psql_and_python_install_the_same_roles_again_and_again(
    conn: psycopg.Connection[Any], dsn: str, cleanup: list[str]
) -> None:
    roles = jm.Roles(unique_prefix())
    cleanup += roles.all
    first = run_psql(dsn, roles.prefix)
    assert first.returncode == 0, first.stderr
    assert "WARNING" not in first.stderr and "ERROR" not in first.stderr, first.stderr
    granted = acl(conn, roles)
    assert run_psql(dsn, roles.prefix).returncode == 0
    assert acl(conn, roles) == granted
    assert jm.install_roles(dsn, prefix=roles.prefix) == roles
    assert jm.install_roles(conn, prefix=roles.prefix) == roles  # a connection, too
    assert acl(conn, roles) == granted
    # Installing the same schema version again keeps them.
    jm.install_schema(dsn)
    assert acl(conn, roles) == granted
    # The caller's session is left without the prefix setting.
    assert one(conn, "SELECT current_setting('jobmachine.role_prefix', true)") in (None, "")

    # NOLOGIN group roles; the admin reads what the reader reads.
    assert conn.execute(
        "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls"
        " FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1",
        [list(roles.all)],
    ).fetchall() == [(name, False, False, False, False, False) for name in sorted(roles.all)]
    assert ("member of", roles.reader, None, roles.admin) in granted
    # Nothing outside the jobmachine schema: no privileges on other objects
    # of the database (pg_shdepend lists every ACL entry naming a role).
    elsewhere = conn.execute(
        """
        SELECT d.classid::regclass, d.objid
          FROM pg_shdepend d
          JOIN pg_roles r ON r.oid = d.refobjid
         WHERE d.deptype = 'a' AND r.rolname = ANY(%s)
           AND d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND NOT (d.classid = 'pg_namespace'::regclass AND d.objid = 'jobmachine'::regnamespace)
           AND NOT (d.classid = 'pg_class'::regclass AND EXISTS (
                   SELECT 1 FROM pg_class c WHERE c.oid = d.objid
                      AND c.relnamespace = 'jobmachine'::regnamespace))
           AND NOT (d.classid = 'pg_proc'::regclass AND EXISTS (
                   SELECT 1 FROM pg_proc p WHERE p.oid = d.objid
                      AND p.pronamespace = 'jobmachine'::regnamespace))
        """,
        [list(roles.all)],
    ).fetchall()
    assert elsewhere == []

    # A privilege granted by hand, or left by an older roles.sql, is gone
    # after the next run: the file converges on what it says.
    conn.execute(
        sql.SQL(
            "GRANT DELETE ON jobmachine.result TO {}; GRANT UPDATE ON jobmachine.class TO {}"
        ).format(sql.Identifier(roles.sender), sql.Identifier(roles.reader))
    )
    assert acl(conn, roles) != granted
    jm.install_roles(dsn, prefix=roles.prefix)
    assert acl(conn, roles) == granted


async def test_the_asyncio_twin_installs_the_same(
    conn: psycopg.Connection[Any], dsn: str, cleanup: list[str]
) -> None:
    roles = jm.Roles(unique_prefix())
    cleanup += roles.all
    async with await psycopg.AsyncConnection.connect(dsn) as aconn:  # not autocommit
        assert await jm.ainstall_roles(aconn, prefix=roles.prefix) == roles
        assert not aconn.autocommit
    granted = acl(conn, roles)
    assert len(granted) > 50
    jm.install_roles(dsn, prefix=roles.prefix)
    assert acl(conn, roles) == granted


def test_a_bad_prefix_or_an_old_schema_is_refused_and_creates_nothing(
    dsn: str, empty_dsn: str
) -> None:
    for bad in ("", "Upper", "1st", "a-b", "x" * 57, "a;drop"):
        with pytest.raises(ValueError, match="role prefix"):
            jm.Roles(bad)
        with pytest.raises(ValueError, match="role prefix"):
            jm.install_roles(dsn, prefix=bad)
    assert jm.Roles().all == (
        "jobmachine_sender",
        "jobmachine_worker",
        "jobmachine_reader",
        "jobmachine_admin",
    )
    # psql: the file checks the prefix itself.
    refused = run_psql(dsn, "Bad-Prefix")
    assert refused.returncode != 0 and "invalid role prefix" in refused.stderr

    roles = jm.Roles(unique_prefix())
    count = "SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)"
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        try:
            # No schema, then a version 2 schema: the grants name version 10's tables.
            with pytest.raises(jm.DatabaseError, match="missing or older than version 10") as no:
                jm.install_roles(empty_dsn, prefix=roles.prefix)
            assert no.value.sqlstate == "P0001" and isinstance(no.value.__cause__, RaiseException)
            c.execute(V2_SCHEMA.read_text("utf-8"))
            with pytest.raises(jm.DatabaseError, match=r"older than version 10 \(found 2\)"):
                jm.install_roles(c, prefix=roles.prefix)
            assert c.execute("SELECT 1").fetchone() == (1,)  # the connection is usable
            assert one(c, count, list(roles.all)) == 0
            jm.install_schema(c)  # upgraded: now it installs
            jm.install_roles(c, prefix=roles.prefix)
            assert one(c, count, list(roles.all)) == 4
        finally:
            drop_roles(c, list(roles.all))


def test_a_schema_owner_with_createrole_installs_them_and_without_it_grants_again(
    empty_dsn: str,
) -> None:
    """The deploy of a managed PostgreSQL, where the application's owner is no
    superuser: it creates the roles once, grants them to its login users,
    and later deploys re-grant without CREATEROLE."""
    roles = jm.Roles(unique_prefix())
    owner, web = f"{roles.prefix}_owner", f"{roles.prefix}_web"
    owner_dsn = make_conninfo(empty_dsn, user=owner, password="pw")
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        try:
            c.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE").format(sql.Identifier(owner)))
            c.execute(
                sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                    sql.Identifier(c.info.dbname), sql.Identifier(owner)
                )
            )
            with psycopg.connect(owner_dsn, autocommit=True) as o:
                jm.install_schema(o)
                assert jm.install_roles(o, prefix=roles.prefix) == roles
                o.execute(
                    sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                        sql.Identifier(web), sql.Identifier(roles.sender)
                    )
                )
            c.execute(sql.SQL("ALTER ROLE {} NOCREATEROLE").format(sql.Identifier(owner)))
            jm.install_roles(owner_dsn, prefix=roles.prefix)
            with jm.Client(make_conninfo(empty_dsn, user=web), queue="roles.o") as client:
                assert client.task_info(client.send({"n": 1})).state == "waiting"
        finally:
            drop_roles(c, [web, *roles.all, owner])


# -- the sender and the worker at work ----------------------------------------------------


def test_a_sender_sends_with_every_option_and_reads_what_a_worker_process_replied(
    logins: Logins, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    q = "roles.work"
    options = ["-q", q, "--retries", "0", "--dead-after", "2", "--timeout", "5"]
    with (
        echo_worker(logins.worker, conn, tmp_path, *options) as proc,
        jm.Client(logins.sender, queue=q) as client,
    ):
        # Send, wait, check, receive.
        tid = client.send({"n": 1})
        assert client.wait(tid, timeout=20) == echo({"n": 1}, proc)
        assert client.check(tid) and client.receive(tid) == echo({"n": 1}, proc)

        # Every option of send.
        later = datetime.now(UTC) + timedelta(hours=1)
        keyed = client.send(
            {"n": "keyed"},
            priority=7,
            run_after=later,
            attempts=2,
            title="a title",
            grouping="g1",
            remove_after=later + timedelta(days=1),
            unique_key="k1",
            time_limit=30,
            expires_at=later + timedelta(hours=1),
        )
        assert client.send({"n": "keyed again"}, unique_key="k1") == keyed
        # A parent due in a moment: its child waits for it, then runs.
        parent = client.send({"n": "parent"}, delay=1, remove_after=timedelta(days=2))
        child = client.send({"n": "child"}, parents=[parent])
        assert client.task_info(child).state == "blocked"
        assert client.wait(child, timeout=20) == echo({"n": "child"}, proc)
        assert client.receive(parent) == echo({"n": "parent"}, proc)
        # A parent that fails (the worker raises) fails its blocked child;
        # a child of a parent that failed already fails at once.
        doomed = client.send({"fail": "boom"}, delay=1)
        orphan = client.send({"n": "never"}, parents=[doomed])
        with pytest.raises(jm.TaskFailed, match="boom"):
            client.wait(doomed, timeout=20)
        with pytest.raises(jm.TaskFailed) as failed:
            client.wait(orphan, timeout=20)
        assert failed.value.error["type"] == "ParentFailed"
        late = client.send({"n": "late"}, parents=[doomed])
        with pytest.raises(jm.TaskFailed, match=f"parent task {doomed} failed"):
            client.receive(late)

        # send_many, with every option it takes.
        ids = client.send_many(
            [{"i": i} for i in range(3)],
            priority=1,
            delay=0,
            attempts=1,
            title="batch",
            grouping="g2",
            remove_after=3600,
        )
        assert [client.wait(i, timeout=20) for i in ids] == [echo({"i": i}, proc) for i in range(3)]
        [delayed] = client.send_many([{"i": "later"}], run_after=later, remove_after=later)

        # Where its tasks stand, notes, named locks.
        client.note(keyed, source="roles", n=1)
        client.note(keyed, n=None)
        info = client.task_info(keyed)
        assert (info.state, info.priority, info.max_attempts, info.title, info.grouping) == (
            "waiting",
            7,
            2,
            "a title",
            "g1",
        )
        assert (info.unique_key, info.notes) == ("k1", {"source": "roles"})
        assert client.task_info(parent).children == [child]
        assert client.task_info(child).parents == [parent]
        assert client.task_info(delayed).run_after == later
        hold = client.lock("roles.lock", expire=30, limit=1)
        assert hold and not client.lock_free("roles.lock")
        assert client.lock("roles.lock", expire=30) is None
        assert client.unlock("roles.lock", hold) and client.lock_free("roles.lock")

        # The Perl Job::Machine client, logged in as the sender.
        perl = Perl(logins.sender)
        try:
            perl_id = perl.send(q, {"data": "from perl"})
            assert client.wait(perl_id, timeout=20) == echo({"data": "from perl"}, proc)
            assert perl._run(PERL_FETCH_RESULT, perl_id)[0]["task_id"] == perl_id
        finally:
            perl.close()

        # Only the two delayed tasks are left.
        assert one(conn, "SELECT count(*) FROM jobmachine.task WHERE status IN (0, 100)") == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_a_worker_process_does_the_fleets_housekeeping(
    logins: Logins, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    q, elsewhere = "roles.kept", "roles.elsewhere"
    # What the housekeeper finds: a dead worker still holding a task, a task
    # a Perl worker started an hour ago and left, a task done two days ago.
    ids = dict(
        conn.execute(
            """
            WITH cls AS (
                INSERT INTO jobmachine.class (name) VALUES (%(q)s), (%(e)s)
                RETURNING class_id, name
            ), dead AS (
                INSERT INTO jobmachine.worker (host, pid, queues, seen)
                VALUES ('gone', 1, ARRAY[%(q)s], now() - interval '1 hour')
                RETURNING worker_id
            )
            INSERT INTO jobmachine.task (class_id, parameters, status, attempts, worker_id,
                                         started, modified, title)
            SELECT c.class_id, v.parameters, v.status, 1,
                   CASE WHEN v.title = 'held' THEN (SELECT worker_id FROM dead) END,
                   now() - interval '1 hour', v.modified, v.title
              FROM (VALUES (%(q)s, '{"n": "held"}', 100, now() - interval '1 hour', 'held'),
                           (%(e)s, '{"n": "orphan"}', 100, now() - interval '1 hour', 'orphan'),
                           (%(e)s, '{"n": "old"}', 200, now() - interval '2 days', 'old'))
                   AS v (queue, parameters, status, modified, title)
              JOIN cls c ON c.name = v.queue
            RETURNING title, task_id
            """,
            {"q": q, "e": elsewhere},
        ).fetchall()
    )
    options = ["-q", q, "--dead-after", "2", "--remove-after", "1", "--timeout", "5"]
    with (
        echo_worker(logins.worker, conn, tmp_path, *options) as proc,
        jm.Client(logins.sender) as client,
    ):
        # Reaped: the dead worker's task waits again, and the live worker
        # runs it; the orphan waits again; the old task is gone.
        assert client.wait(ids["held"], timeout=20) == echo({"n": "held"}, proc)
        assert client.task_info(ids["held"]).errors[0]["type"] == "WorkerDied"
        wait_until(
            lambda: client.task_info(ids["orphan"]).state == "waiting", 20, "the orphan revived"
        )
        wait_until(
            lambda: (
                one(conn, "SELECT count(*) FROM jobmachine.task WHERE task_id = %s", ids["old"])
                == 0
            ),
            20,
            "the old task removed",
        )
        assert one(conn, "SELECT count(*) FROM jobmachine.worker WHERE host = 'gone'") == 0

        # The Perl Job::Machine worker, logged in as the worker role.
        perl = Perl(logins.worker)
        try:
            claimed = perl.claim(elsewhere)
            assert claimed is not None and claimed["task_id"] == ids["orphan"]
            perl.reply(ids["orphan"], {"data": "perl"})
        finally:
            perl.close()
        assert client.receive(ids["orphan"]) == {"data": "perl"}

        # Stopped by SIGTERM, it leaves the registry.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert one(conn, "SELECT count(*) FROM jobmachine.worker") == 0

    # In process: housekeeping with max_runtime, and work_once.
    stuck = one(
        conn,
        "INSERT INTO jobmachine.task (class_id, parameters, status, attempts, worker_id, started)"
        " SELECT class_id, '{}', 100, 1, 424242, now() - interval '1 hour'"
        " FROM jobmachine.class WHERE name = %s RETURNING task_id",
        q,
    )
    expired = one(
        conn,
        "INSERT INTO jobmachine.task (class_id, parameters, expires_at)"
        " SELECT class_id, '{}', now() - interval '1 second'"
        " FROM jobmachine.class WHERE name = %s RETURNING task_id",
        q,
    )
    with Answer(logins.worker, queue=q, max_runtime=60) as worker:
        counts = worker.housekeeping()
        assert counts.ran and counts.revived == 1 and counts.expired == 1
        assert worker.work_once()
    with jm.Client(logins.sender) as client:
        assert client.receive(stuck) == {}
        with pytest.raises(jm.TaskExpired):
            client.receive(expired)
    # The admin cancels a running task (the worker holding it is told).
    running = one(
        conn,
        "INSERT INTO jobmachine.task (class_id, parameters, status, attempts, worker_id, started)"
        " SELECT class_id, '{}', 100, 1, 424242, now()"
        " FROM jobmachine.class WHERE name = %s RETURNING task_id",
        q,
    )
    with jm.Admin(logins.admin) as admin:
        admin.cancel(running)
    with jm.Client(logins.sender) as client, pytest.raises(jm.TaskCancelled):
        client.receive(running)


# -- and nothing more ---------------------------------------------------------------------


def test_a_sender_cannot_claim_finish_delete_administer_or_read_the_worker_registry(
    logins: Logins, conn: psycopg.Connection[Any]
) -> None:
    s = logins.sender
    with jm.Client(s, queue="roles.s") as client:
        tid = client.send({"n": 1})
    with jm.Worker(s, queue="roles.s", handle_signals=False) as worker:
        denied(worker.work_once)  # claiming sets the status
        denied(lambda: worker.receive())  # registering inserts a worker row
    with jm.Admin(s) as admin:
        for action in (
            lambda: admin.cancel(tid),
            lambda: admin.remove(tid),
            lambda: admin.purge("finished"),
            lambda: admin.reset(confirm=True),
            lambda: admin.pause("roles.s"),
            lambda: admin.stop_workers(),
            admin.workers,  # the registry's queues, commands, heartbeats
            admin.stats,
            admin.schema_version,
        ):
            denied(action)
    denied_sql(
        s,
        f"UPDATE jobmachine.task SET status = 200 WHERE task_id = {tid}",
        f"UPDATE jobmachine.task SET parameters = '{{}}' WHERE task_id = {tid}",
        f"DELETE FROM jobmachine.task WHERE task_id = {tid}",
        f"DELETE FROM jobmachine.result WHERE task_id = {tid}",
        f"INSERT INTO jobmachine.result (task_id, result) VALUES ({tid}, '{{}}')",
        "INSERT INTO jobmachine.task (class_id, status, worker_id, attempts)"
        " SELECT class_id, 100, 1, 1 FROM jobmachine.class",
        "UPDATE jobmachine.class SET paused = true",
        "DELETE FROM jobmachine.class",
        "INSERT INTO jobmachine.worker (host, pid, queues) VALUES ('h', 1, '{q}')",
        "SELECT queues, command, seen FROM jobmachine.worker",
        "SELECT * FROM jobmachine.fulltask",
        "SELECT * FROM jobmachine.schema_version",
        "SELECT nextval(pg_get_serial_sequence('jobmachine.worker', 'worker_id'))",
        "TRUNCATE jobmachine.task CASCADE",
        "DROP TABLE jobmachine.lock",
        "DROP FUNCTION jobmachine.lock(text, double precision, integer)",
        "ALTER TABLE jobmachine.task ADD COLUMN x int",
        "CREATE TABLE jobmachine.x (y int)",
        "DROP SCHEMA jobmachine CASCADE",
    )
    assert one(conn, "SELECT status FROM jobmachine.task WHERE task_id = %s", tid) == 0


def test_a_sender_cannot_forge_the_reply_of_a_task(
    logins: Logins, conn: psycopg.Connection[Any]
) -> None:
    """The review's probe: a sender wrote ``{"approved": true}`` as the
    newest result of a task that still waited, and check() and receive()
    took it for the reply. The sender holds no INSERT on result now; the
    ParentFailed error of a child sent after its parent failed is written
    by a trigger that runs as the schema's owner, to that child only."""
    with jm.Client(logins.sender, queue="roles.forge") as client:
        waiting = client.send({"amount": 10_000})
        doomed = client.send({"n": "doomed"}, delay=3600)
    with jm.Admin(logins.admin) as admin:
        admin.cancel(doomed)
    with psycopg.connect(logins.sender, autocommit=True) as forger:
        for statement in (
            "INSERT INTO jobmachine.result (task_id, result, resulttype)"
            " VALUES (%s, '{\"approved\": true}', 'json')",
            "INSERT INTO jobmachine.result (task_id, result) VALUES (%s, '{\"approved\": true}')",
        ):
            with pytest.raises(InsufficientPrivilege):
                forger.execute(statement, [waiting])
        # Through the trigger: a task inserted failed, naming a parent that
        # did not fail, is refused (task_insert_status); only a failed
        # parent is ever named.
        with pytest.raises(InsufficientPrivilege, match="status 900"):
            forger.execute(
                "INSERT INTO jobmachine.task (class_id, parameters, status, parents)"
                " SELECT class_id, '{}', 900, ARRAY[%s::bigint] FROM jobmachine.class"
                " WHERE name = 'roles.forge'",
                [waiting],
            )
    assert one(conn, "SELECT count(*) FROM jobmachine.result") == 1  # the Cancelled error
    with jm.Client(logins.sender, queue="roles.forge") as client:
        assert client.check(waiting) is False
        late = client.send({"n": "late"}, parents=[doomed])
        with pytest.raises(jm.TaskFailed, match=f"parent task {doomed} failed"):
            client.receive(late)
        assert [e["type"] for e in client.task_info(late).errors] == ["ParentFailed"]
    assert one(conn, "SELECT count(*) FROM jobmachine.result WHERE task_id = %s", waiting) == 0


def test_a_worker_cannot_send_administer_queues_or_workers_or_change_the_schema(
    logins: Logins, conn: psycopg.Connection[Any]
) -> None:
    w = logins.worker
    conn.execute("INSERT INTO jobmachine.class (name) VALUES ('roles.w')")
    with jm.Client(w, queue="roles.w") as client:
        denied(lambda: client.send({"n": 1}))
        denied(lambda: client.send_many([1, 2]))
    with jm.Admin(w) as admin:
        denied(lambda: admin.pause("roles.w"))
        denied(lambda: admin.stop_workers())
        denied(lambda: admin.reset(confirm=True))
    denied_sql(
        w,
        "INSERT INTO jobmachine.class (name) VALUES ('roles.new')",
        "UPDATE jobmachine.class SET paused = true",
        "UPDATE jobmachine.worker SET command = 'stop'",
        "UPDATE jobmachine.task SET parameters = '{}', priority = 9",
        "DELETE FROM jobmachine.result",
        "SELECT * FROM jobmachine.schema_version",
        "TRUNCATE jobmachine.task CASCADE",
        "DROP TABLE jobmachine.task CASCADE",
        "ALTER TABLE jobmachine.task DROP COLUMN notes",
        "DROP TRIGGER task_settled ON jobmachine.task",
        "CREATE OR REPLACE FUNCTION jobmachine.lock(text, double precision, integer)"
        " RETURNS bigint LANGUAGE sql AS 'SELECT 1::bigint'",
        "CREATE TABLE jobmachine.x (y int)",
    )
    assert one(conn, "SELECT paused FROM jobmachine.class WHERE name = 'roles.w'") is False


def test_a_reader_reads_everything_a_dashboard_shows_and_writes_nothing(
    logins: Logins, conn: psycopg.Connection[Any]
) -> None:
    with jm.Client(logins.sender, queue="roles.r") as client:
        done, waiting = client.send({"n": 1}, title="first", grouping="g"), client.send({"n": 2})
    conn.execute("UPDATE jobmachine.task SET status = 200 WHERE task_id = %s", [done])
    conn.execute(
        "INSERT INTO jobmachine.result (task_id, result, resulttype) VALUES (%s, '[1]', 'json')",
        [done],
    )
    conn.execute("INSERT INTO jobmachine.worker (host, pid, queues) VALUES ('h', 1, '{roles.r}')")
    with jm.Admin(logins.reader) as admin:
        stats = admin.stats()
        assert [(q.queue, q.waiting) for q in stats.queues] == [("roles.r", 1)]
        assert stats.done == 1
        assert admin.status_string().startswith("W=1 D=0 B=0 R=0 F=0 done=1 ")
        assert sum(h.done for h in admin.history()) == 1
        assert [t.id for t in admin.list_tasks()] == [waiting, done]
        assert [t.id for t in admin.list_tasks(state="done", queue="roles.r", grouping="g")] == [
            done
        ]
        assert admin.task_info(done).reply == [1]
        assert [(w.host, w.alive) for w in admin.workers()] == [("h", False)]
        assert admin.schema_version() == SCHEMA_VERSION
        for action in (
            lambda: admin.cancel(waiting),
            lambda: admin.retry(done),
            lambda: admin.remove(done),
            lambda: admin.purge("finished"),
            lambda: admin.reset(confirm=True),
            lambda: admin.pause("roles.r"),
            lambda: admin.resume("roles.r"),
            lambda: admin.stop_workers(),
        ):
            denied(action)
    with jm.Client(logins.reader, queue="roles.r") as client:
        assert client.receive(done) == [1] and client.task_info(waiting).state == "waiting"
        denied(lambda: client.send({"n": 3}))
        denied(lambda: client.note(waiting, a=1))
        denied(lambda: client.lock("l", expire=10))
    with jm.Worker(logins.reader, queue="roles.r", handle_signals=False) as worker:
        denied(worker.work_once)

    # Not one write privilege on anything of the schema, nor a sequence, nor
    # CREATE in it: asked of the catalog, for every relation there is.
    reader = logins.roles.reader
    relations = [
        r
        for (r,) in conn.execute(
            "SELECT oid::regclass::text FROM pg_class"
            " WHERE relnamespace = 'jobmachine'::regnamespace AND relkind IN ('r', 'v', 'p')"
        )
    ]
    assert {"jobmachine.task", "jobmachine.fulltask", "jobmachine.lock"} <= set(relations)
    for relation in relations:
        for privilege in WRITES:
            assert not one(
                conn, "SELECT has_table_privilege(%s, %s, %s)", reader, relation, privilege
            ), (relation, privilege)
        for privilege in ("INSERT", "UPDATE"):
            assert not one(
                conn, "SELECT has_any_column_privilege(%s, %s, %s)", reader, relation, privilege
            ), (relation, privilege)
        assert one(conn, "SELECT has_table_privilege(%s, %s, 'SELECT')", reader, relation)
    assert not one(conn, "SELECT has_schema_privilege(%s, 'jobmachine', 'CREATE')", reader)
    assert not one(
        conn,
        "SELECT bool_or(has_sequence_privilege(%s, c.oid, 'USAGE')"
        " OR has_sequence_privilege(%s, c.oid, 'UPDATE')) FROM pg_class c"
        " WHERE c.relnamespace = 'jobmachine'::regnamespace AND c.relkind = 'S'",
        reader,
        reader,
    )
    denied_sql(
        logins.reader,
        "INSERT INTO jobmachine.class (name) VALUES ('x')",
        "UPDATE jobmachine.task SET notes = '{}'",
        "DELETE FROM jobmachine.lock",
        "TRUNCATE jobmachine.result",
        "SELECT nextval(pg_get_serial_sequence('jobmachine.task', 'task_id'))",
        "DROP VIEW jobmachine.fulltask",
    )


def test_an_admin_acts_on_tasks_queues_and_workers_but_cannot_send_or_claim(
    logins: Logins, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    q = "roles.a"
    with jm.Client(logins.sender, queue=q) as client:
        parent = client.send({"n": "parent"}, delay=3600)
        child = client.send({"n": "child"}, parents=[parent])
        failed = client.send({"n": "failed"}, delay=3600)
    with jm.Admin(logins.admin) as admin:
        # Cancel: the parent fails, and its blocked child with it (the
        # trigger runs as the admin).
        admin.cancel(parent)
        assert admin.task_info(child).errors[0]["type"] == "ParentFailed"
        admin.cancel(failed)
        # Retry elsewhere (a new queue) at another priority; remove; purge.
        admin.retry(failed, queue="roles.a.again", priority=3)
        info = admin.task_info(failed)
        assert (info.state, info.queue, info.priority) == ("waiting", "roles.a.again", 3)
        admin.remove(parent)
        assert admin.purge("failed") == 1  # the child
        admin.pause(q)
        assert [s.paused for s in admin.stats().queues if s.queue == q] == [True]
        admin.resume(q)
        with jm.Client(logins.admin) as client:
            client.note(failed, by="operator")
            assert client.task_info(failed).notes == {"by": "operator"}
            denied(lambda: client.send({"n": 1}, q))
        with jm.Worker(logins.admin, queue="roles.a.again", handle_signals=False) as worker:
            denied(worker.work_once)
        denied_sql(
            logins.admin,
            "INSERT INTO jobmachine.task (class_id, parameters) SELECT class_id, '{}'"
            " FROM jobmachine.class",
            "INSERT INTO jobmachine.worker (host, pid, queues) VALUES ('h', 1, '{q}')",
            "UPDATE jobmachine.task SET parameters = '{}'",
            "DELETE FROM jobmachine.worker",
            "TRUNCATE jobmachine.task CASCADE",
            "DROP TABLE jobmachine.result",
        )
        # Stop a worker process that runs as the worker role.
        with echo_worker(logins.worker, conn, tmp_path, "-q", q, "--dead-after", "2") as proc:
            assert admin.stop_workers() == 1
            assert proc.wait(15) == 0
    assert one(conn, "SELECT count(*) FROM jobmachine.task") == 1
    # Reset: every task and lock, through jobmachine.reset() (no DELETE).
    with jm.Client(logins.sender, queue=q) as client:
        assert client.lock("roles.a.lock", expire=60) is not None
    with jm.Admin(logins.admin) as admin:
        removed = admin.reset(confirm=True)
    assert (removed["tasks"], removed["locks"]) == (1, 1)
    assert one(conn, "SELECT count(*) FROM jobmachine.task") == 0


def test_the_roles_work_on_a_perl_database_upgraded_in_place(empty_dsn: str) -> None:
    """A schema Perl created keeps its serial columns: inserting needs
    USAGE on their sequences, and the Perl client reads currval."""
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        c.execute(PERL_SCHEMA.read_text("utf-8"))
        assert one(
            c,
            "SELECT column_default FROM information_schema.columns WHERE"
            " table_name = 'task' AND column_name = 'task_id'",
        ).startswith("nextval(")
        jm.install_schema(c)
        found: list[str] = []
        try:
            logins = make_logins(c, empty_dsn, found)
            perl = Perl(logins.sender)
            try:
                from_perl = perl.send("perl.q", {"data": "perl"})
            finally:
                perl.close()
            with jm.Client(logins.sender, queue="perl.q") as client:
                from_python = client.send({"data": "python"}, parents=[from_perl])
                hold = client.lock("perl.lock", expire=10)
                assert hold and client.unlock("perl.lock", hold)
                with Answer(logins.worker, queue="perl.q") as worker:
                    assert worker.work_once() and worker.work_once()
                assert client.receive(from_python) == {"data": "python"}
                assert client.receive(from_perl) == {"data": "perl"}
                # Error results (the admin's Cancelled, the sender's
                # ParentFailed) and a queue the admin's retry creates.
                doomed = client.send({"n": "doomed"}, delay=3600)
                with jm.Admin(logins.admin) as admin:
                    admin.cancel(doomed)
                    late = client.send({"n": "late"}, parents=[doomed])
                    with pytest.raises(jm.TaskFailed, match=f"parent task {doomed} failed"):
                        client.receive(late)
                    admin.retry(doomed, queue="perl.new")
                    # task_info on a Perl database, whose task_id is an
                    # integer (its children lookup compares it with bigint[]).
                    info = admin.task_info(doomed)
                    assert (info.queue, info.children) == ("perl.new", [late])
        finally:
            drop_roles(c, found)


async def test_the_dashboard_reads_as_the_reader_and_acts_as_the_admin(
    logins: Logins, conn: psycopg.Connection[Any]
) -> None:
    """docs/dashboard.md: a read-only dashboard runs as the reader, one
    that acts as the admin; each page and action works with that role."""
    from tests.integration.test_web import _act, dashboard  # noqa: PLC0415

    with jm.Client(logins.sender, queue="roles.d") as client:
        failed = client.send({"n": 1}, title="dashboard")
        client.lock("roles.lock", expire=60)
    conn.execute("UPDATE jobmachine.task SET status = 900 WHERE task_id = %s", [failed])
    async with dashboard(logins.reader, read_only=True) as http:
        for path in ("/", "/tasks", "/tasks?q=dash", f"/tasks/{failed}", "/workers", "/locks"):
            page = await http.get(path)
            assert page.status_code == 200, (path, page.text)
        assert "roles.lock" in (await http.get("/locks")).text
    async with dashboard(logins.admin) as http:
        retried = await _act(http, "retry", failed)
        assert f"Task {failed} is waiting again on queue roles.d." in retried.text
        paused = await _act(http, "pause", "roles.d")
        assert "Queue roles.d paused" in paused.text
    assert conn.execute(
        "SELECT t.status, c.paused FROM jobmachine.task t JOIN jobmachine.class c USING (class_id)"
        " WHERE t.task_id = %s",
        [failed],
    ).fetchone() == (0, True)


# -- no held rows, no chosen status, no locked tables, no squatted keys (issue 15, item 2) ------


def denied_in_transaction(dsn: str, *statements: str) -> None:
    """Each statement, run by the user of ``dsn`` inside a transaction of
    its own (as LOCK TABLE and a row lock need), fails for want of a privilege."""
    with psycopg.connect(dsn) as c:
        for statement in statements:
            with pytest.raises(InsufficientPrivilege):
                c.execute(statement)
            c.rollback()


def test_a_sender_cannot_hold_a_task_row_or_clear_a_parents_mark(
    logins: Logins, conn: psycopg.Connection[Any]
) -> None:
    """The review's probe: with UPDATE (has_children, notes) a sender could
    lock any task row inside a transaction it kept open (claims skip it,
    replies wait) and clear has_children on a parent (its children then
    stay blocked for good). Notes and parent marks now go through
    functions of the schema's owner; the sender holds no UPDATE on task."""
    q = "roles.hold"
    with jm.Client(logins.sender, queue=q) as client:
        parent = client.send({"n": "parent"})
        child = client.send({"n": "child"}, parents=[parent])
        client.note(parent, by="sender")  # through jobmachine.task_note()
        assert client.task_info(parent).notes == {"by": "sender"}
    assert one(conn, "SELECT has_children FROM jobmachine.task WHERE task_id = %s", parent)
    denied_in_transaction(
        logins.sender,
        *(
            f"SELECT 1 FROM jobmachine.task WHERE task_id = {parent} {lock}"
            for lock in ("FOR UPDATE", "FOR NO KEY UPDATE", "FOR SHARE", "FOR KEY SHARE")
        ),
        f"UPDATE jobmachine.task SET has_children = false WHERE task_id = {parent}",
        f"UPDATE jobmachine.task SET notes = notes WHERE task_id = {parent}",
        "UPDATE jobmachine.task SET notes = '{}'",
    )
    # The functions do their one thing only: mark, never unmark.
    assert not one(
        conn,
        "SELECT has_function_privilege(%s, 'jobmachine.task_delete(bigint[])', 'EXECUTE')",
        logins.roles.sender,
    )
    # A worker's claim is not skipped, and the child runs after its parent.
    with Answer(logins.worker, queue=q) as worker:
        assert worker.work_once() and worker.work_once()
    with jm.Client(logins.sender, queue=q) as client:
        assert client.receive(child) == {"n": "child"}


def test_a_sender_inserts_tasks_waiting_or_blocked_on_parents_only(
    logins: Logins, conn: psycopg.Connection[Any]
) -> None:
    """The review's probe: a sender chose any status on insert (started,
    done, blocked without parents). The trigger task_insert_status lets a
    role that may not set a status insert waiting (0, Perl's insert too),
    blocked on parents (10), or failed when a parent has failed (900, as
    send() does); a worker or admin inserting by hand is not held to it."""
    q = "roles.status"
    with jm.Client(logins.sender, queue=q) as client:
        parent = client.send({"n": "parent"}, delay=3600)
        doomed = client.send({"n": "doomed"}, delay=3600)
    with jm.Admin(logins.admin) as admin:
        admin.cancel(doomed)
    insert = (
        "INSERT INTO jobmachine.task (class_id, parameters, status, parents)"
        " SELECT class_id, '{{}}', {status}, {parents} FROM jobmachine.class"
        " WHERE name = 'roles.status'"
    )
    denied_sql(
        logins.sender,
        *(insert.format(status=s, parents="NULL") for s in (10, 100, 200, 900, 5)),
        insert.format(status=100, parents=f"ARRAY[{parent}]::bigint[]"),
        insert.format(status=200, parents=f"ARRAY[{doomed}]::bigint[]"),
        insert.format(status=900, parents=f"ARRAY[{parent}]::bigint[]"),
        insert.format(status=10, parents="'{}'::bigint[]"),
    )
    with psycopg.connect(logins.sender, autocommit=True) as sender:
        for status, parents in ((0, "NULL"), (10, f"ARRAY[{parent}]::bigint[]")):
            sender.execute(insert.format(status=status, parents=parents))
        sender.execute(insert.format(status=900, parents=f"ARRAY[{doomed}]::bigint[]"))
    assert one(
        conn,
        "SELECT array_agg(t.status ORDER BY t.task_id) FROM jobmachine.task t"
        " JOIN jobmachine.class c USING (class_id) WHERE c.name = %s",
        q,
    ) == [0, 900, 0, 10, 900]
    # send() with every kind of parent, and the Perl client, as the sender.
    with jm.Client(logins.sender, queue=q) as client:
        assert client.task_info(client.send({}, parents=[parent])).state == "blocked"
        assert client.task_info(client.send({}, parents=[doomed])).state == "failed"
    perl = Perl(logins.sender)
    try:
        assert perl.send(q, {"data": "perl"})
    finally:
        perl.close()


#: The one table-level privilege left that lets a role LOCK TABLE a table
#: of the schema in ACCESS EXCLUSIVE mode (docs/roles.md): worker_reap
#: deletes dead workers' rows.
LOCKABLE = {("worker", "jobmachine.worker"), ("admin", "jobmachine.schedule")}


def test_no_role_can_lock_a_table_of_the_queue(
    logins: Logins, conn: psycopg.Connection[Any]
) -> None:
    """The review's probe: table-level DELETE (and UPDATE) let the worker,
    the admin and the sender (on the lock table) take LOCK TABLE ... IN
    ACCESS EXCLUSIVE MODE, stopping every send, claim and read. Deletes now
    go through functions of the schema's owner; only the registry's DELETE
    is left to the worker."""
    tables = [
        r
        for (r,) in conn.execute(
            "SELECT oid::regclass::text FROM pg_class"
            " WHERE relnamespace = 'jobmachine'::regnamespace AND relkind IN ('r', 'p')"
        )
    ]
    assert {"jobmachine.task", "jobmachine.lock", "jobmachine.worker"} <= set(tables)
    dsns = {
        "sender": logins.sender,
        "worker": logins.worker,
        "reader": logins.reader,
        "admin": logins.admin,
    }
    for role, dsn in dsns.items():
        group = getattr(logins.roles, role)
        held = {
            (table, privilege)
            for table in tables
            for privilege in ("UPDATE", "DELETE", "TRUNCATE")
            if one(conn, "SELECT has_table_privilege(%s, %s, %s)", group, table, privilege)
        }
        expected = {
            "worker": {("jobmachine.worker", "DELETE")},
            # The admin manages cron schedules (docs/roles.md): it may lock
            # that table, which holds up only the dispatch of ticks.
            "admin": {("jobmachine.schedule", "DELETE")},
        }
        assert held == expected.get(role, set()), role
        denied_in_transaction(
            dsn,
            *(
                f"LOCK TABLE {table} IN {mode} MODE"
                for table in tables
                if (role, table) not in LOCKABLE
                for mode in ("ACCESS EXCLUSIVE", "EXCLUSIVE", "SHARE")
            ),
        )
    with psycopg.connect(logins.worker) as worker:  # what is left, as documented
        worker.execute("LOCK TABLE jobmachine.worker IN ACCESS EXCLUSIVE MODE")
        worker.rollback()
    # The Perl worker's chores as the worker role: revive and fail work,
    # its removal of every task untouched for 30 days is refused (README:
    # give Perl workers remove_after => 0).
    with psycopg.connect(logins.worker, autocommit=True) as perl_worker:
        perl_worker.execute(
            "UPDATE jobmachine.task SET status = 0, modified = now()"
            " WHERE status = 100 AND modified < now() - interval '1800 seconds'"
        )
        perl_worker.execute("UPDATE jobmachine.task SET status = 900 WHERE task_id IN (0)")
    denied_sql(
        logins.worker, "DELETE FROM jobmachine.task WHERE modified < now() - INTERVAL '30 days'"
    )
    # Each still does its deletes: retention, remove and purge, unlock.
    with jm.Client(logins.sender, queue="roles.lock") as client:
        hold = client.lock("roles.named", expire=60)
        assert hold and client.unlock("roles.named", hold) and not client.unlock("roles.named")
        ids = [client.send({"n": n}, delay=3600) for n in range(3)]
    conn.execute(
        "UPDATE jobmachine.task SET status = 200, modified = now() - interval '2 days'"
        " WHERE task_id = %s",
        [ids[0]],
    )
    with Answer(logins.worker, queue="roles.lock", remove_after=1) as worker:
        assert worker.housekeeping().removed == 1
    with jm.Admin(logins.admin) as admin:
        admin.cancel(ids[1])
        assert admin.purge("failed") == 1
        admin.remove(ids[2])
        with pytest.raises(jm.UnknownTask):
            admin.remove(ids[2])
    assert one(conn, "SELECT count(*) FROM jobmachine.task") == 0


def hold_key(dsn: str, *key: int) -> psycopg.Connection[Any]:
    """A session of the user of ``dsn`` holding the advisory lock ``key``."""
    c = psycopg.connect(dsn, autocommit=True)
    assert one(c, f"SELECT pg_try_advisory_lock({', '.join(map(str, key))})")
    return c


def test_a_sender_holding_the_housekeepers_key_does_not_stop_housekeeping(
    logins: Logins, conn: psycopg.Connection[Any]
) -> None:
    """The review's probe: any login role could take the advisory lock of
    the fleet's housekeeper and keep it, and no worker would rescue or
    remove anything again. A key held by a session whose user may not
    register a worker no longer counts; one held by a worker still does
    (one housekeeper at a time)."""
    from job_machine._lock_keys import CHORE_LOCK_KEY  # noqa: PLC0415

    conn.execute(
        "INSERT INTO jobmachine.worker (host, pid, queues, seen)"
        " VALUES ('gone', 1, ARRAY['roles.key'], now() - interval '1 hour')"
    )
    with Answer(logins.worker, queue="roles.key", dead_after=2) as worker:
        with hold_key(logins.worker, CHORE_LOCK_KEY):
            assert not worker.housekeeping().ran  # a worker's hold counts
        reaped = 0
        for squatter in (logins.sender, logins.reader, logins.admin):
            with hold_key(squatter, CHORE_LOCK_KEY):
                counts = worker.housekeeping()
                assert counts.ran, squatter
                reaped += counts.reaped
        assert reaped == 1  # the dead worker, by the first round
    # The fleet's leader: a worker becomes it beside a squatter, not beside
    # another worker.
    with jm.Worker(logins.worker, queue="roles.key", handle_signals=False) as worker:
        store = worker._store
        with hold_key(logins.sender, CHORE_LOCK_KEY), jm_connect(logins.worker) as c:
            assert store.on(c).leader_lock()
        with hold_key(logins.worker, CHORE_LOCK_KEY), jm_connect(logins.worker) as c:
            assert not store.on(c).leader_lock()


def test_a_workers_liveness_key_held_by_a_sender_does_not_stop_its_rescue(
    logins: Logins, conn: psycopg.Connection[Any]
) -> None:
    """A session that holds a dead worker's liveness key keeps it alive in
    the reaper's eyes only when its user may register a worker: held by a
    sender (a squatter), the dead worker's task is rescued all the same."""
    wid = one(
        conn,
        "INSERT INTO jobmachine.worker (host, pid, queues, seen)"
        " VALUES ('gone', 1, ARRAY['roles.live'], now() - interval '1 hour') RETURNING worker_id",
    )
    with jm.Client(logins.sender, queue="roles.live") as client:
        held = client.send({"n": "held"})
    conn.execute(
        "UPDATE jobmachine.task SET status = 100, attempts = 1, worker_id = %s,"
        " modified = now() - interval '1 hour' WHERE task_id = %s",
        [wid, held],
    )
    with (
        Answer(logins.worker, queue="roles.live", dead_after=2) as worker,
        hold_key(logins.sender, WORKER_KEY, wid % 2**31),
    ):
        assert worker.housekeeping().reaped == 1
    assert task_status(conn, held) == 0


def test_a_worker_removes_unused_queues_without_delete_on_class(
    logins: Logins, conn: psycopg.Connection[Any]
) -> None:
    """Bounded queues (issue 15, item 3) within the roles: housekeeping
    removes an empty queue a day old through queue_prune(), the schema
    owner's; the sender and the admin find queues through queue_find()."""
    conn.execute(
        "INSERT INTO jobmachine.class (name, created, modified)"
        " VALUES ('roles.old', now() - interval '2 days', now() - interval '2 days'),"
        " ('roles.target', now() - interval '2 days', now() - interval '2 days')"
    )
    with jm.Client(logins.sender, queue="roles.new") as client:
        failed = client.send({"n": 1}, delay=3600)
    with jm.Admin(logins.admin) as admin:
        admin.cancel(failed)
        admin.retry(failed, queue="roles.target")  # an existing queue
        assert admin.task_info(failed).queue == "roles.target"
    with Answer(logins.worker, queue="roles.new", dead_after=2) as worker:
        assert worker.housekeeping().pruned == 1
    assert one(conn, "SELECT array_agg(name ORDER BY name) FROM jobmachine.class") == [
        "roles.new",
        "roles.target",
    ]
    for role in (logins.sender, logins.admin, logins.reader):
        denied_sql(role, "SELECT jobmachine.queue_prune(0, 10)", "DELETE FROM jobmachine.class")


# -- a pinned search_path (issue 15, item 1) ------------------------------------------------

#: What a sender may put into a schema on everyone's search_path when PUBLIC
#: may CREATE there: a json_build_object closer to the calls of the trigger
#: (..., bigint: the parent's id) and of worker_reap (..., integer: the
#: attempt) than the built-in json_build_object(VARIADIC "any"). It runs as
#: whoever calls it, does what the sender may not, and answers as the
#: built-in does, so nothing else shows.
SHADOW = """
CREATE FUNCTION public.json_build_object(text, text, text, text, text, {last}) RETURNS json
LANGUAGE plpgsql AS $$
BEGIN
    {action};
    RETURN pg_catalog.json_build_object($1, $2, $3, $4, $5, $6);
END
$$
"""
PAUSE = "UPDATE jobmachine.class SET paused = true WHERE name = 'roles.path'"
DELETE = "DELETE FROM jobmachine.task WHERE title = 'victim'"


def test_a_function_a_sender_puts_on_the_path_never_runs_as_an_admin_or_a_worker(
    logins: Logins, conn: psycopg.Connection[Any]
) -> None:
    """The review's probe: with ``public`` writable (the default before
    PostgreSQL 15, and in clusters upgraded from it) a sender shadows
    json_build_object; an admin cancels a parent (the trigger), and a
    worker does housekeeping (worker_reap). The sender's function runs as
    neither: the schema's functions pin their search_path, and so does
    every connection job_machine opens."""
    conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
    q = "roles.path"
    with jm.Client(logins.sender, queue=q) as client:
        victim = client.send({"n": "victim"}, title="victim", delay=3600)
        parents = [client.send({"n": n}, delay=3600) for n in range(2)]
        children = [client.send({"n": "child"}, parents=[p]) for p in parents]
    with psycopg.connect(logins.sender, autocommit=True) as sender:
        sender.execute(SHADOW.format(last="bigint", action=PAUSE))
        sender.execute(SHADOW.format(last="integer", action=DELETE))
        # On the default path the call finds the sender's function (which
        # may not do what it tries, as the sender).
        for last in ("1::bigint", "1::integer"):
            with pytest.raises(InsufficientPrivilege):
                sender.execute(f"SELECT json_build_object('a', 'b', 'c', 'd', 'e', {last})")

    def paused() -> bool:
        return bool(one(conn, "SELECT paused FROM jobmachine.class WHERE name = %s", q))

    # An admin cancels a parent through job_machine: the trigger fails the child.
    with jm.Admin(logins.admin) as admin:
        admin.cancel(parents[0])
        assert admin.task_info(children[0]).errors[0]["type"] == "ParentFailed"
    assert not paused()
    # ... and by hand, on a connection with the default path (psql, Perl):
    # the trigger function's own search_path holds.
    with psycopg.connect(logins.admin, autocommit=True) as by_hand:
        assert "public" in str(one(by_hand, "SHOW search_path"))
        by_hand.execute("UPDATE jobmachine.task SET status = 900 WHERE task_id = %s", [parents[1]])
    assert task_status(conn, children[1]) == 900
    assert not paused()

    # A worker rescues a dead worker's task: worker_reap's error result.
    held = one(
        conn,
        """
        WITH dead AS (
            INSERT INTO jobmachine.worker (host, pid, queues, seen)
            VALUES ('gone', 1, ARRAY['roles.path'], now() - interval '1 hour')
            RETURNING worker_id
        )
        INSERT INTO jobmachine.task (class_id, parameters, status, attempts, worker_id, started)
        SELECT class_id, '{}', 100, 1, (SELECT worker_id FROM dead), now() - interval '1 hour'
          FROM jobmachine.class WHERE name = 'roles.path'
        RETURNING task_id
        """,
    )
    with Answer(logins.worker, queue=q, dead_after=2) as worker:
        counts = worker.housekeeping()
    assert counts.ran and counts.reaped == 1
    assert task_status(conn, held) == 0
    assert task_status(conn, victim) == 0  # not deleted


def task_status(conn: psycopg.Connection[Any], task_id: int) -> int | None:
    return one(conn, "SELECT status FROM jobmachine.task WHERE task_id = %s", task_id)  # type: ignore[no-any-return]


def test_every_function_of_the_schema_and_every_connection_pin_the_search_path(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    unpinned = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p"
        " WHERE p.pronamespace = 'jobmachine'::regnamespace"
        " AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)"
    ).fetchall()
    assert unpinned == []
    jm.install_schema(dsn)  # again, as at an upgrade: CREATE OR REPLACE keeps it
    assert one(
        conn,
        "SELECT proconfig FROM pg_proc WHERE oid = 'jobmachine.lock(text, float8, integer)'"
        "::regprocedure",
    ) == ["search_path=pg_catalog, pg_temp"]
    # Every connection job_machine opens, with the DSN's own options kept.
    with_options = make_conninfo(dsn, options="-c application_name=mine")
    monkeypatch.setenv("PGOPTIONS", "-c work_mem=7MB")
    for target, kwargs in ((dsn, {}), (with_options, {}), (dsn, {"options": "-c lock_timeout=3s"})):
        with jm_connect(target, **kwargs) as c:
            assert one(c, "SHOW search_path") == "pg_catalog,pg_temp"
            settings = one(
                c,
                "SELECT array[current_setting('application_name'), current_setting('work_mem'),"
                " current_setting('lock_timeout')]",
            )
            if target == with_options:
                assert settings[0] == "mine"
            elif kwargs:
                assert settings[2] == "3s"
            else:
                assert settings[1] == "7MB"  # $PGOPTIONS, read when no options are given
    with jm.Client(dsn) as client, jm.Admin(dsn) as admin:
        client.send({}, "roles.path")
        assert admin.stats().total("waiting") == 1
    # The pool a worker makes for itself (concurrency > 1), and the process's
    # reply listener.
    w = jm.Worker(dsn, queue="roles.path", concurrency=2)
    try:
        w._own_pool.open(w._connector)
        assert w._own_pool.pool is not None
        with w._own_pool.pool.connection() as c:
            assert one(c, "SHOW search_path") == "pg_catalog,pg_temp"
    finally:
        w.close()
    with jm.Client(dsn) as client:
        with pytest.raises(jm.WaitTimeout):
            client.wait(client.send({}, "roles.path"), timeout=0.1)
        listener = client._listener()._connect()
        try:
            assert one(listener, "SHOW search_path") == "pg_catalog,pg_temp"
        finally:
            listener.close()


def test_the_roles_install_warns_when_every_role_may_create_on_the_default_path(
    conn: psycopg.Connection[Any], dsn: str, cleanup: list[str]
) -> None:
    roles = jm.Roles(unique_prefix())
    cleanup += roles.all
    quiet = run_psql(dsn, roles.prefix)
    assert quiet.returncode == 0 and "WARNING" not in quiet.stderr, quiet.stderr
    conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
    conn.execute("CREATE SCHEMA shared")
    conn.execute("GRANT CREATE ON SCHEMA shared TO PUBLIC")  # on no default path: no warning
    warned = run_psql(dsn, roles.prefix)
    assert warned.returncode == 0, warned.stderr
    assert "WARNING:  every role may CREATE in schema public, which is on the default" in (
        warned.stderr
    )
    assert "REVOKE CREATE ON SCHEMA public FROM PUBLIC" in warned.stderr
    assert "shared" not in warned.stderr
    # A default path set for the database counts too.
    database = one(conn, "SELECT current_database()")
    conn.execute(
        sql.SQL("ALTER DATABASE {} SET search_path = shared").format(sql.Identifier(database))
    )
    conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    again = run_psql(dsn, roles.prefix)
    assert "CREATE in schema shared" in again.stderr and "schema public" not in again.stderr


@pytest.mark.pgbouncer
def test_behind_pgbouncer_the_path_comes_from_the_role_and_a_warning_says_so(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """PgBouncer refuses the ``options`` startup parameter: job_machine
    connects again without it (once per server), and warns while the role's
    own search_path is not the pinned one."""
    from job_machine._sync import connection  # noqa: PLC0415
    from tests.support.pgserver import PgBouncer, PgServer  # noqa: PLC0415

    server = PgServer.start_new(tmp_path)
    try:
        bouncer = PgBouncer(server, tmp_path)
        try:
            via = bouncer.dsn_for("postgres")
            caplog.set_level(logging.WARNING, logger="job_machine")
            with jm_connect(via) as c:
                assert "public" in str(one(c, "SHOW search_path"))
            assert "refused the options startup parameter" in caplog.text
            assert "ALTER ROLE ... SET search_path = pg_catalog, pg_temp" in caplog.text
            caplog.clear()
            with jm_connect(via) as c:  # no second try, no second warning
                assert one(c, "SELECT 1") == 1
            assert caplog.text == ""
            with psycopg.connect(server.dsn, autocommit=True) as direct:
                user = one(direct, "SELECT current_user")
                direct.execute(
                    sql.SQL("ALTER ROLE {} SET search_path = pg_catalog, pg_temp").format(
                        sql.Identifier(user)
                    )
                )
            connection._NO_OPTIONS.clear()  # as in a new process
            with jm_connect(bouncer.dsn_for("template1")) as c:  # a new server connection
                assert one(c, "SHOW search_path") == "pg_catalog, pg_temp"
            assert caplog.text == ""
        finally:
            bouncer.stop()
    finally:
        server.cleanup()


class _Parts(jm.Worker):
    """Streams its data's items as parts, then replies with their count."""

    handle_signals = False

    def process(self, task: jm.Task) -> None:
        for item in task.data:
            self.send_part(item)
        self.reply(len(task.data))


def test_a_worker_streams_parts_that_senders_and_readers_read_and_nobody_forges(
    logins: Logins, conn: psycopg.Connection[Any]
) -> None:
    with jm.Client(logins.sender, queue="roles.parts") as client:
        tid = client.send(["a", "b"])
        with _Parts(logins.worker, queue="roles.parts") as w:
            assert w.work_once()
        assert [p.data for p in client.parts(tid, timeout=5)] == ["a", "b"]
        assert client.receive(tid) == 2
    with jm.Client(logins.reader) as reader:
        assert [p.data for p in reader.parts(tid, timeout=5)] == ["a", "b"]
    forge = f"INSERT INTO jobmachine.part (task_id, attempt, seq, data) VALUES ({tid}, 1, 9, '1')"
    denied_sql(logins.sender, forge, "DELETE FROM jobmachine.part")
    denied_sql(logins.reader, forge, "DELETE FROM jobmachine.part")
    denied_sql(logins.admin, forge, "UPDATE jobmachine.part SET data = '1'")
    denied_sql(
        logins.worker, "UPDATE jobmachine.part SET data = '1'", "DELETE FROM jobmachine.part"
    )
    assert one(conn, "SELECT count(*) FROM jobmachine.part WHERE task_id = %s", tid) == 2


def test_an_admin_sets_limits_and_broadcasts_that_workers_honour_and_nobody_else_can(
    logins: Logins, conn: psycopg.Connection[Any]
) -> None:
    """Version 10 as the roles: the admin sets a queue's limits (and clears
    them) and broadcasts commands; a worker claims within them (recording
    what a rate counts) and takes its commands; neither a worker nor a
    sender sets limits, broadcasts, or takes another worker's commands."""
    q = "roles.limits"
    with jm.Admin(logins.admin) as admin:
        admin.set_limits(q, concurrency=1, rate=10, per=60)
        admin.set_limits(q, concurrency=1, rate=10, per=60, per_grouping=True)
    with jm.Client(logins.sender, queue=q) as client:
        client.send_many([1, 2])
    # A dead worker with a command it never took: the reaper's DELETE of
    # its registration (as the worker role) takes the command with it.
    gone = one(
        conn,
        "INSERT INTO jobmachine.worker (host, pid, queues, seen)"
        " VALUES ('gone', 1, '{q}', now() - interval '1 hour') RETURNING worker_id",
    )
    with jm.Admin(logins.admin) as admin:
        assert admin.broadcast("note", "never", worker_ids=[gone]) == 1
    got: list[Any] = []
    worker = Answer(logins.worker, queue=q, dead_after=1)
    worker.on_command("note", got.append)
    with serving(worker, wait_ready=False), jm.Admin(logins.admin) as admin:
        wait_until(lambda: worker.worker_id is not None, 10, "the worker registered")
        assert admin.broadcast("note", {"n": 1}) == 2  # the dead one too, until reaped
        wait_until(lambda: got == [{"n": 1}], 10, "the command taken")
        wait_until(
            lambda: one(conn, "SELECT count(*) FROM jobmachine.worker_command") == 0,
            10,
            "the dead worker's command gone with it",
        )
        wait_until(
            lambda: one(conn, "SELECT count(*) FROM jobmachine.task WHERE status = 200") == 2,
            10,
            "both tasks done",
        )
        assert [x.recent for x in admin.limits()] == [2]
        for who in (logins.worker, logins.sender):
            with jm.Admin(who) as other:
                denied(lambda other=other: other.set_limits(q, concurrency=5))  # type: ignore[misc]
                denied(lambda other=other: other.set_limits(q))  # type: ignore[misc]
                denied(lambda other=other: other.broadcast("stop"))  # type: ignore[misc]
        denied_sql(
            logins.worker,
            "UPDATE jobmachine.queue_limit SET concurrency = 9",
            "DELETE FROM jobmachine.queue_limit_start",
            "DELETE FROM jobmachine.worker_command",
            "SELECT * FROM jobmachine.queue_limit FOR UPDATE",
            "INSERT INTO jobmachine.worker_command (worker_id, command) VALUES (1, 'stop')",
        )
        denied_sql(
            logins.sender,
            "SELECT * FROM jobmachine.queue_limit_room(ARRAY['roles.limits'], NULL)",
            "SELECT * FROM jobmachine.worker_commands_take(1)",
        )
        admin.set_limits(q)
        assert admin.limits() == []
