"""OpenTelemetry (issue 19 part 1, docs/observability.md): one trace from
send to reply, across processes, and the metrics, with the SDK's in-memory
span exporter and metric reader."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import psycopg
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import job_machine as jm
from job_machine import _otel

pytestmark = pytest.mark.db

ROOT = Path(__file__).resolve().parents[2]


class SDK:
    """In-memory span exporter and metric reader, as job_machine's providers."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def metrics(self) -> dict[str, list[Any]]:
        """Data points by instrument name."""
        data = self.reader.get_metrics_data()
        points: dict[str, list[Any]] = {}
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points.setdefault(metric.name, []).extend(metric.data.data_points)
        return points


@pytest.fixture
def sdk() -> Iterator[SDK]:
    sdk = SDK()
    _otel.configure(sdk.tracer_provider, sdk.meter_provider)
    try:
        yield sdk
    finally:
        _otel.refresh()  # back to the global providers: none, tracing off


class Doubler(jm.Worker):
    handle_signals = False

    def process(self, task: jm.Task) -> None:
        self.reply({"double": 2 * task.data["n"]})


class Flaky(jm.Worker):
    """Fails a task's first attempt, answers its second."""

    handle_signals = False
    retries = 1

    def retry_delay(self, task: jm.Task, error: BaseException) -> float:
        return 0.0

    def process(self, task: jm.Task) -> None:
        if task.attempt == 1:
            raise ValueError("first attempt fails")
        self.reply("ok")


def _messaging(span: ReadableSpan) -> dict[str, Any]:
    attributes = dict(span.attributes or {})
    return {k: v for k, v in attributes.items() if k.startswith("messaging.")}


def test_send_process_reply_wait_is_one_trace_across_processes(dsn: str, tmp_path: Path) -> None:
    """The client's send and wait spans here, the worker's process and
    reply spans in a worker process of its own: one trace, the process span
    a child of the send span through task.trace_context."""
    sdk = SDK()
    _otel.configure(sdk.tracer_provider, sdk.meter_provider)
    tracer = sdk.tracer_provider.get_tracer("test")
    try:
        with (
            jm.Client(dsn, queue="otel.q") as client,
            tracer.start_as_current_span("GET /double", kind=SpanKind.SERVER) as request,
        ):
            task_id = client.send({"n": 21})
            out = tmp_path / "spans.json"
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
            worker = subprocess.Popen(
                [sys.executable, "-m", "tests.otel_worker", dsn, "otel.q", str(out)],
                cwd=ROOT,
                env=env,
            )
            try:
                assert client.wait(task_id, timeout=30) == {"double": 42}
            except BaseException:
                worker.kill()
                raise
        assert worker.wait(timeout=60) == 0
    finally:
        _otel.refresh()
    child = json.loads(out.read_text("utf-8"))
    assert child["worked"] is True
    assert Path(child["module"]).resolve().is_relative_to(ROOT)  # this tree, not another

    (send,) = sdk.finished("send otel.q")
    (wait,) = sdk.finished("wait otel.q")
    trace_id = f"{send.context.trace_id:032x}"
    send_id = f"{send.context.span_id:016x}"
    assert send.kind == SpanKind.PRODUCER
    assert _messaging(send) == {
        "messaging.system": "job_machine",
        "messaging.destination.name": "otel.q",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.message.id": str(task_id),
    }
    # What the task row holds is the send span's context.
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT trace_context FROM jobmachine.task WHERE task_id = %s", [task_id]
        ).fetchone()
    assert row is not None and row[0].startswith(f"00-{trace_id}-{send_id}-")

    spans = {s["name"]: s for s in child["spans"]}
    process, reply = spans["process otel.q"], spans["reply otel.q"]
    assert process["kind"] == "CONSUMER"
    assert process["trace_id"] == trace_id
    assert process["parent_id"] == send_id
    assert process["attributes"]["messaging.system"] == "job_machine"
    assert process["attributes"]["messaging.destination.name"] == "otel.q"
    assert process["attributes"]["messaging.message.id"] == str(task_id)
    assert process["attributes"]["messaging.operation.type"] == "process"
    assert process["attributes"]["job_machine.task.attempt"] == 1
    assert process["status"] == "UNSET"
    assert reply["kind"] == "PRODUCER"
    assert reply["trace_id"] == trace_id
    assert reply["parent_id"] == process["span_id"]
    assert reply["attributes"]["messaging.operation.type"] == "reply"

    assert wait.kind == SpanKind.CLIENT
    assert wait.context.trace_id == send.context.trace_id
    assert wait.parent is not None and wait.parent.span_id == send.context.span_id
    assert _messaging(wait)["messaging.message.id"] == str(task_id)

    assert send.parent is not None
    assert send.parent.span_id == request.get_span_context().span_id
    _draw(sdk.spans.get_finished_spans(), child["spans"])

    points = sdk.metrics()
    assert [p.value for p in points["job_machine.tasks.sent"]] == [1]
    (round_trip,) = points["job_machine.wait.duration"]
    assert round_trip.count == 1 and dict(round_trip.attributes) == {
        "messaging.destination.name": "otel.q"
    }


