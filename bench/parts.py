"""Streamed parts: how many parts per second reach one reader, and each
part's latency from ``send_part`` to the reader's ``for part in
client.parts(...)``.

    python -m bench.parts                     # on a throwaway PostgreSQL
    python -m bench.parts --dsn postgresql://postgres@127.0.0.1:5499/postgres
    python -m bench.parts --parts 5000 --interval 0.002 --runs 5

Without ``--dsn`` it starts a throwaway PostgreSQL as ``python -m bench``
does (PostgreSQL 15 with its default settings, fsync on, else the embedded
one); with it, it creates a database of its own next to the one given
(``jm_bench_parts_<pid>``, so the role needs CREATEDB). Either way it
installs the schema there and drops it at the end.
Each run sends one task; a worker in a process of its own (a ``Worker``
subclass, forked after the imports, its connecting not timed) claims it and
calls ``send_part({"i": i, "t": time.time()})`` for each part, then replies;
one sync ``Client`` in this process reads the parts as they arrive.

Two modes per run:

- flood: the worker sends its parts back to back (one statement and one
  commit each): parts per second is what one writer and one reader get
  through; a part's latency there includes the queue behind the reader.
- paced: one part every ``--interval`` seconds, well under the flood rate:
  the latency of a part when the reader keeps up (NOTIFY, the listener's
  wake-up, one read).

Latency is the reader's ``time.time()`` when the part is yielded minus the
worker's just before its insert (one machine, one clock).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
from typing import Any

import job_machine as jm

from bench.server import create_bench_database, existing, settings, start_throwaway

QUEUE = "bench.parts"


class Streamer(jm.Worker):
    """Sends ``n`` parts stamped with the time, ``interval`` seconds apart."""

    queue = QUEUE
    handle_signals = False

    def process(self, task: jm.Task) -> None:
        n, interval = task.data["n"], task.data["interval"]
        start = time.monotonic()
        for i in range(n):
            if interval:
                delay = start + i * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            self.send_part({"i": i, "t": time.time()})
        self.reply(n)


def _serve_one(dsn: str) -> None:
    with Streamer(dsn) as w:
        while not w.work_once():
            time.sleep(0.001)


def measure(dsn: str, n: int, interval: float) -> dict[str, Any]:
    """One task of ``n`` parts: parts/s to the reader and latency percentiles (ms)."""
    ctx = multiprocessing.get_context("fork")
    with jm.Client(dsn, queue=QUEUE) as client:
        task_id = client.send({"n": n, "interval": interval})
        worker = ctx.Process(target=_serve_one, args=(dsn,))
        worker.start()
        latencies: list[float] = []
        first = last = 0.0
        for part in client.parts(task_id, timeout=600):
            now = time.time()
            if part.seq == 0:
                first = part.data["t"]
            assert part.data["i"] == part.seq == len(latencies), "a part out of order"
            latencies.append(now - part.data["t"])
            last = now
        assert client.receive(task_id) == n
        worker.join(60)
    latencies.sort()

    def pct(p: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    return {
        "parts": n,
        "interval_ms": 1000 * interval,
        "parts_per_s": round(n / (last - first), 1) if last > first else None,
        "latency_ms": {
            "p50": round(pct(0.50), 2),
            "p90": round(pct(0.90), 2),
            "p99": round(pct(0.99), 2),
            "max": round(1000 * latencies[-1], 2),
            "mean": round(1000 * statistics.fmean(latencies), 2),
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.parts", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "--dsn",
        help="a server to create the bench database on (default: a throwaway PostgreSQL, "
        "as python -m bench starts)",
    )
    parser.add_argument("--pg", default="auto", help="which throwaway server: auto|15|embedded")
    parser.add_argument("--parts", type=int, default=2000, help="parts per flood run (2000)")
    parser.add_argument("--paced-parts", type=int, default=500, help="parts per paced run (500)")
    parser.add_argument(
        "--interval", type=float, default=0.005, help="seconds between paced parts (0.005)"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each mode (3)")
    args = parser.parse_args(argv)

    server = existing(args.dsn) if args.dsn else start_throwaway(args.pg)
    try:
        dsn = create_bench_database(server, f"jm_bench_parts_{os.getpid()}")
        print(f"server: {server.source}; {settings(dsn)}")
        jm.install_schema(dsn)
        results: dict[str, list[dict[str, Any]]] = {"flood": [], "paced": []}
        for _ in range(args.runs):
            results["flood"].append(measure(dsn, args.parts, 0.0))
            results["paced"].append(measure(dsn, args.paced_parts, args.interval))
        for mode, runs in results.items():
            for r in runs:
                lat = r["latency_ms"]
                print(
                    f"{mode:5}  {r['parts']:5} parts  {r['parts_per_s'] or 0:8.0f} parts/s  "
                    f"latency ms p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  "
                    f"p99 {lat['p99']:.2f}  max {lat['max']:.2f}"
                )
        print(json.dumps(results))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
