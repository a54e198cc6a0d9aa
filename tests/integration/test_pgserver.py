"""The crash-test server helper itself: start, restart, kill, recover, same DSN throughout."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.pgserver import PgServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PgServer]:
    s = PgServer.start_new(tmp_path)
    yield s
    s.cleanup()


def _one(dsn: str, query: str) -> Any:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(query).fetchone()
        assert row is not None
        return row[0]


def test_start_new_is_quick_and_answers(tmp_path: Path) -> None:
    t0 = time.monotonic()
    server = PgServer.start_new(tmp_path)
    try:
        elapsed = time.monotonic() - t0
        assert elapsed < 5, f"initdb + start took {elapsed:.2f} s"
        assert server.running
        assert server.dsn == f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres"
        assert _one(server.dsn, "SELECT current_setting('fsync')") == "off"
        assert _one(server.dsn, "SELECT current_setting('server_version_num')") >= "180000"
        assert _one(server.dsn, "SELECT inet_server_addr()::text") == "127.0.0.1/32"
        if os.geteuid() == 0:  # PostgreSQL runs as the service user, not as root
            assert server.datadir.stat().st_uid != 0
    finally:
        server.cleanup()
    assert not server.basedir.exists()
    assert not server.running


def test_restart_keeps_dsn_and_data(server: PgServer) -> None:
    dsn = server.dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (v int)")
        conn.execute("INSERT INTO t VALUES (1)")
        pid_before = server.pid

    server.restart()
    assert server.dsn == dsn
    assert _one(dsn, "SELECT sum(v) FROM t") == 1
    assert server.pid != pid_before

    server.stop()
    assert not server.running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2)
    server.start()
    assert _one(dsn, "SELECT count(*) FROM t") == 1


def test_stop_fast_ends_open_connections(server: PgServer) -> None:
    conn = psycopg.connect(server.dsn, autocommit=True)
    try:
        server.stop("fast")
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    finally:
        conn.close()
    server.start()
    assert _one(server.dsn, "SELECT 1") == 1


@pytest.mark.parametrize("postmaster_only", [False, True], ids=["all", "postmaster"])
def test_kill_then_start_recovers_committed_data(server: PgServer, postmaster_only: bool) -> None:
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (v int)")
        conn.execute("INSERT INTO t SELECT generate_series(1, 1000)")
    # An open connection with an uncommitted transaction at the time of the crash.
    victim = psycopg.connect(server.dsn)
    victim.execute("INSERT INTO t VALUES (-1)")
    backends = server.backend_pids()
    assert backends, "the server runs child processes"

    server.kill(postmaster_only=postmaster_only)
    assert not server.running
    with pytest.raises(psycopg.OperationalError):
        victim.execute("SELECT 1")
    victim.close()

    server.start()
    assert _one(server.dsn, "SELECT count(*) FROM t") == 1000  # committed rows only
    log = server.log_path.read_text()
    assert "automatic recovery in progress" in log


def test_kill_twice_in_a_row(server: PgServer) -> None:
    for _ in range(2):
        server.kill()
        server.start()
    assert _one(server.dsn, "SELECT 1") == 1


def test_two_servers_side_by_side(tmp_path: Path, server: PgServer) -> None:
    with PgServer.start_new(tmp_path) as other:
        assert other.port != server.port
        assert other.basedir != server.basedir
        server.kill()
        assert _one(other.dsn, "SELECT 1") == 1
    server.start()
    assert _one(server.dsn, "SELECT 1") == 1
