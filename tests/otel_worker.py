"""A worker process with its own OpenTelemetry SDK, for tests/integration/test_otel.py.

Run as ``python -m tests.otel_worker DSN QUEUE OUT``: configures a global
tracer provider with an in-memory exporter, works one waiting task of QUEUE
(replying ``{"double": 2 * n}``), and writes the spans it ended to OUT as
JSON (one object per span: name, kind, trace and span ids, parent id,
attributes, status, events), plus the module path of job_machine it used.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import job_machine as jm


class Doubler(jm.Worker):
    handle_signals = False

    def process(self, task: jm.Task) -> None:
        self.reply({"double": 2 * task.data["n"]})


def span_json(span: Any) -> dict[str, Any]:
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "attributes": dict(span.attributes),
        "status": span.status.status_code.name,
        "events": [e.name for e in span.events],
        "start": span.start_time,
        "end": span.end_time,
    }


def main() -> None:
    dsn, queue, out = sys.argv[1:4]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    with Doubler(dsn, queue=queue) as worker:
        worked = worker.work_once()
    spans = [span_json(s) for s in exporter.get_finished_spans()]
    Path(out).write_text(
        json.dumps({"worked": worked, "module": jm.__file__, "spans": spans}), "utf-8"
    )


if __name__ == "__main__":
    main()
