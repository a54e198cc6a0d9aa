"""FastAPI endpoints that call task functions (examples/tasks.py), with the
process's one App opened and closed by job_machine.contrib.fastapi's lifespan.

    JOB_MACHINE_DSN=postgresql://app@db/app uvicorn examples.fastapi_tasks:api
    JOB_MACHINE_DSN=... job-machine worker --app examples.tasks:app
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException

import job_machine as jm
from examples.tasks import Invoice, Total, add, total
from examples.tasks import app as tasks
from job_machine.contrib.fastapi import lifespan

api = FastAPI(lifespan=lifespan(tasks))


@api.get("/add")
async def sum_of(a: int, b: int) -> dict[str, int]:
    """Computed by a worker; the request awaits its reply (woken by NOTIFY)."""
    try:
        return {"sum": await add.configure(timeout=10).acall(a, b)}
    except jm.WaitTimeout:
        raise HTTPException(504, "no worker answered within 10 s") from None


@api.post("/invoices/total")
async def invoice_total(invoice: Invoice) -> Total:
    """A dataclass in and out: the worker gets an Invoice, the endpoint a Total."""
    return await total.acall(invoice)
