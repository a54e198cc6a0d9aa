"""Fleet-level promises of docs/liveness.md and docs/asyncio.md, checked with
real worker processes (tests/support/procs.py): the outage rule's fallback, the
connections a worker holds, the housekeeping interval, and manual
housekeeping beside the fleet's housekeeper."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

import job_machine as jm
from tests.support.procs import Child, kill_all, start_worker, started_count, wait_until
from tests.support.rows import error_types, task_state
from tests.support.workers import Base, serving

QUEUE = "fleet.q"


def _ready(db: psycopg.Connection[Any], n: int, children: list[Child]) -> None:
    wait_until(lambda: started_count(db) >= n, 30, f"{n} worker(s) to start", children)


def _runner_of(db: psycopg.Connection[Any], tid: int, attempt: int) -> int | None:
    """The pid that started ``attempt`` of the task, if one has."""
    row = db.execute(
        "SELECT pid FROM processed WHERE task_id = %s AND attempt = %s", (tid, attempt)
    ).fetchone()
    return None if row is None else int(row[0])


def _worker_id(db: psycopg.Connection[Any], pid: int) -> int:
    row = wait_until(
        lambda: db.execute(
            "SELECT worker_id FROM jobmachine.worker WHERE pid = %s", (pid,)
        ).fetchone(),
        10,
        f"worker process {pid} to register",
    )
    return int(row[0])


def _stale(db: psycopg.Connection[Any], worker_ids: list[int], seconds: float) -> bool:
    row = db.execute(
        "SELECT bool_and(seen < now() - make_interval(secs => %s)) FROM jobmachine.worker"
        " WHERE worker_id = ANY(%s)",
        (seconds, worker_ids),
    ).fetchone()
    return bool(row and row[0])


def test_workers_that_died_together_are_rescued_by_the_outage_rules_fallback(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Two of a fleet of three die at once, each holding a long task: more than
    half the fleet looks dead in one round, which the housekeeper takes for an
    outage. Their tasks must not wait again before ``OUTAGE_GRACES`` graces
    (``5 x dead_after``) since they were last seen, but must by then plus a
    round (``WorkerDied`` recorded, their rows gone from the registry), and
    the third worker takes them. Once the outage window has passed, a single
    death is rescued within ``dead_after`` again.

    The two are SIGSTOPped, left until their last heartbeat is older than the
    grace, then SIGKILLed together: so both look dead in the same round
    (killed by SIGKILL alone, their last heartbeats may fall into different
    rounds, and the first is then judged a single death)."""
    dead_after = 1.0
    grace = dead_after / 2
    outage_wait = 5 * dead_after  # as documented, not OUTAGE_GRACES: that is under test
    children: list[Child] = []
    client = jm.Client(dsn, queue=QUEUE)
    try:
        for name in ("w1", "w2", "w3"):
            children.append(start_worker(dsn, QUEUE, tmp_path, name, dead_after=dead_after))
        _ready(db, 3, children)
        # One long task each for two of them, the third stays idle.
        tids = [client.send({"seq": 1, "sleep": 120})]
        first = wait_until(lambda: _runner_of(db, tids[0], 1), 10, "the first task", children)
        tids.append(client.send({"seq": 2, "sleep": 120}))
        second = wait_until(lambda: _runner_of(db, tids[1], 1), 10, "the second task", children)
        assert first != second
        doomed = [c for c in children if c.pid in (first, second)]
        (survivor,) = [c for c in children if c.pid not in (first, second)]
        doomed_ids = [_worker_id(db, c.pid) for c in doomed]

        for c in doomed:
            c.signal(signal.SIGSTOP)
        wait_until(lambda: _stale(db, doomed_ids, grace + 0.1), 10, "the frozen to look stale")
        row = db.execute(
            "SELECT max(seen) FROM jobmachine.worker WHERE worker_id = ANY(%s)", (doomed_ids,)
        ).fetchone()
        assert row is not None
        last_seen = row[0]
        for c in doomed:
            c.signal(signal.SIGKILL)
        for c in doomed:
            assert c.wait_exit(10) == -signal.SIGKILL

        def rescued() -> float | None:
            if not all(error_types(db, tid) == ["WorkerDied"] for tid in tids):
                return None
            row = db.execute(
                "SELECT extract(epoch FROM max(created) - %s)::float8 FROM jobmachine.result"
                " WHERE task_id = ANY(%s)",
                (last_seen, tids),
            ).fetchone()
            assert row is not None
            return float(row[0])

        after = wait_until(
            rescued, outage_wait + dead_after + 10, "the outage rule's rescue", [survivor]
        )
        assert outage_wait <= after <= outage_wait + dead_after + 1.0, (
            f"rescued {after:.2f} s after the dead were last seen; the outage rule"
            f" promises {outage_wait:.1f} s (and a round)"
        )
        gone = db.execute(
            "SELECT count(*) FROM jobmachine.worker WHERE worker_id = ANY(%s)", (doomed_ids,)
        ).fetchone()
        assert gone == (0,)
        # The survivor takes one; the other waits for it (the survivor is busy).
        wait_until(
            lambda: any(_runner_of(db, tid, 2) == survivor.pid for tid in tids),
            10,
            "the survivor to take a rescued task",
            [survivor],
        )
        rescued_at = time.monotonic()

        # A fourth worker takes the other rescued task, and dies alone once the
        # housekeeper's outage window (OUTAGE_GRACES graces after the last
        # round that saw the outage) is over: a single death again.
        late = start_worker(dsn, QUEUE, tmp_path, "w4", dead_after=dead_after)
        children.append(late)
        wait_until(
            lambda: all(_runner_of(db, tid, 2) is not None for tid in tids),
            30,
            "the fourth worker to take the other task",
            [survivor, late],
        )
        (held,) = [tid for tid in tids if _runner_of(db, tid, 2) == late.pid]
        wait_until(
            lambda: time.monotonic() > rescued_at + outage_wait + 1.0,
            outage_wait + 2,
            "the outage window to pass",
            [survivor, late],
        )
        late.signal(signal.SIGKILL)
        killed = time.monotonic()
        late.wait_exit(10)
        wait_until(
            lambda: error_types(db, held) == ["WorkerDied", "WorkerDied"],
            dead_after + 1.0,
            "a single death to be rescued within dead_after",
            [survivor],
        )
        assert time.monotonic() - killed <= dead_after + 1.0
        assert task_state(db, held)[0] == 0  # waiting; the survivor is busy
    finally:
        for c in children:
            if c.alive():
                c.signal(signal.SIGCONT)
        kill_all(children)
        client.close()


