"""A CPU-bound drain with ``job-machine worker --processes N``.

``python -m bench.processes`` starts a throwaway PostgreSQL (or uses
``--dsn``'s server, in a database of its own), and for each process count
(``--processes 1,2``) and round: starts ``job-machine worker
bench.processes:Burn --processes N``, waits until its N worker processes are
registered, sends ``--tasks`` tasks each of which computes for about
``--work-ms`` milliseconds of pure Python (a loop calibrated on this machine
at the start), and times the drain: from the send until every task is done.
Then it stops the supervisor (SIGTERM, which must exit 0) and resets the
database for the next round. Rounds interleave the process counts, so the
machine's drift spreads over all of them.

CPU-bound Python holds the GIL: threads (``--concurrency``) do not run it in
parallel, processes do. On a 2-core machine the drain with 2 processes should
approach twice the one with 1, less what the server and this script take.

    python -m bench.processes                      # 1 and 2 processes, 3 rounds
    python -m bench.processes --tasks 2000 --work-ms 5 --processes 1,2,4 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import job_machine as jm

from bench import server as servers

QUEUE = "bench.cpu"
ROOT = Path(__file__).resolve().parent.parent


def burn(loops: int) -> int:
    """Pure-Python CPU work: ``loops`` rounds of integer arithmetic."""
    total = 0
    for i in range(loops):
        total = (total + i * i) % 1_000_003
    return total


class Burn(jm.Worker):
    """Computes ``burn(task.data["loops"])`` and marks the task done."""

    queue = QUEUE

    def process(self, task: jm.Task) -> None:
        burn(int(task.data["loops"]))


def calibrate(work_ms: float) -> int:
    """How many loops of :func:`burn` take ``work_ms`` milliseconds of CPU
    here (process time: what other processes take of the machine does not
    count)."""
    loops = 10_000
    while True:
        t0 = time.process_time()
        burn(loops)
        took = time.process_time() - t0
        if took > 0.05:
            return max(1, round(loops * work_ms / 1000 / took))
        loops *= 2


def _alive_workers(admin: jm.Admin) -> int:
    return sum(1 for w in admin.workers() if w.alive)


def _done(admin: jm.Admin) -> int:
    return admin.stats().done


def drain(dsn: str, processes: int, tasks: int, loops: int) -> float:
    """Seconds to drain ``tasks`` CPU tasks with ``processes`` worker processes."""
    env = dict(os.environ, JOB_MACHINE_DSN=dsn)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "job_machine.cli", "worker", "bench.processes:Burn"]
    command += ["--processes", str(processes), "--log-level", "warning"]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
    try:
        with jm.Admin(dsn) as admin, jm.Client(dsn, queue=QUEUE) as client:
            deadline = time.monotonic() + 60
            while _alive_workers(admin) < processes:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the worker processes did not start ({proc.poll()})")
                time.sleep(0.05)
            t0 = time.perf_counter()
            client.send_many([{"loops": loops, "n": n} for n in range(tasks)])
            while _done(admin) < tasks:
                time.sleep(0.02)
            took = time.perf_counter() - t0
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        if code != 0:
            raise RuntimeError(f"the supervisor exited {code} after SIGTERM")
        return took
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        with jm.Admin(dsn) as admin:
            admin.reset(confirm=True)


def run(args: argparse.Namespace, dsn: str) -> dict[str, Any]:
    counts = [int(p) for p in args.processes.split(",")]
    loops = calibrate(args.work_ms)
    print(f"calibrated: {loops} loops ~ {args.work_ms} ms of CPU per task", flush=True)
    times: dict[int, list[float]] = {p: [] for p in counts}
    for round_ in range(1, args.runs + 1):
        for p in counts:
            took = drain(dsn, p, args.tasks, loops)
            times[p].append(took)
            print(
                f"round {round_}: --processes {p}: {args.tasks} tasks in {took:.2f} s "
                f"({args.tasks / took:.0f} tasks/s)",
                flush=True,
            )
    rows = []
    base = statistics.median(times[counts[0]])
    base_best = min(times[counts[0]])
    for p in counts:
        med = statistics.median(times[p])
        best = min(times[p])
        rows.append(
            {
                "processes": p,
                "seconds": times[p],
                "median_s": med,
                "best_s": best,
                "tasks_per_s": args.tasks / med,
                "speedup": base / med,
                "speedup_best": base_best / best,
            }
        )
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "server": servers.describe(dsn),
        "cpus": os.cpu_count(),
        "tasks": args.tasks,
        "work_ms": args.work_ms,
        "loops": loops,
        "runs": args.runs,
        "rows": rows,
        "load": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# CPU-bound drain with --processes ({result['date']})",
        "",
        f"{result['tasks']} tasks of ~{result['work_ms']} ms of pure-Python CPU each, "
        f"{result['runs']} rounds (median, min-max), {result['cpus']} CPUs; "
        f"server: {result['server']}",
        "",
        f"| --processes | drain (s) | tasks/s | vs {result['rows'][0]['processes']} "
        "| best round (s) | best vs best |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lo, hi = min(row["seconds"]), max(row["seconds"])
        lines.append(
            f"| {row['processes']} | {row['median_s']:.2f} ({lo:.2f}-{hi:.2f}) | "
            f"{row['tasks_per_s']:.0f} | {row['speedup']:.2f}x | {row['best_s']:.2f} | "
            f"{row['speedup_best']:.2f}x |"
        )
    lines += [
        "",
        f"Load average (1, 5, 15 min) at the end: {result['load']}. On a shared machine "
        "another process's CPU is taken from the workers; the best round is the least "
        "disturbed one.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.processes", description=__doc__)
    ap.add_argument("--tasks", type=int, default=1000, help="tasks per drain (1000)")
    ap.add_argument("--work-ms", type=float, default=5.0, help="CPU per task, ms (5)")
    ap.add_argument("--processes", default="1,2", help="process counts to compare (1,2)")
    ap.add_argument("--runs", type=int, default=3, help="interleaved rounds (3)")
    ap.add_argument("--dsn", help="run next to this server instead of a throwaway one")
    ap.add_argument("--pg", default="auto", choices=["auto", "15", "embedded"])
    ap.add_argument("--out", help="write PREFIX.json and PREFIX.md")
    args = ap.parse_args(argv)
    server = servers.existing(args.dsn) if args.dsn else servers.start_throwaway(args.pg)
    try:
        dsn = servers.create_bench_database(server)
        jm.install_schema(dsn)
        result = run(args, dsn)
    finally:
        server.stop()
    text = markdown(result)
    print(text)
    if args.out:
        Path(f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n")
        Path(f"{args.out}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
