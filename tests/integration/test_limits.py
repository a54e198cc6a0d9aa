"""Fleet-wide limits of a queue (Admin.set_limits, docs/limits.md): four
real worker processes (two sync, two asyncio, each running two tasks at
once) never run more of a limited queue's tasks at once than its
concurrency, never start more than its rate per window, and with
per_grouping one tenant's hundred tasks do not hold up another's five.

What the workers did is read back from the ``processed`` table they write
into (tests/procs.py, with ``--record-end``: when each process() started
and ended).
"""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import job_machine as jm
from job_machine._queries import queries
from job_machine._worker_config import TaskPolicy
from job_machine.channels import Exact
from tests.support.procs import Child, kill_all, start_worker, started_count, wait_until

KINDS = ["sync", "async", "sync", "async"]


def _start_workers(dsn: str, queue: str, tmp_path: Path, *, sleep: float) -> list[Child]:
    workers: list[Child] = []
    try:
        for n, kind in enumerate(KINDS):
            workers.append(
                start_worker(
                    dsn,
                    queue,
                    tmp_path,
                    f"worker{n}-{kind}",
                    kind=kind,
                    sleep=sleep,
                    concurrency=2,
                    record_end=True,
                    timeout=5,
                )
            )
    except BaseException:
        kill_all(workers)
        raise
    return workers


def _all_done(db: psycopg.Connection[Any], n: int) -> bool:
    row = db.execute("SELECT count(*) FROM jobmachine.task WHERE status = 200").fetchone()
    return row is not None and row[0] == n


def _most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one moment (an end before a start at a tie)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = running = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def _run(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path, queue: str, n: int, sleep: float
) -> list[tuple[Any, ...]]:
    """Start the four workers, wait until the ``n`` tasks sent are done, stop
    them; the processed rows (task_id, started_at, ended_at, grouping)."""
    workers = _start_workers(dsn, queue, tmp_path, sleep=sleep)
    try:
        wait_until(lambda: started_count(db) == len(workers), 30, "the workers' startup()", workers)
        wait_until(lambda: _all_done(db, n), 90, f"the {n} tasks done", workers)
    finally:
        kill_all(workers)
    return db.execute(
        "SELECT p.task_id, p.started_at, p.ended_at, t.grouping FROM processed p"
        " JOIN jobmachine.task t USING (task_id) ORDER BY p.started_at"
    ).fetchall()


