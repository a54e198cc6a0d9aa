"""The measuring side of the benchmark: one metric, one system, one JSON line.

``python -m bench.runner --system NAME --metric M ...`` (run by ``python -m
bench`` with the system's own interpreter) resets the system's schema, measures
one metric and prints one JSON line on stdout. This module owns all timing,
worker processes and percentiles; an :class:`Adapter` (one file per system in
``bench/systems/``) only knows how to talk to its system.

It needs only the standard library and psycopg 3, because it runs inside the
peers' virtual environments too (pgqueuer's, procrastinate's), which know
nothing of job_machine or rich.

Adapted from the shared harness (``shared/bench/lib/benchlib.py``): the same
definitions, so the numbers compare with its RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg

T = TypeVar("T")

#: Jobs per bulk call (send_many batch).
BULK_CHUNK = 1000
#: Seconds between submissions in the wake-up test.
WAKEUP_SPACING = 0.020
#: Shortest and longest interval of the drain's completion polling. The
#: interval grows with the elapsed time (0.2 % of it), so a long drain is not
#: slowed by a count(*) every 20 ms while a short one keeps 20 ms resolution.
POLL_MIN = 0.02
POLL_MAX = 0.5
#: Seconds without progress after which a drain is declared stalled (longer
#: than a job_machine worker's 30 s re-read of its queues).
STALL = 45.0
#: Seq of the warm-up job that proves a worker is up and listening.
WARMUP_SEQ = 10**9
#: application_name of the callers' client in the callers scenarios: the
#: monitor counts the server backends with this name.
CALLERS_APP = "bench-callers"
#: Seconds between two samples of the callers' connections.
SAMPLE_EVERY = 0.02


class Unsupported(Exception):
    """Raised by an adapter for a scenario its system has no equivalent of."""


class CallTimeout(Exception):
    """Raised by an adapter's :meth:`Adapter.acall` / :meth:`Adapter.call_sync`
    when the answer did not come within the call's timeout."""


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """How to run a worker process.

    :param drain: the worker may exit once the queue is empty (or run on;
        the harness stops it when all jobs are done).
    :param concurrency: tasks at once per process; None is the system's default.
    :param use_async: the system's asyncio worker instead of its sync one
        (where it has both).
    :param reply: every task is answered with the system's reply (job_machine's
        ``reply``), not only marked done.
    """

    drain: bool
    concurrency: int | None = None
    use_async: bool = False
    reply: bool = False


# --------------------------------------------------------------------------
# helpers for adapters (inside worker processes)
# --------------------------------------------------------------------------

_TS_FD: int | None = None


def mark(seq: int) -> None:
    """Call first thing in a job handler: records (seq, time.time(), pid) for
    the latency metrics (and to know which worker process is up). A no-op when
    the harness did not ask for timestamps."""
    if _TS_FD is not None:
        os.write(_TS_FD, f"{int(seq)} {time.time():.6f} {os.getpid()}\n".encode())


async def maybe_await(value: T | Awaitable[T]) -> T:
    """The value, awaited if it is awaitable (adapters may be sync or async)."""
    if inspect.isawaitable(value):
        return await value
    return value


def pctl(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100.0 * len(s) + 0.5) - 1))
    return s[k]


def reset_database(dsn: str, extra_schemas: Sequence[str] = ()) -> None:
    """Drop every object of every system in the bench database: the public
    schema and the named schemas. Only ever run on the bench's own database."""
    with psycopg.connect(dsn, autocommit=True) as c:
        for name in extra_schemas:
            c.execute(
                psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    psycopg.sql.Identifier(name)
                )
            )
        c.execute("DROP SCHEMA IF EXISTS public CASCADE")
        c.execute("CREATE SCHEMA public")
        c.execute("GRANT ALL ON SCHEMA public TO public")


def execute(dsn: str, *statements: str) -> None:
    """Run statements in autocommit, one after the other."""
    with psycopg.connect(dsn, autocommit=True) as c:
        for statement in statements:
            c.execute(statement.encode())


def scalar(dsn: str, query: str) -> Any:
    """The first column of the first row of ``query``."""
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(query.encode()).fetchone()
        return None if row is None else row[0]


