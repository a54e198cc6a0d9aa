"""A server that refuses writes (SQLSTATE 25006, ``read_only_sql_transaction``)
is a lost connection, not a crash (issue 14, item 6; docs/ha.md).

A standby, or a primary that an HA manager demoted or made read-only,
answers every write with 25006; psycopg raises ``ReadOnlySqlTransaction``, an
``InternalError``. The Store translates it, at one point, into
``ServerReadOnly`` (a ``ConnectionLost``) and drops the connection, so that
the next call connects again, to the new primary when the DSN lists every
node with ``target_session_attrs=read-write``. Here the database is made
read-only for new sessions (``ALTER DATABASE ... SET
default_transaction_read_only``) and the worker's sessions are terminated:
it comes back to a read-only server, must ride that out as a lost
connection (reconnecting with backoff, not crashing, not looping on the same
read-only session), and do the task once the database takes writes again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import job_machine as jm
from tests.support.appconns import terminate
from tests.support.procs import (
    expected_reply,
    kill_all,
    start_worker,
    started_count,
    terminate_and_check,
    wait_until,
)

QUEUE = "ro.test"
APP = "jm_read_only_w"


def _set_read_only(db: psycopg.Connection[Any], dbname: str, on: bool) -> None:
    name = sql.Identifier(dbname)
    if on:
        db.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(name))
    else:
        db.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(name))


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_read_only_server_is_a_lost_connection_not_a_crash(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path, kind: str
) -> None:
    dbname = str(conninfo_to_dict(dsn)["dbname"])
    worker = start_worker(
        make_conninfo(dsn, application_name=APP), QUEUE, tmp_path, "w", kind=kind, timeout=1
    )
    try:
        wait_until(lambda: started_count(db) == 1, 30, "the worker's startup()", [worker])
        with jm.Client(dsn, queue=QUEUE) as client:
            warm = client.send({"seq": 0})  # the client's session opens read-write
            assert client.wait(warm, timeout=10) == expected_reply(0)
            _set_read_only(db, dbname, True)
            try:
                terminate(db, APP)
                tid = client.send({"seq": 1})
                wait_until(
                    lambda: worker.log(tail=1 << 20).count("the server is read-only") >= 3,
                    20,
                    "the worker to meet the read-only server again and again",
                    [worker],
                )
                assert client.task_info(tid).state == "waiting"
            finally:
                _set_read_only(db, dbname, False)
            assert client.wait(tid, timeout=15) == expected_reply(1), worker.describe()
        assert worker.alive(), worker.describe()
        terminate_and_check([worker], timeout=10)
    finally:
        kill_all([worker])


def test_a_client_on_a_read_only_server_raises_server_read_only_and_reconnects(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    dbname = str(conninfo_to_dict(dsn)["dbname"])
    _set_read_only(db, dbname, True)
    try:
        with jm.Client(dsn, queue=QUEUE) as client:
            with pytest.raises(jm.ServerReadOnly, match="read-only") as caught:
                client.send("refused")
            assert isinstance(caught.value, jm.ConnectionLost)
            _set_read_only(db, dbname, False)
            # The read-only session was dropped: the next call connects anew.
            tid = client.send("taken")
            assert client.task_info(tid).state == "waiting"
    finally:
        _set_read_only(db, dbname, False)
