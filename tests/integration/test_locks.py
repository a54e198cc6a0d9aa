"""Named locks (Client/Worker.lock and unlock): holds, limits, expiry,
check-only locks, release by id or oldest, bad input, and at most ``limit``
holders at once across real processes."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import job_machine as jm
from tests.support.procs import wait_until

ROOT = Path(__file__).resolve().parents[2]


def holds(conn: psycopg.Connection[Any], name: str) -> list[int]:
    """The unexpired holds of a name, by id."""
    return [
        int(r[0])
        for r in conn.execute(
            "SELECT lock_id FROM jobmachine.lock WHERE name = %s AND expires > clock_timestamp()"
            " ORDER BY lock_id",
            (name,),
        )
    ]


def test_lock_and_unlock(client: jm.Client, conn: psycopg.Connection[Any]) -> None:
    first = client.lock("res", 10)
    assert isinstance(first, int) and first > 0
    assert client.lock("res", 10) is None  # held
    assert client.lock("other", 10) not in (None, first)  # names are independent
    assert holds(conn, "res") == [first]
    assert client.unlock("res") is True
    assert client.unlock("res") is False  # nothing held any more
    assert holds(conn, "res") == []
    second = client.lock("res", timedelta(seconds=10))
    assert second is not None and second != first
    assert client.unlock("res", second) is True
    assert client.unlock("nobody-took-this") is False


def test_another_client_sees_the_hold(dsn: str, client: jm.Client) -> None:
    with jm.Client(dsn) as other:
        tid = client.lock("shared", 10)
        assert tid is not None
        assert other.lock("shared", 10) is None
        assert other.unlock("shared", tid) is True  # anyone may release a hold by id
        assert other.lock("shared", 10) is not None


def test_a_worker_takes_locks_too(dsn: str, client: jm.Client) -> None:
    with jm.Worker(dsn, queue="job.task") as w:
        got = w.lock("w", 10)
        assert got is not None
        assert client.lock("w", 10) is None
        assert w.unlock("w", got) is True
        assert client.lock("w", 10) is not None


async def test_the_async_client_locks(dsn: str, client: jm.Client) -> None:
    async with jm.AsyncClient(dsn) as a:
        got = await a.lock("a", 10)
        assert got is not None
        assert await a.lock("a", 10) is None
        assert client.lock("a", 10) is None
        assert await a.unlock("a", got) is True
        assert await a.unlock("a", got) is False


def test_a_limit_of_two_allows_two_holders(
    client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    a = client.lock("two", 10, limit=2)
    b = client.lock("two", 10, limit=2)
    assert a is not None and b is not None and a != b
    assert client.lock("two", 10, limit=2) is None
    assert client.lock("two", 10) is None  # limit 1 while two are held
    assert client.lock("two", 10, limit=3) is not None  # the limit is the caller's
    assert len(holds(conn, "two")) == 3
    assert client.lock("two", 10, limit=3) is None
    assert client.unlock("two", a) is True
    assert client.lock("two", 10, limit=2) is None  # still two held (b and the third)
    assert client.lock("two", 10, limit=3) is not None


def test_a_hold_expires(client: jm.Client, conn: psycopg.Connection[Any]) -> None:
    short = client.lock("exp", 0.3)
    assert short is not None
    assert client.lock("exp", 10) is None
    wait_until(lambda: holds(conn, "exp") == [], 5, "the 0.3 s hold to expire")
    assert client.unlock("exp", short) is False  # an expired hold is not released
    assert client.unlock("exp") is False
    longer = client.lock("exp", 10)
    assert longer is not None
    # The expired row was swept by that lock(): only the new hold is left.
    assert [r[0] for r in conn.execute("SELECT lock_id FROM jobmachine.lock")] == [longer]


def test_an_expiring_hold_makes_room_under_a_limit(
    client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    assert client.lock("lim", 0.3, limit=2) is not None
    held = client.lock("lim", 10, limit=2)
    assert held is not None
    assert client.lock("lim", 10, limit=2) is None
    wait_until(lambda: holds(conn, "lim") == [held], 5, "the 0.3 s hold to expire")
    assert client.lock("lim", 10, limit=2) is not None
    assert client.lock("lim", 10, limit=2) is None


def test_lock_free_only_checks(client: jm.Client, conn: psycopg.Connection[Any]) -> None:
    assert client.lock_free("chk") is True
    assert holds(conn, "chk") == []
    got = client.lock("chk", 10)
    assert got is not None and got > 0  # the check took nothing
    assert client.lock_free("chk") is False  # held now
    assert client.lock_free("chk", limit=2) is True  # one of two is free
    assert holds(conn, "chk") == [got]
    with pytest.raises(ValueError, match="expire must be a number of seconds > 0"):
        client.lock("chk", 0)


def test_unlock_by_id_or_else_the_hold_that_expires_first(
    client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    late = client.lock("u", 20, limit=3)
    soon = client.lock("u", 5, limit=3)
    mid = client.lock("u", 10, limit=3)
    assert None not in (late, soon, mid)
    assert client.unlock("u", mid) is True  # by id
    assert holds(conn, "u") == sorted([late, soon])  # type: ignore[type-var]
    assert client.unlock("u", mid) is False
    assert client.unlock("other-name", late) is False  # the id must be of that name
    assert client.unlock("u") is True  # the one expiring first
    assert holds(conn, "u") == [late]
    assert client.unlock("u") is True
    assert holds(conn, "u") == []


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("", 10), {}, "lock name"),
        ((None, 10), {}, "lock name"),
        ((5, 10), {}, "lock name"),
        (("n", -1), {}, "expire"),
        (("n", "10"), {}, "expire"),
        (("n", True), {}, "expire"),
        (("n", math.nan), {}, "expire"),
        (("n", timedelta(seconds=-1)), {}, "expire"),
        (("n", 10), {"limit": 0}, "limit"),
        (("n", 10), {"limit": 1.5}, "limit"),
        (("n", 10), {"limit": True}, "limit"),
        (("n", 10), {"limit": None}, "limit"),
    ],
)
def test_lock_rejects_bad_input(
    client: jm.Client, conn: psycopg.Connection[Any], args: Any, kwargs: Any, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        client.lock(*args, **kwargs)
    assert conn.execute("SELECT count(*) FROM jobmachine.lock").fetchone() == (0,)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("n", math.inf), {}, "expire"),
        (("n", 1e300), {}, "expire"),
        (("n", timedelta.max), {}, "expire"),
        (("n", 10), {"limit": 2**31}, "limit"),
    ],
)
def test_lock_rejects_out_of_range_input(
    client: jm.Client, conn: psycopg.Connection[Any], args: Any, kwargs: Any, match: str
) -> None:
    """Numbers the database cannot take (an interval or int out of range)
    are bad input like the others: a ValueError naming the argument, not a
    psycopg error from inside jobmachine.lock()."""
    with pytest.raises(ValueError, match=match):
        client.lock(*args, **kwargs)
    assert conn.execute("SELECT count(*) FROM jobmachine.lock").fetchone() == (0,)


@pytest.mark.parametrize("lock_id", ["abc", 1.5, True])
def test_unlock_rejects_a_bad_lock_id(client: jm.Client, lock_id: Any) -> None:
    held = client.lock("n", 10)
    with pytest.raises(ValueError, match="lock_id"):
        client.unlock("n", lock_id)
    assert client.unlock("n", held) is True


# -- concurrency: real processes -------------------------------------------------------

CHILD = r"""
import os, sys, time
import psycopg
import job_machine as jm