# --------------------------------------------------------------------------
# adapter base class
# --------------------------------------------------------------------------


class Adapter:
    """One queue system. Subclass per system; every method may be sync or async."""

    #: Short name in the results.
    name = "override-me"
    #: SQL counting the jobs not yet finished (drain completion).
    remaining_sql = ""
    #: Whether its workers can answer a job with a reply the submitter reads
    #: (the drain_reply scenarios).
    replies = False

    def __init__(self, dsn: str, args: argparse.Namespace) -> None:
        self.dsn = dsn
        self.args = args

    def version(self) -> str:
        """The system's version (and its driver's)."""
        return "?"

    def concurrency_note(self, spec: WorkerSpec) -> str:
        """How the worker of ``spec`` runs, in words, for the report."""
        return "default" if spec.concurrency is None else f"concurrency={spec.concurrency}"

    def check_spec(self, spec: WorkerSpec) -> None:
        """Raise Unsupported when the system cannot run a worker like ``spec``."""

    # -- schema -----------------------------------------------------------

    def reset(self) -> Any:
        """Drop and recreate everything the system needs."""
        raise NotImplementedError

    def fill_history(self, n: int) -> Any:
        """Insert ``n`` finished jobs, as a long-running installation has them
        (raise Unsupported when the system does not keep finished jobs)."""
        raise Unsupported("no history of finished jobs")

    # -- client side (in the runner process) --------------------------------

    def open_client(self) -> Any:
        """Open what submitting needs. Called inside the event loop."""

    def close_client(self) -> Any:
        """Close what :meth:`open_client` opened."""

    def enqueue(self, seq: int) -> Any:
        """Submit ONE no-op job carrying ``seq``, in its own transaction."""
        raise NotImplementedError

    def enqueue_bulk(self, seqs: list[int]) -> Any:
        """Submit many jobs with the system's bulk API (or raise Unsupported)."""
        raise Unsupported("no bulk API")

    def roundtrip(self, seq: int) -> Any:
        """Submit one job and block until its result is back at the submitter."""
        raise Unsupported("no result/reply API")

    # -- many callers sharing one client (the callers scenarios) -------------

    def open_callers(self, application_name: str, threads: bool) -> Any:
        """Open ONE client shared by every caller, its connections tagged with
        ``application_name`` (the harness counts them in pg_stat_activity).
        ``threads``: the callers are threads calling :meth:`call_sync` (then
        this is called outside any event loop); else asyncio tasks calling
        :meth:`acall` (called inside the loop)."""
        raise Unsupported("no result/reply API")

    def close_callers(self) -> Any:
        """Close what :meth:`open_callers` opened."""

    async def acall(self, seq: int, timeout: float) -> None:
        """Submit one job on the shared client and wait for its answer (raise
        :class:`CallTimeout` after ``timeout`` seconds without one)."""
        raise Unsupported("no result/reply API")

    def call_sync(self, seq: int, timeout: float) -> None:
        """:meth:`acall` from a thread, on the shared sync client."""
        raise Unsupported("no sync client to share between threads")

    def has_bulk(self) -> bool:
        return type(self).enqueue_bulk is not Adapter.enqueue_bulk

    def has_roundtrip(self) -> bool:
        return type(self).roundtrip is not Adapter.roundtrip

    # -- worker side (in a forked child) ----------------------------------

    def run_worker(self, spec: WorkerSpec) -> None:
        """Run one worker process (blocking). Its no-op handler calls
        :func:`mark` with the job's seq first thing, and does nothing else."""
        raise NotImplementedError


# --------------------------------------------------------------------------
# worker processes
# --------------------------------------------------------------------------


def _worker_entry(adapter: Adapter, spec: WorkerSpec, ts_fd: int | None) -> None:
    global _TS_FD  # noqa: PLW0603 (the child's one piece of state)
    _TS_FD = ts_fd
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    try:
        adapter.run_worker(spec)
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        os._exit(3)