def test_four_workers_never_run_more_than_the_queues_concurrency(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    queue, n = "limits.c", 24
    with jm.Admin(dsn) as admin:
        admin.set_limits(queue, concurrency=3)
    with jm.Client(dsn, queue=queue) as client:
        client.send_many([{"seq": i} for i in range(n)])
    rows = _run(dsn, db, tmp_path, queue, n, sleep=0.2)
    assert len(rows) == n
    most = _most_at_once([(r[1], r[2]) for r in rows])
    # Eight slots in the fleet; three at most (and more than one used).
    assert 2 <= most <= 3, most


def test_four_workers_start_no_more_than_the_queues_rate(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    queue, n, rate, per = "limits.r", 15, 5, 2.0
    # When each task was claimed, by the clock of the claim statement (a
    # trigger of this test's own: a process() starts later, the later the
    # more a loaded machine delays it, and a worker may hold a claim ahead).
    db.execute(
        """
        CREATE TABLE claimed (task_id bigint, at timestamptz);
        CREATE FUNCTION note_claim() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO public.claimed VALUES (NEW.task_id, clock_timestamp());
            RETURN NULL;
        END $$;
        CREATE TRIGGER note_claim AFTER UPDATE OF status ON jobmachine.task
            FOR EACH ROW WHEN (NEW.status = 100 AND OLD.status <> 100)
            EXECUTE FUNCTION note_claim();
        """
    )
    with jm.Admin(dsn) as admin:
        admin.set_limits(queue, rate=rate, per=per)
    with jm.Client(dsn, queue=queue) as client:
        client.send_many([{"seq": i} for i in range(n)])
    _run(dsn, db, tmp_path, queue, n, sleep=0.0)
    claims = [r[0] for r in db.execute("SELECT at FROM claimed ORDER BY at").fetchall()]
    assert len(claims) == n
    # A claim counts its window from when it held the queue's limit row,
    # a moment before it updates the rows: windows a little shorter than
    # `per` hold at most `rate`.
    window = timedelta(seconds=per - 0.2)
    for i, start in enumerate(claims):
        inside = sum(1 for s in claims[i:] if s - start < window)
        assert inside <= rate, (i, inside, claims)
    # 15 tasks at 5 per 2 s: the last is claimed 4 s after the first at least.
    assert claims[-1] - claims[0] >= timedelta(seconds=2 * per - 0.2), claims


def test_per_grouping_a_tenant_with_a_hundred_tasks_does_not_starve_one_with_five(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    queue = "limits.g"
    with jm.Admin(dsn) as admin:
        admin.set_limits(queue, concurrency=2, per_grouping=True)
    with jm.Client(dsn, queue=queue) as client:
        client.send_many([{"seq": i} for i in range(100)], grouping="big")
        client.send_many([{"seq": i} for i in range(5)], grouping="small")
    rows = _run(dsn, db, tmp_path, queue, 105, sleep=0.05)
    # The small tenant's tasks were sent last but are all done early: each
    # started before a fifth of the big tenant's had.
    order = [r[3] for r in rows]
    last_small = max(i for i, g in enumerate(order) if g == "small")
    assert order[:last_small].count("big") < 20, order
    for tenant in ("big", "small"):
        most = _most_at_once([(r[1], r[2]) for r in rows if r[3] == tenant])
        assert most <= 2, (tenant, most)


def test_limits_are_set_listed_and_cleared(dsn: str) -> None:
    with jm.Admin(dsn) as admin, jm.Client(dsn) as client:
        # Before the queue exists, and replaced whole by the next call.
        assert admin.set_limits("limits.l", concurrency=5) == jm.QueueLimit(
            "limits.l", 5, None, 1.0, False
        )
        admin.set_limits("limits.l", rate=10, per=60, per_grouping=True)
        admin.set_limits(Exact("limits.*"), concurrency=1)
        client.send(1, queue="limits.l")
        with jm.Worker(dsn, queue="limits.l") as w:
            assert w._claim(5) != []
        got = {limit.queue: limit for limit in admin.limits()}
        assert got["limits.l"] == jm.QueueLimit("limits.l", None, 10, 60.0, True, 1, 1)
        assert got["limits.*"].concurrency == 1
        assert admin.set_limits("limits.l") is None
        assert admin.set_limits("limits.none") is None  # none to clear: nothing happens
        assert [limit.queue for limit in admin.limits()] == ["limits.*"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"concurrency": 0}, "concurrency must be a whole number >= 1"),
        ({"concurrency": 1.5}, "concurrency must be a whole number >= 1"),
        ({"concurrency": True}, "concurrency must be a whole number >= 1"),
        ({"rate": -1}, "rate must be a whole number >= 1"),
        ({"rate": 2**31}, "rate must be a whole number >= 1"),
        ({"rate": 1, "per": 0}, "per must be a positive number of seconds"),
        ({"rate": 1, "per": float("inf")}, "per must be a positive number of seconds"),
        ({"concurrency": 1, "per": 5}, "per is the window of rate"),
        ({"per_grouping": True}, "per_grouping needs a limit"),
        ({"concurrency": 1, "per_grouping": "yes"}, "per_grouping must be True or False"),
    ],
)
def test_bad_limits_are_refused_and_change_nothing(
    dsn: str, kwargs: dict[str, Any], message: str
) -> None:
    with jm.Admin(dsn) as admin:
        admin.set_limits("limits.bad", concurrency=2)
        with pytest.raises(ValueError, match=message):
            admin.set_limits("limits.bad", **kwargs)
        assert [(x.queue, x.concurrency) for x in admin.limits()] == [("limits.bad", 2)]
        with pytest.raises(ValueError, match="is a pattern"):
            admin.set_limits("limits.*", concurrency=1)
        with pytest.raises(jm.InvalidQueueName):
            admin.set_limits("", concurrency=1)


