"""A FastAPI service that hands slow work to a job_machine worker.

    POST /reports          sends a task, answers 202 with its id at once
    GET  /reports/{id}     polls: 202 while it is worked on, 200 with the report
    GET  /reports/{id}/wait  awaits the reply (LISTEN, no polling), up to 10 s

Run it (with a worker serving queue "report.build", e.g. ReportWorker below):

    JOB_MACHINE_DSN=postgresql://app@db/app uvicorn examples.fastapi_app:app
    JOB_MACHINE_DSN=... job-machine worker examples.fastapi_app:ReportWorker --queue report.build

One AsyncConnectionPool serves every request; a client object is cheap, so
each request makes its own.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Response
from psycopg_pool import AsyncConnectionPool

import job_machine as jm

QUEUE = "report.build"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the pool when the app starts, close it when it stops."""
    dsn = app.state.dsn if hasattr(app.state, "dsn") else os.environ["JOB_MACHINE_DSN"]
    async with AsyncConnectionPool(dsn, open=False) as pool:
        await pool.open(wait=True)
        app.state.pool = pool
        app.state.dsn = dsn
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/reports", status_code=202)
async def start_report(params: dict[str, Any]) -> dict[str, int]:
    """Send the work to the queue; answer at once with the task id."""
    client = jm.AsyncClient(pool=app.state.pool, queue=QUEUE)
    return {"task_id": await client.send(params)}


@app.get("/reports/{task_id}")
async def report(task_id: int, response: Response) -> dict[str, Any]:
    """Poll: 202 while the task waits or runs, 200 with the reply, 500 if it failed."""
    client = jm.AsyncClient(pool=app.state.pool)
    try:
        info = await client.task_info(task_id)
    except jm.UnknownTask:
        raise HTTPException(404, f"no task {task_id}") from None
    if info.state in ("waiting", "running"):
        response.status_code = 202
        return {"state": info.state, "attempts": info.attempts}
    if info.state == "failed":
        raise HTTPException(500, {"state": "failed", "error": info.last_error})
    return {"state": "done", "report": info.reply}


@app.get("/reports/{task_id}/wait")
async def wait_for_report(task_id: int) -> dict[str, Any]:
    """Await the reply: woken by the worker's notification, not by polling.

    ``wait`` LISTENs, so it uses a direct connection of its own (a pooled
    connection behind PgBouncer in transaction mode could not LISTEN)."""
    async with jm.AsyncClient(app.state.dsn) as client:
        try:
            return {"state": "done", "report": await client.wait(task_id, timeout=10)}
        except jm.WaitTimeout:
            raise HTTPException(504, "not done within 10 s") from None
        except jm.TaskFailed as failed:
            raise HTTPException(500, {"state": "failed", "error": failed.error}) from None
        except jm.UnknownTask:
            raise HTTPException(404, f"no task {task_id}") from None


class ReportWorker(jm.AsyncWorker):
    """The other side: builds the report (here, a sum) and replies."""

    queue = QUEUE

    async def process(self, task: jm.Task) -> None:
        """Build the report for ``task.data`` and reply with it."""
        await self.reply({"total": sum(task.data.get("amounts", []))})