class Workers:
    """``k`` worker processes forked from the runner (after its imports, so
    interpreter start-up is not measured; connection set-up is), and the
    timestamps their handlers :func:`mark` through a pipe."""

    def __init__(self, adapter: Adapter, k: int, spec: WorkerSpec, want_ts: bool) -> None:
        self.ctx = mp.get_context("fork")
        self.adapter, self.k, self.spec = adapter, k, spec
        self.r: int | None = None
        self.w: int | None = None
        if want_ts:
            self.r, self.w = os.pipe()
        self.procs: list[Any] = []
        self.ts: dict[int, float] = {}
        #: The worker processes that marked a job.
        self.seen: set[int] = set()
        self.cond = threading.Condition()

    def start(self) -> None:
        for _ in range(self.k):
            p = self.ctx.Process(
                target=_worker_entry, args=(self.adapter, self.spec, self.w), daemon=True
            )
            p.start()
            self.procs.append(p)
        if self.r is not None and self.w is not None:
            os.close(self.w)
            threading.Thread(target=self._read, args=(self.r,), daemon=True).start()

    def _read(self, fd: int) -> None:
        buf = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            with self.cond:
                for line in lines:
                    s, t, pid = line.split()
                    self.ts.setdefault(int(s), float(t))
                    self.seen.add(int(pid))
                self.cond.notify_all()

    def wait_for(self, seqs: Sequence[int], timeout: float) -> bool:
        end = time.time() + timeout
        with self.cond:
            while not all(s in self.ts for s in seqs):
                left = end - time.time()
                if left <= 0 or not self.alive():
                    return False
                self.cond.wait(min(left, 0.5))
        return True

    def alive(self) -> bool:
        return any(p.is_alive() for p in self.procs)

    def pids(self) -> list[int]:
        return [int(p.pid) for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in KiB, from /proc."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


# --------------------------------------------------------------------------
# the scenarios
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Params:
    """What one invocation measures."""

    metric: str
    n: int
    workers: int = 1
    spec: WorkerSpec = WorkerSpec(drain=True)
    history: int = 0
    vacuum: bool = False
    idle: float = 1.0
    timeout: float = 1200.0
    stall: float = STALL
    callers: int = 0
    threads: bool = False
    call_timeout: float = 10.0
    call_budget: float = 60.0


METRICS = ("enqueue", "enqueue_bulk", "drain", "wakeup", "roundtrip", "callers", "memory")


def _run_client(adapter: Adapter, fn: Callable[[], Awaitable[T]]) -> T:
    async def go() -> T:
        await maybe_await(adapter.open_client())
        try:
            return await fn()
        finally:
            await maybe_await(adapter.close_client())

    return asyncio.run(go())


async def _submit_all(adapter: Adapter, n: int) -> None:
    if adapter.has_bulk():
        for s in range(0, n, BULK_CHUNK):
            await maybe_await(adapter.enqueue_bulk(list(range(s, min(n, s + BULK_CHUNK)))))
    else:
        for i in range(n):
            await maybe_await(adapter.enqueue(i))


def _wait_drained(
    dsn: str, sql: str, ws: Workers, t0: float, *, timeout: float, stall: float = STALL
) -> float:
    """Poll until ``sql`` counts 0 unfinished jobs; the time it was seen so.

    Gives up when the count has not moved for ``stall`` seconds (a worker that
    stopped claiming) or after ``timeout``."""
    with psycopg.connect(dsn, autocommit=True) as poll:

        def left() -> int:
            row = poll.execute(sql.encode()).fetchone()
            return int(row[0]) if row else 0

        deadline = t0 + timeout
        last, moved = -1, time.time()
        while True:
            remaining = left()
            if remaining == 0:
                return time.time()
            now = time.time()
            if remaining != last:
                last, moved = remaining, now
            elif now - moved > stall:
                raise RuntimeError(
                    f"drain stalled: {remaining} jobs left, none finished for {stall:.0f} s"
                )
            if now > deadline:
                raise RuntimeError(f"drain timed out, {remaining} left")
            if not ws.alive():
                if left() == 0:  # all workers exited: one last look
                    return time.time()
                raise RuntimeError(f"workers exited with {remaining} jobs left")
            time.sleep(min(POLL_MAX, max(POLL_MIN, (now - t0) * 0.002)))


def _measure_enqueue(adapter: Adapter, n: int, bulk: bool) -> dict[str, Any]:
    if bulk and not adapter.has_bulk():
        raise Unsupported("no bulk API")
    execute(adapter.dsn, "CHECKPOINT")

    async def go() -> float:
        t0 = time.perf_counter()
        if bulk:
            for s in range(0, n, BULK_CHUNK):
                await maybe_await(adapter.enqueue_bulk(list(range(s, min(n, s + BULK_CHUNK)))))
        else:
            for i in range(n):
                await maybe_await(adapter.enqueue(i))
        return time.perf_counter() - t0

    dt = _run_client(adapter, go)
    out: dict[str, Any] = {"value": n / dt, "unit": "jobs/s", "seconds": dt}
    if bulk:
        out["chunk"] = BULK_CHUNK
    return out


def _measure_drain(adapter: Adapter, p: Params) -> dict[str, Any]:
    if p.history:
        asyncio.run(_as_coro(adapter.fill_history(p.history)))

    async def fill() -> None:
        await _submit_all(adapter, p.n)

    _run_client(adapter, fill)
    remaining = scalar(adapter.dsn, adapter.remaining_sql)
    assert remaining == p.n, f"expected {p.n} queued jobs, found {remaining}"
    # Fresh planner statistics (a steady-state queue, as the shared harness
    # does); after a big history also a VACUUM, as autovacuum would have done.
    if os.environ.get("BENCH_ANALYZE", "1") != "0":
        execute(adapter.dsn, "VACUUM ANALYZE" if p.vacuum else "ANALYZE")
    execute(adapter.dsn, "CHECKPOINT")
    ws = Workers(adapter, p.workers, p.spec, want_ts=False)
    t0 = time.time()
    ws.start()  # fork before opening the polling connection
    try:
        t1 = _wait_drained(
            adapter.dsn, adapter.remaining_sql, ws, t0, timeout=p.timeout, stall=p.stall
        )
    finally:
        ws.stop()
    dt = t1 - t0
    return {
        "value": p.n / dt,
        "unit": "jobs/s",
        "seconds": dt,
        "workers": p.workers,
        "history": p.history,
        "concurrency": adapter.concurrency_note(p.spec),
    }


async def _as_coro(value: Any) -> Any:
    return await maybe_await(value)


def _measure_wakeup(adapter: Adapter, p: Params) -> dict[str, Any]:
    ws = Workers(adapter, 1, WorkerSpec(drain=False), want_ts=True)
    ws.start()
    try:

        async def go() -> dict[int, float]:
            # The warm-up job proves the worker is up and listening.
            await maybe_await(adapter.enqueue(WARMUP_SEQ))
            if not ws.wait_for([WARMUP_SEQ], 60):
                raise RuntimeError("the worker never processed the warm-up job")
            await asyncio.sleep(p.idle)
            sent: dict[int, float] = {}
            nxt = time.time()
            for i in range(p.n):
                now = time.time()
                if nxt > now:
                    await asyncio.sleep(nxt - now)
                sent[i] = time.time()
                await maybe_await(adapter.enqueue(i))
                nxt = sent[i] + WAKEUP_SPACING
            return sent

        sent = _run_client(adapter, go)
        complete = ws.wait_for(list(range(p.n)), 60)
        with ws.cond:
            lat = [(ws.ts[i] - sent[i]) * 1000.0 for i in range(p.n) if i in ws.ts]
    finally:
        ws.stop()
    return {
        "p50_ms": pctl(lat, 50),
        "p99_ms": pctl(lat, 99),
        "max_ms": max(lat) if lat else None,
        "unit": "ms",
        "received": len(lat),
        "complete": complete,
    }


def _measure_roundtrip(adapter: Adapter, p: Params) -> dict[str, Any]:
    if not adapter.has_roundtrip():
        raise Unsupported("no result/reply API")
    ws = Workers(adapter, 1, WorkerSpec(drain=False), want_ts=True)
    ws.start()
    try:

        async def go() -> list[float]:
            await maybe_await(adapter.enqueue(WARMUP_SEQ))
            if not ws.wait_for([WARMUP_SEQ], 60):
                raise RuntimeError("the worker never processed the warm-up job")
            await asyncio.sleep(p.idle)
            lat = []
            for i in range(p.n):
                t0 = time.perf_counter()
                await maybe_await(adapter.roundtrip(i))
                lat.append((time.perf_counter() - t0) * 1000.0)
            return lat

        lat = _run_client(adapter, go)
    finally:
        ws.stop()
    return {
        "p50_ms": pctl(lat, 50),
        "p99_ms": pctl(lat, 99),
        "max_ms": max(lat),
        "unit": "ms",
        "received": len(lat),
    }


def _warm_up_all(adapter: Adapter, ws: Workers, timeout: float = 60.0) -> int:
    """Send warm-up jobs one at a time until every worker process has
    processed one (each is then up and listening); how many it took."""

    async def go() -> int:
        end = time.time() + timeout
        sent = 0
        while True:
            with ws.cond:
                if ws.seen >= set(ws.pids()):
                    return sent
            if time.time() > end:
                raise RuntimeError(f"only {len(ws.seen)} of {ws.k} workers came up")
            seq = WARMUP_SEQ + sent
            await maybe_await(adapter.enqueue(seq))
            sent += 1
            if not ws.wait_for([seq], max(0.0, end - time.time())):
                raise RuntimeError("the workers never processed a warm-up job")

    return _run_client(adapter, go)


class ConnectionSampler:
    """Counts, every :data:`SAMPLE_EVERY` s on a connection of its own (whose
    application_name differs, so it never counts itself), the server backends
    of this database whose application_name is ``name``; keeps the peak."""

    def __init__(self, dsn: str, name: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True, application_name="bench-monitor")
        self.name = name
        self.peak = 0
        self.samples = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            (self.name,),
        ).fetchone()
        n = int(row[0]) if row else 0
        self.peak = max(self.peak, n)
        self.samples += 1
        return n

    def _run(self) -> None:
        while not self.stopped.wait(SAMPLE_EVERY):
            self.sample()

    def __enter__(self) -> ConnectionSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()
        self.conn.close()


