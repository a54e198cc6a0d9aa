"""Records -> medians, ratios, markdown (and the rows of the terminal table)."""

from __future__ import annotations

import statistics
from typing import Any

from bench.scenarios import (
    BY_KEY,
    NOTIFY_KEYS,
    PGBENCH_CLIENTS,
    SCENARIOS,
    Scenario,
    Sizes,
    label,
)
from bench.systems import SYSTEMS

PHYSICAL = ("pgbench", "LISTEN/NOTIFY")
PGBENCH_SCRIPTS = ("A_enqueue", "B_claim", "C_done", "ABC_combined")
#: The key of pgbench's A_enqueue statement sent from Python by psycopg.
PYTHON_ENQUEUE = "psycopg A_enqueue c1"
#: (job_machine's scenario, physical record key, what it is), for "% of the limit".
LIMITS = (
    ("send", "pgbench A_enqueue c1", "pgbench A_enqueue, 1 client"),
    ("send", PYTHON_ENQUEUE, "the same statement sent by psycopg, 1 client"),
    ("drain_w1", "pgbench ABC_combined c1", "pgbench ABC_combined, 1 client"),
    ("wakeup", "notify one-way", "raw NOTIFY one-way"),
    ("roundtrip", "notify ping-pong", "raw NOTIFY ping-pong"),
)
#: Issue 13's targets for the drain with replies: (the drain it is compared
#: with, whose, the least ratio). Printed next to the ratios, never used to
#: judge a number.
REPLY_TARGETS = {"pgqueuer": 1.5, "job_machine": 0.7}


def stats(values: list[float]) -> dict[str, float | int]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
    }


def _fields(r: dict[str, Any]) -> dict[str, float]:
    """The measured numbers of a successful record, by field."""
    if r.get("unit") == "ms":
        return {"p50": float(r["p50_ms"]), "p99": float(r["p99_ms"])}
    if r.get("unit") == "MiB":
        names = ("rss_start_mib", "rss_end_mib", "growth_mib", "rss_peak_mib")
        return {f: float(r[f]) for f in names}
    if r.get("unit") == "answers/s":
        out = {"value": float(r["value"])}
        if r.get("p50_ms") is not None:
            out |= {"p50": float(r["p50_ms"]), "p99": float(r["p99_ms"])}
        out |= {
            "timeouts": float(r["timeouts"]),
            "late": float(r["late"]),
            "failed": float(r["failed"] + r["not_run"]),
            "peak_connections": float(r["peak_connections"]),
        }
        return out
    return {"value": float(r["value"])}


def _call_notes(r: dict[str, Any]) -> list[str]:
    """What went wrong with the calls of a callers record, in words."""
    calls, run = r["calls"], r["run"]
    notes = []
    if r["timeouts"]:
        notes.append(
            f"{r['timeouts']} of {calls} calls timed out (no answer within "
            f"{r['call_timeout']:g} s) in run {run}"
        )
    if r["late"]:
        notes.append(
            f"{r['late']} of {calls} calls came late in run {run}: answered only after their "
            f"{r['call_timeout']:g} s timeout (the answer was found by the re-read at the "
            "deadline: a lost wake-up)"
        )
    if r["failed"]:
        notes.append(
            f"{r['failed']} of {calls} calls failed in run {run}: {'; '.join(r.get('errors', []))}"
        )
    if r["not_run"]:
        notes.append(
            f"{r['not_run']} of {calls} calls not started: the run's time budget was spent "
            f"(run {run})"
        )
    return notes


