"""The asyncio face: the same story as the sync one, on AsyncConnection."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

import job_machine as jm
from job_machine._schema_sql import SCHEMA_VERSION


class AsyncEcho(jm.AsyncWorker):
    started = 0

    async def startup(self) -> None:
        type(self).started += 1

    async def process(self, task: jm.Task) -> None:
        if task.data == "boom":
            raise RuntimeError("boom")
        await self.reply({"echo": task.data, "attempt": task.attempt})


async def test_async_send_wait_reply(dsn: str) -> None:
    worker = AsyncEcho(dsn, queue="job.async", timeout=30)
    serving = asyncio.create_task(worker.receive())
    try:
        async with jm.AsyncClient(dsn, queue="job.async") as client:
            tid = await client.send({"n": 1})
            assert await client.wait(tid, timeout=10) == {"echo": {"n": 1}, "attempt": 1}
            assert await client.check(tid)
            assert await client.receive() == {"echo": {"n": 1}, "attempt": 1}
            # A later client, new connection, same answer.
            async with jm.AsyncClient(dsn) as later:
                assert await later.check(tid)
                assert await later.receive(tid) == {"echo": {"n": 1}, "attempt": 1}
    finally:
        worker.stop()
        await asyncio.wait_for(serving, 5)
    assert AsyncEcho.started == 1


async def test_async_failure_is_retried_then_failed(dsn: str) -> None:
    async with (
        AsyncEcho(dsn, queue="job.async", retries=1, retry_backoff=0) as worker,
        jm.AsyncClient(dsn, queue="job.async") as client,
    ):
        tid = await client.send("boom")
        assert await worker.work_once()
        assert not await client.check(tid)  # back to waiting for its retry
        assert await worker.work_once()
        assert await client.check(tid)
        with pytest.raises(jm.TaskFailed, match="boom") as failed:
            await client.receive(tid)
        assert failed.value.error["type"] == "RuntimeError"
        assert "Traceback" in failed.value.error["traceback"]
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT status, attempts FROM jobmachine.task WHERE task_id = %s", [tid]
        ).fetchone()
    assert row == (900, 2)


async def test_async_wait_times_out(dsn: str) -> None:
    async with jm.AsyncClient(dsn, queue="job.async") as client:
        tid = await client.send({})
        with pytest.raises(jm.WaitTimeout, match=str(tid)):
            await client.wait(tid, timeout=0.2)


async def test_async_send_in_callers_transaction(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        client = jm.AsyncClient(conn=conn, queue="job.async")
        async with conn.transaction(force_rollback=True):
            tid = await client.send({"x": 1})
        with pytest.raises(jm.UnknownTask):
            await client.check(tid)


async def test_async_install_schema_is_idempotent(empty_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(empty_dsn, autocommit=True) as conn:
        await jm.ainstall_schema(conn)
        await jm.ainstall_schema(conn)
        cur = await conn.execute("SELECT max(version) FROM jobmachine.schema_version")
        assert (await cur.fetchone()) == (SCHEMA_VERSION,)