def test_a_limit_covers_its_queue_only_and_a_claim_waits_for_room(dsn: str) -> None:
    """A limit on ``a`` does not cover ``a.b``; a worker serving both claims
    ``a``'s task once ``a``'s running one is done."""
    with jm.Admin(dsn) as admin, jm.Client(dsn) as client:
        admin.set_limits("limits.a", concurrency=1)
        client.send_many([1, 2], queue="limits.a")
        client.send_many([1, 2, 3], queue="limits.a.b")
        with jm.Worker(dsn, queue=["limits.a", "limits.a.b"]) as w:
            first = w._claim(10)
            assert sorted(t.queue for t in first) == ["limits.a"] + ["limits.a.b"] * 3
            assert w._claim(10) == []
            held = next(t for t in first if t.queue == "limits.a")
            w._store.task_done(held.id, held.attempt)
            assert [t.queue for t in w._claim(10)] == ["limits.a"]
        # Cleared: no limit any more.
        admin.set_limits("limits.a")
        client.send_many([3, 4], queue="limits.a")
        with jm.Worker(dsn, queue="limits.a") as w:
            assert len(w._claim(10)) == 2


def test_a_rate_window_slides(dsn: str) -> None:
    """At most ``rate`` claims in any ``per`` seconds, per grouping when asked:
    the room comes back as the oldest claims leave the window."""
    now = datetime.now().astimezone()
    with jm.Admin(dsn) as admin, jm.Client(dsn, queue="limits.w") as client:
        admin.set_limits("limits.w", rate=3, per=10, per_grouping=True)
        client.send_many(list(range(10)), grouping="t1")
        client.send_many(list(range(10)), grouping="t2")
        with jm.Worker(dsn, queue="limits.w") as w:

            def claim(at: float, limit: int = 10) -> list[str | None]:
                got = w._store.task_claim(w.queues, limit, now=now + timedelta(seconds=at))
                return sorted(t.grouping for t in got)

            # Rooms: t1 3, t2 3. A claim reads the head of the queue (10
            # rows here) and keeps what fits each grouping's room.
            assert claim(0, 2) == ["t1", "t1"]
            assert claim(1) == ["t1", "t2", "t2"]
            assert claim(5) == ["t2"]  # t1 full: read past, t2's last one
            assert claim(9.9) == []
            assert claim(10.5) == ["t1", "t1"]  # t1's claims at 0 left the window
            assert claim(12) == ["t1", "t2", "t2"]  # and those at 1
            assert claim(12.5) == []


def test_unlimited_queues_claim_as_before_beside_a_limited_one(dsn: str) -> None:
    """A worker serving a limited and an unlimited queue: the unlimited one
    is claimed in full, the limited one up to its room, best first."""
    with jm.Admin(dsn) as admin, jm.Client(dsn) as client:
        admin.set_limits("limits.one", concurrency=1)
        client.send_many(list(range(5)), queue="limits.one", priority=5)
        client.send_many(list(range(5)), queue="limits.free")
        with jm.Worker(dsn, queue=["limits.one", "limits.free"]) as w:
            got = w._claim(10)
    assert [(t.queue, t.priority) for t in got] == [("limits.one", 5)] + [("limits.free", 0)] * 5


def test_a_claim_waits_for_the_limit_row_and_counts_what_the_claim_before_committed(
    dsn: str,
) -> None:
    """Two claims at once on a queue with room for one: the second waits
    for the first's commit (the limit row is locked) and then sees its
    claim, so it takes nothing (a count in its own, older snapshot would
    see none running and take a second task: pgqueuer#761)."""
    with jm.Admin(dsn) as admin, jm.Client(dsn, queue="limits.race") as client:
        admin.set_limits("limits.race", concurrency=1)
        client.send_many(list(range(5)))
    params = {
        "queues": ["limits.race"],
        "limit": 5,
        "worker_id": None,
        "now": None,
        "min_priority": -(2**31),
        "task_id": None,
        **TaskPolicy.NONE,
    }
    with psycopg.connect(dsn) as first, psycopg.connect(dsn, autocommit=True) as second:
        got = first.execute(queries()["task_claim_limited"], params).fetchall()
        assert len(got) == 1  # not committed yet: holds the limit row
        pid = second.info.backend_pid
        results: list[Any] = []

        t = threading.Thread(
            target=lambda: results.append(
                second.execute(queries()["task_claim_limited"], params).fetchall()
            )
        )
        t.start()
        with psycopg.connect(dsn, autocommit=True) as watch:
            wait_until(
                lambda: (
                    watch.execute(
                        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                        (pid,),
                    ).fetchone()
                    == (True,)
                ),
                10,
                "the second claim waiting for the limit row",
            )
        first.commit()
        t.join(10)
    # No task: its one row says only that the queue has limits.
    assert [[(row[0], row[-1]) for row in got] for got in results] == [[(None, True)]]


