"""OpenTelemetry traces and metrics (the ``job_machine[otel]`` extra).

Hand-written, not twinned: both faces call the same helpers, which are
synchronous context managers and plain calls.

Zero cost when unused: opentelemetry is imported the first time a helper
asks whether tracing is on, and only then; when the package is missing, or
no tracer provider is configured (the API's default proxy), every helper
is a no-op that returns at once (a module global read). The answer is
computed once per process: configure the SDK before the first send or the
worker's start (or call :func:`refresh` after).

Spans follow OpenTelemetry's messaging semantic conventions:

- ``send <queue>`` (PRODUCER) around :meth:`Client.send`; its context is
  stored with the task (``task.trace_context``: the W3C ``traceparent``,
  then a newline and the ``tracestate`` when there is one);
- ``process <queue>`` (CONSUMER) around ``process(task)`` in the worker,
  whose parent is that stored context, so the worker's work is part of the
  sender's trace, in whatever process it runs;
- ``reply <queue>`` (PRODUCER) inside it, around ``reply``/``result``;
- ``wait <queue>`` (CLIENT) around :meth:`Client.wait`, a child of the
  send span when the same client sent the task; around
  :meth:`Client.wait_all` and :meth:`Client.as_completed`, one span for
  all the tasks, a child of the caller's span linked to each send span.

Errors are recorded on the process span (an exception event, status
ERROR, ``job_machine.task.will_retry``); a task answered as failed makes
the wait span ERROR.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .task import Task

#: Traces: the tracer, or None when tracing is off. Unset until first asked.
_tracer: Any = None
#: Metrics: the instruments by name, or None when metrics are off.
_instruments: dict[str, Any] | None = None
_checked = False

SYSTEM = "job_machine"

#: How many sent tasks' contexts a client remembers for its waits.
_REMEMBERED = 1024


def _check() -> None:
    """Find out, once, whether a tracer and a meter provider are configured."""
    configure()


def configure(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Trace and measure through these providers (opentelemetry SDK objects)
    rather than the global ones (``trace.set_tracer_provider``...); what is
    not given is looked up globally again. Tests use it; so may an
    application that keeps its providers to itself."""
    global _tracer, _instruments, _checked  # noqa: PLW0603
    _checked = True
    _tracer = None
    _instruments = None
    try:
        from opentelemetry import metrics, trace  # noqa: PLC0415
    except ImportError:
        return
    provider = tracer_provider or trace.get_tracer_provider()
    if not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        _tracer = provider.get_tracer("job_machine")
    meters = meter_provider or metrics.get_meter_provider()
    if type(meters).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider"):
        meter = meters.get_meter("job_machine")
        _instruments = {
            "sent": meter.create_counter(
                "job_machine.tasks.sent", "{task}", "Tasks sent, by queue"
            ),
            "started": meter.create_counter(
                "job_machine.tasks.started", "{task}", "Task attempts started, by queue"
            ),
            "answered": meter.create_counter(
                "job_machine.tasks.answered", "{task}", "Task attempts that ended well, by queue"
            ),
            "failed": meter.create_counter(
                "job_machine.tasks.failed", "{task}", "Task attempts that raised, by queue"
            ),
            "duration": meter.create_histogram(
                "job_machine.process.duration", "s", "Time process() took"
            ),
            "queue_wait": meter.create_histogram(
                "job_machine.queue.wait", "s", "Time from a task's sending to its claim"
            ),
            "round_trip": meter.create_histogram(
                "job_machine.wait.duration",
                "s",
                "Round trip a client's wait saw, from its send to the answer",
            ),
        }


def refresh() -> None:
    """Look again for a configured tracer and meter provider (after
    configuring the SDK late, or in tests)."""
    _check()


def enabled() -> bool:
    """Whether traces are on (a tracer provider is configured)."""
    if not _checked:
        _check()
    return _tracer is not None


def _attributes(queue: str, operation: str, task_id: int | None = None) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.destination.name": queue,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
    }
    if task_id is not None:
        attributes["messaging.message.id"] = str(task_id)
    return attributes


def _inject() -> str | None:
    """The current span's context as stored in ``task.trace_context``."""
    from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
        TraceContextTextMapPropagator,
    )

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    parent = carrier.get("traceparent")
    if parent is None:
        return None
    state = carrier.get("tracestate")
    return f"{parent}\n{state}" if state else parent


