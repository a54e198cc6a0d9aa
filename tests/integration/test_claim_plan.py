"""The claim reads only the head of each queue: its cost must not grow with
the number of waiting tasks (a plan that sorts every waiting task of a queue
made each claim 40x slower at 100,000 waiting), nor with the finished
history; and the Admin's counts and listings never read the whole table."""

from __future__ import annotations

from typing import Any

import psycopg

import job_machine as jm
from job_machine._queries import queries
from job_machine._worker_config import TaskPolicy

#: What a worker with the default settings stamps on the tasks it claims.
POLICY = TaskPolicy(retries=3, max_runtime=None, orphan_after=1800.0, remove_after=30.0)
POLICY_PARAMS = POLICY.claim_params()


def _max_rows(node: dict[str, Any]) -> int:
    """The most rows any node of an EXPLAIN ANALYZE plan produced."""
    rows = int(node.get("Actual Rows", 0))
    return max([rows, *(_max_rows(child) for child in node.get("Plans", []))])


def test_a_claim_touches_only_the_head_of_each_queue(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    client.send_many(range(5000), queue="big.q")
    client.send_many(range(3000), queue="other.q")
    params = {
        "queues": ["big.q", "other.q"],
        "limit": 2,
        "worker_id": None,
        "now": None,
        "min_priority": -(2**31),
        "task_id": None,
        **POLICY_PARAMS,
    }
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


# -- helpers for the plans below ---------------------------------------------------------

CLAIM_DEFAULTS = {
    "limit": 1,
    "worker_id": None,
    "now": None,
    "min_priority": -(2**31),
    "task_id": None,
    **POLICY_PARAMS,
}


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of a plan, depth first."""
    found = [node]
    for child in node.get("Plans", []):
        found += _nodes(child)
    return found


def _explain(
    conn: psycopg.Connection[Any], query: str, params: dict[str, Any], analyze: bool = True
) -> dict[str, Any]:
    """The JSON plan of a statement, run and rolled back (a claim changes rows)."""
    options = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    with conn.transaction(force_rollback=True):
        row = conn.execute(f"EXPLAIN ({options}) " + query, params).fetchone()
    assert row is not None
    return row[0][0]["Plan"]  # type: ignore[no-any-return]


def _seq_scans_of_task(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        n for n in _nodes(plan) if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "task"
    ]


def _removed(plan: dict[str, Any]) -> int:
    """Rows read and thrown away by filters, over the whole plan."""
    return sum(
        int(n.get("Rows Removed by Filter", 0)) * int(n.get("Actual Loops", 1))
        for n in _nodes(plan)
    )


def _insert_history(conn: psycopg.Connection[Any], queue: str, n: int, status: int) -> None:
    """n finished tasks of a queue, fast: one INSERT ... SELECT generate_series."""
    conn.execute(
        "INSERT INTO jobmachine.class (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (queue,)
    )
    conn.execute(
        "INSERT INTO jobmachine.task (class_id, parameters, status, attempts, modified)"
        " SELECT c.class_id, g::text, %s, 1, now() - interval '2 days'"
        "   FROM jobmachine.class c, generate_series(1, %s) g WHERE c.name = %s",
        (status, n, queue),
    )


# -- the claim after a long history -----------------------------------------------------


def test_the_ready_index_is_the_claims_index(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'jobmachine'"
        " AND indexname = 'task_ready_idx'"
    ).fetchone()
    assert row is not None
    assert row[0].endswith("(class_id, priority DESC, task_id) WHERE (status = 0)"), row[0]
    assert conn.execute(
        "SELECT count(*) FROM pg_indexes WHERE indexname = 'task_waiting_idx'"
    ).fetchone() == (0,)


def test_a_claim_after_a_long_history_reads_few_rows(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """100,000 done tasks, then 3,000 sent of which 2,000 finished (their
    entries in task_ready_idx are dead until a vacuum), and 1,000 waiting at
    mixed priorities: a claim reads the head of the queue, not the past."""
    _insert_history(conn, "hist.q", 100_000, 200)
    ids = client.send_many(range(3000), queue="hist.q")
    client.send_many(range(200), queue="hist.q", priority=5)
    conn.execute(
        "UPDATE jobmachine.task SET status = 200, modified = now() WHERE task_id <= %s",
        (ids[1999],),
    )
    params = {**CLAIM_DEFAULTS, "queues": ["hist.q"], "limit": 2}
    for analyze in (False, True):
        if analyze:
            conn.execute("ANALYZE jobmachine.task")
        plan = _explain(conn, queries()["task_claim"], params)
        assert _seq_scans_of_task(plan) == [], (analyze, plan)
        assert _removed(plan) <= 10, (analyze, plan)
        assert _max_rows(plan) <= 4, (analyze, plan)
    # The claim takes the best: the priority 5 tasks first, then the oldest waiting.
    with jm.Worker(dsn, queue="hist.q") as w:
        got = w._store.task_claim(w.queues, limit=201)
    assert [t.priority for t in got] == [5] * 200 + [0]
    assert got[-1].id == ids[2000]


def test_a_claim_skips_a_paused_queue_without_reading_it(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    client.send_many(range(5000), queue="paused.q")
    client.send_many(range(10), queue="open.q")
    with jm.Admin(dsn) as admin:
        admin.pause("paused.q")
    conn.execute("ANALYZE jobmachine.task")
    params = {**CLAIM_DEFAULTS, "queues": ["paused.q", "open.q"], "limit": 2}
    plan = _explain(conn, queries()["task_claim"], params)
    assert _seq_scans_of_task(plan) == [], plan
    assert _max_rows(plan) <= 4, plan
    with jm.Worker(dsn, queue=["paused.q", "open.q"]) as w:
        got = w._store.task_claim(w.queues, limit=5)
    assert {t.queue for t in got} == {"open.q"}


# -- the Admin on a large history --------------------------------------------------------


def test_admin_counts_and_failed_listing_never_scan_the_history(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """200,000 done tasks and a few of every other state: the statements of
    Admin.stats() and list_tasks(state="failed") read indexes only, and stats
    estimates the done count instead of counting it."""
    _insert_history(conn, "big.q", 200_000, 200)
    _insert_history(conn, "big.q", 30, 900)
    waiting = client.send_many(range(20), queue="big.q")
    parent = waiting[0]
    client.send("blocked", queue="big.q", parents=[parent])
    client.send("delayed", queue="other.q", delay=600)
    conn.execute(
        "UPDATE jobmachine.task SET status = 100, started = now() WHERE task_id = %s",
        (waiting[1],),
    )
    conn.execute("ANALYZE jobmachine.task")
    q = queries()

    for name in ("admin_stats", "admin_history"):
        plan = _explain(conn, q[name], {})
        assert _seq_scans_of_task(plan) == [], (name, plan)
    failed = {
        "status": 900,
        "queue": None,
        "grouping": None,
        "before_id": None,
        "limit": 50,
        "offset": 0,
    }
    for params in (failed, {**failed, "queue": "big.q"}, {**failed, "status": 10}):
        plan = _explain(conn, q["admin_list_tasks"], params)
        assert _seq_scans_of_task(plan) == [], (params, plan)
        assert _removed(plan) <= 100, (params, plan)
    # The page of the newest done tasks reads its page, not the table.
    plan = _explain(conn, q["admin_list_tasks"], {**failed, "status": 200})
    assert _seq_scans_of_task(plan) == [], plan
    assert _max_rows(plan) <= 50, plan

    with jm.Admin(dsn) as admin:
        stats = admin.stats()
        by_queue = {s.queue: s for s in stats.queues}
        assert by_queue["big.q"] == jm.QueueStats("big.q", 19, 0, 1, 1, 30, False)
        assert by_queue["other.q"] == jm.QueueStats("other.q", 0, 1, 0, 0, 0, False)
        assert stats.done_estimated is True
        assert 150_000 <= stats.done <= 260_000, stats.done
        assert admin.status_string().startswith("W=19 D=1 B=1 R=1 F=30 done=~")
        assert [t.id for t in admin.list_tasks(state="failed", limit=5)] == list(
            range(200_030, 200_025, -1)
        )
