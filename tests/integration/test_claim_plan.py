"""The claim reads only the head of each queue: its cost must not grow with
the number of waiting tasks (a plan that sorts every waiting task of a queue
made each claim 40x slower at 100,000 waiting)."""

from __future__ import annotations

from typing import Any

import psycopg

import job_machine as jm
from job_machine._queries import queries


def _max_rows(node: dict[str, Any]) -> int:
    """The most rows any node of an EXPLAIN ANALYZE plan produced."""
    rows = int(node.get("Actual Rows", 0))
    return max([rows, *(_max_rows(child) for child in node.get("Plans", []))])


def test_a_claim_touches_only_the_head_of_each_queue(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    client.send_many(range(5000), queue="big.q")
    client.send_many(range(3000), queue="other.q")
    params = {"queues": ["big.q", "other.q"], "limit": 2, "worker_id": None, "now": None}
    # Before and after the table's statistics catch up (the planner chose
    # differently for the old statement, and sorted every waiting task).
    for analyze in (False, True):
        if analyze:
            conn.execute("ANALYZE jobmachine.task")
        with conn.transaction(force_rollback=True):
            cur = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + queries()["task_claim"], params)
            row = cur.fetchone()
            assert row is not None
            plan = row[0][0]["Plan"]
        # limit 2 per queue at most, then 2 overall: never thousands.
        assert _max_rows(plan) <= 4, (analyze, plan)
    # And the claim itself takes the oldest of both queues.
    with jm.Worker(dsn, queue=["other.q", "big.q"]) as w:
        (first,) = w._store.task_claim(w.queues, limit=1)
    assert (first.queue, first.data) == ("big.q", 0)