def extract(stored: str | None) -> Any:
    """The OpenTelemetry context of a stored ``trace_context`` (None when empty)."""
    if not stored:
        return None
    from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
        TraceContextTextMapPropagator,
    )

    parent, _, state = stored.partition("\n")
    carrier = {"traceparent": parent}
    if state:
        carrier["tracestate"] = state
    return TraceContextTextMapPropagator().extract(carrier)


def count(name: str, queue: str, n: int = 1) -> None:
    """Add ``n`` to the counter ``name`` (sent, started, answered, failed) for ``queue``."""
    if not _checked:
        _check()
    if _instruments is not None:
        _instruments[name].add(n, {"messaging.destination.name": queue})


def record(name: str, queue: str, seconds: float) -> None:
    """Record ``seconds`` in the histogram ``name`` (duration, queue_wait, round_trip)."""
    if not _checked:
        _check()
    if _instruments is not None:
        _instruments[name].record(seconds, {"messaging.destination.name": queue})


class SendSpan:
    """What :func:`send_span` yields: the context to store, and the id once known."""

    __slots__ = ("context", "span")

    def __init__(self, span: Any, context: str | None) -> None:
        self.span = span
        self.context = context

    def sent(self, task_ids: list[int] | int) -> None:
        """Name the task (or the batch's tasks) sent."""
        if self.span is None:
            return
        if isinstance(task_ids, int):
            self.span.set_attribute("messaging.message.id", str(task_ids))
        else:
            self.span.set_attribute("messaging.batch.message_count", len(task_ids))


_NO_SEND = SendSpan(None, None)
#: What the helpers return when nothing is traced or measured: no generator
#: made per call on the hot paths.
_NO_SEND_CONTEXT = nullcontext(_NO_SEND)
_NOTHING = nullcontext()


def send_span(queue: str, batch: int | None = None) -> AbstractContextManager[SendSpan]:
    """A producer span around a send; yields the context to store with the task."""
    if not _checked:
        _check()
    if _tracer is None and _instruments is None:
        return _NO_SEND_CONTEXT
    return _send_span(queue, batch)


