"""Streamed partial replies (issue 17, part 2): a worker's ``send_part`` or a
generator task function's yields, read in order with ``Client.parts`` while
the task runs (real worker processes; each part gated by the test, so it
is read before the worker goes on), stored for readers that come late or
after the end, in any process, fenced by the attempt, removed with the
task; and ``wait()``/``wait_all`` not woken by them."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

import job_machine as jm
from job_machine.channels import PART_PAYLOAD
from tests.integration.test_cli import cli_worker
from tests.support import streamers

ROOT = Path(__file__).resolve().parents[2]


def new_gate(dsn: str) -> dict[str, str]:
    """A gate for one task: the worker waits on its channel after each part."""
    return {"dsn": dsn, "channel": f"jmtest_gate_{secrets.token_hex(4)}"}


def go(conn: psycopg.Connection[Any], spec: dict[str, str], seq: int) -> None:
    """Let the gated worker go on after part ``seq``."""
    conn.execute("SELECT pg_notify(%s, %s)", [spec["channel"], str(seq)])


def stored(conn: psycopg.Connection[Any], task_id: int) -> list[tuple[int, int, Any]]:
    """(attempt, seq, data) of every stored part of the task."""
    return [
        (a, s, json.loads(d))
        for a, s, d in conn.execute(
            "SELECT attempt, seq, data FROM jobmachine.part WHERE task_id = %s ORDER BY 1, 2",
            [task_id],
        )
    ]


def test_a_workers_parts_arrive_in_order_while_it_runs_and_a_late_reader_reads_them_all(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    spec = new_gate(dsn)
    with (
        cli_worker(dsn, tmp_path, "tests.support.streamers:Streamer", script=False) as proc,
        jm.Client(dsn, queue="tests.stream") as client,
        jm.Client(dsn) as late_client,
    ):
        tid = client.send({"n": 4, "gate": spec})
        seen: list[int] = []
        late = None
        for part in client.parts(tid, timeout=30):
            assert (part.task_id, part.attempt, part.seq) == (tid, 1, len(seen))
            assert part.data == {"i": part.seq, "pid": proc.pid}
            # The worker waits for our go-ahead: the task is still running.
            assert client.task_info(tid).state == "running"
            assert client.receive(tid) is None
            seen.append(part.seq)
            if part.seq == 1:
                # A reader that starts late gets the stored parts at once...
                late = late_client.parts(tid, timeout=30)
                assert [next(late).seq, next(late).seq] == [0, 1]
            go(conn, spec, part.seq)
        assert seen == [0, 1, 2, 3]
        # ...then the rest, and ends with the task.
        assert late is not None
        assert [p.seq for p in late] == [2, 3]
        assert client.receive(tid) == {"parts": 4}
        assert client.wait(tid, timeout=5) == {"parts": 4}


async def test_async_parts_arrive_in_order_while_an_async_worker_runs(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    spec = new_gate(dsn)
    with cli_worker(dsn, tmp_path, "tests.support.streamers:AsyncStreamer", script=False) as proc:
        async with jm.AsyncClient(dsn, queue="tests.stream.async") as client:
            tid = await client.send({"n": 3, "gate": spec})
            seen = []
            async for part in client.parts(tid, timeout=30):
                assert part.data == {"i": len(seen), "pid": proc.pid}
                assert (await client.task_info(tid)).state == "running"
                seen.append(part.seq)
                go(conn, spec, part.seq)
            assert seen == [0, 1, 2]
            assert await client.receive(tid) == {"parts": 3}


def test_a_generator_task_function_streams_its_yields_and_returns_the_reply(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    spec = new_gate(dsn)
    with (
        cli_worker(dsn, tmp_path, "--app", "tests.support.streamers:app", script=False),
        streamers.app.using(dsn),
    ):
        tid = streamers.count.send(3, spec)
        seen = []
        for part in streamers.count.parts(tid):
            assert streamers.app.client.task_info(tid).state == "running"
            seen.append(part.data)
            go(conn, spec, part.seq)
        assert seen == [0, 1, 2]
        assert streamers.count.result(tid) == "counted 3"
        assert streamers.count.call(2) == "counted 2"  # call() waits for the reply as ever
        # The client's own reader gives the same parts, stored.
        assert [p.data for p in streamers.app.client.parts(tid)] == [0, 1, 2]


async def test_an_async_generator_task_function_streams_its_yields(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    spec = new_gate(dsn)
    with cli_worker(dsn, tmp_path, "--app", "tests.support.streamers:async_app", script=False):
        async with streamers.async_app.ausing(dsn):
            tid = await streamers.acount.asend(3, spec)
            seen = []
            async for part in streamers.acount.aparts(tid):
                seen.append(part.data)
                go(conn, spec, part.seq)
            assert seen == [0, 1, 2]
            assert await streamers.acount.aresult(tid) is None


def test_parts_are_read_after_the_end_from_another_process_and_go_with_the_task(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with jm.Client(dsn, queue="tests.stream") as client:
        tid = client.send({"n": 3})
        with streamers.Streamer(dsn, handle_signals=False) as w:
            assert w.work_once()
        assert client.receive(tid) == {"parts": 3}
        script = (
            "import json, sys, job_machine as jm\n"
            "with jm.Client(sys.argv[1]) as c:\n"
            "    print(json.dumps([[p.seq, p.data['i']] for p in c.parts(int(sys.argv[2]))]))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script, dsn, str(tid)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert json.loads(out.stdout) == [[0, 0], [1, 1], [2, 2]]
        with jm.Admin(dsn) as admin:
            admin.remove(tid)
        assert stored(conn, tid) == []
        with pytest.raises(jm.UnknownTask):
            list(client.parts(tid, timeout=5))


class Revived(jm.Worker):
    """Sends a part, loses its task to a revive (as a rescue would do
    behind its back), then tries to send another."""

    handle_signals = False
    refused: bool = False

    def process(self, task: jm.Task) -> None:
        self.send_part("first")
        with psycopg.connect(self.test_dsn, autocommit=True) as c:
            c.execute("UPDATE jobmachine.task SET status = 0 WHERE task_id = %s", [task.id])
        with pytest.raises(jm.TaskNotHeld):
            self.send_part("late")
        self.refused = True


def test_a_revived_attempts_late_part_is_refused_and_readers_follow_the_new_attempt(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with jm.Client(dsn, queue="tests.stream") as client:
        tid = client.send({"n": 2})
        with Revived(dsn, queue="tests.stream", test_dsn=dsn) as w:
            assert w.work_once()
        assert w.refused
        assert stored(conn, tid) == [(1, 0, "first")]
        # Waiting again: attempt 1 is still the task's latest.
        reader = client.parts(tid, timeout=30)
        assert next(reader).data == "first"
        with streamers.Streamer(dsn, handle_signals=False) as s:
            assert s.work_once()
        # The reader goes on with attempt 2, from its first part.
        assert [(p.attempt, p.seq, p.data["i"]) for p in reader] == [(2, 0, 0), (2, 1, 1)]
        assert [(p.attempt, p.seq) for p in client.parts(tid)] == [(2, 0), (2, 1)]
        assert [a for a, _, _ in stored(conn, tid)] == [1, 2, 2]  # kept for the record


def test_a_failed_tasks_parts_end_with_task_failed(dsn: str) -> None:
    with jm.Client(dsn, queue="tests.stream") as client:
        tid = client.send({"n": 2, "fail": "boom"}, attempts=1)
        with streamers.Streamer(dsn, handle_signals=False) as w:
            assert w.work_once()
        got = []
        with pytest.raises(jm.TaskFailed, match="boom"):
            for part in client.parts(tid, timeout=10):
                got.append(part.seq)
        assert got == [0, 1]


def test_wait_and_wait_all_are_not_woken_by_parts_and_return_the_reply(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    spec = new_gate(dsn)
    with (
        cli_worker(dsn, tmp_path, "tests.support.streamers:Streamer", script=False),
        jm.Client(dsn, queue="tests.stream") as client,
        jm.Client(dsn, queue="tests.stream") as waiter,
    ):
        tid = client.send({"n": 3, "gate": spec})
        other = client.send({"n": 0})
        # Two subscriptions on the process's one reply listener: one as
        # wait() makes it (parts ignored), one as parts() makes it.
        listener = waiter._listener()
        woken = {"answer": 0, "all": 0}
        listening = threading.Event()
        answered = threading.Event()

        def count(kind: str) -> None:
            woken[kind] += 1
            if kind == "answer":
                answered.set()

        answer_sub = listener.subscribe(
            [tid], lambda: count("answer"), listening.set, ignore=(PART_PAYLOAD,)
        )
        all_sub = listener.subscribe([tid], lambda: count("all"), listening.set)
        results: dict[str, Any] = {}
        threads = [
            threading.Thread(target=lambda: results.update(wait=waiter.wait(tid, timeout=30))),
            threading.Thread(
                target=lambda: results.update(all=waiter.wait_all([other, tid], timeout=30))
            ),
        ]
        try:
            assert listening.wait(10)
            for t in threads:
                t.start()
            for part in client.parts(tid, timeout=30):
                assert all(t.is_alive() for t in threads), "a waiter returned before the answer"
                assert woken["answer"] == 0
                go(conn, spec, part.seq)
            for t in threads:
                t.join(30)
            assert answered.wait(10)
        finally:
            listener.unsubscribe(answer_sub)
            listener.unsubscribe(all_sub)
        assert results == {"wait": {"parts": 3}, "all": [{"parts": 0}, {"parts": 3}]}
        # The answer's subscription was woken by the answer alone.
        assert woken["answer"] == 1
        assert woken["all"] > 1


def test_the_parts_bench_runs_and_leaves_no_database(server_dsn: str) -> None:
    """``python -m bench.parts`` as a user runs it (a subprocess from the
    repository root), small: both modes report parts per second and latencies."""
    command = [sys.executable, "-m", "bench.parts", "--dsn", server_dsn, "--runs", "1"]
    command += ["--parts", "50", "--paced-parts", "10", "--interval", "0.001"]
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    results = json.loads(stdout.splitlines()[-1])
    for mode, n in (("flood", 50), ("paced", 10)):
        [run] = results[mode]
        assert run["parts"] == n and run["parts_per_s"] > 0
        assert 0 <= run["latency_ms"]["p50"] <= run["latency_ms"]["max"]
    with psycopg.connect(server_dsn, autocommit=True) as c:
        left = c.execute(
            "SELECT datname FROM pg_database WHERE datname = %s", [f"jm_bench_parts_{proc.pid}"]
        )
        assert left.fetchall() == []


def test_run_tasks_streams_generator_task_functions_here(dsn: str) -> None:
    """The pytest plugin's run_tasks runs a generator task function in the
    test's process like any other: its parts are stored, its return is the reply."""
    from job_machine.testing import run_tasks  # noqa: PLC0415

    with streamers.app.using(dsn):
        tid = streamers.count.send(2)
        assert [(r.task.id, r.state) for r in run_tasks(streamers.app)] == [(tid, "done")]
        assert [p.data for p in streamers.count.parts(tid)] == [0, 1]
        assert streamers.count.result(tid) == "counted 2"
    with streamers.async_app.using(dsn):
        tid = streamers.acount.send(3)
        run_tasks(streamers.async_app)
        assert [p.data for p in streamers.async_app.client.parts(tid)] == [0, 1, 2]
        assert streamers.async_app.client.receive(tid) is None


