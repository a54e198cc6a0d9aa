"""Task functions (job_machine.App, @app.task) on a real PostgreSQL: sent
and run in this process by run_tasks, and called across real worker
processes started by ``job-machine worker --app``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool

import job_machine as jm
from job_machine.testing import arun_tasks, run_tasks
from tests.integration.test_cli import cli, cli_worker
from tests.integration.test_perl_compat import PERL_FETCH_RESULT, Perl
from tests.support import taskfns
from tests.support.taskfns import Order, Point, Receipt, Segment, add, app, async_app


@pytest.fixture
def on_db(dsn: str) -> Iterator[str]:
    """The test apps of tests/support/taskfns.py pointed at the test's database."""
    with app.using(dsn):
        yield dsn


def _rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT t.task_id, c.name, t.parameters::text FROM jobmachine.task t "
        "JOIN jobmachine.class c USING (class_id) ORDER BY t.task_id"
    ).fetchall()


# -- in this process, with run_tasks ------------------------------------------------


def test_send_then_run_tasks_then_result(on_db: str, conn: psycopg.Connection[Any]) -> None:
    task_id = add.send(1, 2)
    # Plain JSON on the wire, on the queue named after the function.
    [(tid, queue, parameters)] = _rows(conn)
    assert (tid, queue) == (task_id, "tests.support.taskfns.add")
    assert json.loads(parameters) == {
        "task": "tests.support.taskfns.add",
        "args": [1, 2],
        "kwargs": {},
    }
    ran = run_tasks(app)
    assert [(r.id, r.name, r.state, r.reply) for r in ran] == [
        (task_id, "tests.support.taskfns.add", "done", 3)
    ]
    assert add.result(task_id) == 3
    assert add(40, 2) == 42  # calling it still runs it here


def test_functions_share_a_queue_and_dataclasses_convert(on_db: str) -> None:
    seg = Segment(Point(0, 0), Point(3, 4), tags=["a"])
    ids = [taskfns.length.send(seg), taskfns.midpoint.send(seg)]
    assert taskfns.length.queue == taskfns.midpoint.queue == "tests.geometry"
    ran = run_tasks(app, queues=["tests.geometry"])
    assert [r.name for r in ran] == [
        "tests.support.taskfns.length",
        "tests.support.taskfns.midpoint",
    ]
    assert ran[1].reply == {"x": 1.5, "y": 2.0}
    assert taskfns.length.result(ids[0]) == 5.0
    assert taskfns.midpoint.result(ids[1]) == Point(1.5, 2.0)


def test_pydantic_models_variadic_and_keyword_arguments(on_db: str) -> None:
    task_id = taskfns.receipt.send(Order(id=7, items=["x"]), "y", "z", note="ab")
    run_tasks(app)
    got = taskfns.receipt.result(task_id)
    assert got == Receipt(order=Order(id=7, items=["x", "y", "z"]), count=5)


def test_unencodable_argument_is_named_and_nothing_is_written(
    on_db: str, conn: psycopg.Connection[Any]
) -> None:
    with pytest.raises(jm.InvalidData, match=r"argument 'b' of tests\.support\.taskfns\.add"):
        add.send(1, object())  # type: ignore[arg-type]
    with pytest.raises(jm.InvalidData, match=r"argument 'extra\[1\]'"):
        taskfns.receipt.send(Order(id=1, items=[]), "ok", {1, 2})  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"tests\.support\.taskfns\.add\(\): missing a required argument"
    ):
        add.send(1)  # type: ignore[call-arg]
    with pytest.raises(jm.InvalidData, match=r"item 1|argument 'b'"):
        add.send_many([(1, 2), (1, float("nan"))])
    assert _rows(conn) == []


def test_a_raising_function_is_retried_then_fails(on_db: str) -> None:
    task_id = taskfns.fail.send("boom")
    ran = run_tasks(app, retries=1, retry_backoff=0)
    assert [(r.id, r.state) for r in ran] == [(task_id, "waiting"), (task_id, "failed")]
    assert ran[1].error["type"] == "ValueError"
    with pytest.raises(jm.TaskFailed, match="boom") as failed:
        taskfns.fail.result(task_id)
    assert "ValueError" in failed.value.error["traceback"]
    with pytest.raises(jm.TaskFailed):
        ran[1].value()


