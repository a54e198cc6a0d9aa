"""Prometheus metrics: the dashboard's /metrics and `job-machine metrics`,
scraped and parsed with prometheus_client's own parser; the oldest-waiting
query's plan on a long history."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

import job_machine as jm
from job_machine._queries import queries
from tests.integration.test_claim_plan import _explain, _insert_history, _max_rows, _nodes
from tests.integration.test_web import TOKEN, dashboard
from tests.support.procs import wait_until

pytestmark = pytest.mark.db

ROOT = Path(__file__).resolve().parents[2]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _seed(dsn: str, client: jm.Client, conn: psycopg.Connection[Any]) -> None:
    """Queue m.a: 3 waiting (the oldest due 60 s ago), 1 delayed, 1 running
    on a live worker; m.b: paused, 1 failed; a second, dead worker; two
    holds of the lock smtp."""
    ids = client.send_many([1, 2, 3], queue="m.a")
    client.send(4, queue="m.a", delay=3600)
    running = client.send(5, queue="m.a")
    failed = client.send(6, queue="m.b")
    conn.execute(
        "UPDATE jobmachine.task SET created = now() - interval '60 seconds', "
        "run_after = now() - interval '60 seconds' WHERE task_id = %s",
        (ids[0],),
    )
    row = conn.execute(
        queries()["worker_register"],
        {"host": "h", "pid": 1, "queues": ["m.a"], "dead_after": None},
    ).fetchone()
    assert row is not None and row[1]  # alive: this session holds its lock
    conn.execute(
        "UPDATE jobmachine.task SET status = 100, worker_id = %s, attempts = 1 WHERE task_id = %s",
        (row[0], running),
    )
    conn.execute("UPDATE jobmachine.task SET status = 900 WHERE task_id = %s", (failed,))
    conn.execute("INSERT INTO jobmachine.worker (host, pid, queues) VALUES ('h', 2, '{m.a}')")
    with jm.Admin(dsn) as admin:
        admin.pause("m.b")
    assert client.lock("smtp", expire=600, limit=3) is not None
    assert client.lock("smtp", expire=600, limit=3) is not None


def _check(text: str) -> None:
    got = _samples(text)

    def one(metric: str, /, **labels: str) -> float:
        return got[(metric, tuple(sorted(labels.items())))]

    assert one("job_machine_tasks", queue="m.a", state="waiting") == 3
    assert one("job_machine_tasks", queue="m.a", state="delayed") == 1
    assert one("job_machine_tasks", queue="m.a", state="running") == 1
    assert one("job_machine_tasks", queue="m.b", state="failed") == 1
    assert one("job_machine_tasks", queue="m.b", state="waiting") == 0
    assert 59 <= one("job_machine_oldest_waiting_seconds", queue="m.a") < 600
    assert one("job_machine_oldest_waiting_seconds", queue="m.b") == 0
    assert one("job_machine_queue_paused", queue="m.a") == 0
    assert one("job_machine_queue_paused", queue="m.b") == 1
    assert one("job_machine_done_tasks") == 0
    assert one("job_machine_done_tasks_estimated") == 0
    assert one("job_machine_failed_tasks") == 1
    assert one("job_machine_workers", state="running") == 1
    assert one("job_machine_workers", state="idle") == 0
    assert one("job_machine_workers", state="dead") == 1
    assert one("job_machine_lock_holds", name="smtp") == 2


async def test_the_dashboard_serves_metrics_to_a_bearer_token(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    _seed(dsn, client, conn)
    async with dashboard(dsn, login=False, token=TOKEN) as http:
        refused = await http.get("/metrics", follow_redirects=False)
        assert refused.status_code == 401  # a scraper gets no login form
        assert refused.headers["www-authenticate"].startswith("Bearer")
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401
        answer = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    _check(answer.text)


def test_job_machine_metrics_serves_them_on_its_own(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    _seed(dsn, client, conn)
    log = tmp_path / "metrics.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JOB_MACHINE_DSN": dsn}
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "job_machine.cli", "metrics", "--port", "0"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:

        def url() -> str | None:
            found = re.search(r"on (http://127\.0\.0\.1:\d+/metrics)", log.read_text())
            assert proc.poll() is None, log.read_text()
            return found[1] if found else None

        address = wait_until(url, 30, "job-machine metrics to listen")
        answer = httpx.get(address)
        assert answer.status_code == 200, answer.text
        _check(answer.text)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    assert "metrics stopped" in log.read_text()


def test_the_oldest_waiting_age_reads_no_history(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """200,000 done and failed tasks and a few waiting ones: the metrics'
    own query reads only the waiting tasks, never scans the table."""
    _insert_history(conn, "big.q", 200_000, 200)
    _insert_history(conn, "big.q", 1_000, 900)
    client.send_many(range(20), queue="big.q")
    client.send_many(range(5), queue="small.q", delay=3600)
    conn.execute("ANALYZE jobmachine.task")
    plan = _explain(conn, queries()["admin_oldest_waiting"], {})
    scans = [n for n in _nodes(plan) if n["Node Type"] == "Seq Scan"]
    assert [n for n in scans if n.get("Relation Name") == "task"] == [], plan
    assert _max_rows(plan) <= 1_000, plan
    with jm.Admin(dsn) as admin:
        ages = admin.oldest_waiting()
    assert set(ages) == {"big.q"}  # small.q's tasks are not due yet
    assert 0 <= ages["big.q"] < 600