def test_the_cli_sets_lists_and_clears_limits(dsn: str) -> None:
    from tests.integration.test_cli import cli, failed, ok, tsv  # noqa: PLC0415

    assert ok(cli("limits", "set", "cli.q", "--concurrency", "3", dsn=dsn)) == (
        "queue cli.q limited\n"
    )
    ok(cli("limits", "set", "cli.r", "--rate", "10", "--per", "1m", "--per-grouping", dsn=dsn))
    ok(cli("limits", "set", "cli.*", "--exact", "--concurrency", "1", dsn=dsn))
    assert tsv(ok(cli("limits", "list", dsn=dsn))) == [
        ["queue", "concurrency", "rate", "per", "per grouping", "running", "recent"],
        ["cli.*", "1", "-", "-", "no", "0", "-"],
        ["cli.q", "3", "-", "-", "no", "0", "-"],
        ["cli.r", "-", "10", "60 s", "yes", "0", "0"],
    ]
    listed = json.loads(ok(cli("limits", "list", "--json", dsn=dsn)))
    assert listed[2] == {
        "queue": "cli.r",
        "concurrency": None,
        "rate": 10,
        "per": 60.0,
        "per_grouping": True,
        "running": 0,
        "recent": 0,
    }
    assert ok(cli("limits", "clear", "cli.q", dsn=dsn)) == "queue cli.q has no limits\n"
    assert "is a pattern" in failed(cli("limits", "clear", "cli.*", dsn=dsn), 1)
    ok(cli("limits", "clear", "cli.*", "--exact", dsn=dsn))
    assert "give --concurrency, --rate or both" in failed(cli("limits", "set", "x", dsn=dsn), 2)
    assert "per must be a positive number" in failed(
        cli("limits", "set", "x", "--rate", "1", "--per", "0", dsn=dsn), 1
    )
    assert "--concurrency" in failed(cli("limits", "set", "x", "--concurrency", "0", dsn=dsn), 2)
    with jm.Admin(dsn) as admin:
        assert [x.queue for x in admin.limits()] == ["cli.r"]


async def test_the_dashboard_lists_limits_and_clears_them(dsn: str) -> None:
    from tests.integration.test_web import _act, dashboard  # noqa: PLC0415

    async with jm.AsyncAdmin(dsn) as admin:
        await admin.set_limits("web.q", concurrency=4, rate=100, per=60, per_grouping=True)
    async with dashboard(dsn) as http:
        page = (await http.get("/limits")).text
        assert re.search(r"<td>web.q</td>\s*<td class=\"n\">4</td>", page), page
        assert "100 per 60 s" in page
        assert 'href="/confirm/set_limits?target=web.q"' in page
        cleared = await _act(http, "set_limits", "web.q")
        assert "Queue web.q has no limits now." in cleared.text
        assert "No queue has limits" in cleared.text
    async with jm.AsyncAdmin(dsn) as admin:
        assert await admin.limits() == []
    async with dashboard(dsn, read_only=True) as http:
        assert "/confirm/set_limits" not in (await http.get("/limits")).text


def test_a_limited_claim_stamps_the_workers_policy_as_any_claim(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with jm.Admin(dsn) as admin, jm.Client(dsn) as client:
        admin.set_limits("limits.p", concurrency=5)
        client.send_many([1, 2], queue="limits.p")
        client.send_many([1, 2], queue="limits.free")
        w = jm.Worker(dsn, queue=["limits.p", "limits.free"], max_runtime=30, orphan_after=90)
        with w:
            assert len(w._claim(10)) == 4
    stamped = conn.execute(
        "SELECT DISTINCT max_runtime, orphan_after FROM jobmachine.task WHERE status = 100"
    ).fetchall()
    assert stamped == [(30.0, 90.0)]


def test_a_limited_claim_leaves_an_expired_task_as_any_claim(dsn: str) -> None:
    later = datetime.now().astimezone() + timedelta(minutes=10)
    with jm.Admin(dsn) as admin, jm.Client(dsn, queue="limits.e") as client:
        admin.set_limits("limits.e", concurrency=5)
        expiring = client.send(1, expire_after=60)
        kept = client.send(2)
        with jm.Worker(dsn, queue="limits.e") as w:
            got = w._store.task_claim(w.queues, 5, now=later)
    assert [t.id for t in got] == [kept]
    assert expiring != kept