def _draw(web: Sequence[ReadableSpan], worker: list[dict[str, Any]]) -> None:
    """Draw the trace (tools/trace_svg.py) and check the picture: every span,
    in the tree's order; written to $JOB_MACHINE_TRACE_SVG when set (that is
    how docs/img/trace.svg was made)."""
    spec = importlib.util.spec_from_file_location("trace_svg", ROOT / "tools/trace_svg.py")
    assert spec is not None and spec.loader is not None
    trace_svg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trace_svg)
    spans = [
        {
            "name": s.name,
            "kind": s.kind.name,
            "service": "web app",
            "span_id": f"{s.context.span_id:016x}",
            "parent_id": f"{s.parent.span_id:016x}" if s.parent else None,
            "start": s.start_time,
            "end": s.end_time,
        }
        for s in web
    ] + [{**s, "service": "worker"} for s in worker]
    picture = trace_svg.waterfall(spans, "One request: the web app sends; a worker answers")
    labels = [t.text for t in ElementTree.fromstring(picture).findall(".//{*}text")]
    assert [t for t in labels if t and t.startswith(("web app: ", "worker: "))] == [
        "web app: GET /double",
        "web app: send otel.q",
        "web app: wait otel.q",
        "worker: process otel.q",
        "worker: reply otel.q",
    ]
    if os.environ.get("JOB_MACHINE_TRACE_SVG"):
        Path(os.environ["JOB_MACHINE_TRACE_SVG"]).write_text(picture, "utf-8")


def test_a_failed_attempt_and_its_retry_on_the_spans_and_metrics(dsn: str, sdk: SDK) -> None:
    with jm.Client(dsn, queue="otel.flaky") as client, Flaky(dsn, queue="otel.flaky") as w:
        task_id = client.send("x")
        assert w.work_once()
        assert w.work_once()
        assert client.wait(task_id, timeout=10) == "ok"
    (send,) = sdk.finished("send otel.flaky")
    first, second = sorted(sdk.finished("process otel.flaky"), key=lambda s: s.start_time or 0)
    for span in (first, second):
        assert span.context.trace_id == send.context.trace_id
        assert span.parent is not None and span.parent.span_id == send.context.span_id
    assert first.status.status_code == StatusCode.ERROR
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["error.type"] == "ValueError"
    assert first.attributes["job_machine.task.will_retry"] is True
    assert [e.name for e in first.events] == ["exception"]
    assert second.status.status_code == StatusCode.UNSET
    assert second.attributes["job_machine.task.attempt"] == 2

    points = sdk.metrics()
    names = ("started", "failed", "answered")
    total = {n: sum(p.value for p in points[f"job_machine.tasks.{n}"]) for n in names}
    assert total == {"started": 2, "failed": 1, "answered": 1}
    assert sum(p.count for p in points["job_machine.process.duration"]) == 2
    assert sum(p.count for p in points["job_machine.queue.wait"]) == 2


def test_a_failed_task_makes_the_wait_span_an_error(dsn: str, sdk: SDK) -> None:
    class Fails(jm.Worker):
        handle_signals = False
        retries = 0

        def process(self, task: jm.Task) -> None:
            raise RuntimeError("no")

    with jm.Client(dsn, queue="otel.fails") as client, Fails(dsn, queue="otel.fails") as w:
        task_id = client.send(1)
        assert w.work_once()
        with pytest.raises(jm.TaskFailed):
            client.wait(task_id, timeout=10)
    (process,) = sdk.finished("process otel.fails")
    assert process.attributes is not None
    assert process.attributes["job_machine.task.will_retry"] is False
    (wait,) = sdk.finished("wait otel.fails")
    assert wait.status.status_code == StatusCode.ERROR