def test_unknown_or_malformed_tasks_fail_at_once(on_db: str) -> None:
    client = app.client
    unknown = client.send({"task": "tests.support.taskfns.gone", "args": []}, add.queue)
    not_object = client.send([1, 2], add.queue)
    bad_args = client.send({"task": add.name, "args": [1, 2, 3]}, add.queue)
    # A Perl client's payload: no task name on a queue with one function, no kwargs.
    perlish = client.send({"args": [20, 22]}, add.queue)
    ran = {r.id: r for r in run_tasks(app, retries=5)}
    assert len(ran) == 4, "each ran once: no retries for a rejected task"
    for tid, words in [
        (unknown, "no task function named 'tests.support.taskfns.gone'"),
        (not_object, "a task function's data is a JSON object"),
        (bad_args, "too many positional arguments"),
    ]:
        assert ran[tid].state == "failed"
        assert ran[tid].error["type"] == "TaskRejected"
        assert words in ran[tid].error["message"]
        with pytest.raises(jm.TaskFailed, match="failed"):
            client.wait(tid, timeout=5)
    assert ran[perlish].reply == 42


@pytest.fixture
def perl(dsn: str) -> Iterator[Perl]:
    """Perl Job::Machine 0.19's statements on the test's database."""
    p = Perl(dsn)
    yield p
    p.close()


def test_perl_client_and_worker_speak_task_functions(on_db: str, perl: Perl) -> None:
    """Job::Machine 0.19's own statements: a Perl client calls a Python task
    function, a Perl worker answers a Python call."""
    tid = perl.send(add.queue, {"task": add.name, "args": [1, 2]})
    assert [r.reply for r in run_tasks(app)] == [3]
    assert json.loads(perl._run(PERL_FETCH_RESULT, tid)[0]["result"]) == 3

    called = taskfns.midpoint.send(Segment(Point(0, 0), Point(2, 4)))
    task = perl.claim("tests.geometry")
    assert task is not None and task["task_id"] == called
    assert json.loads(task["parameters"]) == {
        "task": "tests.support.taskfns.midpoint",
        "args": [{"start": {"x": 0, "y": 0}, "end": {"x": 2, "y": 4}, "tags": []}],
        "kwargs": {},
    }
    perl.reply(called, {"x": 1, "y": 2})
    assert taskfns.midpoint.result(called) == Point(1, 2)


def test_configure_and_send_many(on_db: str, conn: psycopg.Connection[Any]) -> None:
    task_id = add.configure(priority=9, title="sum", grouping="g").send(1, 1)
    info = app.client.task_info(task_id)
    assert (info.priority, info.title, info.grouping) == (9, "sum", "g")
    later = add.configure(delay=3600).send(2, 2)
    elsewhere = add.configure(queue="tests.elsewhere").send(3, 3)
    ids = add.send_many([(1, 2), add.args(3, b=4), add.args(a=5, b=6)])
    assert [r.id for r in run_tasks(app)] == [task_id, *ids], "9 first; delayed and other queue not"
    assert [add.result(i) for i in ids] == [3, 7, 11]
    assert [r.id for r in run_tasks(app, queues=["tests.elsewhere"])] == [elsewhere]
    assert app.client.task_info(later).state == "waiting"
    with pytest.raises(jm.WaitTimeout):
        add.configure(timeout=0.2).result(later)
    with pytest.raises(ValueError, match="send_many\\(\\) cannot send with unique_key"):
        add.configure(unique_key="k").send_many([(1, 2)])
    assert add.configure(unique_key="k").send(1, 2) == add.configure(unique_key="k").send(1, 2)


def test_tasks_that_send_tasks_run_in_the_same_call(on_db: str) -> None:
    taskfns.chain.send(3)
    assert [r.reply for r in run_tasks(app)] == [3, 2, 1, 0]


def test_a_worker_subclass_beside_task_functions(on_db: str) -> None:
    class Plain(jm.Worker):
        queue = "tests.plain"
        handle_signals = False

        def process(self, task: jm.Task) -> None:
            self.reply({"plain": task.data})

    plain_id = app.client.send("hi", "tests.plain")
    fn_id = add.send(2, 3)
    with Plain(on_db) as plain:
        assert [r.reply for r in run_tasks(plain)] == [{"plain": "hi"}]
    assert [r.reply for r in run_tasks(app)] == [5]
    assert app.client.receive(plain_id) == {"plain": "hi"}
    assert add.result(fn_id) == 5


def test_a_sync_worker_refuses_async_functions(dsn: str) -> None:
    with pytest.raises(TypeError, match=r"slow_double is a coroutine function.*app\.async_worker"):
        async_app.worker(dsn=dsn)
    assert async_app.needs_asyncio and not app.needs_asyncio


async def test_asyncio_face_and_a_mixed_async_worker(dsn: str) -> None:
    async with async_app.ausing(dsn):
        ids = [await taskfns.slow_double.asend(21), await taskfns.triple.asend(2)]
        ids += await taskfns.slow_double.asend_many([1, 2])
        ran = await arun_tasks(async_app)
        assert [r.reply for r in ran] == [42, 6, 2, 4]
        assert await taskfns.slow_double.aresult(ids[0]) == 42
        assert await taskfns.slow_double(5) == 10  # awaiting it runs it here


