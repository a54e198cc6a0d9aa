"""A worker's own CPU time per task, for costs too small for the drain rows.

``python -m bench.worker_cpu`` drains ``--tasks`` replying tasks with one
sync worker, in a fresh process per run, and reports the worker process's
CPU time (``time.process_time()``) and wall time per task; the sends are
made before the clock starts. Variants run alternately, ``--rounds`` times:

- ``otel``: as installed (with the ``otel`` extra, but no SDK configured);
- ``no-otel``: opentelemetry made unimportable in the worker process.

The drain rows of ``python -m bench`` move by 10–40 % with the machine's
load; the worker's CPU per task moves by a few percent, so a cost of a
microsecond shows. One more run of each variant under cProfile counts its
Python calls per task, which do not move at all. To compare with an older
revision, run the same command from a worktree of it (docs/observability.md
"Cost" did so).

    python -m bench.worker_cpu --rounds 8
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import subprocess
import sys
import time
from typing import Any

import psycopg

from bench import server as servers

QUEUE = "cpu.q"
VARIANTS = ("otel", "no-otel")


def _child(dsn: str, tasks: int, variant: str, profile: bool) -> None:
    """One run, in its own process: print a JSON line of its figures."""
    if variant == "no-otel":
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]
    import job_machine as jm  # noqa: PLC0415

    with jm.Client(dsn, queue=QUEUE) as client:
        for start in range(0, tasks, 1000):
            client.send_many([{"i": i} for i in range(start, min(tasks, start + 1000))])
    done = 0

    class Echo(jm.Worker):
        handle_signals = False

        def process(self, task: jm.Task) -> None:
            nonlocal done
            self.reply("ok")
            done += 1
            if done == tasks:
                self.stop()

    worker = Echo(dsn, queue=QUEUE)
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    cpu, wall = time.process_time(), time.perf_counter()
    worker.receive()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    figures: dict[str, Any] = {"cpu_us": 1e6 * cpu / tasks, "wall_us": 1e6 * wall / tasks}
    if profiler:
        profiler.disable()
        figures["calls_per_task"] = pstats.Stats(profiler).total_calls / tasks  # type: ignore[attr-defined]
    print(json.dumps(figures))


def _run(dsn: str, tasks: int, variant: str, profile: bool) -> dict[str, float]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE jobmachine.task, jobmachine.result CASCADE")
    cmd = [sys.executable, "-m", "bench.worker_cpu", "--child", dsn, str(tasks), variant]
    out = subprocess.run(
        [*cmd, "profile" if profile else "-"], check=True, capture_output=True, text=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child(argv[1], int(argv[2]), argv[3], argv[4] == "profile")
        return 0
    ap = argparse.ArgumentParser(prog="python -m bench.worker_cpu", description=__doc__)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--dsn", help="run next to this server instead of a throwaway one")
    ap.add_argument("--pg", default="auto", choices=("auto", "15", "embedded"))
    args = ap.parse_args(argv)
    import job_machine as jm  # noqa: PLC0415

    server = servers.existing(args.dsn) if args.dsn else servers.start_throwaway(args.pg)
    results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    try:
        dsn = servers.create_bench_database(server)
        jm.install_schema(dsn)
        for _ in range(args.rounds):
            for variant in VARIANTS:
                results[variant].append(_run(dsn, args.tasks, variant, False))
        calls = {v: _run(dsn, args.tasks, v, True)["calls_per_task"] for v in VARIANTS}
    finally:
        server.stop()
    print(f"{args.tasks} replying tasks per run, {args.rounds} rounds; medians (min–max)")
    print("| variant | worker CPU µs/task | wall µs/task | Python calls/task |")
    print("|---|---|---|---|")
    for variant, runs in results.items():
        cpu = _summary([r["cpu_us"] for r in runs])
        wall = _summary([r["wall_us"] for r in runs])
        print(f"| {variant} | {cpu} | {wall} | {calls[variant]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
