"""An outage is not a fleet of dead workers (issue 14, item 5).

A TCP proxy stands between some workers and the server. For 20 seconds it
cuts every connection through it and refuses new ones (a proxy restart, a
partition, a failover that takes a while), while the workers run long tasks.
The server sees those workers' sessions end, so their liveness locks are free
and their heartbeats grow old: by the lock-and-heartbeat rule alone they look
dead. They are not, and when the proxy lets them through again each of them
finishes its task and replies.

Two layouts, one per rule of docs/liveness.md ("Outages"):

- ``fleet behind the proxy``: both workers of the fleet go through the proxy,
  the housekeeper too. The first worker back must not judge the other before
  it has itself been connected for the reconnect grace (with two workers, one
  looking dead is not "most of the fleet", so only this rule saves it).
- ``housekeeper outside``: a third worker, the housekeeper, reaches the server
  directly and stays connected (it serves another queue, so that it never
  takes one of the long tasks itself); the two behind the proxy look dead to it at
  once, which is an outage (more than half of the fleet), not two deaths.

Demands: 0 live workers reaped (each worker keeps its registration, no
``WorkerDied`` result) and 0 tasks run twice (one ``processed`` row each).
Workers are real processes (``python -m tests.support.procs worker``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import job_machine as jm
from job_machine._lock_keys import CHORE_LOCK_KEY
from job_machine.liveness import Liveness
from tests.support.procs import (
    Child,
    create_tables,
    describe_all,
    expected_reply,
    kill_all,
    start_worker,
    started_count,
    terminate_and_check,
    wait_until,
)
from tests.support.rows import registrations

QUEUE = "outage.test"
#: How long the proxy keeps everyone out.
OUTAGE = 20.0
#: Long enough that the tasks run through the whole outage.
TASK_SECONDS = OUTAGE + 4.0
#: grace 3 s, heartbeat 1.5 s, the outage fallback 10 graces = 30 s > OUTAGE.
DEAD_AFTER = 6.0
#: The fleet's housekeeper lock (job_machine/_lock_keys.py).
LEADER_KEY = CHORE_LOCK_KEY


class OutageProxy:
    """A TCP proxy in front of a server that can go down for a while: every
    connection through it is cut (both ends closed) and, until it is up again,
    every new connection is closed as soon as it is accepted."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.down = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        threading.Thread(target=self._accept, name="outage-proxy", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self._server.accept()
            except OSError:
                return  # closed
            if self.down:
                near.close()
                continue
            try:
                far = socket.create_connection(self.upstream, timeout=5)
                far.settimeout(None)
            except OSError:
                near.close()
                continue
            with self._lock:
                self._sockets += [near, far]
            for src, dst in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Down: cut every connection and refuse new ones."""
        with self._lock:
            self.down = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self.down = False

    def close(self) -> None:
        self.cut()
        self._server.close()


def _leader_sessions(db: psycopg.Connection[Any]) -> list[str]:
    """application_name of the session that holds the housekeeper lock."""
    rows = db.execute(
        """SELECT a.application_name FROM pg_locks l
             JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
              AND l.classid = 0 AND l.objid = %s::oid""",
        (LEADER_KEY,),
    ).fetchall()
    return [str(name) for (name,) in rows]


@pytest.fixture
def tcp_db(
    dsn: str, request: pytest.FixtureRequest
) -> Iterator[tuple[str, psycopg.Connection[Any]]]:
    """A database the proxy can reach over TCP, with the tables of
    tests/support/procs.py: the test's own when its server listens on TCP, else
    the ``private_server``'s (the embedded server listens on a Unix socket)."""
    private = str(conninfo_to_dict(dsn).get("host") or "").startswith("/")
    if private:
        dsn = request.getfixturevalue("private_server").dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not private:
            create_tables(conn)
        yield dsn, conn