def _record_notes(r: dict[str, Any]) -> list[str]:
    """What a successful record did not fully observe, in words."""
    if r.get("unit") == "answers/s":
        return _call_notes(r)
    if r.get("received") is not None and r["received"] < r.get("n", 0):
        return [f"only {r['received']}/{r['n']} observed in run {r['run']}"]
    return []


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """system -> key -> {unit, median/min/max/runs (p50/p99 or RSS fields: the
    same of each), concurrency, notes}, in the order the records came."""
    values: dict[str, dict[str, dict[str, list[float]]]] = {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        system, key = r.get("system", "?"), r.get("key", r.get("metric", "?"))
        entry = out.setdefault(system, {}).setdefault(key, {"unit": ""})
        fields = values.setdefault(system, {}).setdefault(key, {})
        notes: list[str] = entry.setdefault("notes", [])
        if not r.get("ok"):
            kind = "not supported" if r.get("unsupported") else "error"
            note = f"{kind}: {r.get('unsupported') or r.get('error') or 'failed'}"
            if note not in notes:
                notes.append(note)
            continue
        entry["unit"] = r.get("unit", "")
        if r.get("concurrency"):
            entry["concurrency"] = r["concurrency"]
        notes += _record_notes(r)
        for field, v in _fields(r).items():
            fields.setdefault(field, []).append(v)
    for system, entries in out.items():
        for key, entry in entries.items():
            for field, vals in values[system][key].items():
                if field == "value":
                    entry.update(stats(vals))
                else:
                    entry[field] = stats(vals)
            if not entry["notes"]:
                del entry["notes"]
    return out


def _peer_value(
    summary: dict[str, dict[str, dict[str, Any]]], peer: str, s: Scenario
) -> tuple[str, float | None]:
    """The scenario a peer is compared on, and its central value: the same
    one, else (a peer without it, such as a reply drain) ``s.peer_key``."""
    entries = summary.get(peer, {})
    theirs = _central(entries.get(s.key), s.kind)
    if theirs is None and s.peer_key:
        return s.peer_key, _central(entries.get(s.peer_key), s.kind)
    return s.key, theirs


def _central(entry: dict[str, Any] | None, kind: str) -> float | None:
    if not entry:
        return None
    value = entry.get("p50", {}).get("median") if kind == "latency" else entry.get("median")
    return None if value is None else float(value)


def _scenario_ratios(summary: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """job_machine over each peer, scenario by scenario (a peer without the
    scenario on its ``peer_key``), and the reply drains over job_machine's own."""
    jm = summary.get("job_machine", {})
    out: list[dict[str, Any]] = []
    for s in SCENARIOS:
        if s.kind == "memory":
            continue
        mine = _central(jm.get(s.key), s.kind)
        if mine is None:
            continue
        for peer in SYSTEMS:
            if peer == "job_machine":
                continue
            against, theirs = _peer_value(summary, peer, s)
            if not theirs:
                continue
            r = mine / theirs
            what = "p50 latency, lower is better" if s.kind == "latency" else "throughput"
            if against != s.key:
                what += f"; {peer} has no reply API, so against its {against}"
                if peer in REPLY_TARGETS:
                    what += f"; issue 13's target ≥ {REPLY_TARGETS[peer]:g}×"
            out.append(
                {
                    "key": s.key,
                    "against": peer if against == s.key else f"{peer} {against}",
                    "ratio": r,
                    "text": f"{s.key}: {r:.2f}× {peer} ({what})",
                }
            )
        # the reply drains against job_machine's own drain without replies
        if s.reply and s.peer_key:
            own = _central(jm.get(s.peer_key), s.kind)
            if own:
                r = mine / own
                target = REPLY_TARGETS["job_machine"]
                out.append(
                    {
                        "key": s.key,
                        "against": f"job_machine {s.peer_key}",
                        "ratio": r,
                        "text": f"{s.key}: {r:.0%} of job_machine's own {s.peer_key} "
                        f"(no reply; issue 13's target ≥ {target:.0%})",
                    }
                )
    return out


def ratios(summary: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """job_machine's median over each peer's median, per scenario, from the same run
    (the reply drains also over job_machine's own drains without replies); then
    job_machine against the physical limit, and history against the empty table."""
    jm = summary.get("job_machine", {})
    out = _scenario_ratios(summary)
    for key, limit_key, what in LIMITS:
        kind = BY_KEY[key].kind
        mine = _central(jm.get(key), kind)
        system = "LISTEN/NOTIFY" if limit_key.startswith("notify") else "pgbench"
        theirs = _central(summary.get(system, {}).get(limit_key), kind)
        if mine is None or not theirs:
            continue
        r = mine / theirs
        text = (
            f"{key}: {r:.0%} of {what}"
            if kind == "rate"
            else f"{key}: {r:.1f}× the latency of {what}"
        )
        out.append({"key": key, "against": limit_key, "ratio": r, "text": text})
    for system, entries in summary.items():
        empty = _central(entries.get("drain_big_empty"), "rate")
        full = _central(entries.get("drain_big_history"), "rate")
        if empty and full:
            out.append(
                {
                    "key": "drain_big_history",
                    "against": f"{system} drain_big_empty",
                    "ratio": full / empty,
                    "text": f"{system}: drain with history at {full / empty:.0%} of the "
                    "empty-table rate",
                }
            )
    return out


# -- formatting ---------------------------------------------------------------


def _num(v: float, digits: int) -> str:
    return f"{v:,.{digits}f}"


def _range(e: dict[str, Any], digits: int) -> str:
    if e["runs"] == 1:
        return _num(e["median"], digits)
    return f"{_num(e['median'], digits)} ({_num(e['min'], digits)}–{_num(e['max'], digits)})"


def _calls_went_wrong(entry: dict[str, Any]) -> bool:
    """Whether calls of a callers entry timed out, came late or failed in some
    run: its answers/s are then no throughput to compare (the notes say why)."""
    return any(entry[f]["max"] > 0 for f in ("timeouts", "late", "failed") if f in entry)


def cell(entry: dict[str, Any] | None, kind: str) -> str:
    """A table cell: median (min–max), p50 / p99 for a latency, start → end for memory."""
    if not entry:
        return "—"
    if kind == "latency" and "p50" in entry:
        return f"{_range(entry['p50'], 1)} / {_range(entry['p99'], 1)}"
    if kind == "memory" and "rss_start_mib" in entry:
        start, end = entry["rss_start_mib"], entry["rss_end_mib"]
        return f"{_range(start, 1)} → {_range(end, 1)}"
    if "median" in entry:
        return _range(entry, 0) + (" ⚠" if _calls_went_wrong(entry) else "")
    notes = entry.get("notes", [])
    if any(n.startswith("not supported") for n in notes):
        return "n/a"
    return "ERROR"


def table_rows(
    summary: dict[str, dict[str, dict[str, Any]]],
    systems: list[str],
    sizes: Sizes,
    short: bool = False,
    reply_path: bool | None = None,
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the main table: scenarios by systems, plus ratio
    columns; ``short``: scenario keys instead of labels (a terminal);
    ``reply_path``: only the rows of the reply path (True) or only the others
    (False). A peer without a scenario that has a ``peer_key`` (the reply
    drains) is compared on that one, and the ratio says so."""
    peers = [s for s in systems if s in SYSTEMS and s != "job_machine" and s in summary]
    shown = [s for s in systems if s in summary and s not in PHYSICAL]
    header = ["scenario", *shown]
    if "job_machine" in shown:
        header += [f"{'jm' if short else 'job_machine'} / {p}" for p in peers]
    rows = []
    for s in SCENARIOS:
        if reply_path is not None and s.reply_path != reply_path:
            continue
        if not any(s.key in summary.get(name, {}) for name in shown):
            continue
        row = [s.key if short else label(s, sizes)]
        row += [cell(summary[name].get(s.key), s.kind) for name in shown]
        if "job_machine" in shown:
            mine = _central(summary["job_machine"].get(s.key), s.kind)
            for p in peers:
                against, theirs = _peer_value(summary, p, s)
                if mine is not None and theirs and s.kind != "memory":
                    vs = "" if against == s.key else f" vs its {against}"
                    row.append(f"{mine / theirs:.2f}×{vs}")
                else:
                    row.append("—")
        rows.append(row)
    return header, rows


CALLERS_HEADER = (
    "scenario",
    "system",
    "answers/s",
    "p50 / p99 round trip (ms)",
    "timed out",
    "late",
    "failed or not run",
    "peak connections",
)


def callers_rows(
    summary: dict[str, dict[str, dict[str, Any]]], systems: list[str], short: bool = False
) -> list[list[str]]:
    """The callers scenarios in detail, one row per system that ran them:
    answers/s, round trip, the calls that timed out, came late or failed
    (medians over the runs, min–max), and the caller process's peak number
    of server connections."""
    rows = []
    for s in SCENARIOS:
        if s.kind != "callers":
            continue
        for name in systems:
            entry = summary.get(name, {}).get(s.key)
            if not entry or "median" not in entry:
                continue
            p50, p99 = entry.get("p50"), entry.get("p99")
            rt = f"{_range(p50, 1)} / {_range(p99, 1)}" if p50 and p99 else "—"
            rows.append(
                [
                    s.key
                    if short
                    else f"{s.key}: {s.callers} {'threads' if s.threads else 'asyncio tasks'}",
                    name,
                    _range(entry, 0),
                    rt,
                    _range(entry["timeouts"], 0),
                    _range(entry["late"], 0),
                    _range(entry["failed"], 0),
                    _range(entry["peak_connections"], 0),
                ]
            )
    return rows


def physical_rows(summary: dict[str, dict[str, dict[str, Any]]]) -> list[list[str]]:
    rows = []
    pg = summary.get("pgbench", {})
    for script in PGBENCH_SCRIPTS:
        cells = [cell(pg.get(f"pgbench {script} c{c}"), "rate") for c in PGBENCH_CLIENTS]
        if any(c != "—" for c in cells):
            rows.append([f"pgbench {script} (tps)", *cells])
    if PYTHON_ENQUEUE in pg:
        rows.append(
            ["A_enqueue sent by psycopg from Python (tps)", cell(pg[PYTHON_ENQUEUE], "rate"), ""]
        )
    raw = summary.get("LISTEN/NOTIFY", {})
    for key in NOTIFY_KEYS:
        if key in raw:
            rows.append([f"{key} p50 / p99 (ms)", cell(raw[key], "latency"), ""])
    return rows


def markdown(result: dict[str, Any]) -> str:
    """The whole report as markdown."""
    summary = result["summary"]
    sizes = Sizes(**result["params"]["sizes"])
    meta = result["meta"]
    lines = [
        f"# job_machine benchmark — {meta['date']}",
        "",
        f"Cells: **median (min–max)** over {result['params']['runs']} interleaved run(s); "
        "latencies are p50 / p99 in ms; memory is RSS at start → after the drain. "
        "Ratio columns: job_machine's median over the peer's (throughput: > 1 is faster; "
        "latency: < 1 is quicker).",
        "",
        f"Machine: {meta['machine']}. Server: PostgreSQL {meta['server_version']}, "
        f"{meta['server_source']}; settings {meta['server_settings']}.",
        "",
        f"Command: `{meta['command']}` — took {meta['elapsed_s'] / 60:.1f} min.",
        "",
    ]
    systems = result["params"]["systems"]
    sections = (
        (
            True,
            "## The reply path: send → process() → reply → wait",
            "Every task is answered with a reply that its sender (or a poller) waits for. "
            "pgqueuer and procrastinate have no reply API: their reply drains are n/a, and "
            "the ratio column compares with their drain without replies.",
        ),
        (
            False,
            "## Without replies",
            "Tasks are only marked done (no reply), or only sent.",
        ),
    )
    any_rows = False
    for reply_path, title, intro in sections:
        header, rows = table_rows(summary, systems, sizes, reply_path=reply_path)
        if not rows:
            continue
        any_rows = True
        lines += [title, "", intro, ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|---" * len(header) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
        callers = callers_rows(summary, systems) if reply_path else []
        if callers:
            lines += [
                "### Callers sharing one client",
                "",
                f"{sizes.calls:,} calls or more per scenario (at least one per caller), "
                f"made in sequence by each caller: send, then wait with a "
                f"{sizes.call_timeout:g} s timeout; no call starts after "
                f"{sizes.call_budget:g} s. Timed out: no answer within the timeout; late: "
                "answered only after the timeout had passed (the wait's re-read at its "
                "deadline found the answer: a lost wake-up); both count against the run "
                "(⚠ in the table above). Peak connections: backends of the caller process "
                "in pg_stat_activity, sampled every 20 ms.",
                "",
                "| " + " | ".join(CALLERS_HEADER) + " |",
                "|---" * len(CALLERS_HEADER) + "|",
            ]
            lines += ["| " + " | ".join(r) + " |" for r in callers]
            lines.append("")
    if any_rows:
        lines += ["Versions:", ""]
        lines += [f"- {name}: {v}" for name, v in result["versions"].items()]
        lines.append("")
    phys = physical_rows(summary)
    if phys:
        lines += [
            "## Physical limit of the same server",
            "",
            "pgbench custom scripts (`-M prepared`, fresh `bench_task` table with "
            f"300k waiting rows, {sizes.pgbench_seconds:g} s per run); raw LISTEN/NOTIFY "
            f"with psycopg 3 ({sizes.notify} notifications; one-way 20 ms apart, ping-pong "
            "back to back).",
            "",
            "| what | 1 client | 4 clients |",
            "|---|---|---|",
        ]
        lines += ["| " + " | ".join(r) + " |" for r in phys]
        lines.append("")
    if result["ratios"]:
        lines += ["## Ratios (medians of this run)", ""]
        lines += [f"- {r['text']}" for r in result["ratios"]]
        lines.append("")
    order = [*SYSTEMS, *PHYSICAL]
    by_system = sorted(summary.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)
    keys = [s.key for s in SCENARIOS]

    def in_order(entries: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        return sorted(entries.items(), key=lambda kv: keys.index(kv[0]) if kv[0] in keys else 99)

    notes = [
        f"- {system} — {key}: {note}"
        for system, entries in by_system
        for key, entry in in_order(entries)
        for note in entry.get("notes", [])
    ]
    conc = [
        f"- {system} — {key}: {entry['concurrency']}"
        for system, entries in by_system
        for key, entry in in_order(entries)
        if entry.get("concurrency")
    ]
    if notes:
        lines += ["## Notes", "", *notes, ""]
    if conc:
        lines += ["## How each worker ran", "", *conc, ""]
    return "\n".join(lines)
