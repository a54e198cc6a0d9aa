"""Task functions: the examples of docs/tasks.md, run by
tests/integration/test_example_tasks.py.

Serve them:

    JOB_MACHINE_DSN=postgresql://app@db/app job-machine worker --app examples.tasks:app

and call them from any process with the same DSN::

    from examples.tasks import Invoice, add, total
    add.call(1, 2)                                   # 3
    total.call(Invoice("ACME", [1.5, 2.5]))          # Total(customer='ACME', amount=4.0)
    task_id = countdown.send(3)
    [part.data for part in countdown.parts(task_id)]  # ['3...', '2...', '1...']
    countdown.result(task_id)                        # 'liftoff'
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from dataclasses import dataclass

import job_machine as jm

app = jm.App()  # its database: $JOB_MACHINE_DSN, read on first use


@app.task  # name and queue: "examples.tasks.add"
def add(a: int, b: int) -> int:
    return a + b


@dataclass
class Invoice:
    customer: str
    amounts: list[float]


@dataclass
class Total:
    customer: str
    amount: float


@app.task(queue="billing")  # two functions share the queue "billing"
def total(invoice: Invoice) -> Total:
    return Total(invoice.customer, sum(invoice.amounts))


@app.task(queue="billing")
async def convert(amount: float, rate: float) -> float:
    await asyncio.sleep(0)  # an async def: the worker runs it on its event loop
    return round(amount * rate, 2)


@app.task
def countdown(n: int) -> Generator[str, None, str]:
    """Streams its progress: each value it yields reaches the caller as a
    part at once; the value it returns is the reply."""
    for i in range(n, 0, -1):
        yield f"{i}..."
    return "liftoff"