@dataclass(slots=True)
class CallStats:
    """What the callers of one run saw (shared by threads: hold ``lock``)."""

    lock: threading.Lock
    rt_ms: list[float]
    answered: int = 0
    timeouts: int = 0
    failed: int = 0
    not_run: int = 0
    late: int = 0
    errors: list[str] | None = None

    def ended(self, t0: float, outcome: BaseException | None, call_timeout: float) -> None:
        """Record one call that started at ``t0`` (perf_counter) and ended now."""
        elapsed = time.perf_counter() - t0
        with self.lock:
            if outcome is None:
                self.answered += 1
                self.rt_ms.append(elapsed * 1000.0)
                if elapsed >= call_timeout:
                    self.late += 1
            elif isinstance(outcome, CallTimeout):
                self.timeouts += 1
                self.rt_ms.append(elapsed * 1000.0)
            else:
                self.failed += 1
                if self.errors is None:
                    self.errors = []
                text = f"{type(outcome).__name__}: {outcome}"
                if len(self.errors) < 5 and text not in self.errors:
                    self.errors.append(text)


def _measure_callers(adapter: Adapter, p: Params) -> dict[str, Any]:
    """``p.callers`` callers (asyncio tasks, or threads with ``p.threads``)
    sharing ONE client each make ``p.n / p.callers`` calls in sequence: submit,
    then wait for the answer; against ``p.workers`` worker processes."""
    per_caller = p.n // p.callers
    stats = CallStats(threading.Lock(), [])
    ws = Workers(adapter, p.workers, WorkerSpec(drain=False, reply=True), want_ts=True)
    ws.start()
    try:
        warm_ups = _warm_up_all(adapter, ws)
        with ConnectionSampler(adapter.dsn, CALLERS_APP) as sampler:
            if p.threads:
                t0, t1 = _callers_threads(adapter, p, per_caller, stats, sampler)
            else:
                t0, t1 = asyncio.run(_callers_async(adapter, p, per_caller, stats, sampler))
    finally:
        ws.stop()
    dt = t1 - t0
    out: dict[str, Any] = {
        "value": stats.answered / dt,
        "unit": "answers/s",
        "seconds": dt,
        "p50_ms": pctl(stats.rt_ms, 50),
        "p99_ms": pctl(stats.rt_ms, 99),
        "max_ms": max(stats.rt_ms) if stats.rt_ms else None,
        "callers": p.callers,
        "threads": p.threads,
        "workers": p.workers,
        "calls": p.n,
        "received": stats.answered,
        "timeouts": stats.timeouts,
        "failed": stats.failed,
        "not_run": stats.not_run,
        "late": stats.late,
        "call_timeout": p.call_timeout,
        "peak_connections": sampler.peak,
        "samples": sampler.samples,
        "warm_ups": warm_ups,
    }
    if stats.errors:
        out["errors"] = stats.errors
    return out


