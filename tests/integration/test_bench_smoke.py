"""The benchmark keeps working: ``python -m bench --quick`` on the test server.

Runs the bench as a user would (a subprocess from the repository root) with
job_machine only (no network, no peers' venvs) against the test database;
the bench creates a database of its own next to it and drops it at the end.
Every job_machine scenario must be in the JSON with a sane value.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from bench import physical, report
from bench.scenarios import SCENARIOS, Sizes

ROOT = Path(__file__).resolve().parents[2]
#: Not run here: a fresh AsyncClient's first statements, made by 1000 callers
#: at once, each open a connection of their own today (a race in the
#: connector's lazy connect), and 1000 connections would exhaust the shared
#: test server's max_connections for every other test running on it.
#: callers_100 and callers_threads_100 cover the same code on this server.
NOT_HERE = {"callers_1000"}
SMOKED = [s for s in SCENARIOS if s.key not in NOT_HERE]


def _bench_databases(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as c:
        rows = c.execute("SELECT datname FROM pg_database WHERE datname LIKE 'jm_bench_%'")
        return {r[0] for r in rows}


@pytest.mark.timeout(120)
def test_quick_bench_has_every_job_machine_metric(dsn: str, tmp_path: Path) -> None:
    before = _bench_databases(dsn)
    prefix = tmp_path / "smoke"
    cmd = [sys.executable, "-m", "bench", "--quick", "--systems", "job_machine"]
    cmd += ["--runs", "1", "--dsn", dsn, "--out", str(prefix)]
    cmd += ["--metrics", ",".join(s.key for s in SMOKED)]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=110)
    elapsed = time.monotonic() - started
    log = prefix.with_suffix(".log")
    assert proc.returncode == 0, proc.stderr + (log.read_text() if log.exists() else "")
    assert elapsed < 60, f"the quick bench took {elapsed:.0f} s"

    result = json.loads(prefix.with_suffix(".json").read_text())
    assert prefix.with_suffix(".md").read_text().startswith("# job_machine benchmark")
    assert result["params"]["systems"] == ["job_machine"]
    sizes = result["params"]["sizes"]
    jm = result["summary"]["job_machine"]
    assert set(jm) == {s.key for s in SMOKED}

    records = {r["key"]: r for r in result["records"] if r["system"] == "job_machine"}
    for s in SMOKED:
        entry = jm[s.key]
        # an error (a crash, a drain that stalled) or "not supported" is a note;
        # a callers row also notes calls that timed out or were answered late
        # (lost wake-ups: the library's to fix, not the bench's), never failed ones
        notes = entry.get("notes", [])
        if s.kind == "callers":
            notes = [
                n for n in notes if " calls timed out " not in n and " calls came late " not in n
            ]
        assert not notes, (s.key, notes)
        if s.kind == "callers":
            rec = records[s.key]
            assert rec["callers"] == s.callers, rec
            assert rec["threads"] == s.threads, rec
            assert rec["calls"] == s.n(Sizes(**sizes)) >= s.callers, rec
            # every call is accounted for: answered, timed out, failed or not run
            ended = rec["received"] + rec["timeouts"] + rec["failed"] + rec["not_run"]
            assert ended == rec["calls"], rec
            assert rec["failed"] == rec["not_run"] == 0, rec
            assert 0 < entry["median"] < 1_000_000, (s.key, entry)
            assert 0 < rec["p50_ms"] <= rec["p99_ms"], rec
            # the caller process's own connections were seen, the monitor's not
            assert 1 <= rec["peak_connections"] <= s.callers, rec
        elif s.kind == "rate":
            # tasks per second: above a crawl, below what a laptop could dream of
            assert 50 < entry["median"] < 1_000_000, (s.key, entry)
        elif s.kind == "latency":
            p50, p99 = entry["p50"]["median"], entry["p99"]["median"]
            assert 0 < p50 <= p99 < 1000, (s.key, entry)
        else:
            start, end = entry["rss_start_mib"]["median"], entry["rss_end_mib"]["median"]
            assert 5 < start < 500, entry
            assert 5 < end < start + 100, entry

    assert records["wakeup"]["received"] == sizes["latency"]
    assert records["roundtrip"]["received"] == sizes["latency"]
    assert records["drain_big_history"]["history"] == sizes["big_history"]
    assert records["drain_w2"]["workers"] == 2
    assert records["drain_reply_w2"]["workers"] == 2
    assert "AsyncWorker, concurrency=8" in records["drain_async_c8"]["concurrency"]
    assert result["versions"]["job_machine"].startswith("0.")
    # the given database is left alone; the bench's own is gone again
    assert _bench_databases(dsn) == before


def test_the_python_senders_floor_is_measured_and_reported(empty_dsn: str) -> None:
    """pgbench's insert+notify sent by psycopg: a rate, and its row and
    ratio in the report (what job_machine's send is compared with)."""
    rec = physical.psycopg_enqueue(empty_dsn, seconds=0.3, run="1", prefill=100)
    assert rec["ok"], rec
    assert rec["key"] == report.PYTHON_ENQUEUE
    assert 50 < rec["value"] < 1_000_000, rec
    with psycopg.connect(empty_dsn) as c:
        inserted = c.execute("SELECT count(*) FROM bench_task").fetchone()
    assert inserted is not None and inserted[0] > 100  # the prefill and what it sent
    entry = {"median": 4000.0, "min": 3900.0, "max": 4100.0, "runs": 3}
    summary = {"pgbench": {report.PYTHON_ENQUEUE: entry}}
    rows = report.physical_rows(summary)
    assert rows == [["A_enqueue sent by psycopg from Python (tps)", "4,000 (3,900\u20134,100)", ""]]


@pytest.mark.timeout(120)
def test_the_worker_processes_bench_runs(dsn: str, tmp_path: Path) -> None:
    """``python -m bench.processes``, tiny: 1 and 2 processes, one round."""
    before = _bench_databases(dsn)
    prefix = tmp_path / "processes"
    cmd = [sys.executable, "-m", "bench.processes", "--tasks", "20", "--work-ms", "1"]
    cmd += ["--runs", "1", "--dsn", dsn, "--out", str(prefix)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(prefix.with_suffix(".json").read_text())
    assert [r["processes"] for r in result["rows"]] == [1, 2]
    assert all(r["tasks_per_s"] > 0 for r in result["rows"]), result
    assert "| --processes |" in prefix.with_suffix(".md").read_text()
    assert _bench_databases(dsn) == before
