"""docs/tasks.md runs: its excerpts are still in the example files, its
other Python blocks run in order against a worker process serving
examples.tasks:app, its pytest block passes under the plugin; and the
FastAPI and Flask examples (examples/fastapi_tasks.py, flask_tasks.py)
answer through a real worker process."""

from __future__ import annotations

import re
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from examples import tasks
from examples.fastapi_tasks import api
from examples.flask_tasks import create_app
from tests.integration.test_cli import cli_worker
from tests.integration.test_pytest_plugin import _plugin_args

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "tasks.md"
_BLOCK = re.compile(r"(?:<!-- (?P<mark>[^>]*?) -->\n)?```python\n(?P<code>.*?)```", re.DOTALL)


def _blocks() -> list[tuple[str, str]]:
    """(marker, code) of every Python block of docs/tasks.md, in order."""
    return [(m["mark"] or "", m["code"]) for m in _BLOCK.finditer(DOC.read_text())]


def test_the_docs_excerpts_are_in_the_examples() -> None:
    excerpts = [(mark, code) for mark, code in _blocks() if mark.startswith("file: ")]
    assert len(excerpts) >= 4
    for mark, code in excerpts:
        path = ROOT / mark.removeprefix("file: ")
        assert code in path.read_text(), f"docs/tasks.md's excerpt of {path.name} is stale"


def test_the_docs_examples_run(dsn: str, tmp_path: Path) -> None:
    runnable = [code for mark, code in _blocks() if not mark]
    assert len(runnable) >= 3
    with (
        cli_worker(dsn, tmp_path, "--app", "examples.tasks:app", script=False),
        tasks.app.using(dsn),
    ):
        namespace: dict[str, object] = {"__name__": "docs_tasks"}
        for code in runnable:
            exec(compile(code, str(DOC), "exec"), namespace)


def test_the_docs_pytest_example_passes(
    pytester: pytest.Pytester, server_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    [code] = [code for mark, code in _blocks() if mark == "pytest"]
    monkeypatch.setenv("JOB_MACHINE_TEST_DSN", server_dsn)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(test_docs_example=textwrap.dedent(code))
    result = pytester.runpytest_subprocess(*_plugin_args(), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


async def test_fastapi_lifespan_serves_and_closes_the_app(dsn: str, tmp_path: Path) -> None:
    with cli_worker(dsn, tmp_path, "--app", "examples.tasks:app", script=False):
        async with tasks.app.ausing(dsn):
            for _ in range(2):  # a second server start gets clients of its own
                async with (
                    api.router.lifespan_context(api),
                    httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=api), base_url="http://test"
                    ) as http,
                ):
                    got = await http.get("/add", params={"a": 2, "b": 3})
                    assert got.json() == {"sum": 5}
                    body = {"customer": "ACME", "amounts": [1.25, 2.0]}
                    got = await http.post("/invoices/total", json=body)
                    assert got.json() == {"customer": "ACME", "amount": 3.25}
                    assert api.state.job_machine is tasks.app
                assert tasks.app._aclient is None, "the lifespan did not close the app"


def test_flask_threads_share_the_app(dsn: str, tmp_path: Path) -> None:
    with (
        cli_worker(dsn, tmp_path, "--app", "examples.tasks:app", "-c", "4", script=False),
        tasks.app.using(dsn),
    ):
        web = create_app(dsn)

        def ask(n: int) -> int:
            reply = web.test_client().get("/add", query_string={"a": n, "b": n})
            assert reply.status_code == 200, reply.text
            total: int = reply.json["sum"]  # type: ignore[index]
            return total

        with ThreadPoolExecutor(16) as pool:
            assert list(pool.map(ask, range(32))) == [2 * n for n in range(32)]
        assert tasks.app.client is tasks.app.client, "one client for every thread"
