"""A soak run: sustained sends and replies for many minutes, with retention on.

``python -m bench.soak`` starts a throwaway PostgreSQL (or uses ``--dsn``'s
server, in a database of its own), two worker processes that reply to every
task, and one asyncio process of callers that send and wait at a fixed rate
(by default half of what it measures the setup to sustain in a short warm-up
burst). Finished tasks are sent with a short ``remove_after``, so the
workers' housekeeping deletes them as the run goes, as a production fleet's
retention does.

Every minute it records the round trip seen by the callers (p50, p99), the
answers per second, and the size of the ``task`` and ``result`` tables with
their dead tuples; at the end it says whether the last minutes stayed within
``--tolerance`` (20 %) of the first ones, and writes ``PREFIX.json`` and
``PREFIX.md``. It is a benchmark, not a test: run it by hand (docs in
bench/README.md).

    python -m bench.soak --minutes 20
    python -m bench.soak --minutes 2 --rate 300      # a short look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import job_machine as jm
import psycopg

from bench import server as servers

QUEUE = "soak.q"


class _Echo(jm.Worker):
    handle_signals = False

    def process(self, task: jm.Task) -> None:
        self.reply({"n": task.data["n"]})


def _work(dsn: str, remove_after_days: float) -> None:
    _Echo(
        dsn,
        queue=QUEUE,
        housekeeping_interval=10,
        remove_after=remove_after_days,
        timeout=5,
    ).receive()


@dataclass
class Minute:
    """What one minute of the run looked like."""

    minute: int
    answered: int
    per_second: float
    p50_ms: float
    p99_ms: float
    failed: int
    task_rows: int
    task_mib: float
    result_mib: float
    dead_tuples: int


@dataclass
class Run:
    started: str
    server: str
    rate: float
    callers: int
    minutes: list[Minute] = field(default_factory=list)
    verdict: dict[str, Any] = field(default_factory=dict)


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _table_state(conn: psycopg.Connection[Any]) -> tuple[int, float, float, int]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM jobmachine.task),"
        " pg_total_relation_size('jobmachine.task') / 1048576.0,"
        " pg_total_relation_size('jobmachine.result') / 1048576.0,"
        " (SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables"
        "   WHERE schemaname = 'jobmachine')"
    ).fetchone()
    assert row is not None
    return int(row[0]), float(row[1]), float(row[2]), int(row[3])


async def _callers(
    dsn: str, rate: float, seconds: float, callers: int, sample: list[tuple[float, float, bool]]
) -> None:
    """Send ``rate`` tasks a second for ``seconds``, each by one of ``callers``
    concurrent callers that sends and waits; record (end time, round trip, ok)."""
    interval = callers / rate
    stop_at = time.monotonic() + seconds
    async with jm.AsyncClient(dsn, queue=QUEUE) as client:

        async def caller(k: int) -> None:
            next_at = time.monotonic() + k * interval / callers
            n = k
            while True:
                now = time.monotonic()
                if now >= stop_at:
                    return
                if next_at > now:
                    await asyncio.sleep(next_at - now)
                next_at += interval
                started = time.monotonic()
                try:
                    tid = await client.send({"n": n}, remove_after=30)
                    await client.wait(tid, timeout=30)
                    ok = True
                except jm.JobMachineError:
                    ok = False
                sample.append((time.monotonic(), time.monotonic() - started, ok))
                n += callers

        await asyncio.gather(*(caller(k) for k in range(callers)))


def _capacity(dsn: str, callers: int) -> float:
    """Answers per second of a short unthrottled burst (the warm-up)."""
    sample: list[tuple[float, float, bool]] = []
    t0 = time.monotonic()
    asyncio.run(_callers(dsn, 1e9, 10.0, callers, sample))
    return len(sample) / (time.monotonic() - t0)


def run(dsn: str, minutes: int, rate: float | None, callers: int, source: str) -> Run:
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_work, args=(dsn, 1 / 1440), daemon=True) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        if rate is None:
            measured = _capacity(dsn, callers)
            rate = max(10.0, measured / 2)
            print(f"capacity {measured:,.0f} answers/s: soaking at {rate:,.0f}/s", flush=True)
        result = Run(datetime.now(UTC).isoformat(timespec="seconds"), source, rate, callers)
        sample: list[tuple[float, float, bool]] = []
        t0 = time.monotonic()

        def soak() -> None:
            asyncio.run(_callers(dsn, rate, minutes * 60.0, callers, sample))

        driver = threading.Thread(target=soak, daemon=True)
        driver.start()
        with psycopg.connect(dsn, autocommit=True) as conn:
            for minute in range(1, minutes + 1):
                driver.join(max(0.0, t0 + minute * 60 - time.monotonic()))
                begin, end = t0 + (minute - 1) * 60, t0 + minute * 60
                window = [s for s in list(sample) if begin <= s[0] < end]
                trips = [rt * 1000 for _, rt, ok in window if ok]
                rows, task_mib, result_mib, dead = _table_state(conn)
                m = Minute(
                    minute=minute,
                    answered=len(trips),
                    per_second=len(trips) / 60,
                    p50_ms=_quantile(trips, 0.5),
                    p99_ms=_quantile(trips, 0.99),
                    failed=sum(1 for *_, ok in window if not ok),
                    task_rows=rows,
                    task_mib=task_mib,
                    result_mib=result_mib,
                    dead_tuples=dead,
                )
                result.minutes.append(m)
                print(
                    f"minute {minute:3d}: {m.per_second:7.1f}/s  p50 {m.p50_ms:6.1f} ms"
                    f"  p99 {m.p99_ms:7.1f} ms  failed {m.failed}  tasks {rows:,}"
                    f"  task {task_mib:.1f} MiB  result {result_mib:.1f} MiB  dead {dead:,}",
                    flush=True,
                )
        driver.join()
    finally:
        for w in workers:
            w.kill()
    return result


def judge(result: Run, tolerance: float) -> dict[str, Any]:
    """Compare the last minutes with the first ones (the first minute is the
    ramp-up and is left out of the baseline)."""
    ms = result.minutes
    k = max(1, (len(ms) - 1) // 4)
    first, last = ms[1 : 1 + k] or ms[:1], ms[-k:]
    verdict: dict[str, Any] = {}
    for name in ("per_second", "p50_ms", "p99_ms", "task_mib"):
        a = statistics.median(getattr(m, name) for m in first)
        b = statistics.median(getattr(m, name) for m in last)
        change = (b - a) / a if a else 0.0
        worse = -change if name == "per_second" else change
        verdict[name] = {"first": a, "last": b, "change": change, "ok": worse <= tolerance}
    verdict["failed"] = sum(m.failed for m in ms)
    verdict["ok"] = all(v["ok"] for v in verdict.values() if isinstance(v, dict)) and not verdict[
        "failed"
    ]
    return verdict


def markdown(result: Run) -> str:
    lines = [
        f"# Soak, {result.started}",
        "",
        f"Server: {result.server}. {result.callers} concurrent callers on one AsyncClient,"
        f" {result.rate:,.0f} send+wait a second, 2 worker processes replying;"
        " finished tasks removed 30 s after they end (housekeeping every 10 s).",
        "",
        "| minute | answers/s | p50 ms | p99 ms | failed | task rows | task MiB | result MiB"
        " | dead tuples |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in result.minutes:
        lines.append(
            f"| {m.minute} | {m.per_second:,.1f} | {m.p50_ms:.1f} | {m.p99_ms:.1f} | {m.failed}"
            f" | {m.task_rows:,} | {m.task_mib:.1f} | {m.result_mib:.1f} | {m.dead_tuples:,} |"
        )
    v = result.verdict
    lines += ["", "Last minutes against the first (median; the first minute is ramp-up):", ""]
    for name in ("per_second", "p50_ms", "p99_ms", "task_mib"):
        d = v[name]
        lines.append(
            f"- {name}: {d['first']:.1f} -> {d['last']:.1f} ({d['change']:+.0%})"
            f" {'ok' if d['ok'] else 'OUT OF TOLERANCE'}"
        )
    lines.append(f"- failed calls: {v['failed']}; verdict: {'stable' if v['ok'] else 'NOT stable'}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, default=20)
    ap.add_argument("--rate", type=float, help="sends a second (default: half the capacity)")
    ap.add_argument("--callers", type=int, default=50)
    ap.add_argument("--tolerance", type=float, default=0.2)
    ap.add_argument("--dsn", help="run next to this server instead of a throwaway one")
    ap.add_argument("--pg", default="auto", choices=("auto", "15", "embedded"))
    ap.add_argument("--out", help="PREFIX of the .json and .md files")
    args = ap.parse_args(argv)
    server = servers.existing(args.dsn) if args.dsn else servers.start_throwaway(args.pg)
    try:
        dsn = servers.create_bench_database(server)
        jm.install_schema(dsn)
        result = run(dsn, args.minutes, args.rate, args.callers, servers.describe(dsn))
    finally:
        server.stop()
    result.verdict = judge(result, args.tolerance)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H%M")
    prefix = Path(args.out or f"bench/results/{stamp}-soak")
    prefix.with_suffix(".json").write_text(json.dumps(asdict(result), indent=1) + "\n")
    prefix.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0 if result.verdict["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
