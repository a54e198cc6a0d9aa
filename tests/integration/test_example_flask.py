"""The Flask example of docs/asyncio.md works end to end: a request sends a
task, a Worker answers it, another request polls or awaits the reply; and many
requests at once, each on a thread of a real threaded server, share the
process's one client, each answered promptly, on a bounded number of server
connections."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
from flask import Flask
from werkzeug.serving import make_server

import job_machine as jm
from examples.flask_app import ReportWorker, create_app, shared_client
from tests.support.appconns import PeakConnections, named, wait_closed
from tests.support.workers import serving

#: Requests in flight at once, in the concurrency test, each on a thread.
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

    def startup(self) -> None:
        self.ready.set()

    def process(self, task: jm.Task) -> None:
        if not self.gate.wait(30):
            self.failures.append(f"task {task.id}: the gate never opened")
            raise RuntimeError(self.failures[-1])
        super().process(task)


@contextmanager
def closing_app(dsn: str) -> Iterator[Flask]:
    """The app on ``dsn``; its client closed at the end, as at the process's exit."""
    app = create_app(dsn)
    try:
        yield app
    finally:
        shared_client(app).close()


@contextmanager
def threaded_server(app: Flask) -> Iterator[str]:
    """Serve ``app`` with werkzeug's threaded server (a thread per request)
    on a free port, in a thread; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


def test_the_flask_example_sends_polls_awaits_and_maps_errors(dsn: str) -> None:
    with closing_app(dsn) as app:
        http = app.test_client()
        sent = http.post("/reports", json={"amounts": [1, 2, 3.5]})
        assert sent.status_code == 202
        tid = sent.json["task_id"]

        polled = http.get(f"/reports/{tid}")
        assert (polled.status_code, polled.json) == (202, {"state": "pending"})
        # No worker yet: the wait's timeout is a 504.
        late = http.get(f"/reports/{tid}/wait?timeout=0.2")
        assert late.status_code == 504
        assert "no reply within 0.2 s" in late.json["detail"]
        for bad in ("0", "61", "soon", "nan"):
            refused = http.get(f"/reports/{tid}/wait?timeout={bad}")
            assert refused.status_code == 400, bad
        assert http.post("/reports", json=[1, 2]).status_code == 400

        with serving(Served(dsn, retries=0)):
            awaited = http.get(f"/reports/{tid}/wait")
            assert awaited.status_code == 200
            assert awaited.json == {"state": "done", "report": {"total": 6.5}}
            polled = http.get(f"/reports/{tid}")
            assert (polled.status_code, polled.json) == (
                200,
                {"state": "done", "report": {"total": 6.5}},
            )

            # sum() of a string raises in the worker; with no retries the task fails.
            doomed = http.post("/reports", json={"amounts": ["x"]}).json["task_id"]
            failed = http.get(f"/reports/{doomed}/wait")
            assert failed.status_code == 500
            assert failed.json["state"] == "failed"
            assert failed.json["error"]["type"] == "TypeError"
            polled = http.get(f"/reports/{doomed}")
            assert polled.status_code == 500
            assert polled.json["error"]["type"] == "TypeError"

            for path in (f"/reports/{tid + 99}", f"/reports/{tid + 99}/wait"):
                assert http.get(path).status_code == 404, path


def test_many_requests_at_once_share_one_client_and_are_answered_promptly(dsn: str) -> None:
    name = "example_flask"
    worker = Served(dsn, concurrency=4)
    worker.gate.clear()
    sent = 0
    counting = threading.Lock()

    def one(base_url: str, n: int) -> tuple[int, int, Any, float, Any]:
        """Send a task, await its reply, poll it; the worker answers nothing
        until every task is sent, so most of the waits are waiting together."""
        nonlocal sent
        with httpx.Client(base_url=base_url, timeout=WAIT_TIMEOUT + 10) as http:
            posted = http.post("/reports", json={"amounts": [n, 0.5]})
            assert posted.status_code == 202, posted.text
            tid = posted.json()["task_id"]
            with counting:
                sent += 1
                if sent == CONCURRENT:
                    worker.gate.set()
            began = time.monotonic()
            awaited = http.get(f"/reports/{tid}/wait", params={"timeout": WAIT_TIMEOUT})
            took = time.monotonic() - began
            polled = http.get(f"/reports/{tid}")
        return tid, awaited.status_code, awaited.json(), took, (polled.status_code, polled.json())

    with PeakConnections(dsn, name) as connections:
        with (
            serving(worker),
            closing_app(named(dsn, name)) as app,
            threaded_server(app) as base_url,
            ThreadPoolExecutor(CONCURRENT) as pool,
        ):
            try:
                results = list(pool.map(lambda n: one(base_url, n), range(CONCURRENT)))
            finally:
                worker.gate.set()  # on a failure too: else the worker's stop waits 30 s
        left = wait_closed(dsn, name)

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
