"""What a fleet-wide limit costs a claim (docs/limits.md, "What it costs").

    python -m bench.limit_cost --dsn postgresql://postgres@127.0.0.1:5432/postgres

Creates a database of its own next to the one named (``jm_limit_cost_<pid>``,
dropped at the end), fills four queues of 50,000 waiting tasks each (one
without limits, one with a concurrency, one with a rate, one with a
concurrency per grouping, each far above what the run reaches, so only the
bookkeeping is measured), and times claim statements of 1 and 10 tasks in
interleaved rounds: the unlimited queue's with ``task_claim``, the others'
with ``task_claim_limited``, as a worker's Store runs them. Each claimed task
is marked done at once (not timed), so the running tasks stay as few as in a
fleet whose tasks end. Prints the median and range of microseconds per claim
(with its commit; ``--sync off`` sets synchronous_commit off, to see the
statement rather than the disk).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import job_machine as jm
import psycopg
from job_machine._queries import queries
from job_machine._worker_config import TaskPolicy
from psycopg import sql
from psycopg.conninfo import make_conninfo

QUEUES = ("free", "concurrency", "rate", "per_grouping")


def _claims(dsn: str, queue: str, limit: int, n: int, sync: str) -> float:
    """Microseconds per claim of ``limit`` tasks of ``queue``, over ``n`` claims."""
    statement = queries()["task_claim" if queue == "free" else "task_claim_limited"]
    params: dict[str, Any] = {
        "queues": [f"cost.{queue}"],
        "limit": limit,
        "worker_id": None,
        "now": None,
        "min_priority": -(2**31),
        "task_id": None,
        **TaskPolicy.NONE,
    }
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=0) as conn:
        conn.execute(sql.SQL("SET synchronous_commit = {}").format(sql.Literal(sync)))
        spent = 0.0
        for i in range(n + 20):  # the first 20 warm the plan cache up
            started = time.perf_counter()
            rows = conn.execute(statement, params).fetchall()
            if i >= 20:
                spent += time.perf_counter() - started
            conn.execute(
                "UPDATE jobmachine.task SET status = 200 WHERE task_id = ANY(%s)",
                ([r[0] for r in rows if r[0] is not None],),
            )
        return spent / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.limit_cost")
    parser.add_argument("--dsn", required=True, help="a server where the role may CREATEDB")
    parser.add_argument("--claims", type=int, default=300, help="claims per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sync", choices=("on", "off"), default="on")
    args = parser.parse_args()
    name = f"jm_limit_cost_{os.getpid()}"
    with psycopg.connect(args.dsn, autocommit=True) as admin_conn:
        admin_conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(args.dsn, dbname=name)
    try:
        jm.install_schema(dsn)
        with jm.Client(dsn) as client, jm.Admin(dsn) as admin:
            for queue in QUEUES:
                for _ in range(10):
                    client.send_many(list(range(5000)), queue=f"cost.{queue}")
            admin.set_limits("cost.concurrency", concurrency=10**9)
            admin.set_limits("cost.rate", rate=10**9, per=1)
            admin.set_limits("cost.per_grouping", concurrency=10**9, per_grouping=True)
        got: dict[tuple[int, str], list[float]] = {}
        for _ in range(args.rounds):
            for limit in (1, 10):
                for queue in QUEUES:
                    us = _claims(dsn, queue, limit, args.claims, args.sync)
                    got.setdefault((limit, queue), []).append(us)
        for (limit, queue), values in sorted(got.items()):
            print(
                f"claim of {limit:2d}, {queue:12s}: {statistics.median(values):7.0f} us"
                f" ({min(values):.0f}-{max(values):.0f})"
            )
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as admin_conn:
            admin_conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


if __name__ == "__main__":
    main()
