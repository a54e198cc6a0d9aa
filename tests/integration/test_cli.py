"""The ``job-machine`` command line, every command run as a real subprocess
against the test's own database.

Commands run as ``python -m job_machine.cli``; the sync worker runs through
the installed ``job-machine`` script from tests/support, so that
``cli_workers:Echo`` is found in the working directory. Their stdout is a
pipe, so every output checked here is the plain one scripts read.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import job_machine as jm
from job_machine._schema_sql import SCHEMA_VERSION
from tests.support.cli_workers import Echo
from tests.support.procs import wait_until

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests" / "support"
CLI = [sys.executable, "-m", "job_machine.cli"]
SCRIPT = Path(sys.executable).with_name("job-machine")
#: What a terminal gets and a pipe must not: escape sequences and box drawing.
DECORATION = re.compile(r"\x1b\[|[─│┃━┏┗╭╰]")

Result = subprocess.CompletedProcess[str]


def _env(dsn: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "JOB_MACHINE_DSN"}
    if dsn is not None:
        env["JOB_MACHINE_DSN"] = dsn
    return env


def cli(*args: str, dsn: str | None = None, stdin: str | None = None, cwd: Path = ROOT) -> Result:
    """Run ``python -m job_machine.cli ARGS``, with $JOB_MACHINE_DSN = ``dsn`` (unset if None)."""
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        env=_env(dsn),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cli_many(commands: Sequence[Sequence[str]], dsn: str | None = None) -> list[Result]:
    """Run independent commands at once (from tests/support), in order of ``commands``."""
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda args: cli(*args, dsn=dsn, cwd=TESTS), commands))


def _show(r: Result) -> str:
    return f"{r.args[3:]} exited {r.returncode}\nstdout: {r.stdout!r}\nstderr: {r.stderr!r}"


def ok(r: Result) -> str:
    """The stdout of a command that succeeded, checked to be plain text."""
    assert r.returncode == 0, _show(r)
    assert not DECORATION.search(r.stdout), _show(r)
    return r.stdout


def failed(r: Result, code: int, notes: int = 0) -> str:
    """The one error line of a command that failed with ``code``, after ``notes``
    lines of commentary on stderr; no traceback."""
    assert r.returncode == code, _show(r)
    assert "Traceback" not in r.stderr, _show(r)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == notes + 1, _show(r)
    assert lines[-1].startswith("Error: "), _show(r)
    return lines[-1]


def tsv(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines()]


@contextmanager
def cli_worker(
    dsn: str, tmp_path: Path, *args: str, script: bool = True
) -> Iterator[subprocess.Popen[bytes]]:
    """``job-machine worker ARGS`` as a child process, yielded once it is
    registered (its signal handlers are in place by then). With ``script``, the
    installed script runs from tests/support; else ``python -m`` from the root."""
    if script:
        assert SCRIPT.exists(), f"{SCRIPT} is missing: pip install -e . installs it"
        command, cwd = [str(SCRIPT), "worker", *args], TESTS
    else:
        command, cwd = [*CLI, "worker", *args], ROOT
    out, err = tmp_path / "worker.out", tmp_path / "worker.log"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen([*command, "--dsn", dsn], cwd=cwd, stdout=stdout, stderr=stderr)
    try:
        with jm.Admin(dsn) as admin:

            def registered() -> bool:
                assert proc.poll() is None, f"worker exited {proc.returncode}:\n{err.read_text()}"
                return any(w.pid == proc.pid and w.alive for w in admin.workers())

            wait_until(registered, 30, "the worker to register", interval=0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _fields(text: str) -> dict[str, str]:
    """The ``name  value`` lines of ``tasks show``, as a dict."""
    return dict(
        re.split(r"\s{2,}", line, maxsplit=1) for line in text.splitlines() if line[:1] != " "
    )


_STATUS_HEADERS = ["queue", "waiting", "delayed", "blocked", "running", "failed", "paused"]


def _task(dsn: str, task_id: int) -> jm.TaskInfo:
    with jm.Admin(dsn) as admin:
        return admin.task_info(task_id)


# -- help, usage errors, missing database -------------------------------------------

COMMANDS = [
    ["install"],
    ["migrate"],
    ["worker"],
    ["send"],
    ["status"],
    ["history"],
    ["tasks", "list"],
    ["tasks", "show"],
    ["tasks", "note"],
    ["tasks", "retry"],
    ["tasks", "cancel"],
    ["tasks", "remove"],
    ["queues", "list"],
    ["queues", "pause"],
    ["queues", "resume"],
    ["schedules", "add"],
    ["schedules", "list"],
    ["schedules", "pause"],
    ["schedules", "resume"],
    ["schedules", "remove"],
    ["workers"],
    ["workers", "list"],
    ["workers", "stop"],
    ["workers", "broadcast"],
    ["limits", "list"],
    ["limits", "set"],
    ["limits", "clear"],
    ["purge"],
    ["reset"],
]
GROUPS = [["tasks"], ["queues"]]


def test_help_on_every_command() -> None:
    results = cli_many([["--help"], ["demo", "--help"], *GROUPS])
    results += cli_many([[*c, "--help"] for c in COMMANDS])
    for r in results:
        assert ok(r).startswith("Usage: job-machine"), _show(r)
    for command, r in zip(COMMANDS, results[2 + len(GROUPS) :], strict=True):
        assert "--dsn" in r.stdout and "JOB_MACHINE_DSN" in r.stdout, (command, r.stdout)
    top = results[0].stdout
    names = ["install", "migrate", "worker", "send", "status", "history", "tasks", "queues"]
    for name in [*names, "schedules", "workers", "limits", "purge", "reset", "demo"]:
        assert re.search(rf"^  {name} ", top, re.MULTILINE), top
    # A group alone prints its help, listing its subcommands.
    tasks_help, queues_help = (r.stdout for r in results[2 : 2 + len(GROUPS)])
    for name in ["list", "show", "note", "retry", "cancel", "remove"]:
        assert re.search(rf"^  {name} ", tasks_help, re.MULTILINE), tasks_help
    for name in ["list", "pause", "resume"]:
        assert re.search(rf"^  {name} ", queues_help, re.MULTILINE), queues_help
    # The installed script, bare: its help, exit 0; --version.
    bare = subprocess.run([SCRIPT], capture_output=True, text=True, check=False)
    assert ok(bare) == top
    version = subprocess.run([SCRIPT, "--version"], capture_output=True, text=True, check=False)
    assert ok(version).strip() == f"job-machine, version {jm.__version__}"


def test_a_missing_database_is_a_usage_error() -> None:
    commands = [
        ["status"],
        ["history"],
        ["workers"],
        ["workers", "stop", "--all"],
        ["tasks", "list"],
        ["tasks", "cancel", "1"],
        ["tasks", "note", "1", "a=b"],
        ["queues", "list"],
        ["queues", "pause", "q.one"],
        ["send", "q.one", "{}"],
        ["purge"],
        ["reset"],
        ["install"],
        ["worker", "cli_workers:Echo"],
        ["worker", "cli_workers:Echo", "--processes", "2"],
    ]
    for r in cli_many(commands, dsn=None):
        line = failed(r, 2)
        assert "no database: pass --dsn DSN or set JOB_MACHINE_DSN" in line, line


def test_usage_errors_exit_2_with_one_line_naming_the_problem(dsn: str) -> None:
    cases = {
        ("send", "q.one", "{nope"): "Invalid value for 'JSON': not valid JSON: Expecting",
        ("send", "q.one", "NaN"): "NaN is not JSON",
        ("send", "", "{}"): "Invalid value for 'QUEUE': queue name is empty",
        ("tasks", "list", "--state", "sleeping"): "'--state'",
        ("tasks", "list", "--limit", "0"): "'--limit'",
        ("tasks", "show", "x"): "'ID'",
        ("purge", "--older-than", "soon"): "'soon' is not a duration",
        ("status", "--bogus"): "--bogus",  # the wording varies with click's version
        ("worker", "nocolon"): "'nocolon' is not MODULE:CLASS",
        ("worker", "cli_workers:NotAWorker"): "is the class cli_workers.NotAWorker, not a sub",
        ("worker", "cli_workers:not_a_class"): "is a function, not a subclass",
        ("worker", "cli_workers:Lazy"): "does not override process(task)",
        ("worker", "cli_workers:nothing"): "module 'cli_workers' has no 'nothing'",
        ("worker", "no_such_module:W"): "no module named 'no_such_module'",
        ("worker", "job_machine:Worker"): "job_machine's own base class",
        ("worker", "cli_workers:NoQueue"): "no queue: pass --queue",
        ("worker", "cli_workers:Echo", "--timeout", "0"): "'--timeout'",
        ("worker", "cli_workers:Echo", "-q", ""): "queue name is empty",
        ("worker", "cli_workers:Echo", "--exact-queue", ""): "queue name is empty",
        ("worker", "cli_workers:Echo", "--min-priority", "high"): "'--min-priority'",
        ("worker", "cli_workers:Echo", "--processes", "0"): "'--processes'",
        ("worker", "cli_workers:Lazy", "--processes", "2"): "does not override process(task)",
        ("send", "q.one", "{}", "--priority", "1.5"): "'--priority'",
        ("send", "q.one", "{}", "--priority", "3000000000"): "'--priority'",
        ("send", "q.one", "{}", "--delay", "soon"): "'soon' is not a duration",
        ("send", "q.one", "{}", "--attempts", "0"): "'--attempts'",
        ("send", "q.one", "{}", "--parent", "0"): "'--parent'",
        ("send", "q.one", "{}", "--unique-key", ""): "'--unique-key': the key is empty",
        ("tasks", "list", "--state", "paused"): "'--state'",
        ("tasks", "list", "--offset", "-1"): "'--offset'",
        ("tasks", "retry", "1", "--priority", "top"): "'--priority'",
        ("tasks", "note", "1"): "Missing argument 'KEY=VALUE...'",
        ("tasks", "note", "1", "progress"): "'progress' is not KEY=TEXT or KEY:=JSON",
        ("tasks", "note", "1", "=x"): "'=x' has no key",
        ("tasks", "note", "1", "n:=NaN"): "'n:=NaN': the value is not valid JSON: NaN is not",
        ("queues", "pause"): "Missing argument 'QUEUE'",
        ("queues", "resume", ""): "queue name is empty",
        ("workers", "stop"): "give a WORKER_ID or --all",
        ("workers", "stop", "1", "--all"): "give a WORKER_ID or --all, not both",
        ("workers", "stop", "x"): "'[WORKER_ID]'",
        ("workers", "--dsn", "x", "stop", "1"): "--dsn goes after the subcommand",
    }
    for (args, expected), r in zip(cases.items(), cli_many(list(cases), dsn=dsn), strict=True):
        line = failed(r, 2)
        assert expected in line, (args, line)
        assert "--help" in line, line  # where to read more


def test_runtime_errors_exit_1_with_one_line(empty_dsn: str) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nowhere = f"host=127.0.0.1 port={port} dbname=x user=x password=secret connect_timeout=5"
    no_schema, no_server, no_server_worker = cli_many(
        [
            ["status"],
            ["tasks", "list", "--dsn", nowhere],
            ["worker", "cli_workers:Echo", "--dsn", nowhere],
        ],
        dsn=empty_dsn,
    )
    assert "is not installed" in failed(no_schema, 1)
    assert "job-machine install" in failed(no_schema, 1)
    # The worker has logged that it starts before it finds no server.
    for r, notes in ((no_server, 0), (no_server_worker, 1)):
        line = failed(r, 1, notes)
        assert f"could not connect to PostgreSQL at host=127.0.0.1 port={port}" in line, line
        assert "secret" not in line


# -- install ------------------------------------------------------------------------


def test_install_prints_versions_and_is_idempotent(empty_dsn: str) -> None:
    v = SCHEMA_VERSION
    first = ok(cli("install", "--dsn", empty_dsn))
    assert first.startswith(f"installed the jobmachine schema: version none -> {v} (host="), first
    again = ok(cli("install", dsn=empty_dsn))  # the DSN from $JOB_MACHINE_DSN
    assert again.startswith(f"the jobmachine schema is up to date: version {v} -> {v} ("), again
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM jobmachine.schema_version WHERE version = %s", [v])
        [(before,)] = conn.execute("SELECT max(version) FROM jobmachine.schema_version")
    upgraded = ok(cli("migrate", dsn=empty_dsn))
    assert upgraded.startswith(f"upgraded the jobmachine schema: version {before} -> {v} ("), (
        upgraded
    )
    assert ok(cli("status", dsn=empty_dsn)).startswith("W=0 D=0 B=0 R=0 F=0 done=0 workers=0/0\n")


def test_install_print_needs_no_database() -> None:
    assert ok(cli("install", "--print", dsn=None)) == jm.create_tables_sql()


def test_roles_creates_the_roles_and_refuses_a_bad_prefix(dsn: str) -> None:
    from tests.integration.test_roles import drop_roles  # noqa: PLC0415

    prefix = f"cli_{secrets.token_hex(4)}"
    out = ok(cli("roles", "--prefix", prefix, dsn=dsn))
    names = [f"{prefix}_{kind}" for kind in ("sender", "worker", "reader", "admin")]
    try:
        assert out.startswith(f"roles {', '.join(names)} have their privileges (host="), out
        with psycopg.connect(dsn, autocommit=True) as conn:
            for name in names:
                assert conn.execute("SELECT to_regrole(%s)", [name]).fetchone() != (None,)
            assert conn.execute(
                "SELECT has_table_privilege(%s, 'jobmachine.task', 'SELECT'),"
                " has_table_privilege(%s, 'jobmachine.task', 'DELETE')",
                [f"{prefix}_reader", f"{prefix}_reader"],
            ).fetchone() == (True, False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            drop_roles(conn, names)
    assert "--prefix" in failed(cli("roles", "--prefix", "Bad-Prefix!", dsn=dsn), 2)
    assert ok(cli("roles", "--print", dsn=None)) == jm.roles_sql()


# -- send, status, tasks ----------------------------------------------------------------


def test_send_prints_the_id_reads_stdin_and_times_out(dsn: str) -> None:
    first = int(ok(cli("send", "q.one", '{"a": [1, 2]}', dsn=dsn)))
    second = json.loads(ok(cli("send", "q.one", "-", "--json", "--dsn", dsn, stdin="[3]")))
    assert second == {"id": first + 1}
    assert _task(dsn, first).data == {"a": [1, 2]}
    assert _task(dsn, first + 1).data == [3]
    r = cli("send", "q.one", "null", "--wait", "--timeout", "0.3", dsn=dsn)
    assert re.fullmatch(r"Error: no reply to task \d+ within 0.3 s", failed(r, 1, notes=1))


def test_status_and_tasks_list_and_show(dsn: str) -> None:
    with jm.Client(dsn) as client:
        a = client.send({"n": 1}, queue="q.one")
        b = client.send({"n": 2}, queue="q.one")
        c = client.send({"n": 3}, queue="q.two")
    with Echo(dsn, queue="q.two") as worker:
        assert worker.work_once()  # c is done

    (st_json, st_text, all_json, all_text, page1, page2, done, q_one, show_json, show_text) = (
        cli_many(
            [
                ["status", "--json"],
                ["status"],
                ["tasks", "list", "--json"],
                ["tasks", "list"],
                ["tasks", "list", "--json", "--limit", "1"],
                ["tasks", "list", "--json", "--before-id", str(c)],
                ["tasks", "list", "--json", "--state", "done"],
                ["tasks", "list", "--json", "--queue", "q.one"],
                ["tasks", "show", str(c), "--json"],
                ["tasks", "show", str(c)],
            ],
            dsn=dsn,
        )
    )
    line = "W=2 D=0 B=0 R=0 F=0 done=1 workers=0/0"
    queue = {"delayed": 0, "blocked": 0, "running": 0, "failed": 0, "paused": False}
    assert json.loads(ok(st_json)) == {
        "status": line,
        "queues": [
            {"queue": "q.one", "waiting": 2, **queue},
            {"queue": "q.two", "waiting": 0, **queue},
        ],
        "totals": {"waiting": 2, "delayed": 0, "blocked": 0, "running": 0, "failed": 0},
        "done": 1,
        "done_estimated": False,
        "workers": 0,
        "busy": 0,
        "idle": 0,
    }
    assert ok(st_text).splitlines()[:2] == [line, "done 1; workers 0 alive: 0 busy, 0 idle"]
    assert tsv(st_text.stdout)[2:] == [
        ["queue", "waiting", "delayed", "blocked", "running", "failed", "paused"],
        ["q.one", "2", "0", "0", "0", "0", "no"],
        ["q.two", "0", "0", "0", "0", "0", "no"],
    ]

    listed = json.loads(ok(all_json))
    assert [(t["id"], t["queue"], t["state"], t["attempts"]) for t in listed] == [
        (c, "q.two", "done", 1),
        (b, "q.one", "waiting", 0),
        (a, "q.one", "waiting", 0),
    ]
    assert json.loads(listed[2]["parameters"]) == {"n": 1}
    rows = tsv(ok(all_text))
    assert rows[0] == [
        "id",
        "queue",
        "state",
        "priority",
        "attempts",
        "created",
        "modified",
        "run_after",
        "worker",
        "title",
        "data",
    ]
    assert [(r[0], r[2], r[10]) for r in rows[1:]] == [
        (str(c), "done", '{"n":3}'),  # the data as stored
        (str(b), "waiting", '{"n":2}'),
        (str(a), "waiting", '{"n":1}'),
    ]
    assert [t["id"] for t in json.loads(ok(page1))] == [c]
    assert [t["id"] for t in json.loads(ok(page2))] == [b, a]
    assert [t["id"] for t in json.loads(ok(done))] == [c]
    assert [t["id"] for t in json.loads(ok(q_one))] == [b, a]

    info = json.loads(ok(show_json))
    assert {k: info[k] for k in ("id", "queue", "state", "status", "attempts", "data")} == {
        "id": c,
        "queue": "q.two",
        "state": "done",
        "status": 200,
        "attempts": 1,
        "data": {"n": 3},
    }
    assert info["reply"]["echo"] == {"n": 3}
    assert info["errors"] == []
    fields = _fields(ok(show_text))
    assert fields["state"] == "done (200)"
    assert fields["data"] == '{"n": 3}'
    assert json.loads(fields["reply"])["echo"] == {"n": 3}


def test_tasks_cancel_of_a_running_task_asks_first(dsn: str) -> None:
    with jm.Client(dsn, queue="q.one") as client:
        tid = client.send({"n": 1})
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE jobmachine.task SET status = 100 WHERE task_id = %s", [tid])
    refused = failed(cli("tasks", "cancel", str(tid), dsn=dsn, stdin="n\n"), 1, notes=1)
    assert "not cancelled (--yes cancels without asking)" in refused
    assert _task(dsn, tid).state == "running"
    asked = cli("tasks", "cancel", str(tid), dsn=dsn, stdin="y\n")
    assert f"Task {tid} is running: stop it and cancel it? [y/N]" in asked.stderr
    assert ok(asked) == f"task {tid} cancelled\n"
    info = _task(dsn, tid)
    assert (info.state, info.last_error["message"]) == ("failed", "cancelled by hand while running")


def test_tasks_cancel_retry_remove(dsn: str) -> None:
    with jm.Client(dsn, queue="q.one") as client:
        a = client.send({"n": 1})
        b = client.send({"n": 2})

    assert ok(cli("tasks", "cancel", str(a), dsn=dsn)) == f"task {a} cancelled\n"
    info = _task(dsn, a)
    assert (info.state, info.last_error["type"]) == ("failed", "Cancelled")
    shown = ok(cli("tasks", "show", str(a), dsn=dsn)).splitlines()
    assert shown[-2:] == ["errors        1", "  Cancelled: cancelled by hand"]  # no attempt
    again = failed(cli("tasks", "cancel", str(a), dsn=dsn), 1)
    assert "only a waiting, blocked or running task can be cancelled" in again

    retried = ok(cli("tasks", "retry", str(a), "--queue", "q.other", dsn=dsn))
    assert retried == f"task {a} is waiting again on queue q.other\n"
    info = _task(dsn, a)
    assert (info.state, info.queue, info.attempts, info.priority) == ("waiting", "q.other", 0, 0)
    with Echo(dsn, queue="q.other") as worker:
        assert worker.work_once()  # a is done
    retried = ok(cli("tasks", "retry", str(a), "--priority", "-3", dsn=dsn))
    assert retried == f"task {a} is waiting again on queue q.other, priority -3\n"
    info = _task(dsn, a)
    assert (info.state, info.queue, info.priority) == ("waiting", "q.other", -3)
    assert "only a done or failed task can be retried" in failed(
        cli("tasks", "retry", str(b), dsn=dsn), 1
    )

    assert ok(cli("tasks", "remove", str(a), dsn=dsn)) == f"task {a} removed\n"
    with pytest.raises(jm.UnknownTask):
        _task(dsn, a)
    gone, never = cli_many([["tasks", "show", str(a)], ["tasks", "remove", "999999"]], dsn=dsn)
    assert failed(gone, 1) == f"Error: there is no task {a}"
    assert failed(never, 1) == "Error: there is no task 999999"
    assert _task(dsn, b).state == "waiting"


def test_send_options_tasks_show_and_note(dsn: str) -> None:
    parent = int(ok(cli("send", "q.opt", '{"step": 1}', dsn=dsn)))
    options = ["--priority", "7", "--attempts", "2", "--title", "Step two"]
    options += ["--grouping", "batch-1", "--unique-key", "step-2"]
    options += ["--parent", str(parent), "--parent", str(parent)]
    child, later, doomed = (
        int(ok(r))
        for r in cli_many(
            [
                ["send", "q.opt", '{"step": 2}', *options],
                ["send", "q.opt", "3", "--delay", "1h", "--grouping", "batch-1"],
                ["send", "q.opt", "4", "--parent", str(parent)],
            ],
            dsn=dsn,
        )
    )
    with jm.Client(dsn, queue="q.opt") as client:
        kept = client.send(5, remove_after=90)
    # The same unique key again: nothing is sent, the id is the holder's.
    same, no_parent = cli_many(
        [
            ["send", "q.opt", "{}", "--unique-key", "step-2", "--json"],
            ["send", "q.opt", "{}", "--parent", str(parent), "--parent", "999999"],
        ],
        dsn=dsn,
    )
    assert json.loads(ok(same)) == {"id": child}
    assert "999999" in failed(no_parent, 1)

    info = _task(dsn, child)
    assert (info.state, info.priority, info.max_attempts, info.parents) == (
        "blocked",
        7,
        2,
        [parent],
    )
    assert (info.title, info.grouping, info.unique_key) == ("Step two", "batch-1", "step-2")
    delayed = _task(dsn, later)
    assert delayed.state == "waiting" and delayed.run_after is not None
    assert 3500 < (delayed.run_after - delayed.created).total_seconds() < 3700
    assert ok(cli("tasks", "cancel", str(doomed), dsn=dsn)) == f"task {doomed} cancelled\n"

    # Notes: KEY=TEXT is a string, KEY:=JSON any JSON value, KEY:=null removes.
    noted = ok(
        cli("tasks", "note", str(child), "stage=fetch", "progress:=50", "tags:=[1]", dsn=dsn)
    )
    prefix = f"task {child} notes: "
    assert noted.startswith(prefix)
    assert json.loads(noted[len(prefix) :]) == {"stage": "fetch", "progress": 50, "tags": [1]}
    removed = ok(cli("tasks", "note", str(child), "stage:=null", "--json", dsn=dsn))
    assert json.loads(removed) == {"id": child, "notes": {"progress": 50, "tags": [1]}}
    assert failed(cli("tasks", "note", "999999", "a=b", dsn=dsn), 1) == (
        "Error: there is no task 999999"
    )

    (status, blocked, group, group_offset, show_json, show_child, show_parent, show_kept) = (
        cli_many(
            [
                ["status", "--json"],
                ["tasks", "list", "--state", "blocked", "--json"],
                ["tasks", "list", "--grouping", "batch-1", "--json"],
                ["tasks", "list", "--grouping", "batch-1", "--offset", "1", "--json"],
                ["tasks", "show", str(child), "--json"],
                ["tasks", "show", str(child)],
                ["tasks", "show", str(parent)],
                ["tasks", "show", str(kept)],
            ],
            dsn=dsn,
        )
    )
    totals = json.loads(ok(status))["totals"]
    assert totals == {"waiting": 2, "delayed": 1, "blocked": 1, "running": 0, "failed": 1}
    assert [
        (t["id"], t["state"], t["priority"], t["title"], t["grouping"])
        for t in json.loads(ok(blocked))
    ] == [(child, "blocked", 7, "Step two", "batch-1")]
    newest_first = sorted([later, child], reverse=True)  # sent at once: in any order
    assert [t["id"] for t in json.loads(ok(group))] == newest_first
    assert [t["id"] for t in json.loads(ok(group_offset))] == newest_first[1:]

    shown = json.loads(ok(show_json))
    assert {k: shown[k] for k in ("state", "status", "priority", "max_attempts", "parents")} == {
        "state": "blocked",
        "status": 10,
        "priority": 7,
        "max_attempts": 2,
        "parents": [parent],
    }
    assert (shown["title"], shown["grouping"], shown["unique_key"]) == (
        "Step two",
        "batch-1",
        "step-2",
    )
    assert (shown["notes"], shown["children"], shown["results"]) == (
        {"progress": 50, "tags": [1]},
        [],
        [],
    )
    assert (shown["remove_after"], shown["keep_for"]) == (None, None)
    fields = _fields(ok(show_child))
    assert fields["state"] == "blocked (10)"
    assert (fields["priority"], fields["attempts"], fields["max_attempts"]) == ("7", "0", "2")
    assert (fields["title"], fields["grouping"], fields["unique_key"]) == (
        "Step two",
        "batch-1",
        "step-2",
    )
    assert fields["parents"] == f"{parent} (waiting)"
    assert fields["children"] == "-"
    assert json.loads(fields["notes"]) == {"progress": 50, "tags": [1]}
    assert (fields["results"], fields["errors"]) == ("0", "0")
    assert fields["remove_after"] == "- (the worker's remove_after)"
    fields = _fields(ok(show_parent))
    assert (fields["parents"], fields["children"]) == (
        "-",
        f"{min(child, doomed)}, {max(child, doomed)}",
    )
    assert (fields["max_attempts"], fields["notes"]) == ("- (the worker's retries + 1)", "-")
    assert _fields(ok(show_kept))["remove_after"] == "90 s after it finishes"

    # The parent done, the child waits and goes first (priority 7); run
    # twice (retried), it has two results, the last one its reply.
    with Echo(dsn, queue="q.opt") as worker:
        assert worker.work_once()
        assert _task(dsn, child).state == "waiting"
        assert worker.work_once()
        assert _task(dsn, child).state == "done"
        ok(cli("tasks", "retry", str(child), dsn=dsn))
        assert worker.work_once()
    lines = ok(cli("tasks", "show", str(child), dsn=dsn)).splitlines()
    fields = _fields("\n".join(lines))
    assert (fields["state"], fields["results"]) == ("done (200)", "2")
    assert json.loads(fields["reply"])["echo"] == {"step": 2}
    results = [line for line in lines if line.startswith("  result ")]
    assert [json.loads(line.split(": ", 1)[1])["echo"] for line in results] == [{"step": 2}] * 2
    assert fields["parents"] == f"{parent} (done)"


def test_history_counts_the_last_24_hours(dsn: str) -> None:
    with jm.Client(dsn, queue="h.one") as client:
        client.send(1)
        cancelled = client.send(2)
    with Echo(dsn, queue="h.one") as worker:
        assert worker.work_once()
    with jm.Admin(dsn) as admin:
        admin.cancel(cancelled)

    as_json, text = cli_many([["history", "--json"], ["history"]], dsn=dsn)
    hours = json.loads(ok(as_json))
    assert len(hours) == 24
    assert (sum(h["done"] for h in hours), sum(h["failed"] for h in hours)) == (1, 1)
    starts = [datetime.fromisoformat(h["hour"]) for h in hours]
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(starts))
    assert starts[-1] <= datetime.now(UTC) < starts[-1] + timedelta(hours=1)
    rows = tsv(ok(text))
    assert rows[0] == ["hour", "done", "failed"]
    assert [r[1:] for r in rows[1:]] == [[str(h["done"]), str(h["failed"])] for h in hours]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", r[0]) for r in rows[1:])


def test_queues_pause_and_resume(dsn: str) -> None:
    with jm.Client(dsn, queue="q.paused") as client:
        client.send(1)
    assert ok(cli("queues", "pause", "q.paused", dsn=dsn)) == "queue q.paused paused\n"
    listed, table, status, unknown = cli_many(
        [
            ["queues", "list", "--json"],
            ["queues", "list"],
            ["status"],
            ["queues", "resume", "q.nowhere"],
        ],
        dsn=dsn,
    )
    assert json.loads(ok(listed)) == [
        {
            "queue": "q.paused",
            "waiting": 1,
            "delayed": 0,
            "blocked": 0,
            "running": 0,
            "failed": 0,
            "paused": True,
        }
    ]
    row = ["q.paused", "1", "0", "0", "0", "0", "yes"]
    assert tsv(ok(table)) == [_STATUS_HEADERS, row]
    assert tsv(ok(status))[2:] == [_STATUS_HEADERS, row]
    assert failed(unknown, 1) == "Error: there is no queue 'q.nowhere'"
    with Echo(dsn, queue="q.paused") as worker:
        assert not worker.work_once()  # paused: nothing is claimed
        assert ok(cli("queues", "resume", "q.paused", dsn=dsn)) == "queue q.paused resumed\n"
        assert worker.work_once()


def test_purge_removes_finished_tasks(dsn: str) -> None:
    with jm.Client(dsn) as client:
        c = [client.send(n, queue="p.one") for n in range(3)][-1]
        d = client.send(3, queue="p.two")
    with Echo(dsn, queue=["p.one", "p.two"]) as worker:
        assert worker.work_once() and worker.work_once()  # the first two are done
    with jm.Admin(dsn) as admin:
        admin.cancel(c)  # failed

    assert ok(cli("purge", "--older-than", "1h", dsn=dsn)) == "removed 0 tasks\n"
    assert ok(cli("purge", "--state", "failed", dsn=dsn)) == "removed 1 task\n"
    assert ok(cli("purge", "--queue", "p.two", dsn=dsn)) == "removed 0 tasks\n"
    assert ok(cli("purge", dsn=dsn)) == "removed 2 tasks\n"
    with jm.Admin(dsn) as admin:
        assert [(t.id, t.state) for t in admin.list_tasks()] == [(d, "waiting")]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_status_watch_refreshes_until_ctrl_c(dsn: str, as_json: bool) -> None:
    args = ["status", "--watch", "--interval", "0.2"] + (["--json"] if as_json else [])
    with subprocess.Popen(
        [*CLI, *args, "--dsn", dsn], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            refreshes: list[str] = []
            while len(refreshes) < 3:
                line = proc.stdout.readline().decode()
                assert line, f"status --watch ended: {proc.wait(5)} {proc.stderr.read()!r}"
                if as_json:
                    refreshes.append(json.loads(line)["status"])
                elif re.match(r"\d\d:\d\d:\d\d W=", line):
                    refreshes.append(line.split(" ", 1)[1].strip())
            assert refreshes == ["W=0 D=0 B=0 R=0 F=0 done=0 workers=0/0"] * 3
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0
            assert proc.stderr.read() == b""
        finally:
            if proc.poll() is None:
                proc.kill()


def test_reset_asks_first_and_deletes_only_on_yes(dsn: str) -> None:
    with jm.Client(dsn, queue="cli.reset") as client:
        ids = [client.send(n) for n in range(3)]
        assert client.lock("cli.reset", expire=60) is not None
    refusals = [cli("reset", dsn=dsn, stdin=answer) for answer in ("n\n", "", "yes please\n")]
    for r in refusals:
        assert failed(r, 1, notes=1) == "Error: nothing deleted (--yes resets without asking)"
        assert "Delete every task (3), result, named lock and schedule of " in r.stderr, _show(r)
    assert _task(dsn, ids[0]).state == "waiting"
    said = ok(cli("reset", dsn=dsn, stdin="Y\n"))
    assert said == "reset: removed 3 tasks, 1 locks, 0 schedules\n"
    with pytest.raises(jm.UnknownTask):
        _task(dsn, ids[0])
    assert ok(cli("reset", "--yes", dsn=dsn)) == "reset: removed 0 tasks, 0 locks, 0 schedules\n"


# -- worker, workers ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_worker_answers_send_wait_and_exits_0_on_sigterm(
    dsn: str, tmp_path: Path, kind: str
) -> None:
    options = ["--retries", "0", "--timeout", "5", "--log-level", "debug"]
    options += ["--concurrency", "1" if kind == "sync" else "2"]
    if kind == "sync":
        # The class's own queue; found in the working directory (tests/).
        spec, queues, script = "cli_workers:Echo", ["cli.echo"], True
        queue_args: list[str] = []
    else:
        spec, queues, script = "tests.support.cli_workers:AsyncEcho", ["cli.a", "cli.b"], False
        queue_args = ["-q", "cli.a", "--queue", "cli.b"]
    with cli_worker(dsn, tmp_path, spec, *queue_args, *options, script=script) as proc:
        listed, table = cli_many([["workers", "--json"], ["workers"]], dsn=dsn)
        found: list[dict[str, Any]] = json.loads(ok(listed))
        assert [(w["pid"], w["alive"], w["queues"], w["running"]) for w in found] == [
            (proc.pid, True, queues, [])
        ]
        rows = tsv(ok(table))
        assert rows[0] == [
            "id",
            "host",
            "pid",
            "alive",
            "queues",
            "running",
            "started",
            "seen",
            "command",
        ]
        assert rows[1][2:5] == [str(proc.pid), "yes", ",".join(queues)]
        assert rows[1][8] == "-"

        r = cli("send", queues[-1], '{"n": 1}', "--wait", "--timeout", "20", dsn=dsn)
        assert json.loads(ok(r)) == {"echo": {"n": 1}, "pid": proc.pid, "kind": kind}
        assert re.fullmatch(rf"sent task \d+ to {queues[-1]}; waiting for its reply\n", r.stderr)

        r = cli("send", queues[-1], '{"fail": "boom"}', "--wait", "--json", dsn=dsn)
        assert re.fullmatch(r"Error: task \d+ failed: boom", failed(r, 1, notes=1))
        out = json.loads(r.stdout)
        assert (out["state"], out["error"]["type"], out["error"]["message"]) == (
            "failed",
            "RuntimeError",
            "boom",
        )

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, (tmp_path / "worker.log").read_text()
    log = (tmp_path / "worker.log").read_text()
    name = spec.split(":")[1]
    assert (
        f"INFO job_machine.cli: starting {name} ({'sync' if kind == 'sync' else 'asyncio'})" in log
    )
    assert "SIGTERM: finishing the task in hand" in log
    assert f"INFO job_machine.cli: {name} stopped" in log
    assert (tmp_path / "worker.out").read_text() == ""  # logs go to stderr only


def test_worker_serves_a_pattern_above_a_priority_until_workers_stop(
    dsn: str, tmp_path: Path
) -> None:
    args = ["cli_workers:Echo", "-q", "cli.p.*", "--min-priority", "5", "--dead-after", "2"]
    with cli_worker(dsn, tmp_path, *args) as proc:
        [found] = json.loads(ok(cli("workers", "list", "--json", dsn=dsn)))
        assert (found["pid"], found["queues"], found["command"]) == (proc.pid, ["cli.p.*"], None)
        # Both go to a queue the pattern matches that did not exist when the
        # worker started; the one below --min-priority is never claimed.
        low = int(ok(cli("send", "cli.p.new", '{"n": 1}', "--priority", "4", dsn=dsn)))
        r = cli("send", "cli.p.new", '{"n": 2}', "--priority", "5", "--wait", dsn=dsn)
        assert json.loads(ok(r)) == {"echo": {"n": 2}, "pid": proc.pid, "kind": "sync"}
        assert _task(dsn, low).state == "waiting"

        worker_id = found["id"]
        assert ok(cli("workers", "stop", str(worker_id), dsn=dsn)) == (
            f"asked worker {worker_id} to stop\n"
        )
        assert proc.wait(15) == 0, (tmp_path / "worker.log").read_text()
    log = (tmp_path / "worker.log").read_text()
    assert "starting Echo (sync) on cli.p.*" in log
    assert f"worker {worker_id}: asked to stop" in log
    assert "INFO job_machine.cli: Echo stopped" in log
    assert _task(dsn, low).state == "waiting"
    # Stopped, it left the registry.
    gone, unknown = cli_many(
        [["workers", "stop", str(worker_id)], ["workers", "stop", "999999"]], dsn=dsn
    )
    assert failed(gone, 1) == f"Error: there is no worker {worker_id}"
    assert failed(unknown, 1) == "Error: there is no worker 999999"


def test_workers_stop_a_worker_that_is_not_alive(dsn: str) -> None:
    assert ok(cli("workers", "stop", "--all", dsn=dsn)) == "asked 0 workers to stop\n"
    # A registered worker whose session is gone (killed, not yet reaped).
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO jobmachine.worker (host, pid, queues)"
            " VALUES ('gone', 1, '{q.one}') RETURNING worker_id"
        ).fetchone()
    assert row is not None
    worker_id = int(row[0])
    one, every = cli_many([["workers", "stop", str(worker_id)], ["workers", "stop", "--all"]], dsn)
    assert ok(one) == f"asked worker {worker_id} to stop (it is not alive)\n"
    assert ok(every) == "asked 1 worker to stop (1 of them not alive)\n"
    as_json, text = cli_many([["workers", "--json"], ["workers"]], dsn=dsn)
    [listed] = json.loads(ok(as_json))
    assert (listed["id"], listed["alive"], listed["command"]) == (worker_id, False, "stop")
    assert [r[3:4] + r[8:] for r in tsv(ok(text))] == [["alive", "command"], ["no", "stop"]]


# -- demo -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["job_machine.cli", "demo"], ["job_machine.demo"]], ids=["cli", "python-m-demo"]
)
def test_demo_sends_tasks_to_a_worker_process(dsn: str, command: list[str]) -> None:
    r = subprocess.run(
        [sys.executable, "-m", *command, "--dsn", dsn, "--tasks", "3", "--work", "0"],
        cwd=ROOT,
        env=_env(None),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = ok(r)
    assert "1. installing the jobmachine schema" in out
    assert re.search(r"worker pid \d+ is registered and listening on jm:demo.greet", out)
    assert re.search(r"task \d+: reply after [\d.]+ ms from pid \d+: Hello, Ada!", out)
    assert len(re.findall(r"task \d+ -> Hello, \w+!", out)) == 3
    assert "3 replies in" in out
    assert out.endswith("done: the worker stopped on SIGTERM (exit code 0)\n"), out
    with jm.Admin(dsn) as admin:
        stats = admin.stats()
    assert [(s.queue, s.waiting, s.running, s.failed) for s in stats.queues] == [
        ("demo.greet", 0, 0, 0)
    ]
    assert (stats.done, stats.done_estimated) == (4, False)


#: Queue names a Perl client may make (issue 14, item 8).
ODD_NAMES = ["Email Sender", "a/b:c", "100% ?#x", "køb ✓", "<script>x</script>", "rep.*"]


def test_send_list_pause_resume_and_serve_any_queue_name(dsn: str, tmp_path: Path) -> None:
    """Names outside dotted [\\w-] segments were refused; a worker serves
    ``rep.*`` itself with --exact-queue, the others by name."""
    args = ["cli_workers:Echo", "--exact-queue", "rep.*"]
    for name in ODD_NAMES[:-1]:
        args += ["-q", name]
    with cli_worker(dsn, tmp_path, *args) as proc:
        for name in ODD_NAMES:
            r = cli("send", name, '{"n": 1}', "--wait", "--timeout", "20", dsn=dsn)
            assert json.loads(ok(r)) == {"echo": {"n": 1}, "pid": proc.pid, "kind": "sync"}
            assert f" to {name}; waiting" in r.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, (tmp_path / "worker.log").read_text()
    for name in ODD_NAMES:
        listed = json.loads(ok(cli("tasks", "list", "--queue", name, "--json", dsn=dsn)))
        assert [t["queue"] for t in listed] == [name]
        assert ok(cli("queues", "pause", name, dsn=dsn)) == f"queue {name} paused\n"
        assert ok(cli("queues", "resume", name, dsn=dsn)) == f"queue {name} resumed\n"
    queues = json.loads(ok(cli("queues", "list", "--json", dsn=dsn)))
    assert sorted(q["queue"] for q in queues) == sorted(ODD_NAMES)
    # A control character in a name is shown escaped, never sent to the terminal.
    ok(cli("send", "bell\x07", "{}", dsn=dsn))
    assert ok(cli("queues", "pause", "bell\x07", dsn=dsn)) == "queue bell\\x07 paused\n"


def test_send_deadlines_and_tasks_show_them(dsn: str) -> None:
    """``send --time-limit/--expire-after`` store the task's deadlines, and
    ``tasks show`` prints them (text and JSON); a bad duration sends nothing."""
    limited = int(
        ok(cli("send", "q.deadline", "1", "--time-limit", "90s", "--expire-after", "2h", dsn=dsn))
    )
    plain = int(ok(cli("send", "q.deadline", "2", dsn=dsn)))
    info = _task(dsn, limited)
    assert info.time_limit == 90
    assert info.expires_at is not None
    assert 7100 < (info.expires_at - info.created).total_seconds() < 7300
    assert _task(dsn, plain).time_limit is None and _task(dsn, plain).expires_at is None

    shown, shown_plain, as_json, zero, bad = cli_many(
        [
            ["tasks", "show", str(limited)],
            ["tasks", "show", str(plain)],
            ["tasks", "show", str(limited), "--json"],
            ["send", "q.deadline", "3", "--time-limit", "0"],
            ["send", "q.deadline", "4", "--expire-after", "soon"],
        ],
        dsn=dsn,
    )
    fields = _fields(ok(shown))
    assert fields["time_limit"] == "90 s an attempt"
    assert fields["expires_at"] != "-" and fields["cancelled_at"] == "-"
    plain_fields = _fields(ok(shown_plain))
    assert plain_fields["time_limit"] == "- (the worker's time_limit)"
    assert plain_fields["expires_at"] == "-"
    data = json.loads(ok(as_json))
    assert data["time_limit"] == 90
    assert datetime.fromisoformat(data["expires_at"]) == info.expires_at
    assert data["cancelled_at"] is None
    assert "time_limit must be more than 0 seconds" in failed(zero, 1)
    assert "'soon' is not a duration" in bad.stderr and bad.returncode == 2
    with jm.Admin(dsn) as admin:
        assert [t.id for t in admin.list_tasks(queue="q.deadline")] in (
            [limited, plain],
            [plain, limited],
        )
