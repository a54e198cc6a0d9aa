"""Real OS processes for the multi-process tests: workers and clients.

Child side (run as ``python -m tests.support.procs ...`` from the repository root)::

    python -m tests.support.procs worker --dsn DSN --queue Q [--kind sync|async]
        [--timeout S] [--max-runtime S] [--dead-after S] [--shutdown-grace S]
        [--sleep S] [--barrier N] [--concurrency N] [--no-reply] [--record-end]
        [--retries N] [--remove-after DAYS] [--orphan-after S]
        [--housekeeping-interval S]
    python -m tests.support.procs client --dsn DSN --queue Q --first SEQ --count N
        [--wait-timeout S]

A worker records what it does in tables the test creates (:func:`create_tables`):

- ``worker_started``: one row per call of ``startup()`` (pid, time). startup()
  runs after the worker LISTENs, so a row there means "ready for notifications".
- ``processed``: one row per call of ``process()``, written at its start, before
  any sleep (task id, seq, attempt, pid, clock_timestamp()). Plain table, no
  unique constraint: a task processed twice shows up twice.

It also logs ``idle round N`` each time it goes to sleep waiting for news
(its queues drained, LISTENing): :meth:`Child.wait_idle` waits for one, and
:meth:`Child.idle_now` tells whether it sleeps now (no task started since).

Each task's data is ``{"seq": n, ...}``; the worker replies
``{"seq": n, "double": 2 * n}`` (see :func:`expected_reply`). A task's
``"sleep"`` (seconds) replaces the worker's ``--sleep`` for it.

A client sends ``count`` tasks with seqs ``first .. first+count-1``, then waits
for the reply of each of its tasks, and prints one JSON object on stdout:
``{"pid": ..., "replies": [[task_id, seq, reply], ...]}``.

Parent side (imported by the tests): :class:`Child`, :func:`start_worker`,
:func:`start_client`, :func:`wait_until`, :func:`create_tables`.

Children log to stderr, which the parent sends to a file so a failing test can
show it (and a chatty child never blocks on a full pipe).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import psycopg

import job_machine as jm

ROOT = Path(__file__).resolve().parents[2]

TABLES_SQL = """
CREATE TABLE worker_started (
    pid  int NOT NULL,
    at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE processed (
    task_id     bigint NOT NULL,
    seq         int,
    attempt     int,
    pid         int NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- With --record-end: when process() was about to answer.
    ended_at    timestamptz
);
"""

_RECORD_SQL = "INSERT INTO processed (task_id, seq, attempt, pid) VALUES (%s, %s, %s, %s)"
_ENDED_SQL = (
    "UPDATE processed SET ended_at = clock_timestamp()"
    " WHERE task_id = %s AND attempt = %s AND pid = %s"
)
_STARTED_SQL = "INSERT INTO worker_started (pid) VALUES (%s)"
_COUNT_STARTED_SQL = "SELECT count(*) FROM worker_started"

#: application_name of a worker's recording connection (not job_machine's own
#: connections), so a fault test can tell the two apart.
RECORD_APP = "procs_record"
#: How long a worker keeps trying to record a task through a lost connection.
_RECORD_PATIENCE = 60.0
#: What a worker logs each time it goes to sleep waiting for news.
IDLE_LINE = "idle round"
#: What a worker logs as process() begins (then the task id).
STARTED_LINE = "processing task"
#: What a worker logs when it wakes otherwise than for news: its working
#: connection lost, or back after that (job_machine's own lines).
_WOKEN_LINES = ("database connection lost", "reconnected; draining")


def create_tables(conn: psycopg.Connection[Any]) -> None:
    """Create the tables the child workers write their records into."""
    conn.execute(TABLES_SQL)


def expected_reply(seq: int) -> dict[str, int]:
    """What a recording worker replies to the task with this seq."""
    return {"seq": seq, "double": 2 * seq}


# ---------------------------------------------------------------------------
# Child side: the workers
# ---------------------------------------------------------------------------


def _sleep_of(task: jm.Task, default: float) -> float:
    """How long to sleep in ``process()``: the task's ``"sleep"``, else ``default``."""
    if isinstance(task.data, dict) and "sleep" in task.data:
        return float(task.data["sleep"])
    return default


class RecordingWorker(jm.Worker):
    """Sync worker: records startup and every task, optionally sleeps, replies."""

    record_dsn: str = ""
    sleep: float = 0.0
    barrier: int = 0
    #: False: return without a reply (the worker marks the task done).
    answer: bool = True
    #: Record when process() ends too (processed.ended_at).
    record_end: bool = False

    def startup(self) -> None:
        self.rec = psycopg.connect(self.record_dsn, autocommit=True, application_name=RECORD_APP)
        self.rec.execute(_STARTED_SQL, (os.getpid(),))
        logging.info("startup done (listening)")
        deadline = time.monotonic() + 30
        while self.barrier and time.monotonic() < deadline:
            row = self.rec.execute(_COUNT_STARTED_SQL).fetchone()
            if row is not None and row[0] >= self.barrier:
                break
            time.sleep(0.01)

    def _next_wait(self) -> float:
        wait = super()._next_wait()
        self.idle_rounds = getattr(self, "idle_rounds", 0) + 1
        logging.info("%s %d", IDLE_LINE, self.idle_rounds)
        return wait

    def process(self, task: jm.Task) -> None:
        seq = task.data.get("seq") if isinstance(task.data, dict) else None
        logging.info("%s %d", STARTED_LINE, task.id)
        self._record(task, seq)
        sleep = _sleep_of(task, self.sleep)
        if sleep:
            logging.info("task %d: sleeping %.1f s", task.id, sleep)
            time.sleep(sleep)
        if self.record_end:
            self.rec.execute(_ENDED_SQL, (task.id, task.attempt, os.getpid()))
        if self.answer:
            self.reply(expected_reply(seq) if seq is not None else None)

    def _record(self, task: jm.Task, seq: int | None) -> None:
        """Write the ``processed`` row, reconnecting through a lost connection
        (a server restart ends this connection too), so that a fault of the
        recording never passes for a fault of job_machine."""
        deadline = time.monotonic() + _RECORD_PATIENCE
        while True:
            try:
                if self.rec.closed or self.rec.broken:
                    self.rec = psycopg.connect(
                        self.record_dsn, autocommit=True, application_name=RECORD_APP
                    )
                self.rec.execute(_RECORD_SQL, (task.id, seq, task.attempt, os.getpid()))
                return
            except psycopg.OperationalError as ex:
                if time.monotonic() > deadline:
                    raise
                logging.warning("task %d: recording failed (%s); trying again", task.id, ex)
                time.sleep(0.05)


class AsyncRecordingWorker(jm.AsyncWorker):
    """The asyncio twin of :class:`RecordingWorker`."""

    record_dsn: str = ""
    sleep: float = 0.0
    barrier: int = 0
    #: False: return without a reply (the worker marks the task done).
    answer: bool = True
    #: Record when process() ends too (processed.ended_at).
    record_end: bool = False

    async def startup(self) -> None:
        self.rec = await psycopg.AsyncConnection.connect(
            self.record_dsn, autocommit=True, application_name=RECORD_APP
        )
        await self.rec.execute(_STARTED_SQL, (os.getpid(),))
        logging.info("startup done (listening)")
        deadline = time.monotonic() + 30
        while self.barrier and time.monotonic() < deadline:
            cur = await self.rec.execute(_COUNT_STARTED_SQL)
            row = await cur.fetchone()
            if row is not None and row[0] >= self.barrier:
                break
            await asyncio.sleep(0.01)

    async def _next_wait(self) -> float:
        wait = await super()._next_wait()
        self.idle_rounds = getattr(self, "idle_rounds", 0) + 1
        logging.info("%s %d", IDLE_LINE, self.idle_rounds)
        return wait

    async def process(self, task: jm.Task) -> None:
        seq = task.data.get("seq") if isinstance(task.data, dict) else None
        logging.info("%s %d", STARTED_LINE, task.id)
        await self._record(task, seq)
        sleep = _sleep_of(task, self.sleep)
        if sleep:
            logging.info("task %d: sleeping %.1f s", task.id, sleep)
            await asyncio.sleep(sleep)
        if self.record_end:
            await self.rec.execute(_ENDED_SQL, (task.id, task.attempt, os.getpid()))
        if self.answer:
            await self.reply(expected_reply(seq) if seq is not None else None)

    async def _record(self, task: jm.Task, seq: int | None) -> None:
        """The asyncio twin of :meth:`RecordingWorker._record`."""
        deadline = time.monotonic() + _RECORD_PATIENCE
        while True:
            try:
                if self.rec.closed or self.rec.broken:
                    self.rec = await psycopg.AsyncConnection.connect(
                        self.record_dsn, autocommit=True, application_name=RECORD_APP
                    )
                await self.rec.execute(_RECORD_SQL, (task.id, seq, task.attempt, os.getpid()))
                return
            except psycopg.OperationalError as ex:
                if time.monotonic() > deadline:
                    raise
                logging.warning("task %d: recording failed (%s); trying again", task.id, ex)
                await asyncio.sleep(0.05)


def run_worker(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {
        "queue": args.queue,
        "timeout": args.timeout,
        "max_runtime": args.max_runtime,
        "dead_after": args.dead_after,
        "shutdown_grace": args.shutdown_grace,
        "reconnect_backoff": 0.05,
        "reconnect_backoff_cap": 1.0,
        "record_dsn": args.dsn,
        "sleep": args.sleep,
        "barrier": args.barrier,
        "concurrency": args.concurrency,
        "answer": not args.no_reply,
        "record_end": args.record_end,
    }
    for name in ("retries", "remove_after", "orphan_after", "housekeeping_interval"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.kind == "async":
        aworker = AsyncRecordingWorker(args.dsn, **options)
        asyncio.run(aworker.receive())
    else:
        RecordingWorker(args.dsn, **options).receive()
    logging.info("receive() returned; exiting 0")
    return 0


# ---------------------------------------------------------------------------
# Child side: the clients
# ---------------------------------------------------------------------------


def run_client(args: argparse.Namespace) -> int:
    client = jm.Client(args.dsn, queue=args.queue)
    try:
        sent = []
        for seq in range(args.first, args.first + args.count):
            sent.append((client.send({"seq": seq, "client": os.getpid()}), seq))
        logging.info("sent %d tasks; waiting for the replies", len(sent))
        replies = [[tid, seq, client.wait(tid, timeout=args.wait_timeout)] for tid, seq in sent]
        logging.info("got %d replies", len(replies))
    finally:
        client.close()
    json.dump({"pid": os.getpid(), "replies": replies}, sys.stdout)
    sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.procs")
    sub = parser.add_subparsers(dest="role", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--dsn", required=True)
    w.add_argument("--queue", required=True)
    w.add_argument("--kind", choices=("sync", "async"), default="sync")
    w.add_argument("--timeout", type=float, default=60.0)
    w.add_argument("--max-runtime", type=float, default=None)
    w.add_argument("--dead-after", type=float, default=15.0)
    w.add_argument("--shutdown-grace", type=float, default=30.0)
    w.add_argument("--sleep", type=float, default=0.0)
    w.add_argument("--barrier", type=int, default=0)
    w.add_argument("--concurrency", type=int, default=1)
    w.add_argument("--no-reply", action="store_true", help="return without replying")
    w.add_argument("--record-end", action="store_true", help="record when process() ends")
    w.add_argument("--retries", type=int, default=None)
    w.add_argument("--remove-after", type=float, default=None, help="days")
    w.add_argument("--orphan-after", type=float, default=None)
    w.add_argument("--housekeeping-interval", type=float, default=None)
    c = sub.add_parser("client")
    c.add_argument("--dsn", required=True)
    c.add_argument("--queue", required=True)
    c.add_argument("--first", type=int, required=True)
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--wait-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s {args.role}[%(process)d] %(name)s %(levelname)s: %(message)s",
    )
    return run_worker(args) if args.role == "worker" else run_client(args)


# ---------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------


class Child:
    """A child process whose stderr goes to a log file (stdout too, if asked)."""

    def __init__(self, args: list[str], log_dir: Path, name: str) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = log_dir / f"{name}.stderr"
        self.out_path = log_dir / f"{name}.stdout"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "wb") as err, open(self.out_path, "wb") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "tests.support.procs", *args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None if still running after ``timeout`` seconds."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def log(self, tail: int = 4000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return text[-tail:]

    def idle_rounds(self) -> int:
        """How many times the worker went to sleep waiting for news (its log)."""
        try:
            return self.log_path.read_text(errors="replace").count(f"{IDLE_LINE} ")
        except OSError:
            return 0

    def idle_now(self) -> bool:
        """Whether the worker is asleep waiting for news now: of the lines it
        logs when it goes to sleep, starts a task, or loses or regains its
        connection, the last is a going to sleep."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return False
        for line in reversed(text.splitlines()):
            if f"{IDLE_LINE} " in line:
                return True
            if f"{STARTED_LINE} " in line or any(woken in line for woken in _WOKEN_LINES):
                return False
        return False

    def wait_idle(self, after: int = 0, timeout: float = 30.0) -> int:
        """Wait until the worker went to sleep waiting for news more than
        ``after`` times; the count then. Fails at once if it died."""
        return wait_until(
            lambda: (n := self.idle_rounds()) > after and n,
            timeout,
            f"{self.name} to go idle (more than {after} times)",
            [self],
        )

    def describe(self) -> str:
        return (
            f"--- {self.name} pid={self.pid} returncode={self.returncode} ---\n"
            f"{self.log()}\n--- end of {self.name} ---"
        )

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)


def start_worker(
    dsn: str,
    queue: str,
    log_dir: Path,
    name: str,
    *,
    kind: str = "sync",
    timeout: float = 60.0,
    max_runtime: float | None = None,
    dead_after: float = 15.0,
    shutdown_grace: float = 30.0,
    sleep: float = 0.0,
    barrier: int = 0,
    concurrency: int = 1,
    reply: bool = True,
    retries: int | None = None,
    remove_after: float | None = None,
    orphan_after: float | None = None,
    housekeeping_interval: float | None = None,
    record_end: bool = False,
) -> Child:
    """Start a recording worker; the settings not given are the worker's
    defaults (``remove_after`` in days)."""
    args = ["worker", "--dsn", dsn, "--queue", queue, "--kind", kind, "--timeout", str(timeout)]
    args += ["--sleep", str(sleep), "--barrier", str(barrier), "--dead-after", str(dead_after)]
    args += ["--shutdown-grace", str(shutdown_grace), "--concurrency", str(concurrency)]
    if not reply:
        args.append("--no-reply")
    if record_end:
        args.append("--record-end")
    if max_runtime is not None:
        args += ["--max-runtime", str(max_runtime)]
    for option, value in (
        ("--retries", retries),
        ("--remove-after", remove_after),
        ("--orphan-after", orphan_after),
        ("--housekeeping-interval", housekeeping_interval),
    ):
        if value is not None:
            args += [option, str(value)]
    return Child(args, log_dir, name)


def start_client(
    dsn: str,
    queue: str,
    log_dir: Path,
    name: str,
    *,
    first: int,
    count: int,
    wait_timeout: float = 60.0,
) -> Child:
    args = ["client", "--dsn", dsn, "--queue", queue, "--first", str(first), "--count", str(count)]
    args += ["--wait-timeout", str(wait_timeout)]
    return Child(args, log_dir, name)


class Watched(Protocol):
    """What :func:`wait_until` watches while it waits: a :class:`Child`
    process, or an in-process worker of tests/support/workers.py (not
    alive once an assert failed inside its process())."""

    def alive(self) -> bool: ...

    def describe(self) -> str: ...


def kill_all(children: Iterable[Child]) -> None:
    for child in children:
        child.kill()


def describe_all(children: Iterable[Watched]) -> str:
    return "\n".join(child.describe() for child in children)


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 5.0,
    what: str = "a condition",
    children: Iterable[Watched] = (),
    interval: float = 0.02,
) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that;
    fail (AssertionError) after ``timeout`` seconds, or as soon as one of
    ``children`` died (or, for an in-process worker, failed an assert), with
    their logs. An AssertionError that ``predicate`` raises ends the wait
    too. The tests' one way to wait for a condition: never a bare sleep
    (asyncio tests: ``await asyncio.to_thread(wait_until, ...)``)."""
    children = list(children)
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        dead = [c for c in children if not c.alive()]
        if dead:
            raise AssertionError(
                f"while waiting for {what}, a child exited or failed:\n{describe_all(dead)}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what}\n{describe_all(children)}"
            )
        time.sleep(interval)


def started_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(_COUNT_STARTED_SQL).fetchone()
    return int(row[0]) if row else 0


def terminate_and_check(
    children: Iterable[Child], timeout: float = 5.0, sig: int = signal.SIGTERM
) -> None:
    """Send ``sig`` to every child; each must exit with code 0 within ``timeout`` s."""
    children = list(children)
    for child in children:
        child.signal(sig)
    deadline = time.monotonic() + timeout
    for child in children:
        code = child.wait_exit(max(0.0, deadline - time.monotonic()))
        assert code == 0, (
            f"{child.name} did not exit 0 within {timeout} s of {signal.Signals(sig).name}:\n"
            + child.describe()
        )


if __name__ == "__main__":
    sys.exit(main())
