"""Workers and task functions that stream parts, for
tests/integration/test_parts.py, served in real worker processes
(``job-machine worker tests.support.streamers:Streamer``, ``--app
tests.support.streamers:app``...).

Each sends ``n`` parts. With a ``gate`` (``{"dsn": ..., "channel": ...}``)
it waits after part ``i`` until the test sends ``NOTIFY channel, 'i'``: the
next part cannot be sent, nor the task answered, before the test has read
part ``i``, so the test sees each part arrive while the task runs, waiting
on events, never on sleeps.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager

import psycopg

import job_machine as jm

#: Seconds a gated worker waits for the test's go-ahead before it gives up.
GATE_TIMEOUT = 30.0


@contextmanager
def gate(spec: dict[str, str] | None) -> Iterator[Callable[[int], None]]:
    """``wait(i)``: block until the test notifies ``i`` on the gate's channel
    (LISTENing from before the first part is sent)."""
    if spec is None:
        yield lambda i: None
        return
    with psycopg.connect(spec["dsn"], autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(spec["channel"])))

        def wait(i: int) -> None:
            for n in conn.notifies(timeout=GATE_TIMEOUT):
                if n.payload == str(i):
                    return
            raise TimeoutError(f"no go-ahead for part {i} on {spec['channel']}")

        yield wait


@asynccontextmanager
async def agate(spec: dict[str, str] | None) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
    """:func:`gate` on asyncio."""

    async def never(i: int) -> None:
        return None

    if spec is None:
        yield never
        return
    async with await psycopg.AsyncConnection.connect(spec["dsn"], autocommit=True) as conn:
        channel = psycopg.sql.Identifier(spec["channel"])
        await conn.execute(psycopg.sql.SQL("LISTEN {}").format(channel))

        async def wait(i: int) -> None:
            async for n in conn.notifies(timeout=GATE_TIMEOUT):
                if n.payload == str(i):
                    return
            raise TimeoutError(f"no go-ahead for part {i} on {spec['channel']}")

        yield wait


class Streamer(jm.Worker):
    """Sends parts ``{"i": i, "pid": pid}`` for ``i < n``, then replies
    ``{"parts": n}``; raises after its parts when the data says ``fail``."""

    queue = "tests.stream"

    def process(self, task: jm.Task) -> None:
        with gate(task.data.get("gate")) as wait:
            for i in range(task.data["n"]):
                self.send_part({"i": i, "pid": os.getpid()})
                wait(i)
        if task.data.get("fail"):
            raise RuntimeError(task.data["fail"])
        self.reply({"parts": task.data["n"]})


class AsyncStreamer(jm.AsyncWorker):
    """:class:`Streamer` on asyncio."""

    queue = "tests.stream.async"

    async def process(self, task: jm.Task) -> None:
        async with agate(task.data.get("gate")) as wait:
            for i in range(task.data["n"]):
                await self.send_part({"i": i, "pid": os.getpid()})
                await wait(i)
        await self.reply({"parts": task.data["n"]})


app = jm.App()


@app.task(queue="tests.stream.fn")
def count(n: int, gate_spec: dict[str, str] | None = None) -> Generator[int, None, str]:
    """Yields 0 .. n-1 as parts; its return value is the reply."""
    with gate(gate_spec) as wait:
        for i in range(n):
            yield i
            wait(i)
    return f"counted {n}"


async_app = jm.App()


@async_app.task(queue="tests.stream.afn")
async def acount(n: int, gate_spec: dict[str, str] | None = None) -> AsyncIterator[int]:
    """Yields 0 .. n-1 as parts (an async generator: no reply value)."""
    async with agate(gate_spec) as wait:
        for i in range(n):
            yield i
            await wait(i)
