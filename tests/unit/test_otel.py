"""job_machine/_otel.py when opentelemetry is missing or not configured:
every helper is a shared no-op (no span, no generator, nothing stored)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import pytest
from opentelemetry import trace

from job_machine import _otel
from job_machine.task import Task

TASK = Task(id=1, queue="q", data=None, attempt=1, created=datetime.now(UTC))


def _all_off() -> None:
    assert not _otel.enabled()
    with _otel.send_span("q") as span:
        assert span.context is None
        span.sent(1)
    assert _otel.send_span("q") is _otel.send_span("q", 3)
    assert _otel.process_span(TASK, lambda: True) is _otel._NOTHING
    assert _otel.reply_span(TASK) is _otel._NOTHING
    remembered = _otel.Remembered()
    remembered.add(1, None, "q")
    assert remembered.wait_span(1) is _otel._NOTHING
    assert not remembered._contexts
    _otel.count("sent", "q")
    _otel.record("duration", "q", 1.0)


def test_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # import fails
    try:
        _otel.refresh()
        _all_off()
    finally:
        monkeypatch.undo()
        _otel.refresh()


def test_installed_but_not_configured() -> None:
    _otel.refresh()
    _all_off()


def test_trace_context_round_trip() -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for stored in (parent, f"{parent}\nvendor=x"):
        context = _otel.extract(stored)
        span_context = trace.get_current_span(context).get_span_context()
        assert f"{span_context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
        assert f"{span_context.span_id:016x}" == "b7ad6b7169203331"
    assert _otel.extract(None) is None
    assert _otel.extract("") is None