async def _callers_async(
    adapter: Adapter, p: Params, per_caller: int, stats: CallStats, sampler: ConnectionSampler
) -> tuple[float, float]:
    await maybe_await(adapter.open_callers(CALLERS_APP, threads=False))
    try:
        t0 = time.perf_counter()
        budget_end = t0 + p.call_budget

        async def caller(k: int) -> None:
            for j in range(per_caller):
                if time.perf_counter() > budget_end:
                    with stats.lock:
                        stats.not_run += per_caller - j
                    return
                start = time.perf_counter()
                try:
                    await adapter.acall(k * per_caller + j, p.call_timeout)
                except Exception as e:  # counted, never dropped
                    stats.ended(start, e, p.call_timeout)
                else:
                    stats.ended(start, None, p.call_timeout)

        await asyncio.gather(*(caller(k) for k in range(p.callers)))
        t1 = time.perf_counter()
        # the client's connections are still open: count them once more
        await asyncio.to_thread(sampler.sample)
    finally:
        await maybe_await(adapter.close_callers())
    return t0, t1


def _callers_threads(
    adapter: Adapter, p: Params, per_caller: int, stats: CallStats, sampler: ConnectionSampler
) -> tuple[float, float]:
    asyncio.run(_as_coro(adapter.open_callers(CALLERS_APP, threads=True)))
    try:
        start_line = threading.Barrier(p.callers + 1)
        budget_end = 0.0

        def caller(k: int) -> None:
            start_line.wait()
            for j in range(per_caller):
                if time.perf_counter() > budget_end:
                    with stats.lock:
                        stats.not_run += per_caller - j
                    return
                start = time.perf_counter()
                try:
                    adapter.call_sync(k * per_caller + j, p.call_timeout)
                except Exception as e:  # counted, never dropped
                    stats.ended(start, e, p.call_timeout)
                else:
                    stats.ended(start, None, p.call_timeout)

        threads = [threading.Thread(target=caller, args=(k,)) for k in range(p.callers)]
        for t in threads:
            t.start()
        t0 = time.perf_counter()
        budget_end = t0 + p.call_budget
        start_line.wait()
        for t in threads:
            t.join()
        t1 = time.perf_counter()
        sampler.sample()  # the client's connections are still open: count them once more
    finally:
        asyncio.run(_as_coro(adapter.close_callers()))
    return t0, t1


