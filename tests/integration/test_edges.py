"""Smaller edges of issue 14 (item 9): arguments that would never end, and
a listening connection that reaches another database than the work."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

import job_machine as jm
from job_machine._sync.connection import Connector
from job_machine._sync.store import Store
from job_machine.liveness import Liveness
from tests.conftest import drop_database, new_database
from tests.support.workers import Base, serving


@pytest.mark.parametrize("batch", [0, -1, 1.5, True, "10", 100_001])
def test_purge_refuses_a_batch_that_is_not_a_positive_whole_number(
    dsn: str, client: jm.Client, batch: Any
) -> None:
    client.send("x")
    outcome: list[BaseException | int] = []

    def purge() -> None:
        with jm.Admin(dsn) as admin:
            try:
                outcome.append(admin.purge(batch=batch))
            except BaseException as ex:  # judged in the test thread
                outcome.append(ex)

    t = threading.Thread(target=purge, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "purge() did not return"
    (got,) = outcome
    assert isinstance(got, ValueError), got
    assert "batch must be a whole number from 1 to 100000" in str(got)


# -- listen_dsn reaching another database ------------------------------------------


@pytest.fixture
def other_dsn(server_dsn: str, template_dsn: str) -> Iterator[str]:
    """A second database with the schema, on the same server."""
    d = new_database(server_dsn)
    yield d
    drop_database(server_dsn, d)


def _registered(registry: str) -> Liveness:
    live = Liveness(
        registry,
        ["job.task"],
        dead_after=15,
        retries=3,
        max_runtime=None,
        orphan_after=1800,
        remove_after_days=30,
        housekeeping_interval=60,
    )
    live.start()
    return live


def test_a_registry_in_another_database_is_detected(dsn: str, other_dsn: str) -> None:
    work = Store(Connector(dsn=dsn))
    live = _registered(other_dsn)
    try:
        assert live.worker_id is not None
        with pytest.raises(jm.JobMachineError, match="reaches another database") as caught:
            work.check_registered_here(live.worker_id, other_dsn)
        message = str(caught.value)
        assert f"dbname={conninfo_to_dict(other_dsn)['dbname']}" in message
        assert f"dbname={conninfo_to_dict(dsn)['dbname']}" in message
        # The same database: fine.
        same = Store(Connector(dsn=other_dsn))
        try:
            same.check_registered_here(live.worker_id, other_dsn)
        finally:
            same.connector.close()
    finally:
        live.stop()
        work.connector.close()


def _receive_outcome(w: jm.Worker, wait: float) -> BaseException | None:
    """What receive() raised within ``wait`` seconds (None: it still runs; stopped)."""
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            w.receive()
        except BaseException as ex:  # judged in the test thread
            outcome.append(ex)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(wait)
    w.stop()
    t.join(10)
    return outcome[0] if outcome else None


def test_a_worker_whose_listen_dsn_reaches_another_database_refuses_to_start(
    dsn: str, other_dsn: str
) -> None:
    w = Base(dsn, listen_dsn=other_dsn, timeout=60)
    got = _receive_outcome(w, 5)
    assert isinstance(got, jm.JobMachineError), got
    assert "reaches another database" in str(got)


def test_a_worker_serving_on_a_callers_connection_with_listen_dsn_commits_its_work(
    dsn: str, client: jm.Client
) -> None:
    with psycopg.connect(dsn) as wc:  # not autocommit
        w = Base(conn=wc, listen_dsn=dsn, timeout=60)
        with serving(w):
            tid = client.send("x")
            assert client.wait(tid, timeout=5) == {"echo": "x"}
        assert wc.autocommit is False
