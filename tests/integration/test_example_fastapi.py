"""The FastAPI example of docs/asyncio.md works end to end: a request sends a
task, an AsyncWorker answers it, another request polls or awaits the reply;
and many requests at once share the app's one client, each answered promptly,
on a bounded number of server connections."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

import job_machine as jm
from examples.fastapi_app import ReportWorker, app
from tests.support.appconns import PeakConnections, named, wait_closed

#: Requests in flight at once, in the concurrency test.
CONCURRENT = 40
#: The timeout each of them gives wait() ...
WAIT_TIMEOUT = 20.0
#: ... and the time within which each must be answered all the same: a wait
#: woken by its notification takes milliseconds; one whose wake-up was lost
#: by another waiter returns only at its timeout.
PROMPT = 5.0
#: At most this many server connections for the app process: its client's
#: connection and the process's one reply listener.
MAX_CONNECTIONS = 2


class Served(ReportWorker):
    """The example's worker, with ``ready`` (set by startup) and a ``gate``
    each task waits for before it is answered (open unless a test closes it)."""

    handle_signals = False

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.ready = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        #: What went wrong inside process(), raised by the test (serving()).
        self.failures: list[str] = []

    async def startup(self) -> None:
        self.ready.set()

    async def process(self, task: jm.Task) -> None:
        if not await asyncio.to_thread(self.gate.wait, 30):
            self.failures.append(f"task {task.id}: the gate never opened")
            raise RuntimeError(self.failures[-1])
        await super().process(task)


@asynccontextmanager
async def serving(worker: Served) -> AsyncIterator[None]:
    """Run ``worker.receive()`` on an event loop of its own, in a thread, as
    another process would; stop it at the end and re-raise what broke it."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(worker.receive())
        except BaseException as ex:  # surfaced below
            errors.append(ex)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        started = await asyncio.to_thread(worker.ready.wait, 10)
        assert started, errors or "the worker did not start"
        yield
    finally:
        worker.gate.set()
        worker.stop()
        await asyncio.to_thread(thread.join, 10)
        if errors:
            raise errors[0]
        assert not worker.failures, worker.failures
    assert not thread.is_alive(), "receive() did not return after stop()"


@asynccontextmanager
async def running_app(dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app started (its lifespan run) on ``dsn``, and an HTTP client to it."""
    app.state.dsn = dsn
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url="http://app", timeout=WAIT_TIMEOUT + 10
        ) as http,
    ):
        yield http


async def test_the_fastapi_example_sends_polls_awaits_and_maps_errors(dsn: str) -> None:
    async with running_app(dsn) as http:
        sent = await http.post("/reports", json={"amounts": [1, 2, 3.5]})
        assert sent.status_code == 202
        tid = sent.json()["task_id"]

        polled = await http.get(f"/reports/{tid}")
        assert (polled.status_code, polled.json()) == (202, {"state": "pending"})
        # No worker yet: the wait's timeout is a 504.
        late = await http.get(f"/reports/{tid}/wait", params={"timeout": 0.2})
        assert late.status_code == 504
        assert "no reply within 0.2 s" in late.json()["detail"]
        for bad in ("0", "61", "soon"):
            refused = await http.get(f"/reports/{tid}/wait", params={"timeout": bad})
            assert refused.status_code == 422, bad

        async with serving(Served(dsn, retries=0)):
            awaited = await http.get(f"/reports/{tid}/wait")
            assert awaited.status_code == 200
            assert awaited.json() == {"state": "done", "report": {"total": 6.5}}
            polled = await http.get(f"/reports/{tid}")
            assert (polled.status_code, polled.json()) == (
                200,
                {"state": "done", "report": {"total": 6.5}},
            )

            # sum() of a string raises in the worker; with no retries the task fails.
            doomed = (await http.post("/reports", json={"amounts": ["x"]})).json()["task_id"]
            failed = await http.get(f"/reports/{doomed}/wait")
            assert failed.status_code == 500
            assert failed.json()["detail"]["state"] == "failed"
            assert failed.json()["detail"]["error"]["type"] == "TypeError"
            polled = await http.get(f"/reports/{doomed}")
            assert polled.status_code == 500
            assert polled.json()["detail"]["error"]["type"] == "TypeError"

            for path in (f"/reports/{tid + 99}", f"/reports/{tid + 99}/wait"):
                assert (await http.get(path)).status_code == 404, path


async def test_many_requests_at_once_share_one_client_and_are_answered_promptly(
    dsn: str,
) -> None:
    name = "example_fastapi"
    worker = Served(dsn, concurrency=4)
    worker.gate.clear()
    sent = 0

    async def one(http: httpx.AsyncClient, n: int) -> tuple[int, int, Any, float, Any]:
        """Send a task, await its reply, poll it; the worker answers nothing
        until every task is sent, so most of the waits are waiting together."""
        nonlocal sent
        posted = await http.post("/reports", json={"amounts": [n, 0.5]})
        assert posted.status_code == 202, posted.text
        tid = posted.json()["task_id"]
        sent += 1
        if sent == CONCURRENT:
            worker.gate.set()
        began = time.monotonic()
        awaited = await http.get(f"/reports/{tid}/wait", params={"timeout": WAIT_TIMEOUT})
        took = time.monotonic() - began
        polled = await http.get(f"/reports/{tid}")
        return tid, awaited.status_code, awaited.json(), took, (polled.status_code, polled.json())

    with PeakConnections(dsn, name) as connections:
        async with serving(worker), running_app(named(dsn, name)) as http:
            results = await asyncio.gather(*(one(http, n) for n in range(CONCURRENT)))
        left = await asyncio.to_thread(wait_closed, dsn, name)

    assert len({tid for tid, *_ in results}) == CONCURRENT
    for n, (tid, status, body, _, polled) in enumerate(results):
        expected = {"state": "done", "report": {"total": n + 0.5}}
        assert (status, body) == (200, expected), (n, tid)
        assert polled == (200, expected), (n, tid)
    # Every promise checked, so that a failure names each one broken.
    broken = []
    slow = sorted(round(took, 2) for *_, took, _ in results if took >= PROMPT)
    if slow:
        broken.append(
            f"{len(slow)} of {CONCURRENT} waits took {PROMPT} s or more (timeout"
            f" {WAIT_TIMEOUT} s): {slow}; a wait woken only by its timeout lost its notification"
        )
    if not 1 <= connections.peak <= MAX_CONNECTIONS:
        broken.append(
            f"the app held {connections.peak} server connections at once"
            f" (at most {MAX_CONNECTIONS}: its client's and the reply listener)"
        )
    if left:
        broken.append(
            f"{left} connections of the app still open after its client closed"
            " (the reply listener should close with the last client that used it)"
        )
    assert not broken, "\n".join(broken)