dsn, name = sys.argv[1], sys.argv[2]
limit, rounds, n = (int(a) for a in sys.argv[3:6])
rec = psycopg.connect(dsn, autocommit=True)
rec.execute("INSERT INTO lock_ready (pid) VALUES (%s)", (os.getpid(),))
deadline = time.monotonic() + 30
while rec.execute("SELECT count(*) FROM lock_ready").fetchone()[0] < n:
    assert time.monotonic() < deadline, "the others did not start"
    time.sleep(0.005)
with jm.Client(dsn) as client:
    for r in range(rounds):
        while (lock_id := client.lock(name, 5, limit=limit)) is None:
            time.sleep(0.001)
        (inside,) = rec.execute(
            "UPDATE lock_counter SET n = n + 1 RETURNING n"
        ).fetchone()
        rec.execute(
            "INSERT INTO lock_log (pid, round, inside, entered)"
            " VALUES (%s, %s, %s, clock_timestamp())",
            (os.getpid(), r, inside),
        )
        time.sleep(0.005)
        rec.execute("UPDATE lock_counter SET n = n - 1")
        rec.execute(
            "UPDATE lock_log SET left_at = clock_timestamp() WHERE pid = %s AND round = %s",
            (os.getpid(), r),
        )
        assert client.unlock(name, lock_id), "my hold was gone"
print("ok")
"""


@pytest.mark.parametrize("limit", [1, 2])
def test_never_more_than_limit_holders_across_processes(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, limit: int
) -> None:
    procs, rounds = 4, 30
    conn.execute(
        "CREATE TABLE lock_ready (pid int);"
        "CREATE TABLE lock_counter (n int NOT NULL); INSERT INTO lock_counter VALUES (0);"
        "CREATE TABLE lock_log (pid int, round int, inside int, entered timestamptz,"
        " left_at timestamptz)"
    )
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    children = []
    for i in range(procs):
        err = open(tmp_path / f"c{i}.stderr", "wb")  # noqa: SIM115
        children.append(
            (
                subprocess.Popen(
                    [sys.executable, "-c", CHILD, dsn, "r", str(limit), str(rounds), str(procs)],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=err,
                ),
                err,
            )
        )
    try:
        for i, (p, err) in enumerate(children):
            out, _ = p.communicate(timeout=50)
            err.close()
            log = (tmp_path / f"c{i}.stderr").read_text(errors="replace")
            assert (p.returncode, out.strip()) == (0, b"ok"), log
    finally:
        for p, err in children:
            if p.poll() is None:
                p.kill()
                p.wait(10)
            err.close()
    entries = conn.execute("SELECT inside, entered, left_at FROM lock_log").fetchall()
    assert len(entries) == procs * rounds
    # The counter of those inside never went over the limit...
    assert max(e[0] for e in entries) <= limit
    # ...nor did the overlap of the recorded [entered, left_at] intervals.
    events = sorted([(e[1], 1) for e in entries] + [(e[2], -1) for e in entries])
    inside = most = 0
    for _, step in events:
        inside += step
        most = max(most, inside)
    assert most <= limit
    if limit > 1:
        # And the limit was used: holders did overlap (4 processes, 120 rounds).
        assert max(e[0] for e in entries) == limit
    assert conn.execute("SELECT n FROM lock_counter").fetchone() == (0,)
    assert holds(conn, "r") == []
