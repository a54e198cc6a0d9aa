"""procrastinate (PsycopgConnector, async API, async no-op task), adapted from
the shared harness's ``peers/peer_procrastinate.py``.

Worker: ``app.run_worker_async()`` with procrastinate's defaults
(concurrency=1, listen_notify=True, fetch_job_polling_interval=5 s); the c8
rows pass ``concurrency=8``. It has no sync worker (the async drain rows do
not apply) and no result channel (no round trip).

History: finished jobs stay in ``procrastinate_jobs`` with status
'succeeded'; inserted with SQL (no event rows).

Runs in its own venv (bench/systems/__init__.py), so mypy does not see its imports.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from typing import Any

from procrastinate import App, PsycopgConnector  # type: ignore[import-not-found, unused-ignore]

from bench import harness

QUEUE = "bench"


def make_app(dsn: str) -> tuple[Any, Any]:
    app = App(connector=PsycopgConnector(conninfo=dsn))

    @app.task(name="noop", queue=QUEUE)  # type: ignore[untyped-decorator, unused-ignore]
    async def noop(seq: int) -> None:
        harness.mark(seq)

    return app, noop


class Procrastinate(harness.Adapter):
    name = "procrastinate"
    remaining_sql = "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"

    def version(self) -> str:
        return f"{version('procrastinate')} (psycopg {version('psycopg')})"

    def concurrency_note(self, spec: harness.WorkerSpec) -> str:
        if spec.concurrency is None:
            return "concurrency=1 (default)"
        return f"concurrency={spec.concurrency}"

    def check_spec(self, spec: harness.WorkerSpec) -> None:
        if spec.use_async:
            raise harness.Unsupported("async-only: see the default drain rows")

    async def reset(self) -> None:
        harness.reset_database(self.dsn)
        app, _ = make_app(self.dsn)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    def fill_history(self, n: int) -> None:
        harness.execute(
            self.dsn,
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, attempts)"
            f" SELECT '{QUEUE}', 'noop', '{{\"seq\": -1}}', 'succeeded', 1"
            f"   FROM generate_series(1, {int(n)})",
        )

    async def open_client(self) -> None:
        self.app, self.task = make_app(self.dsn)
        await self.app.open_async()

    async def close_client(self) -> None:
        await self.app.close_async()

    async def enqueue(self, seq: int) -> None:
        await self.task.defer_async(seq=seq)

    async def enqueue_bulk(self, seqs: list[int]) -> None:
        await self.task.batch_defer_async(*({"seq": s} for s in seqs))

    def run_worker(self, spec: harness.WorkerSpec) -> None:
        async def go() -> None:
            app, _ = make_app(self.dsn)
            options: dict[str, Any] = {}
            if spec.concurrency is not None:
                options["concurrency"] = spec.concurrency
            async with app.open_async():
                await app.run_worker_async(queues=[QUEUE], wait=not spec.drain, **options)

        asyncio.run(go())


ADAPTER = Procrastinate