@contextmanager
def _send_span(queue: str, batch: int | None) -> Iterator[SendSpan]:
    count("sent", queue, batch or 1)
    if _tracer is None:
        yield _NO_SEND
        return
    from opentelemetry.trace import SpanKind  # noqa: PLC0415

    attributes = _attributes(queue, "send")
    with _tracer.start_as_current_span(
        f"send {queue}", kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        yield SendSpan(span, _inject())


def process_span(task: Task, will_retry: Callable[[], bool]) -> AbstractContextManager[None]:
    """A consumer span around ``process(task)``, child of the sender's
    context; records the attempt's metrics and any exception.
    ``will_retry`` says, when it raised, whether attempts remain."""
    if not _checked:
        _check()
    if _tracer is None and _instruments is None:
        return _NOTHING
    return _process_span(task, will_retry)


@contextmanager
def _process_span(task: Task, will_retry: Callable[[], bool]) -> Iterator[None]:
    count("started", task.queue)
    record("queue_wait", task.queue, _since(task.due or task.created))
    started = time.monotonic()
    span = None
    try:
        if _tracer is None:
            yield
        else:
            from opentelemetry.trace import SpanKind, Status, StatusCode  # noqa: PLC0415

            attributes = _attributes(task.queue, "process", task.id)
            attributes["job_machine.task.attempt"] = task.attempt
            with _tracer.start_as_current_span(
                f"process {task.queue}",
                context=extract(task.trace_context),
                kind=SpanKind.CONSUMER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    yield
                except BaseException as ex:
                    span.record_exception(ex)
                    span.set_status(Status(StatusCode.ERROR, f"{type(ex).__qualname__}: {ex}"))
                    span.set_attribute("error.type", type(ex).__qualname__)
                    span.set_attribute("job_machine.task.will_retry", will_retry())
                    raise
    except BaseException:
        count("failed", task.queue)
        raise
    else:
        count("answered", task.queue)
    finally:
        record("duration", task.queue, time.monotonic() - started)


def reply_span(task: Task) -> AbstractContextManager[None]:
    """A producer span around a worker's reply (inside its process span)."""
    if _tracer is None:
        return _NOTHING
    return _reply_span(task)


@contextmanager
def _reply_span(task: Task) -> Iterator[None]:
    from opentelemetry.trace import SpanKind  # noqa: PLC0415

    with _tracer.start_as_current_span(
        f"reply {task.queue}",
        kind=SpanKind.PRODUCER,
        attributes=_attributes(task.queue, "reply", task.id),
    ):
        yield


class Remembered:
    """The trace contexts of a client's latest sends, for its waits' spans."""

    __slots__ = ("_contexts",)

    def __init__(self) -> None:
        self._contexts: OrderedDict[int, tuple[str | None, float, str]] = OrderedDict()

    def add(self, task_id: int, context: str | None, queue: str) -> None:
        """Remember how task ``task_id`` was sent (only when traces or metrics are on)."""
        if _tracer is None and _instruments is None:
            return
        self._contexts[task_id] = (context, time.monotonic(), queue)
        if len(self._contexts) > _REMEMBERED:
            self._contexts.popitem(last=False)

    def wait_span(self, task_id: int) -> AbstractContextManager[None]:
        """A client span around a wait for ``task_id``'s answer."""
        if _tracer is None and _instruments is None:
            return _NOTHING
        return self._wait_span(task_id)

    @contextmanager
    def _wait_span(self, task_id: int) -> Iterator[None]:
        sent = self._contexts.get(task_id)
        queue = sent[2] if sent else ""
        if _tracer is None:
            yield
        else:
            from opentelemetry.trace import SpanKind  # noqa: PLC0415

            parent = extract(sent[0]) if sent else None
            with _tracer.start_as_current_span(
                f"wait {queue}".rstrip(),
                context=parent,
                kind=SpanKind.CLIENT,
                attributes=_attributes(queue, "receive", task_id),
            ):
                yield
        if sent is not None:
            record("round_trip", queue, time.monotonic() - sent[1])
            self._contexts.pop(task_id, None)

    def group_span(self, task_ids: list[int]) -> AbstractContextManager[Callable[..., None]]:
        """A client span around a wait for several tasks' answers
        (``wait_all``, ``as_completed``); yields the function to call with
        each task id as it is answered (``failed=True`` for a failed one),
        which records that task's round trip.

        The span is a child of the caller's current span (a web request's),
        linked to each task's send span: one wait gathers many traces. It is
        never made the current span, so ``as_completed`` may yield inside it.
        """
        if _tracer is None and _instruments is None:
            return _NO_GROUP_CONTEXT
        return self._group_span(task_ids)

    @contextmanager
    def _group_span(self, task_ids: list[int]) -> Iterator[Callable[..., None]]:
        sent = [self._contexts.get(t) for t in task_ids]
        queues = {s[2] for s in sent if s is not None}
        failures = 0

        def answered(task_id: int, failed: bool = False) -> None:
            nonlocal failures
            failures += failed
            mine = self._contexts.pop(task_id, None)
            if mine is not None:
                record("round_trip", mine[2], time.monotonic() - mine[1])

        if _tracer is None:
            yield answered
            return
        from opentelemetry import trace  # noqa: PLC0415
        from opentelemetry.trace import Link, SpanKind, Status, StatusCode  # noqa: PLC0415

        links: dict[int, Any] = {}  # one link per send span (send_many's tasks share one)
        for s in sent:
            if s is not None and s[0]:
                context = trace.get_current_span(extract(s[0])).get_span_context()
                if context.is_valid:
                    links.setdefault(context.span_id, Link(context))
        queue = queues.pop() if len(queues) == 1 else ""
        attributes = _attributes(queue, "receive")
        attributes["messaging.batch.message_count"] = len(task_ids)
        span = _tracer.start_span(
            f"wait {queue}".rstrip(),
            kind=SpanKind.CLIENT,
            attributes=attributes,
            links=list(links.values()),
        )
        try:
            yield answered
        except GeneratorExit:  # the caller stopped iterating: not an error
            raise
        except BaseException as ex:
            span.record_exception(ex)
            span.set_status(Status(StatusCode.ERROR, f"{type(ex).__qualname__}: {ex}"))
            raise
        else:
            if failures:
                span.set_status(Status(StatusCode.ERROR, f"{failures} of the tasks failed"))
        finally:
            span.set_attribute("job_machine.tasks.failed", failures)
            span.end()


def _ignore(task_id: int, failed: bool = False) -> None:
    """What a grouped wait calls per answer when nothing is traced or measured."""


_NO_GROUP_CONTEXT = nullcontext(_ignore)


def _since(when: datetime) -> float:
    """Seconds from ``when`` to now (never negative)."""
    now = datetime.now(when.tzinfo)
    return max(0.0, (now - when).total_seconds())
