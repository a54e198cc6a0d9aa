"""job_machine, measured through its public API.

- send: ``Client.send`` (one autocommit statement: insert + pg_notify).
- send_many: ``Client.send_many`` in batches of 1000.
- worker: a ``Worker`` subclass (``AsyncWorker`` with ``--async``) whose
  ``process`` marks the task and returns (done, no result); in the reply
  scenarios (drain_reply, callers) every task is answered with
  ``self.reply("ok")``, and the round trip's tasks carry ``"reply": true``.
- round trip: ``client.send`` then ``client.wait(task_id)`` (LISTEN on
  ``jmr:<task_id>``, woken by the worker's reply).
- callers: ONE ``AsyncClient(dsn)`` (or one sync ``Client(dsn)`` for the
  threads) shared by every caller, its DSN tagged with the harness's
  application_name; each call is ``send`` then ``wait(task_id, timeout=...)``.
- history: finished tasks inserted with SQL (status 200, one attempt,
  modified an hour ago, so housekeeping leaves them alone).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import job_machine
import psycopg
from psycopg.conninfo import make_conninfo

from bench import harness

QUEUE = "bench.noop"


def revision() -> str:
    """`` @<commit>[-dirty]`` of the checkout job_machine is imported from, if any
    ($BENCH_JM_REVISION when it runs from a copy)."""
    if rev := os.environ.get("BENCH_JM_REVISION"):
        return f" @{rev}"
    root = Path(job_machine.__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "job_machine", "sql"],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return f" @{head}{'-dirty' if dirty else ''}"


class JobMachine(harness.Adapter):
    name = "job_machine"
    replies = True
    # Polled every 20 ms while a drain runs: each count reads its state's
    # partial index (task_ready_idx, task_started_worker_idx). A plain
    # `status IN (0, 100)` read the whole table, 35 ms a poll with a million
    # finished rows, and the poller took a core from the drain it timed.
    remaining_sql = (
        "SELECT (SELECT count(*) FROM jobmachine.task WHERE status = 0)"
        " + (SELECT count(*) FROM jobmachine.task WHERE status = 100)"
    )

    def version(self) -> str:
        return f"{job_machine.__version__}{revision()} (psycopg {psycopg.__version__})"

    def concurrency_note(self, spec: harness.WorkerSpec) -> str:
        kind = "AsyncWorker" if spec.use_async else "Worker"
        return f"{kind}, concurrency={spec.concurrency or 1}"

    def reset(self) -> None:
        harness.reset_database(self.dsn, extra_schemas=("jobmachine",))
        job_machine.install_schema(self.dsn)

    def fill_history(self, n: int) -> None:
        harness.execute(
            self.dsn,
            f"INSERT INTO jobmachine.class (name) VALUES ('{QUEUE}') ON CONFLICT DO NOTHING",
            "INSERT INTO jobmachine.task"
            " (class_id, parameters, status, attempts, created, modified, started)"
            " SELECT c.class_id, '{\"seq\": -1}', 200, 1,"
            "        now() - interval '1 hour', now() - interval '1 hour',"
            "        now() - interval '1 hour'"
            f"   FROM jobmachine.class c, generate_series(1, {int(n)})"
            f"  WHERE c.name = '{QUEUE}'",
        )

    # -- client -------------------------------------------------------------

    def open_client(self) -> None:
        self.client = job_machine.Client(self.dsn, queue=QUEUE)

    def close_client(self) -> None:
        self.client.close()

    def enqueue(self, seq: int) -> None:
        self.client.send({"seq": seq})

    def enqueue_bulk(self, seqs: list[int]) -> None:
        self.client.send_many([{"seq": s} for s in seqs])

    def open_callers(self, application_name: str, threads: bool) -> None:
        dsn = make_conninfo(self.dsn, application_name=application_name)
        if threads:
            self.shared: job_machine.Client = job_machine.Client(dsn, queue=QUEUE)
        else:
            self.ashared = job_machine.AsyncClient(dsn, queue=QUEUE)
        self.threads = threads

    async def close_callers(self) -> None:
        if self.threads:
            self.shared.close()
        else:
            await self.ashared.close()

    async def acall(self, seq: int, timeout: float) -> None:
        task_id = await self.ashared.send({"seq": seq})
        try:
            reply = await self.ashared.wait(task_id, timeout=timeout)
        except job_machine.WaitTimeout as e:
            raise harness.CallTimeout(str(e)) from e
        assert reply == "ok", reply

    def call_sync(self, seq: int, timeout: float) -> None:
        task_id = self.shared.send({"seq": seq})
        try:
            reply = self.shared.wait(task_id, timeout=timeout)
        except job_machine.WaitTimeout as e:
            raise harness.CallTimeout(str(e)) from e
        assert reply == "ok", reply

    def roundtrip(self, seq: int) -> None:
        task_id = self.client.send({"seq": seq, "reply": True})
        reply = self.client.wait(task_id, timeout=30)
        assert reply == "ok", reply

    # -- worker -------------------------------------------------------------

    def run_worker(self, spec: harness.WorkerSpec) -> None:
        # The harness stops workers with SIGTERM and exits at once: the
        # worker must not install its own graceful-stop handlers.
        options: dict[str, Any] = {"handle_signals": False}
        if spec.concurrency is not None:
            options["concurrency"] = spec.concurrency
        if spec.use_async:

            class AsyncBenchWorker(job_machine.AsyncWorker):
                async def process(self, task: job_machine.Task) -> None:
                    harness.mark(task.data["seq"])
                    if spec.reply or task.data.get("reply"):
                        await self.reply("ok")

            asyncio.run(AsyncBenchWorker(self.dsn, queue=QUEUE, **options).receive())
            return

        class BenchWorker(job_machine.Worker):
            def process(self, task: job_machine.Task) -> None:
                harness.mark(task.data["seq"])
                if spec.reply or task.data.get("reply"):
                    self.reply("ok")

        BenchWorker(self.dsn, queue=QUEUE, **options).receive()


ADAPTER = JobMachine
