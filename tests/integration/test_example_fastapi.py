"""The FastAPI example of docs/asyncio.md works end to end: a request sends a
task, an AsyncWorker answers it, another request polls or awaits the reply."""

from __future__ import annotations

import asyncio

import httpx

from examples.fastapi_app import ReportWorker, app


async def test_the_fastapi_example_sends_polls_and_awaits(dsn: str) -> None:
    app.state.dsn = dsn
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://app") as http,
    ):
        sent = await http.post("/reports", json={"amounts": [1, 2, 3.5]})
        assert sent.status_code == 202
        tid = sent.json()["task_id"]

        polled = await http.get(f"/reports/{tid}")
        assert (polled.status_code, polled.json()) == (202, {"state": "waiting", "attempts": 0})

        worker = ReportWorker(dsn, handle_signals=False)
        serving = asyncio.create_task(worker.receive())
        try:
            awaited = await http.get(f"/reports/{tid}/wait")
            assert awaited.status_code == 200
            assert awaited.json() == {"state": "done", "report": {"total": 6.5}}
            polled = await http.get(f"/reports/{tid}")
            assert (polled.status_code, polled.json()["report"]) == (200, {"total": 6.5})
            assert (await http.get(f"/reports/{tid + 99}")).status_code == 404
        finally:
            worker.stop()
            await asyncio.wait_for(serving, 10)
