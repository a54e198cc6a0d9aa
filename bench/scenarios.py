"""What ``python -m bench`` measures: the scenarios, their sizes, their labels."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sizes:
    """How many tasks each scenario uses."""

    send: int = 10_000
    bulk: int = 50_000
    drain: int = 10_000
    latency: int = 200
    big_history: int = 1_000_000
    big_waiting: int = 20_000
    memory: int = 100_000
    pgbench_seconds: float = 10.0
    notify: int = 1000
    #: Calls of a callers_* scenario in all (at least one per caller),
    #: spread evenly over its callers.
    calls: int = 4000
    #: Seconds each caller's ``wait`` gives its answer at most (a call that
    #: runs out counts as timed out, a failure).
    call_timeout: float = 10.0
    #: Seconds after which a callers_* run starts no more calls (the calls
    #: left are counted as not run, a failure): bounds a run whose answers
    #: come only at each call's timeout.
    call_budget: float = 60.0
    #: Seconds a latency test lets the worker sit idle before measuring.
    idle: float = 1.0
    #: Seconds without progress after which a drain is declared stalled.
    stall: float = 45.0


QUICK = Sizes(
    send=200,
    bulk=2000,
    drain=500,
    latency=20,
    big_history=20_000,
    big_waiting=500,
    memory=1000,
    pgbench_seconds=2.0,
    notify=50,
    calls=200,
    call_timeout=5.0,
    call_budget=15.0,
    idle=0.2,
    stall=5.0,
)


@dataclass(frozen=True, slots=True)
class Scenario:
    """One row of the results table."""

    key: str
    label: str
    metric: str  #: the harness's metric
    #: "rate" (higher is better), "latency" (lower is better), "memory", or
    #: "callers" (answers/s, higher is better, with latencies, timeouts and
    #: connections in a table of their own)
    kind: str
    workers: int = 1
    concurrency: int | None = None
    use_async: bool = False
    big: bool = False  #: sized by big_waiting (and big_history when history)
    history: bool = False
    #: every process() answers with reply (drain_reply_*)
    reply: bool = False
    #: concurrent callers sharing one client (callers_*)
    callers: int = 0
    #: the callers are threads sharing one sync Client, not asyncio tasks
    threads: bool = False
    #: a row of the reply path (send → process → reply → wait), listed first
    reply_path: bool = False
    #: the scenario a peer without this one is compared with (its own
    #: no-reply drain for the reply drains), None: no comparison
    peer_key: str | None = None

    def n(self, sizes: Sizes) -> int:
        if self.metric == "callers":
            # every caller makes the same number of calls, at least one
            per_caller = -(-max(sizes.calls, self.callers) // self.callers)
            return per_caller * self.callers
        if self.metric == "enqueue":
            return sizes.send
        if self.metric == "enqueue_bulk":
            return sizes.bulk
        if self.metric in ("wakeup", "roundtrip"):
            return sizes.latency
        if self.metric == "memory":
            return sizes.memory
        return sizes.big_waiting if self.big else sizes.drain


SCENARIOS: tuple[Scenario, ...] = (
    # -- the reply path: send → process() → reply → the caller's wait ------
    Scenario(
        "drain_reply_w1",
        "drain with replies, 1 worker process: each process() calls reply (tasks/s)",
        "drain",
        "rate",
        reply=True,
        reply_path=True,
        peer_key="drain_w1",
    ),
    Scenario(
        "drain_reply_w2",
        "drain with replies, 2 worker processes (tasks/s)",
        "drain",
        "rate",
        workers=2,
        reply=True,
        reply_path=True,
        peer_key="drain_w2",
    ),
    Scenario(
        "roundtrip",
        "round trip, send → reply, one caller (ms)",
        "roundtrip",
        "latency",
        reply_path=True,
    ),
    Scenario(
        "callers_100",
        "100 asyncio callers on one AsyncClient, send + wait, 2 workers (answers/s)",
        "callers",
        "callers",
        workers=2,
        callers=100,
        reply_path=True,
    ),
    Scenario(
        "callers_1000",
        "1000 asyncio callers on one AsyncClient, send + wait, 2 workers (answers/s)",
        "callers",
        "callers",
        workers=2,
        callers=1000,
        reply_path=True,
    ),
    Scenario(
        "callers_threads_100",
        "100 threads on one Client, send + wait, 2 workers (answers/s)",
        "callers",
        "callers",
        workers=2,
        callers=100,
        threads=True,
        reply_path=True,
    ),
    # -- without replies ----------------------------------------------------
    Scenario("send", "send, one task per transaction (tasks/s)", "enqueue", "rate"),
    Scenario("send_many", "send_many, batches of 1000 (tasks/s)", "enqueue_bulk", "rate"),
    Scenario("drain_w1", "drain, no reply, 1 worker process (tasks/s)", "drain", "rate"),
    Scenario(
        "drain_w2", "drain, no reply, 2 worker processes (tasks/s)", "drain", "rate", workers=2
    ),
    Scenario(
        "drain_w1_c8",
        "drain, no reply, 1 process, concurrency 8 (tasks/s)",
        "drain",
        "rate",
        concurrency=8,
    ),
    Scenario(
        "drain_w2_c8",
        "drain, no reply, 2 processes, concurrency 8 (tasks/s)",
        "drain",
        "rate",
        workers=2,
        concurrency=8,
    ),
    Scenario(
        "drain_async_c1",
        "drain, no reply, AsyncWorker, 1 process (tasks/s)",
        "drain",
        "rate",
        concurrency=1,
        use_async=True,
    ),
    Scenario(
        "drain_async_c8",
        "drain, no reply, AsyncWorker, concurrency 8 (tasks/s)",
        "drain",
        "rate",
        concurrency=8,
        use_async=True,
    ),
    Scenario("wakeup", "wake-up, send → process() (ms)", "wakeup", "latency"),
    Scenario(
        "drain_big_empty",
        "drain W waiting, no reply, empty table (tasks/s)",
        "drain",
        "rate",
        big=True,
    ),
    Scenario(
        "drain_big_history",
        "drain W waiting, no reply, H finished in the table (tasks/s)",
        "drain",
        "rate",
        big=True,
        history=True,
    ),
    Scenario("memory", "worker RSS, idle → after draining M (MiB)", "memory", "memory"),
)

BY_KEY = {s.key: s for s in SCENARIOS}

#: The physical limit (system "pgbench"): pgbench scripts × clients, and raw NOTIFY.
PGBENCH_CLIENTS = (1, 4)
NOTIFY_KEYS = ("notify one-way", "notify ping-pong")


def label(s: Scenario, sizes: Sizes) -> str:
    """The scenario's label with its sizes filled in."""
    text = s.label.replace("W waiting", f"{sizes.big_waiting:,} waiting")
    text = text.replace("H finished", f"{sizes.big_history:,} finished")
    return text.replace("draining M", f"draining {sizes.memory:,}")
