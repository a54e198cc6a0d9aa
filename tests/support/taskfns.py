"""Task functions for tests/integration/test_tasks.py, served in worker
processes by ``job-machine worker --app tests.support.taskfns:app`` (or ``:async_app``).

Both apps find their database in ``$JOB_MACHINE_DSN`` (the worker command's
``--dsn``); the tests point them at their own with ``app.using(dsn)``.
"""

from __future__ import annotations

import asyncio
import math
import os
from dataclasses import dataclass, field

from pydantic import BaseModel

import job_machine as jm

app = jm.App()


@app.task
def add(a: int, b: int) -> int:
    """The sum."""
    return a + b


@dataclass
class Point:
    x: float
    y: float


@dataclass
class Segment:
    start: Point
    end: Point
    tags: list[str] = field(default_factory=list)


@app.task(queue="tests.geometry")
def length(segment: Segment) -> float:
    """Two task functions share the queue tests.geometry."""
    assert isinstance(segment.start, Point), "the dataclass was not rebuilt"
    return math.dist((segment.start.x, segment.start.y), (segment.end.x, segment.end.y))


@app.task(queue="tests.geometry")
def midpoint(segment: Segment) -> Point:
    return Point((segment.start.x + segment.end.x) / 2, (segment.start.y + segment.end.y) / 2)


class Order(BaseModel):
    id: int
    items: list[str]


class Receipt(BaseModel):
    order: Order
    count: int


@app.task
def receipt(order: Order, *extra: str, note: str = "") -> Receipt:
    """A pydantic model in, one out; variadic and keyword-only arguments too."""
    assert isinstance(order, Order), "the model was not rebuilt"
    items = [*order.items, *extra]
    return Receipt(order=Order(id=order.id, items=items), count=len(items) + len(note))


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


@app.task
def whoami() -> int:
    """The worker's pid: proves which process ran the function."""
    return os.getpid()


@app.task(name="tests.chain", queue="tests.chain")
def chain(n: int) -> int:
    """Sends the next link itself, through the same app (run_tasks runs it too)."""
    if n > 0:
        chain.send(n - 1)
    return n


#: An app with an async def: only an asyncio worker serves it.
async_app = jm.App()


@async_app.task(queue="tests.async")
async def slow_double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


@async_app.task(queue="tests.async")
def triple(x: int) -> int:
    """A plain function beside it: the asyncio worker runs it in a thread."""
    return 3 * x


@async_app.task(queue="tests.async")
async def fan_out(n: int) -> int:
    """Sends another task through the app's AsyncClient, on the worker's loop."""
    await triple.asend(n)
    return n