async def test_async_face_and_send_many(dsn: str, sdk: SDK) -> None:
    class AsyncDoubler(jm.AsyncWorker):
        handle_signals = False

        async def process(self, task: jm.Task) -> None:
            await self.reply(2 * task.data)

    async with (
        jm.AsyncClient(dsn, queue="otel.a") as client,
        AsyncDoubler(dsn, queue="otel.a") as w,
    ):
        ids = await client.send_many([1, 2])
        assert await w.work_once()
        assert await w.work_once()
        assert await asyncio.gather(*(client.wait(i, timeout=10) for i in ids)) == [2, 4]
    (send,) = sdk.finished("send otel.a")
    assert send.attributes is not None
    assert send.attributes["messaging.batch.message_count"] == 2
    processes = sdk.finished("process otel.a")
    assert len(processes) == 2
    assert {p.parent.span_id for p in processes if p.parent} == {send.context.span_id}


def test_no_provider_no_spans_and_no_context(dsn: str) -> None:
    """Without a configured provider nothing is traced or stored."""
    _otel.refresh()
    assert not _otel.enabled()
    with jm.Client(dsn, queue="otel.off") as client, Doubler(dsn, queue="otel.off") as w:
        task_id = client.send({"n": 1})
        assert w.work_once()
        assert client.wait(task_id, timeout=10) == {"double": 2}
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT trace_context FROM jobmachine.task WHERE task_id = %s", [task_id]
        ).fetchone()
    assert row == (None,)


def test_concurrent_traced_sends_share_a_statement_each_with_its_context(
    dsn: str, sdk: SDK
) -> None:
    """The send group writes concurrent sends together; each task still
    carries the context of its own send span."""
    with jm.Client(dsn, queue="otel.many") as client:
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda n: client.send(n), range(40)))
        with psycopg.connect(dsn) as conn:
            stored = dict(
                conn.execute(
                    "SELECT task_id, trace_context FROM jobmachine.task WHERE task_id = ANY(%s)",
                    [ids],
                ).fetchall()
            )
    sends = sdk.finished("send otel.many")
    assert len(sends) == 40
    by_task = {int(str((s.attributes or {})["messaging.message.id"])): s for s in sends}
    assert set(by_task) == set(ids)
    for task_id, span in by_task.items():
        expected = f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-"
        assert stored[task_id].startswith(expected)


class HalfFail(jm.Worker):
    """Answers even numbers, fails odd ones (no retries)."""

    handle_signals = False
    retries = 0

    def process(self, task: jm.Task) -> None:
        if task.data % 2:
            raise ValueError("odd")
        self.reply(task.data)


def test_wait_all_is_one_span_linked_to_every_send(dsn: str, sdk: SDK) -> None:
    tracer = sdk.tracer_provider.get_tracer("test")
    with (
        jm.Client(dsn, queue="otel.all") as client,
        Doubler(dsn, queue="otel.all") as w,
        tracer.start_as_current_span("request") as request,
    ):
        ids = [client.send({"n": n}) for n in range(3)]
        for _ in ids:
            assert w.work_once()
        assert client.wait_all(ids, timeout=10) == [{"double": 2 * n} for n in range(3)]
    sends = sdk.finished("send otel.all")
    assert len(sends) == 3
    (wait,) = sdk.finished("wait otel.all")
    assert wait.kind == SpanKind.CLIENT
    assert wait.parent is not None and wait.parent.span_id == request.get_span_context().span_id
    assert {link.context.span_id for link in wait.links} == {s.context.span_id for s in sends}
    assert wait.attributes is not None
    assert wait.attributes["messaging.batch.message_count"] == 3
    assert wait.attributes["job_machine.tasks.failed"] == 0
    assert wait.status.status_code == StatusCode.UNSET
    assert sum(p.count for p in sdk.metrics()["job_machine.wait.duration"]) == 3


async def test_as_completed_span_counts_failures_and_survives_an_early_stop(
    dsn: str, sdk: SDK
) -> None:
    async with jm.AsyncClient(dsn, queue="otel.some") as client:
        ids = await client.send_many([0, 1, 2, 4])
        more = await client.send_many([6, 8])
        with HalfFail(dsn, queue="otel.some") as w:
            for _ in ids + more:
                assert w.work_once()
        seen = [a async for a in client.as_completed(ids, timeout=10)]
        assert sorted(a.failed for a in seen) == [False, False, False, True]
        # Stopping early ends the span without calling it an error.
        async with aclosing(client.as_completed(more, timeout=10)) as answers:
            async for _ in answers:
                break
    first, early = sorted(sdk.finished("wait otel.some"), key=lambda s: s.start_time or 0)
    assert first.attributes is not None and early.attributes is not None
    assert first.attributes["job_machine.tasks.failed"] == 1
    assert first.status.status_code == StatusCode.ERROR
    assert len(first.links) == 1  # send_many: one send span for the four
    assert early.status.status_code == StatusCode.UNSET
    assert early.attributes["messaging.batch.message_count"] == 2