@pytest.mark.parametrize("layout", ["fleet behind the proxy", "housekeeper outside"])
def test_a_20s_outage_reaps_no_live_worker_and_runs_no_task_twice(
    tcp_db: tuple[str, psycopg.Connection[Any]], tmp_path: Path, layout: str
) -> None:
    dsn, db = tcp_db
    params = conninfo_to_dict(dsn)
    proxy = OutageProxy(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
    proxied = make_conninfo(dsn, host="127.0.0.1", port=proxy.port)
    children: list[Child] = []

    def logs() -> str:
        return describe_all(children)

    def start(name: str, via: str, queue: str = QUEUE, **options: Any) -> Child:
        child = start_worker(
            make_conninfo(via, application_name=f"jm_outage_{name}"),
            queue,
            tmp_path,
            name,
            dead_after=DEAD_AFTER,
            timeout=2,
            **options,
        )
        children.append(child)
        return child

    try:
        if layout == "housekeeper outside":
            start("keeper", dsn, queue="outage.other")
            wait_until(lambda: started_count(db) == 1, 30, "the housekeeper's startup()", children)
            wait_until(
                lambda: _leader_sessions(db) == ["jm_outage_keeper"],
                30,
                "the direct worker to be the housekeeper",
                children,
            )
        busy = [
            start(f"busy-{kind}", proxied, kind=kind, sleep=TASK_SECONDS)
            for kind in ("sync", "async")
        ]
        wait_until(
            lambda: started_count(db) == len(children), 30, "the workers' startup()", children
        )
        with jm.Client(dsn, queue=QUEUE) as client:
            tids = [client.send({"seq": seq}) for seq in range(len(busy))]
            wait_until(
                lambda: (
                    db.execute("SELECT count(DISTINCT pid) FROM processed").fetchone()
                    == (len(busy),)
                ),
                30,
                "each worker behind the proxy to run a long task",
                children,
            )
            before = registrations(db)
            assert set(before) == {c.pid for c in children}, before

            proxy.cut()
            cut_at = time.monotonic()
            wait_until(
                lambda: time.monotonic() - cut_at >= OUTAGE,
                OUTAGE + 5,
                "the outage",
                children,
                interval=0.2,
            )
            proxy.restore()

            for seq, tid in enumerate(tids):
                assert client.wait(tid, timeout=TASK_SECONDS + 30) == expected_reply(seq), logs()
            runs = db.execute(
                "SELECT task_id, count(*) FROM processed GROUP BY task_id ORDER BY task_id"
            ).fetchall()
            died = db.execute(
                "SELECT task_id, result FROM jobmachine.result"
                " WHERE resulttype = 'error' AND result::jsonb ->> 'type' = 'WorkerDied'"
            ).fetchall()
            after = registrations(db)
        assert runs == [(tid, 1) for tid in tids], f"tasks run twice: {runs}\n{logs()}"
        assert died == [], f"live workers reaped: {died}\n{logs()}"
        assert after == before, f"registrations before {before}, after {after}\n{logs()}"
        terminate_and_check(children, timeout=15)
    finally:
        kill_all(children)
        proxy.close()


def test_the_judge_clock_restarts_after_a_cut_and_on_a_new_server_life() -> None:
    """The housekeeper's rule 1 by itself (no server needed): a blip keeps
    its right to judge, a longer cut and a new server life (a restart, or
    a promoted standby's new timeline, as the heartbeat reports them) take
    it away for the reconnect grace."""
    live = Liveness(
        "host=127.0.0.1 port=1 dbname=none",
        ["q"],
        dead_after=8.0,
        retries=0,
        max_runtime=None,
        orphan_after=60.0,
        remove_after_days=1.0,
        housekeeping_interval=60.0,
    )
    try:
        assert not live.may_judge()  # just started
        live.judge_since -= live.grace
        live._note_beat("life 1 timeline 00000001")
        assert live.may_judge()
        live._cut_off = True  # a pg_terminate_backend, back at once
        live._note_beat("life 1 timeline 00000001")
        assert live.may_judge()
        live._last_beat -= live.interval * 2  # cut off for longer than a blip
        live._cut_off = True
        live._note_beat("life 1 timeline 00000001")
        assert not live.may_judge()
        live.judge_since -= live.grace
        live._note_beat("life 1 timeline 00000002")  # promoted: a new timeline
        assert not live.may_judge()
    finally:
        live.stop(hand_back=False)
