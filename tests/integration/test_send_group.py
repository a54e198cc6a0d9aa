"""Concurrent sends of one client are written together (job_machine/_async/sender.py)."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

import job_machine as jm
from tests.support.procs import wait_until

QUEUE = "group.send"


def _tasks(conn: psycopg.Connection[Any]) -> dict[int, Any]:
    rows = conn.execute("SELECT task_id, parameters FROM jobmachine.task").fetchall()
    return {int(r[0]): json.loads(r[1]) for r in rows}


async def test_concurrent_sends_share_statements_and_each_gets_its_own_id(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    async with jm.AsyncClient(dsn, queue=QUEUE) as client:
        statements: list[int] = []
        one, many = client._store.task_insert, client._store.task_insert_many

        async def count_one(*args: Any) -> Any:
            statements.append(1)
            return await one(*args)

        async def count_many(queue: str, parameters: Any, *args: Any) -> Any:
            statements.append(len(parameters))
            return await many(queue, parameters, *args)

        client._store.task_insert = count_one  # type: ignore[method-assign]
        client._store.task_insert_many = count_many  # type: ignore[method-assign]
        sends = [client.send({"n": n}) for n in range(300)]
        sends += [client.send({"n": n}, priority=5) for n in range(300, 350)]
        ids = await asyncio.gather(*sends)
    assert len(set(ids)) == 350
    stored = _tasks(conn)
    assert [stored[t] for t in ids] == [{"n": n} for n in range(350)]
    assert sum(statements) == 350
    assert len(statements) < 50, statements  # together, not one statement per send
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE priority = 5), count(*) FROM jobmachine.task"
    ).fetchone()
    assert row == (50, 350)


def test_threads_sending_on_one_client_each_get_their_task(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with jm.Client(dsn, queue=QUEUE) as client, ThreadPoolExecutor(50) as pool:
        ids = list(pool.map(lambda n: client.send({"n": n}), range(500)))
    stored = _tasks(conn)
    assert len(set(ids)) == 500
    assert [stored[t] for t in ids] == [{"n": n} for n in range(500)]


async def _blocked_sends(dsn: str, conn: psycopg.Connection[Any]) -> Any:
    """Hold the task table so the first send's statement waits, with three
    more sends queued behind it."""
    client = jm.AsyncClient(dsn, queue=QUEUE)
    await client.send("warm-up")  # the connection and the class row exist
    blocker = psycopg.connect(dsn)
    blocker.execute("LOCK TABLE jobmachine.task IN SHARE MODE")
    first = asyncio.create_task(client.send("first"))
    await asyncio.to_thread(
        wait_until,
        lambda: conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()"
        ).fetchone()[0],  # type: ignore[index]
        10,
        "the first send waiting for the table",
    )
    queued = [asyncio.create_task(client.send(name)) for name in ("a", "b", "c")]
    await asyncio.to_thread(
        wait_until, lambda: len(client._sends._queue) >= 3, 10, "three sends queued", interval=0.005
    )
    return blocker, client, first, queued


async def test_a_send_given_up_before_its_turn_is_never_written(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    blocker, client, first, (a, b, c) = await _blocked_sends(dsn, conn)
    try:
        b.cancel()
        with pytest.raises(asyncio.CancelledError):
            await b
        blocker.rollback()
        ids = await asyncio.gather(first, a, c)
    finally:
        blocker.close()
        await client.close()
    stored = _tasks(conn)
    assert [stored[t] for t in ids] == ["first", "a", "c"]
    assert sorted(stored.values()) == ["a", "c", "first", "warm-up"]


async def test_a_writer_cancelled_mid_statement_still_writes_for_the_others(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """The writer's caller gives up while its statement waits: a waiting
    send takes over the queue and every queued send is written once. The
    cancelled send's own task may or may not be written (psycopg asks the
    server to cancel the statement, which races with the lock's release), as
    with any send cancelled after its statement went out."""
    blocker, client, first, queued = await _blocked_sends(dsn, conn)
    try:
        first.cancel()
        blocker.rollback()
        ids = await asyncio.wait_for(asyncio.gather(*queued), 10)
        with pytest.raises(asyncio.CancelledError):
            await first
    finally:
        blocker.close()
        await client.close()
    stored = _tasks(conn)
    assert [stored[t] for t in ids] == ["a", "b", "c"]
    assert sorted(v for v in stored.values() if v != "first") == ["a", "b", "c", "warm-up"]
    assert list(stored.values()).count("first") <= 1
