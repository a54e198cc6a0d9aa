"""Reading job_machine's tables (and the procs' ``processed`` table) in tests."""

from __future__ import annotations

import json
from typing import Any

import psycopg


def task_state(conn: psycopg.Connection[Any], tid: int) -> tuple[int, int]:
    """(status, attempts) of a task."""
    row = conn.execute(
        "SELECT status, attempts FROM jobmachine.task WHERE task_id = %s", (tid,)
    ).fetchone()
    assert row is not None, f"task {tid} is gone"
    return int(row[0]), int(row[1])


def result_rows(conn: psycopg.Connection[Any], tid: int) -> list[tuple[str, str | None]]:
    """(result, resulttype) of each result of a task, oldest first."""
    rows = conn.execute(
        "SELECT result, resulttype FROM jobmachine.result WHERE task_id = %s ORDER BY result_id",
        (tid,),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def error_types(conn: psycopg.Connection[Any], tid: int) -> list[str]:
    """The ``type`` of each error result of a task, oldest first."""
    return [json.loads(body)["type"] for body, rtype in result_rows(conn, tid) if rtype == "error"]


def processed(conn: psycopg.Connection[Any]) -> list[tuple[int, int]]:
    """(task_id, pid) of every process() call the procs workers recorded, in order."""
    return [
        (int(r[0]), int(r[1]))
        for r in conn.execute("SELECT task_id, pid FROM processed ORDER BY started_at")
    ]


def processed_by(conn: psycopg.Connection[Any], tid: int) -> list[int]:
    """The pids that ran process() on a task, in order."""
    return [pid for task_id, pid in processed(conn) if task_id == tid]


def registrations(conn: psycopg.Connection[Any]) -> dict[int, Any]:
    """pid -> when each registered worker registered (a reaped worker that
    comes back registers anew, with a new ``started``)."""
    return {
        int(pid): started
        for pid, started in conn.execute("SELECT pid, started FROM jobmachine.worker")
    }
