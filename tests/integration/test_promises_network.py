"""README, "What is guaranteed": a worker whose network vanishes loses no
task; its task waits again within ``dead_after``, "or about 10 s more when
its network vanished (TCP keepalives)".

The network of tests/integration/test_half_open.py (a private PostgreSQL in
a network namespace, reached over a veth pair that is cut silently), but the
other way round: there the workers notice the cut; here the *server* must
drop the vanished worker's registry session (the server-side keepalives it
sets), so that another worker, reaching the server over its Unix socket,
rescues the task. Needs root and iproute2 (``ip netns``); like
test_half_open.py it fails rather than skips without them.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

import job_machine as jm
from tests.integration.test_half_open import (  # the fixtures, used by name below
    Link,
    Server,
    link,  # noqa: F401
    server,  # noqa: F401
)
from tests.support.procs import wait_until
from tests.support.rows import error_types, result_rows, task_state
from tests.support.workers import Base, serving

QUEUE = "vanish.q"
DEAD_AFTER = 2.0
#: README: "about 10 s more when its network vanished". The registry
#: session's server-side keepalives (liveness.SERVER_KEEPALIVES) make it so:
#: probes after 4 s idle, every 2 s, dropped after 3 unanswered, 4 + 2 * 3.
SERVER_DROP = 10.0
#: Scheduling and timer slack (as in test_half_open.py).
SLACK = 5.0


class Stranded(Base):
    """Holds its task until ``release`` is set, then tries to reply and
    records what that did (a reply refused raises TaskNotHeld)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.started = threading.Event()
        self.release = threading.Event()
        self.outcome: BaseException | str | None = None
        self.answered = threading.Event()

    def handle(self, task: jm.Task) -> None:
        self.started.set()
        self.release.wait(120)
        try:
            self.reply("from the vanished worker")
            self.outcome = "replied"
        except BaseException as ex:  # the test examines it
            self.outcome = ex
        finally:
            self.answered.set()


class Rescuer(Base):
    def handle(self, task: jm.Task) -> None:
        self.reply("from the rescuer")


def _lock_held(conn: psycopg.Connection[Any], worker_id: int) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND classid = 1785558891 AND objid = %s AND objsubid = 2"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (worker_id % 2**31,),
    ).fetchone()
    return bool(row and row[0])


def test_the_task_of_a_worker_whose_network_vanished_is_rescued(
    link: Link,  # noqa: F811
    server: Server,  # noqa: F811
) -> None:
    """Worker A reaches the server over the veth and runs a long task;
    worker B reaches it over the Unix socket. The veth is cut. The server
    must drop A's registry session (its liveness lock disappears) within the
    keepalives' SERVER_DROP seconds, and B must run A's task (a
    ``WorkerDied`` error, then B's reply) within SERVER_DROP + dead_after.
    Once the network is back, A's late reply is refused (``TaskNotHeld``)
    and the task has exactly one reply, B's."""
    vanishing = Stranded(server.pg.dsn, queue=QUEUE, dead_after=DEAD_AFTER, timeout=60)
    rescuer = Rescuer(server.local_dsn, queue=QUEUE, dead_after=DEAD_AFTER, timeout=60)
    with (
        psycopg.connect(server.local_dsn, autocommit=True) as conn,
        jm.Client(server.local_dsn, queue=QUEUE) as client,
        serving(vanishing),
    ):
        tid = client.send("long")
        assert vanishing.started.wait(10)
        assert vanishing.worker_id is not None
        assert _lock_held(conn, vanishing.worker_id)
        with serving(rescuer):
            cut = time.monotonic()
            link.cut()
            try:
                wait_until(
                    lambda: not _lock_held(conn, vanishing.worker_id),  # type: ignore[arg-type]
                    SERVER_DROP + SLACK,
                    "the server to drop the vanished worker's registry session",
                )
                dropped = time.monotonic() - cut
                wait_until(
                    lambda: task_state(conn, tid)[0] == jm.Status.FINISHED,
                    DEAD_AFTER + SLACK,
                    "the rescuer to run the vanished worker's task",
                )
                done = time.monotonic() - cut
            finally:
                link.restore()
            assert dropped >= SERVER_DROP - 2, f"dropped after {dropped:.1f} s: not by keepalives?"
            assert done <= SERVER_DROP + DEAD_AFTER + SLACK
            assert error_types(conn, tid) == ["WorkerDied"]
            assert [t.data for t in rescuer.seen] == ["long"]
            vanishing.release.set()
            assert vanishing.answered.wait(60), "the vanished worker's reply never came back"
            assert isinstance(vanishing.outcome, jm.TaskNotHeld), repr(vanishing.outcome)
        replies = [body for body, rtype in result_rows(conn, tid) if rtype != "error"]
        assert replies == ['"from the rescuer"']
    print(f"registry session dropped {dropped:.1f} s after the cut; task done at {done:.1f} s")
