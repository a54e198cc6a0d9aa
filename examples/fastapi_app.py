"""A FastAPI service that hands slow work to a job_machine worker.

    POST /reports                      send a task; 202 with its id at once
    GET  /reports/{id}                 poll: 202 while pending, 200 with the report
    GET  /reports/{id}/wait?timeout=S  await the reply (woken by NOTIFY, no
                                       polling): 200 with the report, 504 after
                                       S seconds (default 10, at most 60)

A failed task answers 500 with its error (both GETs); an unknown id, 404.

Run it (with a worker serving queue "report.build", e.g. ReportWorker below):

    JOB_MACHINE_DSN=postgresql://app@db/app uvicorn examples.fastapi_app:app
    JOB_MACHINE_DSN=... job-machine worker examples.fastapi_app:ReportWorker

One AsyncClient serves every request of the process: the lifespan opens it
when the app starts and closes it when the app stops, so a request never opens
a connection. The client runs every statement on one connection of its own,
and every wait() of the process shares one reply listener (docs/asyncio.md,
"How many connections a process uses"): two connections however many requests
wait at once. Requests always name their task id: the client's "current task"
(``client.id``) is shared by every request, so it means nothing here.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response

import job_machine as jm

QUEUE = "report.build"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Make the process's one client when the app starts; close it when it stops.

    The DSN comes from ``app.state.dsn`` if set (the tests set it), else from
    the environment."""
    dsn = getattr(app.state, "dsn", None) or os.environ["JOB_MACHINE_DSN"]
    async with jm.AsyncClient(dsn, queue=QUEUE) as client:
        app.state.client = client
        yield


app = FastAPI(lifespan=lifespan)


def shared_client(request: Request) -> jm.AsyncClient:
    """The process's client, made by :func:`lifespan`."""
    client: jm.AsyncClient = request.app.state.client
    return client


Client = Annotated[jm.AsyncClient, Depends(shared_client)]


@app.post("/reports", status_code=202)
async def start_report(params: dict[str, Any], client: Client) -> dict[str, int]:
    """Send the work to the queue; answer at once with the task id."""
    return {"task_id": await client.send(params)}


@app.get("/reports/{task_id}")
async def report(task_id: int, response: Response, client: Client) -> dict[str, Any]:
    """Poll: 202 while the task waits or runs, 200 with the reply, 500 if it failed."""
    try:
        if not await client.check(task_id):
            response.status_code = 202
            return {"state": "pending"}
        return {"state": "done", "report": await client.receive(task_id)}
    except jm.TaskFailed as failed:
        raise HTTPException(500, {"state": "failed", "error": failed.error}) from None
    except jm.UnknownTask:
        raise HTTPException(404, f"no task {task_id}") from None


@app.get("/reports/{task_id}/wait")
async def wait_for_report(
    task_id: int,
    client: Client,
    timeout: Annotated[float, Query(gt=0, le=60)] = 10.0,
) -> dict[str, Any]:
    """Await the reply, woken by the worker's notification: 200 with it, 504
    when ``timeout`` seconds pass first, 500 if the task failed."""
    try:
        return {"state": "done", "report": await client.wait(task_id, timeout=timeout)}
    except jm.WaitTimeout:
        raise HTTPException(504, f"task {task_id}: no reply within {timeout:g} s") from None
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