def _measure_memory(adapter: Adapter, p: Params) -> dict[str, Any]:
    """RSS of one idle worker after start-up, and after it drained ``n`` jobs
    sent in bulk while it ran."""
    ws = Workers(adapter, 1, WorkerSpec(drain=False), want_ts=True)
    ws.start()
    try:

        async def warm_up() -> None:
            await maybe_await(adapter.enqueue(WARMUP_SEQ))
            if not ws.wait_for([WARMUP_SEQ], 60):
                raise RuntimeError("the worker never processed the warm-up job")

        _run_client(adapter, warm_up)
        time.sleep(p.idle)
        (pid,) = ws.pids()
        start, _ = rss_kib(pid)
        t0 = time.time()

        async def fill() -> None:
            await _submit_all(adapter, p.n)

        _run_client(adapter, fill)
        _wait_drained(adapter.dsn, adapter.remaining_sql, ws, t0, timeout=p.timeout, stall=p.stall)
        dt = time.time() - t0
        time.sleep(p.idle)
        end, peak = rss_kib(pid)
    finally:
        ws.stop()
    return {
        "rss_start_mib": start / 1024,
        "rss_end_mib": end / 1024,
        "rss_peak_mib": peak / 1024,
        "growth_mib": (end - start) / 1024,
        "unit": "MiB",
        "seconds": dt,
    }


