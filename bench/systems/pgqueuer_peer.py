"""pgqueuer (asyncpg driver, as in pgqueuer's own docs), adapted from the
shared harness's ``peers/peer_pgqueuer.py``.

Worker: ``PgQueuer(AsyncpgDriver(conn)).run()`` with its defaults
(batch_size=10, entrypoint concurrency_limit=0 = unlimited, dequeue_timeout
30 s); a drain uses ``QueueExecutionMode.drain``. It has no sync worker and no
per-process concurrency knob comparable to job_machine's, so the concurrency
and async drain rows do not apply.

Round trip: pgqueuer has no result payload; measured is submit -> terminal
status seen by its ``CompletionWatcher`` (LISTEN/NOTIFY + its 50 ms debounce).

Reply drains: pgqueuer has no reply API (a job ends with a status, never a
value for the submitter), so the drain_reply rows are "not supported" and are
compared with its plain drain rows.

Callers: one ``Queries`` on one asyncpg connection (its ``AsyncpgDriver``
serializes the callers' statements with a lock, as job_machine's one
connection does) and one ``CompletionWatcher`` on a second connection, shared
by every caller; a call is enqueue, then ``wait_for(job_id)`` bounded by the
call's timeout. Async-only: no threads row.

History: pgqueuer deletes a finished job from its queue table and logs it in
``pgqueuer_log``; the history is that many (already aggregated) log rows.

Runs in its own venv (bench/systems/__init__.py), so mypy does not see its imports.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from typing import Any

import asyncpg  # type: ignore[import-not-found, unused-ignore]
from pgqueuer import AsyncpgDriver, PgQueuer, Queries  # type: ignore[import-not-found, unused-ignore]
from pgqueuer.core.completion import CompletionWatcher  # type: ignore[import-not-found, unused-ignore]
from pgqueuer.domain.types import QueueExecutionMode  # type: ignore[import-not-found, unused-ignore]

from bench import harness


class PgQueuerAdapter(harness.Adapter):
    name = "pgqueuer"
    remaining_sql = "SELECT count(*) FROM pgqueuer"

    def version(self) -> str:
        return f"{version('pgqueuer')} (asyncpg {version('asyncpg')})"

    def concurrency_note(self, spec: harness.WorkerSpec) -> str:
        return "batch_size=10, concurrency_limit=0 (defaults)"

    def check_spec(self, spec: harness.WorkerSpec) -> None:
        if spec.use_async or spec.concurrency is not None:
            raise harness.Unsupported(
                "async-only, unbounded concurrency by default: see the default drain rows"
            )

    async def reset(self) -> None:
        harness.reset_database(self.dsn)
        conn = await asyncpg.connect(self.dsn)
        try:
            await Queries(AsyncpgDriver(conn)).install()
        finally:
            await conn.close()

    def fill_history(self, n: int) -> None:
        harness.execute(
            self.dsn,
            "INSERT INTO pgqueuer_log (created, job_id, status, priority, entrypoint, aggregated)"
            " SELECT now() - interval '1 hour', g, 'successful', 0, 'noop', true"
            f"   FROM generate_series(1, {int(n)}) g",
        )

    async def open_client(self) -> None:
        self.conn = await asyncpg.connect(self.dsn)
        self.queries = Queries(AsyncpgDriver(self.conn))
        self.watcher: Any = None

    async def close_client(self) -> None:
        if self.watcher is not None:
            await self.watcher.__aexit__(None, None, None)
            await self.wconn.close()
        await self.conn.close()

    async def enqueue(self, seq: int) -> None:
        await self.queries.enqueue("noop", str(seq).encode(), 0)

    async def enqueue_bulk(self, seqs: list[int]) -> None:
        await self.queries.enqueue(
            ["noop"] * len(seqs), [str(s).encode() for s in seqs], [0] * len(seqs)
        )

    async def open_callers(self, application_name: str, threads: bool) -> None:
        settings = {"application_name": application_name}
        self.cconn = await asyncpg.connect(self.dsn, server_settings=settings)
        self.cqueries = Queries(AsyncpgDriver(self.cconn))
        self.cwconn = await asyncpg.connect(self.dsn, server_settings=settings)
        driver = AsyncpgDriver(self.cwconn)
        self.cwatcher = CompletionWatcher(driver, queries=Queries(driver))
        await self.cwatcher.__aenter__()

    async def close_callers(self) -> None:
        await self.cwatcher.__aexit__(None, None, None)
        await self.cwconn.close()
        await self.cconn.close()

    async def acall(self, seq: int, timeout: float) -> None:
        (job_id,) = await self.cqueries.enqueue("noop", str(seq).encode(), 0)
        try:
            status = await asyncio.wait_for(self.cwatcher.wait_for(job_id), timeout)
        except TimeoutError as e:
            raise harness.CallTimeout(f"job {job_id} not finished within {timeout} s") from e
        assert status == "successful", status

    async def roundtrip(self, seq: int) -> None:
        if self.watcher is None:
            self.wconn = await asyncpg.connect(self.dsn)
            driver = AsyncpgDriver(self.wconn)
            self.watcher = CompletionWatcher(driver, queries=Queries(driver))
            await self.watcher.__aenter__()
        (job_id,) = await self.queries.enqueue("noop", str(seq).encode(), 0)
        status = await self.watcher.wait_for(job_id)
        assert status == "successful", status

    def run_worker(self, spec: harness.WorkerSpec) -> None:
        async def go() -> None:
            conn = await asyncpg.connect(self.dsn)
            pgq = PgQueuer(AsyncpgDriver(conn))

            @pgq.entrypoint("noop")  # type: ignore[untyped-decorator, unused-ignore]
            async def noop(job: Any) -> None:
                harness.mark(int(job.payload))

            mode = QueueExecutionMode.drain if spec.drain else QueueExecutionMode.continuous
            await pgq.run(mode=mode)

        asyncio.run(go())


ADAPTER = PgQueuerAdapter
