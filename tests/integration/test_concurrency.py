"""Many worker and client processes on one queue: every task exactly once.

Workers and clients are real OS processes (``python -m tests.support.procs ...``);
half of the workers are sync, half asyncio. What they did is read back from
the ``processed`` table the workers write into (no unique constraint, so a
task processed twice shows up twice) and from jobmachine's own tables.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

import job_machine as jm
from tests.support.procs import (
    Child,
    describe_all,
    expected_reply,
    kill_all,
    start_client,
    start_worker,
    started_count,
    terminate_and_check,
    wait_until,
)

QUEUE = "conc.test"
KINDS = ["sync", "async", "sync", "async"]


def _start_workers(
    dsn: str, tmp_path: Path, *, barrier: int = 0, timeout: float = 30
) -> list[Child]:
    workers: list[Child] = []
    try:
        for n, kind in enumerate(KINDS):
            workers.append(
                start_worker(
                    dsn,
                    QUEUE,
                    tmp_path,
                    f"worker{n}-{kind}",
                    kind=kind,
                    timeout=timeout,
                    barrier=barrier,
                )
            )
    except BaseException:
        kill_all(workers)
        raise
    return workers


def _check_tasks(db: psycopg.Connection[Any], n: int) -> dict[int, int]:
    """Every task done once, answered once, processed once; return {task_id: seq}."""
    rows = db.execute(
        """SELECT t.task_id, t.status, t.attempts, t.parameters,
                  (SELECT count(*) FROM jobmachine.result r
                    WHERE r.task_id = t.task_id) AS nresults,
                  (SELECT min(r.result) FROM jobmachine.result r
                    WHERE r.task_id = t.task_id) AS result
             FROM jobmachine.task t ORDER BY t.task_id"""
    ).fetchall()
    assert len(rows) == n
    bad_status = [(tid, status) for tid, status, *_ in rows if status != jm.Status.FINISHED]
    assert not bad_status, f"{len(bad_status)} tasks not done: {bad_status[:10]}"
    bad_attempts = [(tid, attempts) for tid, _, attempts, *_ in rows if attempts != 1]
    assert not bad_attempts, (
        f"{len(bad_attempts)} tasks claimed more than once: {bad_attempts[:10]}"
    )
    bad_results = [(tid, k) for tid, _, _, _, k, _ in rows if k != 1]
    assert not bad_results, f"tasks without exactly one result row: {bad_results[:10]}"
    seqs: dict[int, int] = {}
    for tid, _, _, parameters, _, result in rows:
        seq = json.loads(parameters)["seq"]
        assert json.loads(result) == expected_reply(seq), (tid, result)
        seqs[tid] = seq
    assert sorted(seqs.values()) == list(range(n))

    totals = db.execute("SELECT count(*), count(DISTINCT task_id) FROM processed").fetchone()
    assert totals is not None
    count, distinct = totals
    dups = db.execute(
        """SELECT task_id, array_agg(pid) FROM processed
            GROUP BY task_id HAVING count(*) > 1 LIMIT 10"""
    ).fetchall()
    assert (count, distinct) == (n, n), (
        f"processed {count} times, {distinct} distinct tasks; duplicates: {dups}"
    )
    processed = dict(db.execute("SELECT task_id, seq FROM processed").fetchall())
    assert processed == seqs, "the workers saw other seqs than were sent"
    return seqs


def test_four_workers_two_clients_2000_tasks(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    per_client = 1000
    workers = _start_workers(dsn, tmp_path)
    clients: list[Child] = []
    try:
        # startup() runs after LISTEN: once all four rows are there, all listen.
        wait_until(lambda: started_count(db) == len(workers), 30, "the workers' startup()", workers)
        t0 = time.monotonic()
        clients = [
            start_client(
                dsn,
                QUEUE,
                tmp_path,
                f"client{k}",
                first=k * per_client,
                count=per_client,
                wait_timeout=60,
            )
            for k in range(2)
        ]
        for client in clients:
            code = client.wait_exit(max(1.0, 50 - (time.monotonic() - t0)))
            assert code == 0, (
                f"{client.name} exit code {code} (None = still running)\n"
                + describe_all(clients + workers)
            )
        elapsed = time.monotonic() - t0
        assert all(w.alive() for w in workers), describe_all(workers)

        seqs = _check_tasks(db, 2 * per_client)

        # Every client got the reply of each of its own tasks, as the worker replied it.
        for k, client in enumerate(clients):
            out = json.loads(client.stdout())
            replies = out["replies"]
            assert len(replies) == per_client
            assert sorted(seq for _, seq, _ in replies) == list(
                range(k * per_client, (k + 1) * per_client)
            )
            for tid, seq, reply in replies:
                assert seqs[tid] == seq, (client.name, tid, seq)
                assert reply == expected_reply(seq), (client.name, tid, reply)
            params = db.execute(
                "SELECT parameters FROM jobmachine.task WHERE task_id = ANY(%s)",
                ([r[0] for r in replies],),
            ).fetchall()
            assert {json.loads(p)["client"] for (p,) in params} == {out["pid"]}

        by_pid = dict(db.execute("SELECT pid, count(*) FROM processed GROUP BY pid").fetchall())
        assert set(by_pid) <= {w.pid for w in workers}, by_pid
        assert len(by_pid) > 1, f"only one worker did any work: {by_pid}"
        print(f"\n2000 tasks in {elapsed:.1f} s; tasks per worker pid: {by_pid}")

        terminate_and_check(workers, timeout=5)
    finally:
        kill_all(clients + workers)


def test_prefilled_queue_drained_by_four_workers_started_at_once(
    dsn: str, db: psycopg.Connection[Any], client: jm.Client, tmp_path: Path
) -> None:
    n = 1000
    for seq in range(n):
        client.send({"seq": seq}, queue=QUEUE)
    # The barrier makes every worker's startup() wait for the others, so all
    # four start draining the queue at the same moment.
    workers = _start_workers(dsn, tmp_path, barrier=len(KINDS))
    try:

        def drained() -> bool:
            row = db.execute(
                "SELECT count(*) FROM jobmachine.task WHERE status <> %s", (jm.Status.FINISHED,)
            ).fetchone()
            return row is not None and row[0] == 0

        wait_until(drained, 45, "the queue to be drained", workers, interval=0.1)
        _check_tasks(db, n)
        by_pid = dict(db.execute("SELECT pid, count(*) FROM processed GROUP BY pid").fetchall())
        assert set(by_pid) <= {w.pid for w in workers}, by_pid
        assert len(by_pid) > 1, f"only one worker did any work: {by_pid}"
        terminate_and_check(workers, timeout=5)
    finally:
        kill_all(workers)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_idle_worker_process_wakes_up_on_send(
    dsn: str, db: psycopg.Connection[Any], client: jm.Client, tmp_path: Path, kind: str
) -> None:
    # timeout=60: without the notification the worker would look at the queue
    # only after a minute, and client.wait() below would time out.
    worker = start_worker(dsn, QUEUE, tmp_path, f"worker-{kind}", kind=kind, timeout=60)
    try:
        wait_until(lambda: started_count(db) == 1, 30, "the worker's startup()", [worker])
        delays = []
        rounds = 0
        for seq in range(20):
            rounds = worker.wait_idle(after=rounds)  # back waiting for a notification
            tid = client.send({"seq": seq}, queue=QUEUE)
            assert client.wait(tid, timeout=10) == expected_reply(seq), worker.describe()
            row = db.execute(
                """SELECT extract(epoch FROM p.started_at - t.created)
                     FROM processed p JOIN jobmachine.task t USING (task_id)
                    WHERE p.task_id = %s""",
                (tid,),
            ).fetchone()
            assert row is not None
            delays.append(float(row[0]))
        median = statistics.median(delays)
        assert max(delays) < 1.0, f"send-to-start delays (median {median * 1000:.1f} ms): {delays}"
        assert min(delays) >= 0, delays
        print(f"\nwake-up ({kind}): median {median * 1000:.1f} ms, max {max(delays) * 1000:.1f} ms")
        terminate_and_check([worker], timeout=2)
    finally:
        worker.kill()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_idle_worker_process_survives_housekeeping_and_still_serves(
    dsn: str, db: psycopg.Connection[Any], client: jm.Client, tmp_path: Path, kind: str
) -> None:
    # timeout=0.3: the idle worker does housekeeping (chores) every 0.3 s.
    # Housekeeping of a quiet queue must be harmless: the worker lives on.
    worker = start_worker(dsn, QUEUE, tmp_path, f"worker-{kind}", kind=kind, timeout=0.3)
    try:
        wait_until(lambda: started_count(db) == 1, 30, "the worker's startup()", [worker])
        worker.wait_idle(after=4)  # several rounds of housekeeping (one a round)
        assert worker.alive(), f"the idle worker died during housekeeping:\n{worker.describe()}"
        tid = client.send({"seq": 42}, queue=QUEUE)
        assert client.wait(tid, timeout=10) == expected_reply(42), worker.describe()
        terminate_and_check([worker], timeout=2)
    finally:
        worker.kill()
