"""Behind a real PgBouncer in transaction pooling mode: what works through it
(sends, checks, replies, task_info, a worker's claims and answers) and how a
worker is set up so that it still wakes at once (``listen_dsn`` direct).

These tests need Debian's ``pgbouncer`` package, so they carry the
``pgbouncer`` marker and are left out of a plain ``pytest`` run; ``.ci/run``
installs the package and runs them with ``pytest -m pgbouncer``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import job_machine as jm
from tests.support.pgserver import PgBouncer, PgServer
from tests.support.workers import Observed

pytestmark = pytest.mark.pgbouncer

#: psycopg must not prepare statements: a transaction-mode pooler runs the
#: next execution on another server connection, where the statement is unknown.
NO_PREPARE: dict[str, Any] = {"prepare_threshold": None}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PgServer, PgBouncer]]:
    tmp: Path = tmp_path_factory.mktemp("bouncer")
    server = PgServer.start_new(tmp)
    try:
        with psycopg.connect(server.dsn, autocommit=True) as c:
            c.execute("CREATE DATABASE jm")
        jm.install_schema(server.dsn_for("jm"))
        bouncer = PgBouncer(server, tmp)
        try:
            yield server, bouncer
        finally:
            bouncer.stop()
    finally:
        server.cleanup()


class Echo(Observed):
    handle_signals = False
    queue = "bouncer.q"

    def process(self, task: jm.Task) -> None:
        self.reply({"echo": task.data})


def test_client_calls_work_through_a_transaction_pooler(
    stack: tuple[PgServer, PgBouncer],
) -> None:
    _, bouncer = stack
    via = bouncer.dsn_for("jm")
    with jm.Client(via, queue="bouncer.q", connect_kwargs=NO_PREPARE) as client:
        # Many executions of the same statements: psycopg would prepare them
        # after 5 without prepare_threshold=None, and the pooler would break that.
        tids = [client.send({"n": n}) for n in range(30)]
        assert all(client.check(t) is False for t in tids)
        info = client.task_info(tids[0])
        assert (info.state, info.data) == ("waiting", {"n": 0})
        with Echo(via, connect_kwargs=NO_PREPARE) as w:
            for _ in tids:
                assert w.work_once()
        assert [client.receive(t) for t in tids] == [{"echo": {"n": n}} for n in range(30)]


def test_a_worker_works_through_the_pooler_and_listens_direct(
    stack: tuple[PgServer, PgBouncer],
) -> None:
    """``listen_dsn`` gives the worker's LISTEN and registry session a direct
    connection; claims and replies go through the pooler. The worker wakes
    on a send at once, not after its 30 s timeout."""
    server, bouncer = stack
    via, direct = bouncer.dsn_for("jm"), server.dsn_for("jm")
    w = Echo(via, listen_dsn=direct, connect_kwargs=NO_PREPARE, timeout=30)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            w.receive()
        except BaseException as ex:  # surfaced below
            errors.append(ex)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with jm.Client(via, queue="bouncer.q", connect_kwargs=NO_PREPARE) as sender:
            w.wait_idle(after=0)  # registered and listening
            # wait() needs LISTEN: the client's reply listener connects direct,
            # its reads go through the pooler.
            with jm.Client(via, listen_dsn=direct, connect_kwargs=NO_PREPARE) as waiter:
                for n in range(20):
                    t0 = time.monotonic()
                    tid = sender.send({"n": n})
                    assert waiter.wait(tid, timeout=5) == {"echo": {"n": n}}
                    assert time.monotonic() - t0 < 2.0
        with psycopg.connect(direct) as c:
            row = c.execute(
                "SELECT host IS NOT NULL FROM jobmachine.worker WHERE worker_id = %s",
                (w.worker_id,),
            ).fetchone()
            assert row == (True,)
    finally:
        w.stop()
        t.join(10)
    assert not errors, errors
    assert not t.is_alive()