async def test_parts_sent_at_the_same_moment_are_written_together_each_fenced(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """A worker's part group: the parts of 8 tasks streaming at once go in
    fewer statements (commits) than parts, each task's in order, and a part
    of an attempt that lost its task is refused within a batch."""
    from job_machine._async.connection import AsyncConnector  # noqa: PLC0415
    from job_machine._async.parts import AsyncPartGroup  # noqa: PLC0415
    from job_machine._async.store import AsyncStore  # noqa: PLC0415

    async with jm.AsyncClient(dsn, queue="tests.stream.group") as client:
        ids = await client.send_many([{"n": i} for i in range(8)])
    connector = AsyncConnector(dsn=dsn)
    store = AsyncStore(connector)
    try:
        held = await store.task_claim(["tests.stream.group"], limit=8)
        assert sorted(t.id for t in held) == ids
        lost = held[0]  # taken back from its attempt, as a rescue would
        conn.execute("UPDATE jobmachine.task SET status = 0 WHERE task_id = %s", [lost.id])
        group = AsyncPartGroup(store)

        async def stream(task: jm.Task) -> list[bool]:
            return [
                await group.send(task.id, task.attempt, seq, json.dumps(seq)) for seq in range(20)
            ]

        results = await asyncio.gather(*(stream(t) for t in held))
    finally:
        await connector.close()
    assert results[0] == [False] * 20
    assert all(r == [True] * 20 for r in results[1:])
    assert stored(conn, lost.id) == []
    for task in held[1:]:
        assert stored(conn, task.id) == [(1, seq, seq) for seq in range(20)]
    commits = conn.execute("SELECT count(DISTINCT xmin::text) FROM jobmachine.part").fetchone()
    assert commits is not None and commits[0] < 7 * 20, "no two parts were written together"


def test_more_parts_than_one_read_takes_are_all_read_in_order(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from job_machine._sync import waiter  # noqa: PLC0415

    monkeypatch.setattr(waiter, "PART_BATCH", 7)
    with jm.Client(dsn, queue="tests.stream") as client:
        tid = client.send({"n": 30})
        with streamers.Streamer(dsn, handle_signals=False) as w:
            assert w.work_once()
        assert [p.seq for p in client.parts(tid, timeout=10)] == list(range(30))


def test_a_perl_client_never_takes_a_part_for_the_reply(dsn: str) -> None:
    """Parts are not result rows: Perl Job::Machine 0.19's receive (the
    newest result row) finds nothing while only parts are stored, then the
    reply."""
    from tests.integration.test_perl_compat import Perl  # noqa: PLC0415

    perl = Perl(dsn)
    seen_by_perl: list[Any] = []

    class ForPerl(jm.Worker):
        handle_signals = False

        def process(self, task: jm.Task) -> None:
            self.send_part({"data": "a part"})
            self.send_part({"data": "another"})
            seen_by_perl.append(perl.receive(task.id))
            self.reply({"data": "the reply"})

    try:
        tid = perl.send("tests.perl.parts", {"from": "perl"})
        with ForPerl(dsn, queue="tests.perl.parts") as w:
            assert w.work_once()
        assert seen_by_perl == [None]
        assert perl.receive(tid) == "the reply"
        with jm.Client(dsn) as client:
            assert [p.data for p in client.parts(tid)] == [{"data": "a part"}, {"data": "another"}]
    finally:
        perl.close()