def measure(adapter: Adapter, p: Params) -> dict[str, Any]:
    """Reset the system's schema, then measure one metric."""
    if p.metric == "drain":
        if p.spec.reply and not adapter.replies:
            raise Unsupported("no reply API: compare with its drain without replies")
        adapter.check_spec(p.spec)
    if p.metric == "callers":
        if type(adapter).acall is Adapter.acall:
            raise Unsupported("no result/reply API")
        if p.threads and type(adapter).call_sync is Adapter.call_sync:
            raise Unsupported("async-only: no sync client to share between threads")
    measures: dict[str, Callable[[Adapter, Params], dict[str, Any]]] = {
        "enqueue": lambda a, p: _measure_enqueue(a, p.n, bulk=False),
        "enqueue_bulk": lambda a, p: _measure_enqueue(a, p.n, bulk=True),
        "drain": _measure_drain,
        "wakeup": _measure_wakeup,
        "roundtrip": _measure_roundtrip,
        "callers": _measure_callers,
        "memory": _measure_memory,
    }
    if p.metric not in measures:
        raise SystemExit(f"unknown metric {p.metric}")
    asyncio.run(_as_coro(adapter.reset()))
    return measures[p.metric](adapter, p)


def main(adapter_cls: type[Adapter], argv: Sequence[str] | None = None) -> int:
    """Parse the runner's command line, measure, print one JSON line."""
    ap = argparse.ArgumentParser(description=f"bench runner: {adapter_cls.name}")
    ap.add_argument("--system", default=adapter_cls.name)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--metric", required=True, choices=METRICS)
    ap.add_argument("--key", default="", help="the scenario's key, copied into the output")
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=None)
    ap.add_argument("--async", dest="use_async", action="store_true")
    ap.add_argument("--history", type=int, default=0)
    ap.add_argument("--vacuum", action="store_true")
    ap.add_argument("--idle", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=1200.0)
    ap.add_argument("--stall", type=float, default=STALL)
    ap.add_argument("--reply", action="store_true", help="every task is answered with a reply")
    ap.add_argument("--callers", type=int, default=0, help="callers sharing one client")
    ap.add_argument("--threads", action="store_true", help="the callers are threads")
    ap.add_argument("--call-timeout", type=float, default=10.0)
    ap.add_argument("--call-budget", type=float, default=60.0)
    ap.add_argument("--run", default="", help="run id copied into the output")
    args = ap.parse_args(argv)
    adapter = adapter_cls(args.dsn, args)
    spec = WorkerSpec(
        drain=args.metric == "drain",
        concurrency=args.concurrency,
        use_async=args.use_async,
        reply=args.reply,
    )
    params = Params(
        metric=args.metric,
        n=args.n,
        workers=args.workers,
        spec=spec,
        history=args.history,
        vacuum=args.vacuum,
        idle=args.idle,
        timeout=args.timeout,
        stall=args.stall,
        callers=args.callers,
        threads=args.threads,
        call_timeout=args.call_timeout,
        call_budget=args.call_budget,
    )
    rec: dict[str, Any] = {
        "system": adapter.name,
        "key": args.key or args.metric,
        "metric": args.metric,
        "n": args.n,
        "run": args.run,
    }
    try:
        rec["version"] = adapter.version()
        rec.update(measure(adapter, params))
        rec["ok"] = True
    except Unsupported as e:
        rec.update(ok=False, unsupported=str(e))
    except Exception as e:  # report, don't crash the whole suite
        traceback.print_exc()
        rec.update(ok=False, error=f"{type(e).__name__}: {e}")
    sys.stdout.flush()
    print(json.dumps(rec), flush=True)
    return 0
