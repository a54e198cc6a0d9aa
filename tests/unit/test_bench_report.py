"""The bench's report of the reply path, from records alone (no database).

The reply drains are compared with the peers' drains without replies (they
have no reply API) and with job_machine's own; the callers' throughput is
flagged when calls timed out, came late or failed; the reply rows come first.
"""

from __future__ import annotations

from typing import Any

from bench import report
from bench.scenarios import Sizes

SIZES = {
    "send": 10,
    "bulk": 10,
    "drain": 100,
    "latency": 10,
    "big_history": 10,
    "big_waiting": 10,
    "memory": 10,
    "pgbench_seconds": 1.0,
    "notify": 10,
    "calls": 200,
    "call_timeout": 5.0,
    "call_budget": 15.0,
    "idle": 0.1,
    "stall": 5.0,
}


def _drain(system: str, key: str, value: float) -> dict[str, Any]:
    return {"system": system, "key": key, "run": "1", "ok": True, "unit": "jobs/s", "value": value}


def _callers(system: str, key: str, *, late: int = 0, failed: int = 0) -> dict[str, Any]:
    return {
        "system": system,
        "key": key,
        "run": "1",
        "ok": True,
        "unit": "answers/s",
        "value": 1000.0,
        "p50_ms": 50.0,
        "p99_ms": 90.0,
        "calls": 200,
        "n": 200,
        "received": 200 - failed,
        "timeouts": 0,
        "late": late,
        "failed": failed,
        "not_run": 0,
        "call_timeout": 5.0,
        "peak_connections": 2,
        "errors": ["ConnectionFailed: too many clients"] if failed else [],
    }


def _result(records: list[dict[str, Any]]) -> dict[str, Any]:
    summary = report.summarize(records)
    return {
        "meta": {
            "date": "today",
            "command": "python -m bench",
            "elapsed_s": 60.0,
            "machine": "test",
            "server_version": "15",
            "server_source": "test",
            "server_settings": {},
        },
        "params": {"runs": 1, "systems": ["job_machine", "pgqueuer"], "sizes": SIZES},
        "versions": {},
        "records": records,
        "summary": summary,
        "ratios": report.ratios(summary),
    }


def test_the_reply_drain_is_compared_with_the_peers_drain_and_with_its_own() -> None:
    records = [
        _drain("job_machine", "drain_reply_w1", 6000.0),
        {
            "system": "pgqueuer",
            "key": "drain_reply_w1",
            "run": "1",
            "ok": False,
            "unsupported": "no reply API: compare with its drain without replies",
        },
        _drain("job_machine", "drain_w1", 8000.0),
        _drain("pgqueuer", "drain_w1", 3000.0),
    ]
    result = _result(records)
    ratios = {(r["key"], r["against"]): r["ratio"] for r in result["ratios"]}
    assert ratios[("drain_reply_w1", "pgqueuer drain_w1")] == 2.0
    assert ratios[("drain_reply_w1", "job_machine drain_w1")] == 0.75
    assert ratios[("drain_w1", "pgqueuer")] == 8000.0 / 3000.0

    _, rows = report.table_rows(
        result["summary"], ["job_machine", "pgqueuer"], Sizes(**SIZES), short=True
    )
    assert [r[0] for r in rows] == ["drain_reply_w1", "drain_w1"]  # the reply path first
    assert rows[0][1:] == ["6,000", "n/a", "2.00\u00d7 vs its drain_w1"]

    md = report.markdown(result)
    assert md.index("## The reply path") < md.index("## Without replies")
    assert "drain, no reply, 1 worker process" in md


def test_callers_whose_calls_went_wrong_are_flagged_and_noted() -> None:
    records = [
        _callers("job_machine", "callers_100", late=3),
        _callers("pgqueuer", "callers_100"),
        _callers("job_machine", "callers_1000", failed=5),
    ]
    result = _result(records)
    jm = result["summary"]["job_machine"]
    assert report.cell(jm["callers_100"], "callers") == "1,000 ⚠"
    assert report.cell(result["summary"]["pgqueuer"]["callers_100"], "callers") == "1,000"
    assert any(
        "3 of 200 calls came late in run 1: answered only after" in n
        for n in jm["callers_100"]["notes"]
    )
    assert any("5 of 200 calls failed" in n for n in jm["callers_1000"]["notes"])

    rows = report.callers_rows(result["summary"], ["job_machine", "pgqueuer"], short=True)
    assert rows[0] == ["callers_100", "job_machine", "1,000", "50.0 / 90.0", "0", "3", "0", "2"]
    assert [r[:2] for r in rows] == [
        ["callers_100", "job_machine"],
        ["callers_100", "pgqueuer"],
        ["callers_1000", "job_machine"],
    ]
    assert "### Callers sharing one client" in report.markdown(result)