def test_run_tasks_runs_an_async_app_on_a_loop_of_its_own(dsn: str) -> None:
    with async_app.using(dsn):
        task_id = taskfns.triple.send(5)
        assert [r.reply for r in run_tasks(async_app)] == [15]
        assert taskfns.triple.result(task_id) == 15
        # An async function's asend opens the app's AsyncClient on that loop,
        # which is closed with it: the next run_tasks has a loop of its own.
        for n in (1, 2):
            taskfns.fan_out.send(n)
            assert [r.reply for r in run_tasks(async_app)] == [n, 3 * n]


# -- where the app's database comes from ---------------------------------------------


def test_pools_and_connections_serve_their_own_face(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOB_MACHINE_DSN", raising=False)
    with ConnectionPool(dsn, min_size=1, max_size=2, open=True) as pool:
        pooled = jm.App(pool=pool)
        pooled.task(add.definition.fn)
        with pooled:
            first = pooled.client.send({"task": add.name, "args": [1, 2]}, add.queue)
            with pytest.raises(jm.JobMachineError, match="ConnectionPool cannot serve its asyncio"):
                pooled.async_client
    with psycopg.connect(dsn) as conn:
        in_tx = jm.App(conn=conn)
        sender = in_tx.task(name="tests.support.taskfns.add", queue=add.queue)(add.definition.fn)
        with conn.transaction():
            sender.send(5, 5)
            raise psycopg.Rollback  # the send was part of the caller's transaction
        with conn.transaction():
            sent = sender.send(6, 6)
        in_tx.close()
    with app.using(dsn):
        assert [(r.id, r.reply) for r in run_tasks(app)] == [(first, 3), (sent, 12)]
    with pytest.raises(jm.JobMachineError, match="no database"):
        jm.App().client
    with pytest.raises(ValueError, match="not both"):
        jm.App(pool=pool, conn=conn)  # type: ignore[arg-type]


async def test_an_async_pool_serves_the_asyncio_face(dsn: str) -> None:
    async with AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False) as pool:
        pooled = jm.App(pool=pool)
        double = pooled.task(taskfns.slow_double.definition.fn)
        async with pooled:
            task_id = await double.asend(4)
            assert [r.reply for r in await arun_tasks(pooled, dsn=dsn)] == [8]
            assert await double.aresult(task_id) == 8


# -- across processes -------------------------------------------------------------------


def test_call_across_a_worker_process(dsn: str, tmp_path: Path) -> None:
    with cli_worker(dsn, tmp_path, "--app", "tests.support.taskfns:app", script=False) as proc:
        with app.using(dsn):
            assert add.call(1, 2) == 3
            assert add.configure(timeout=10).call(b=5, a=1) == 6
            assert taskfns.whoami.call() == proc.pid != os.getpid()
            assert taskfns.midpoint.call(Segment(Point(0, 0), Point(2, 2))) == Point(1, 1)
            with pytest.raises(jm.TaskFailed, match="no way") as failed:
                taskfns.fail.configure(attempts=1).call("no way")
            assert failed.value.error["type"] == "ValueError"
            # The function's own send goes to the worker's database.
            assert taskfns.chain.call(2) == 2
            ids = [add.send(i, i) for i in range(5)]
            assert app.client.wait_all(ids, timeout=10) == [0, 2, 4, 6, 8]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert "starting tests.support.taskfns:app (sync)" in (tmp_path / "worker.log").read_text()


def test_acall_across_an_asyncio_worker_process(dsn: str, tmp_path: Path) -> None:
    async def calls() -> list[int]:
        async with async_app.ausing(dsn):
            return list(
                await asyncio.gather(
                    taskfns.slow_double.acall(4),
                    taskfns.triple.acall(4),
                    taskfns.triple.acall(1),
                    taskfns.fan_out.acall(5),  # sends from the worker's own AsyncClient
                )
            )

    with cli_worker(
        dsn, tmp_path, "--app", "tests.support.taskfns:async_app", script=False
    ) as proc:
        assert asyncio.run(calls()) == [8, 12, 3, 5]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert "(asyncio)" in (tmp_path / "worker.log").read_text()


def test_worker_command_checks_its_app(dsn: str) -> None:
    r = cli("worker", "--app", "tests.support.taskfns:Point", dsn=dsn)
    assert r.returncode == 2
    assert "is the class tests.support.taskfns.Point, not a job_machine.App" in r.stderr
    r = cli("worker", "--app", "tests.support.taskfns", dsn=dsn)
    assert r.returncode == 2 and "is not MODULE:APP" in r.stderr
    r = cli(
        "worker", "tests.support.cli_workers:Echo", "--app", "tests.support.taskfns:app", dsn=dsn
    )
    assert r.returncode == 2 and "one of them" in r.stderr
    r = cli("worker", dsn=dsn)
    assert r.returncode == 2 and "one of them" in r.stderr
