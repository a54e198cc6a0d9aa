"""The physical limit of the same server, without any queue library.

- pgbench with the minimal SQL per task (bench/pgbench/, from the shared
  harness): A insert + pg_notify, B claim the oldest with SKIP LOCKED, C mark
  one done, ABC the three in sequence (one task's whole life); each on a fresh
  ``bench_task`` table pre-filled with 300k waiting rows.
- raw LISTEN/NOTIFY latency with psycopg 3 between two connections: one-way
  (20 ms apart, listener idle, like the wake-up test) and ping-pong.

- pgbench's A_enqueue statement sent from Python by psycopg, one client:
  the floor of any Python sender.

``python -m bench.physical pgbench DSN SCRIPT CLIENTS SECONDS RUN [PGBENCH]``,
``python -m bench.physical psycopg DSN SECONDS RUN`` and
``python -m bench.physical notify DSN N RUN`` print JSON lines.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.harness import pctl

HERE = Path(__file__).resolve().parent / "pgbench"
SCRIPTS = ("A_enqueue", "B_claim", "C_done", "ABC_combined")
PREFILL = 300_000


def prepare(dsn: str, prefill: int = PREFILL) -> None:
    """(Re)create bench_task pre-filled with ``prefill`` waiting rows (schema.sql)."""
    text = (HERE / "schema.sql").read_text().replace(":prefill", str(int(prefill)))
    statements = [s.strip() for s in re.split(r";\s*\n", text) if s.strip()]
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SET client_min_messages = warning")
        for statement in statements:
            lines = [ln for ln in statement.splitlines() if not ln.lstrip().startswith("--")]
            if any(ln.strip() for ln in lines):
                c.execute("\n".join(lines).rstrip(";").encode())


def pgbench(
    dsn: str, script: str, clients: int, *, seconds: float, run: str, binary: str = "pgbench"
) -> dict[str, Any]:
    """One pgbench run of ``script``: a JSON record with tps."""
    rec: dict[str, Any] = {
        "system": "pgbench",
        "key": f"pgbench {script} c{clients}",
        "metric": f"{script} c{clients}",
        "run": run,
        "clients": clients,
        "seconds": seconds,
    }
    exe = shutil.which(binary) or binary
    try:
        version = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, check=True
        ).stdout.split()[2]
        rec["version"] = version
        prepare(dsn)
        out = subprocess.run(
            [
                exe,
                "-n",
                "-M",
                "prepared",
                "-c",
                str(clients),
                "-j",
                str(min(clients, 2)),
                "-T",
                str(max(1, round(seconds))),
                "-f",
                str(HERE / f"{script}.sql"),
                dsn,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    except (OSError, subprocess.CalledProcessError, psycopg.Error) as ex:
        return rec | {"ok": False, "error": f"{type(ex).__name__}: {ex}"}
    text = out.stdout + out.stderr
    tps = re.findall(r"^tps = ([0-9.]+) ", text, re.M)
    lat = re.findall(r"^latency average = ([0-9.]+) ms", text, re.M)
    failed = re.findall(r"^number of failed transactions: (\d+)", text, re.M)
    if not tps:
        print(text, file=sys.stderr)
        return rec | {"ok": False, "error": "pgbench printed no tps (see the log)"}
    return rec | {
        "ok": True,
        "value": float(tps[-1]),
        "unit": "tps",
        "latency_ms": float(lat[-1]) if lat else None,
        "failed": int(failed[0]) if failed else 0,
    }


def psycopg_enqueue(
    dsn: str, *, seconds: float, run: str, prefill: int = PREFILL
) -> dict[str, Any]:
    """pgbench's A_enqueue statement sent from Python by psycopg (prepared,
    autocommit, one connection), one task after another for ``seconds``: what
    any Python sender pays for one insert+notify, before any queue logic."""
    rec: dict[str, Any] = {
        "system": "pgbench",
        "key": "psycopg A_enqueue c1",
        "metric": "psycopg A_enqueue c1",
        "version": f"psycopg {psycopg.__version__}",
        "run": run,
        "clients": 1,
        "seconds": seconds,
    }
    script = (HERE / "A_enqueue.sql").read_text()
    lines = [ln for ln in script.splitlines() if not ln.lstrip().startswith("--")]
    # The payload as a parameter, as a client sends it.
    statement = "\n".join(lines).strip().rstrip(";").replace("'{\"seq\":1}'", "%s")
    try:
        prepare(dsn, prefill)
        with psycopg.connect(dsn, autocommit=True) as c:
            n, t0 = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - t0) < seconds:
                c.execute(statement.encode(), ('{"seq":1}',), prepare=True).fetchall()
                n += 1
    except psycopg.Error as ex:
        return rec | {"ok": False, "error": f"{type(ex).__name__}: {ex}"}
    return rec | {"ok": True, "value": n / elapsed, "unit": "tps"}


# -- raw LISTEN/NOTIFY --------------------------------------------------------


def _listener(dsn: str, n: int, w: int, ready: Any, pong: bool) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("LISTEN bench_ping")
        ready.set()
        got = 0
        while got < n:
            payload = None
            for note in c.notifies(stop_after=1, timeout=30):
                t = time.time()
                got += 1
                payload = note.payload
                if not pong:
                    os.write(w, f"{payload} {t:.6f}\n".encode())
            if pong and payload is not None:
                # reply outside the notifies() generator
                c.execute("SELECT pg_notify('bench_pong', %s)", (payload,))


def _latencies(dsn: str, n: int, pong: bool) -> list[float]:
    ctx = mp.get_context("fork")
    r, w = os.pipe()
    ready = ctx.Event()
    p = ctx.Process(target=_listener, args=(dsn, n + 1, w, ready, pong))
    p.start()
    os.close(w)
    ready.wait(30)
    lat: list[float] = []
    with psycopg.connect(dsn, autocommit=True) as c:
        if pong:
            c.execute("LISTEN bench_pong")
            for i in range(n + 1):
                t0 = time.perf_counter()
                c.execute("SELECT pg_notify('bench_ping', %s)", (str(i),))
                for _ in c.notifies(stop_after=1, timeout=5):
                    pass
                if i:  # the first one is a warm-up
                    lat.append((time.perf_counter() - t0) * 1000)
        else:
            sent: dict[int, float] = {}
            time.sleep(0.2)
            nxt = time.time()
            for i in range(n + 1):
                now = time.time()
                if nxt > now:
                    time.sleep(nxt - now)
                sent[i] = time.time()
                c.execute("SELECT pg_notify('bench_ping', %s)", (str(i),))
                nxt = sent[i] + 0.020
            p.join(30)
            data = b""
            while chunk := os.read(r, 65536):
                data += chunk
            for line in data.decode().splitlines():
                s, t = line.split()
                if int(s):
                    lat.append((float(t) - sent[int(s)]) * 1000)
    os.close(r)
    p.join(10)
    return lat


def notify(dsn: str, n: int, run: str) -> list[dict[str, Any]]:
    """One-way and ping-pong LISTEN/NOTIFY latency records."""
    recs = []
    for pong, name in ((False, "notify one-way"), (True, "notify ping-pong")):
        rec: dict[str, Any] = {
            "system": "LISTEN/NOTIFY",
            "key": name,
            "metric": name,
            "version": f"psycopg {psycopg.__version__}",
            "n": n,
            "run": run,
        }
        try:
            lat = _latencies(dsn, n, pong)
            rec |= {
                "ok": bool(lat),
                "p50_ms": pctl(lat, 50),
                "p99_ms": pctl(lat, 99),
                "max_ms": max(lat) if lat else None,
                "received": len(lat),
                "unit": "ms",
            }
        except Exception as ex:
            rec |= {"ok": False, "error": f"{type(ex).__name__}: {ex}"}
        recs.append(rec)
    return recs


def main(argv: list[str]) -> int:
    if argv[:1] == ["pgbench"] and len(argv) >= 6:
        _, dsn, script, clients, seconds, run, *rest = argv
        binary = rest[0] if rest else "pgbench"
        rec = pgbench(dsn, script, int(clients), seconds=float(seconds), run=run, binary=binary)
        print(json.dumps(rec), flush=True)
        return 0
    if argv[:1] == ["psycopg"] and len(argv) == 4:
        _, dsn, seconds, run = argv
        print(json.dumps(psycopg_enqueue(dsn, seconds=float(seconds), run=run)), flush=True)
        return 0
    if argv[:1] == ["notify"] and len(argv) == 4:
        _, dsn, n, run = argv
        for rec in notify(dsn, int(n), run):
            print(json.dumps(rec), flush=True)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
