"""A Store bound to one connection (``Store.on(conn)``): the registry
session's and a housekeeping round's statements run on that connection,
never on one the Store would take itself."""

from __future__ import annotations

from typing import Any

import psycopg

import job_machine as jm
from job_machine._lock_keys import CHORE_LOCK_KEY


def _setting(conn: psycopg.Connection[Any], name: str) -> str:
    row = conn.execute("SELECT current_setting(%s)", [name]).fetchone()
    assert row is not None
    return str(row[0])


def test_a_bound_store_runs_its_statements_on_that_session(dsn: str, client: jm.Client) -> None:
    store = client._store
    with psycopg.connect(dsn, autocommit=True) as session:
        bound = store.on(session)
        bound.session_set({"application_name": "bound-session"})
        assert _setting(session, "application_name") == "bound-session"
        # The Store's own connection is untouched, and the Store itself unbound.
        store.session_set({"application_name": "own-connection"})
        own = client._connector.opened
        assert own is not None and own is not session
        assert _setting(own, "application_name") == "own-connection"
        assert _setting(session, "application_name") == "bound-session"

        # The fleet's housekeeper lock is the session's: held by its backend.
        assert bound.leader_lock()
        holder = session.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND ((classid::bigint << 32) | objid::bigint) = %s",
            [CHORE_LOCK_KEY & 0xFFFFFFFFFFFFFFFF],
        ).fetchall()
        assert [r[0] for r in holder] == [session.info.backend_pid]


def test_bound_stores_share_their_store_s_state(dsn: str, client: jm.Client) -> None:
    """A round binds the Store afresh each time: what it learns once (a
    warning given) is the Store's, not the round's."""
    store = client._store
    with psycopg.connect(dsn, autocommit=True) as session:
        bound = store.on(session)
        bound._warned.add("schedules")
        assert "schedules" in store._warned
        assert store.on(session)._session is session and store._session is None