# -- gap 11: the connections a worker holds (docs/asyncio.md) ---------------------


def _connections(db: psycopg.Connection[Any], app: str) -> int:
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        " AND datname = current_database()",
        (app,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _running_now(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM jobmachine.task WHERE status = 100").fetchone()
    assert row is not None
    return int(row[0])


def test_a_worker_holds_two_connections_at_concurrency_1_and_at_most_n_plus_2_at_n(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """docs/asyncio.md: a ``dsn=`` worker uses 2 connections at
    ``concurrency=1`` (idle or running a task) and at most N + 2 at
    ``concurrency=N``, for ``max_connections`` planning. job_machine's own
    connections carry the DSN's application_name (the recording
    connection of tests/support/procs.py names itself otherwise)."""
    children: list[Child] = []
    try:
        for n, kind in ((1, "sync"), (4, "async"), (4, "sync")):
            app = f"budget_{kind}_{n}"
            tagged = make_conninfo(dsn, application_name=app)
            queue = f"budget.{kind}.{n}"
            child = start_worker(tagged, queue, tmp_path, app, kind=kind, concurrency=n)
            children.append(child)
            _ready(db, len(children), [child])
            # Idle: listening (also the work connection at 1, else the pool's
            # first one) and registry connections; 3 with a pool of its own.
            idle = 2 if n == 1 else 3
            wait_until(lambda a=app, i=idle: _connections(db, a) == i, 10, f"{app} idle", [child])
            counts: list[int] = []
            busy: list[int] = []
            with jm.Client(dsn, queue=queue) as client:
                tids = client.send_many([{"seq": i, "sleep": 1.5} for i in range(2 * n)])

                def all_done(tids: list[int] = tids, app: str = app) -> bool:
                    counts.append(_connections(db, app))
                    busy.append(_running_now(db))
                    return all(task_state(db, t)[0] == 200 for t in tids)

                wait_until(all_done, 30, f"{app}'s tasks", [child], interval=0.05)
            assert max(counts) <= n + 2, f"{app}: up to {max(counts)} connections"
            if n == 1:
                assert set(counts) == {2}, counts
            assert max(busy) == n, f"{app} never ran {n} tasks at once: {busy}"
            assert child.alive()
            child.signal(signal.SIGTERM)
            assert child.wait_exit(10) == 0, child.describe()
    finally:
        kill_all(children)


# -- gap 12: housekeeping_interval, and manual housekeeping beside the fleet's ----


def _perl_orphan(dsn: str, queue: str, age: float) -> int:
    """A task a Perl worker claimed (status 100, no job_machine worker) and
    last touched ``age`` seconds ago: an orphan once older than orphan_after."""
    from tests.integration.test_perl_compat import Perl  # noqa: PLC0415

    perl = Perl(dsn)
    try:
        tid = perl.send(queue, "orphan")
        claimed = perl.claim(queue)
        assert claimed is not None and int(claimed["task_id"]) == tid
        perl.conn.execute(
            "UPDATE jobmachine.task SET modified = now() - make_interval(secs => %s)"
            " WHERE task_id = %s",
            (age, tid),
        )
        return tid
    finally:
        perl.close()


def _revived(db: psycopg.Connection[Any], tid: int) -> bool:
    return task_state(db, tid)[0] == 0


def test_orphans_are_revived_every_housekeeping_interval_not_every_heartbeat(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """README: ``housekeeping_interval`` is how often the slower chores
    (orphans, retention, queue removal) run; the heartbeat (every
    ``dead_after / 4``) only rescues dead workers' tasks. The first round
    runs at once and revives an old orphan; an orphan made just after it is
    revived at the next round, ``housekeeping_interval`` later, not at the
    next heartbeat. Then a ``housekeeping()`` called by hand beside the
    serving housekeeper does nothing (``ran`` is False)."""
    interval = 2.0
    first = _perl_orphan(dsn, "perl.1", age=3600)
    w = Base(
        dsn,
        queue="hk.q",
        dead_after=1.0,
        housekeeping_interval=interval,
        orphan_after=0.1,
    )
    with serving(w):
        wait_until(lambda: _revived(conn, first), 10, "the first round to revive the old orphan")
        first_round = time.monotonic()
        second = _perl_orphan(dsn, "perl.2", age=3600)
        wait_until(lambda: _revived(conn, second), interval + 3, "the next round")
        after = time.monotonic() - first_round
        heartbeat = w.dead_after / 4
        assert interval - heartbeat - 0.1 <= after <= interval + heartbeat + 1.0, (
            f"revived {after:.2f} s after the first round; housekeeping_interval is {interval} s"
        )
        assert w.worker_id is not None
        wait_until(lambda: _leader(conn), 5, "the serving worker to hold the housekeeper's lock")
        other = jm.Worker(dsn, queue="hk.q", orphan_after=0.1)
        try:
            third = _perl_orphan(dsn, "perl.3", age=3600)
            counts = other.housekeeping()
            assert counts.ran is False, counts
            assert task_state(conn, third)[0] == 100
        finally:
            other.close()


def _leader(conn: psycopg.Connection[Any]) -> bool:
    """Whether a session of this database holds the housekeeper's lock."""
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND objsubid = 1 AND database = (SELECT oid FROM pg_database"
        " WHERE datname = current_database())"
    ).fetchone()
    return bool(row and row[0])
