"""Faults while tasks flow: lost sessions, a restarted or crashed server, killed workers.

Workers are real processes (``python -m tests.support.procs worker``), sync and
asyncio, and so are the faults: ``pg_terminate_backend`` of the workers'
sessions, a private PostgreSQL server (:class:`~tests.support.pgserver.PgServer`)
stopped and started again or SIGKILLed and recovered, SIGKILL of workers.

What tests 1-3 prove: no task is lost (each seq sent is one task, and every
task ends done, status 200), every task has exactly one reply (one non-error
result) and it is the right one, every task was processed at least once, and
the workers that were not killed are alive at the end and exit 0 on SIGTERM.
Execution is at-least-once, so a task may have run more than once: the number
of duplicate executions is printed and recorded with ``record_property``, not
asserted. Test 4 cuts a worker's connection at the one moment those tests
cannot reach (after its claim committed, before the answer arrived), through
a TCP proxy.

Each worker's DSN carries an ``application_name`` of its own
(``jm_faults_<name>``), so its job_machine sessions (the registry session of
its liveness thread, and the connection it listens and works on) can be
found in ``pg_stat_activity`` and terminated. The recording connection of
tests/support/procs.py is named ``procs_record`` and the clients' connections have no
such name, so the faults hit job_machine's connections only.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import job_machine as jm
from tests.support.appconns import terminate
from tests.support.pgserver import PgServer
from tests.support.procs import (
    Child,
    describe_all,
    expected_reply,
    kill_all,
    start_client,
    start_worker,
    started_count,
    terminate_and_check,
    wait_until,
)

QUEUE = "fault.test"
APP_PREFIX = "jm_faults_"

RecordProperty = Callable[[str, object], None]


def _seed() -> int:
    """The random seed of a test (set JM_FAULTS_SEED to replay a run)."""
    return int(os.environ.get("JM_FAULTS_SEED", time.time_ns() % 2**32))


# ---------------------------------------------------------------------------
# Workers and the faults
# ---------------------------------------------------------------------------


def _app(worker: Child | str) -> str:
    name = worker if isinstance(worker, str) else worker.name
    return f"{APP_PREFIX}{name}"


def _start(dsn: str, tmp_path: Path, name: str, kind: str, **options: Any) -> Child:
    """A worker process whose job_machine sessions are named ``jm_faults_<name>``."""
    worker_dsn = make_conninfo(dsn, application_name=_app(name))
    return start_worker(worker_dsn, QUEUE, tmp_path, name, kind=kind, **options)


def _ready(conn: psycopg.Connection[Any], workers: Iterable[Child]) -> list[Child]:
    """The workers that are alive and whose startup() ran: registered, so a lost
    session is theirs to ride out (a session lost while registering is the
    "first connection failed" that receive() raises, not a fault under test)."""
    pids = {int(pid) for (pid,) in conn.execute("SELECT pid FROM worker_started")}
    return [w for w in workers if w.alive() and w.pid in pids]


def _sessions(conn: psycopg.Connection[Any], workers: Iterable[Child]) -> int:
    row = conn.execute(
        """SELECT count(*) FROM pg_stat_activity
            WHERE datname = current_database() AND application_name = ANY(%s)""",
        ([_app(w) for w in workers],),
    ).fetchone()
    return int(row[0]) if row else 0


def _terminate(conn: psycopg.Connection[Any], workers: Iterable[Child]) -> int:
    """pg_terminate_backend every job_machine session of these workers; how many went."""
    return terminate(conn, *(_app(w) for w in workers))


def _full_log(child: Child) -> str:
    return child.log(tail=1 << 30)


def _working_session_losses(worker: Child) -> int:
    """How often a worker logged the loss of its listening/working session:
    noticed while it listened or claimed ("database connection lost"), or by
    reply() after process() ("could not store its outcome")."""
    text = _full_log(worker)
    return text.count("database connection lost") + text.count("could not store its outcome")


def _outcomes_kept(worker: Child) -> set[str]:
    """The tasks whose reply a worker had to keep through a lost connection."""
    return {
        line.split("task ", 1)[1].split(":", 1)[0]
        for line in _full_log(worker).splitlines()
        if "could not store its outcome" in line
    }


def _count(conn: psycopg.Connection[Any], query: str) -> int:
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def _undone(conn: psycopg.Connection[Any]) -> int:
    return _count(conn, "SELECT count(*) FROM jobmachine.task WHERE status <> 200")


def _not_done_report(conn: psycopg.Connection[Any], limit: int = 20) -> str:
    """What the tasks that are not done look like, and who holds them: for failure messages."""
    rows = conn.execute(
        """SELECT t.task_id, t.status, t.attempts, t.worker_id, w.pid AS worker_pid,
                  w.seen, t.modified, t.run_after,
                  ARRAY(SELECT r.result FROM jobmachine.result r
                         WHERE r.task_id = t.task_id ORDER BY r.result_id) AS results
             FROM jobmachine.task t LEFT JOIN jobmachine.worker w USING (worker_id)
            WHERE t.status <> 200 ORDER BY t.task_id LIMIT %s""",
        (limit,),
    ).fetchall()
    workers = conn.execute("SELECT worker_id, pid, seen FROM jobmachine.worker").fetchall()
    return (
        f"now {conn.execute('SELECT now()').fetchone()}\n"
        + "not done (task_id, status, attempts, worker_id, worker pid, seen, modified, "
        + "run_after, results):\n"
        + "\n".join(f"  {r}" for r in rows)
        + f"\nregistered workers: {workers}"
    )


# ---------------------------------------------------------------------------
# Checking the outcome
# ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """What happened to the tasks, beyond what the checks demand."""

    tasks: int
    executions: int  #: rows in ``processed``: calls of process()
    duplicated: int  #: tasks processed more than once
    extra: int  #: executions beyond each task's first
    reclaimed: int  #: tasks claimed more than once (attempts > 1)
    errors: Counter[str] = field(default_factory=Counter)  #: error results, by type

    def summary(self) -> str:
        return (
            f"{self.tasks} tasks, {self.executions} executions: {self.duplicated} tasks "
            f"processed more than once ({self.extra} duplicate executions), "
            f"{self.reclaimed} claimed more than once; error results: {dict(self.errors)}"
        )

    def record(self, record_property: RecordProperty) -> None:
        record_property("tasks", self.tasks)
        record_property("executions", self.executions)
        record_property("duplicate_executions", self.extra)
        record_property("tasks_processed_more_than_once", self.duplicated)
        record_property("tasks_claimed_more_than_once", self.reclaimed)
        record_property("error_results", dict(self.errors))


def _check_outcome(conn: psycopg.Connection[Any], n: int, logs: Callable[[], str]) -> Outcome:
    """Seqs 0..n-1 were sent once each: every task done, with exactly one reply,
    the right one, and processed at least once (with its own seq)."""
    rows = conn.execute(
        """SELECT t.task_id, t.status, t.attempts, t.parameters,
                  ARRAY(SELECT r.result FROM jobmachine.result r
                         WHERE r.task_id = t.task_id AND r.resulttype IS DISTINCT FROM 'error'
                         ORDER BY r.result_id) AS replies,
                  ARRAY(SELECT r.result FROM jobmachine.result r
                         WHERE r.task_id = t.task_id AND r.resulttype = 'error'
                         ORDER BY r.result_id) AS errors,
                  ARRAY(SELECT p.seq FROM processed p WHERE p.task_id = t.task_id) AS runs
             FROM jobmachine.task t ORDER BY t.task_id"""
    ).fetchall()
    seqs = sorted(json.loads(parameters)["seq"] for _, _, _, parameters, *_ in rows)
    missing = sorted(set(range(n)) - set(seqs))
    doubled = [s for s, k in Counter(seqs).items() if k > 1]
    assert seqs == list(range(n)), (
        f"{len(rows)} tasks for {n} seqs: missing {missing[:20]}, sent twice {doubled[:20]}\n"
        + logs()
    )

    not_done = [(tid, status) for tid, status, *_ in rows if status != jm.Status.FINISHED]
    assert not not_done, (
        f"{len(not_done)} tasks not done: {not_done[:20]}\n{_not_done_report(conn)}\n{logs()}"
    )
    wrong_replies = []
    never_run = []
    wrong_runs = []
    outcome = Outcome(tasks=len(rows), executions=0, duplicated=0, extra=0, reclaimed=0)
    for tid, _, attempts, parameters, replies, errors, runs in rows:
        seq = json.loads(parameters)["seq"]
        if [json.loads(r) for r in replies] != [expected_reply(seq)]:
            wrong_replies.append((tid, seq, replies))
        if not runs:
            never_run.append((tid, seq))
        elif set(runs) != {seq}:
            wrong_runs.append((tid, seq, runs))
        outcome.executions += len(runs)
        outcome.duplicated += len(runs) > 1
        outcome.extra += max(0, len(runs) - 1)
        outcome.reclaimed += attempts > 1
        outcome.errors.update(json.loads(e).get("type", "?") for e in errors)
    assert not wrong_replies, (
        f"{len(wrong_replies)} tasks without exactly one reply, the expected one "
        f"(task, seq, replies): {wrong_replies[:20]}\n{logs()}"
    )
    assert not never_run, f"done but never processed: {never_run[:20]}\n{logs()}"
    assert not wrong_runs, f"processed with another seq: {wrong_runs[:20]}\n{logs()}"
    strays = _count(
        conn,
        "SELECT count(*) FROM processed WHERE task_id NOT IN (SELECT task_id FROM jobmachine.task)",
    )
    assert strays == 0, f"{strays} processed rows of unknown tasks\n{logs()}"
    return outcome


# ---------------------------------------------------------------------------
# A client in the test process that rides out an outage
# ---------------------------------------------------------------------------


class _Sender(threading.Thread):
    """Sends seqs 0..n-1 to QUEUE from the test process, one Client, in a thread.

    A send that raised ConnectionFailed (nothing happened: the server did not
    answer) is tried again after a short sleep; one that raised ConnectionLost
    (it may have committed before the connection went) is tried again unless
    a task with that seq exists by then. So each seq becomes exactly one task.
    Any other exception ends the thread and is kept in :attr:`error`.
    """

    def __init__(self, dsn: str, n: int, pace: float = 0.0, patience: float = 60.0) -> None:
        super().__init__(name="fault-test-sender", daemon=True)
        self.dsn = dsn
        self.n = n
        self.pace = pace
        self.patience = patience
        self.sent = 0
        self.refused = 0  #: sends that raised ConnectionFailed
        self.lost = 0  #: sends that raised ConnectionLost
        self.found = 0  #: of those, how many had committed all the same
        self.waits = 0  #: short sleeps before trying again (the outage, seen by the sender)
        self.error: BaseException | None = None
        self.elapsed = 0.0

    def run(self) -> None:
        t0 = time.monotonic()
        try:
            with jm.Client(self.dsn, queue=QUEUE) as client:
                for seq in range(self.n):
                    self._send(client, seq)
                    self.sent += 1
                    if self.pace:
                        time.sleep(self.pace)  # the load's shape, not a wait
        except BaseException as ex:
            self.error = ex
        self.elapsed = time.monotonic() - t0

    def _send(self, client: jm.Client, seq: int) -> None:
        deadline = time.monotonic() + self.patience
        maybe_sent = False
        while True:
            if maybe_sent:
                try:
                    if self._exists(seq):
                        self.found += 1
                        return
                    maybe_sent = False
                except psycopg.OperationalError:
                    pass  # still down: look again after the sleep
            else:
                try:
                    client.send({"seq": seq})
                    return
                except jm.ConnectionLost:
                    self.lost += 1
                    maybe_sent = True
                except jm.ConnectionFailed:
                    self.refused += 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not send seq {seq} within {self.patience} s")
            self.waits += 1
            time.sleep(0.05)  # an application's pause before it tries again

    def _exists(self, seq: int) -> bool:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=2) as c:
            row = c.execute(
                "SELECT count(*) FROM jobmachine.task WHERE (parameters::json ->> 'seq')::int = %s",
                (seq,),
            ).fetchone()
            return bool(row and row[0])

    def check(self, logs: Callable[[], str]) -> None:
        assert not self.is_alive(), f"the sender is still sending ({self.sent} sent)\n{logs()}"
        assert self.error is None, f"the sender failed: {self.error!r}\n{logs()}"
        assert self.sent == self.n, (self.sent, self.n)


# ---------------------------------------------------------------------------
# 1. pg_terminate_backend of the workers' sessions, again and again
# ---------------------------------------------------------------------------


def test_worker_sessions_terminated_again_and_again_while_300_tasks_flow(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path, record_property: RecordProperty
) -> None:
    """Two workers (sync, async) serve 300 tasks from two client processes while
    every job_machine session of both workers (liveness and listening/working)
    is terminated every 0.1-0.3 s. Proves that a worker rides out a lost
    session wherever it hits (claiming, in process(), storing a reply) and a
    lost registry session: every task done, exactly one reply each, each
    client got the right reply to each of its tasks, and no lost session
    passed for a failed attempt (no error result) or a dead worker.

    Then, the flow over, each worker in turn has its sessions terminated
    while it waits idle in LISTEN (the other one frozen with SIGSTOP, so
    that it cannot take the task): it must reconnect, LISTEN again and be
    woken by the next task's notification (its ``timeout`` is 60 s, so a
    reply within 5 s is no poll)."""
    rng = random.Random(seed := _seed())
    per_client, n_clients = 150, 2
    n = per_client * n_clients
    idle_rounds = 2  # tasks sent to each worker after its idle session was cut
    workers = [
        _start(dsn, tmp_path, "w0-sync", "sync", sleep=0.02),
        _start(dsn, tmp_path, "w1-async", "async", sleep=0.02),
    ]
    clients: list[Child] = []

    def logs() -> str:
        return describe_all(clients + workers)

    try:
        wait_until(lambda: started_count(db) == 2, 30, "the workers' startup()", workers)
        # Both sessions of each worker (registry, listening) are there to be hit.
        wait_until(lambda: _sessions(db, workers) >= 4, 10, "the workers' sessions", workers)
        t0 = time.monotonic()
        clients = [
            start_client(
                dsn,
                QUEUE,
                tmp_path,
                f"client{k}",
                first=k * per_client,
                count=per_client,
                wait_timeout=60,
            )
            for k in range(n_clients)
        ]
        rounds = terminated = 0
        while any(c.alive() for c in clients) and time.monotonic() - t0 < 60:
            time.sleep(rng.uniform(0.1, 0.3))  # the faults' schedule, not a wait
            assert all(w.alive() for w in workers), f"a worker died\n{logs()}"
            terminated += _terminate(db, workers)
            rounds += 1
        elapsed = time.monotonic() - t0
        for client in clients:
            code = client.wait_exit(max(1.0, 60 - (time.monotonic() - t0)))
            assert code == 0, f"{client.name} exit code {code} (None = running)\n{logs()}"
        assert all(w.alive() for w in workers), f"a worker died\n{logs()}"

        seq = n
        with jm.Client(dsn, queue=QUEUE) as own_client:
            for _ in range(idle_rounds):
                for w, other in ((workers[0], workers[1]), (workers[1], workers[0])):
                    other.signal(signal.SIGSTOP)
                    try:
                        seq = _cut_idle_and_send(db, own_client, w, seq, logs)
                    finally:
                        other.signal(signal.SIGCONT)
        assert all(w.alive() for w in workers), f"a worker died\n{logs()}"
        n = seq

        outcome = _check_outcome(db, n, logs)
        for k, client in enumerate(clients):
            replies = json.loads(client.stdout())["replies"]
            assert sorted(seq for _, seq, _ in replies) == list(
                range(k * per_client, (k + 1) * per_client)
            ), client.describe()
            wrong = [(tid, seq, r) for tid, seq, r in replies if r != expected_reply(seq)]
            assert not wrong, f"{client.name} got wrong replies: {wrong[:10]}\n{logs()}"

        # The faults did hit: each worker lost both of its sessions, more than once.
        # (Its working session is mostly lost while process() runs, and then
        # noticed by reply(), which says "could not store its outcome".)
        assert rounds >= 5, f"only {rounds} rounds of terminations in {elapsed:.1f} s"
        for w in workers:
            lost = _working_session_losses(w)
            registry = _full_log(w).count("registry connection lost")
            assert lost >= 2 and registry >= 2, (
                f"{w.name}: {lost} lost working sessions, {registry} lost registry sessions "
                f"logged after {rounds} rounds\n{w.describe()}"
            )
        # A lost session is not a failed attempt, and no worker was taken for dead.
        assert not outcome.errors, f"error results: {dict(outcome.errors)}\n{logs()}"

        outcome.record(record_property)
        record_property("termination_rounds", rounds)
        record_property("sessions_terminated", terminated)
        print(
            f"\nterminate (seed {seed}): {n} tasks in {elapsed:.1f} s through {rounds} rounds "
            f"({terminated} sessions terminated); {outcome.summary()}"
        )
        terminate_and_check(workers, timeout=10)
    finally:
        kill_all(clients + workers)


def _cut_idle_and_send(
    db: psycopg.Connection[Any],
    client: jm.Client,
    worker: Child,
    seq: int,
    logs: Callable[[], str],
) -> int:
    """Terminate the sessions of ``worker`` while it waits in LISTEN, wait
    until it has reconnected and listens again, then send task ``seq``: the
    worker must answer it at once. Returns the next seq."""
    reconnects = _full_log(worker).count("reconnected; draining")
    # Both its sessions there (a termination of the chaos above may not be
    # noticed yet), and asleep since its last task or reconnect.
    wait_until(
        lambda: _sessions(db, [worker]) >= 2 and worker.idle_now(),
        10,
        f"{worker.name} connected and back in its wait for notifications",
        [worker],
    )
    assert _terminate(db, [worker]) >= 1, f"no session of {worker.name}\n{logs()}"
    wait_until(
        lambda: _full_log(worker).count("reconnected; draining") > reconnects,
        10,
        f"{worker.name} to reconnect and LISTEN again",
        [worker],
    )
    tid = client.send({"seq": seq})
    try:
        reply = client.wait(tid, timeout=5)
    except jm.WaitTimeout:
        raise AssertionError(
            f"{worker.name} did not answer task {tid} within 5 s of its send after "
            f"reconnecting: not listening again?\n{logs()}"
        ) from None
    assert reply == expected_reply(seq), logs()
    pids = [pid for (pid,) in db.execute("SELECT pid FROM processed WHERE task_id = %s", (tid,))]
    assert pids == [worker.pid], f"task {tid} processed by {pids}, not {worker.name}\n{logs()}"
    return seq + 1


# ---------------------------------------------------------------------------
# 2. The server restarts, or crashes and recovers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outage", "down_for"),
    [("restart", 0.0), ("crash", 0.0), ("crash", 2.0)],
    ids=["restart", "crash", "crash-down-2s"],
)
def test_server_restart_or_crash_while_tasks_flow(
    tmp_path: Path,
    private_server: PgServer,
    outage: str,
    down_for: float,
    record_property: RecordProperty,
) -> None:
    """A private server is restarted (``PgServer.restart()``: fast shutdown,
    then start) or crashed (SIGKILL of every server process, then crash
    recovery; once at once, once after 2 s down) while a client in the test
    process sends 400 tasks and two workers (sync, async) process them.
    Proves that the workers notice, reconnect with backoff, drain and finish
    what they held (a reply finished during the outage waits for the server;
    how many did is printed), that a client sees only
    ConnectionFailed/ConnectionLost meanwhile, and that nothing is lost: every
    task done with exactly one reply."""
    n = 400
    server = private_server
    workers: list[Child] = []

    def logs() -> str:
        return f"{describe_all(workers)}\n--- server log ---\n{server.log_tail(60)}"

    def query(fn: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        with psycopg.connect(server.dsn, autocommit=True, connect_timeout=5) as c:
            return fn(c)

    try:
        workers = [
            _start(server.dsn, tmp_path, "w0-sync", "sync", sleep=0.02, dead_after=4),
            _start(server.dsn, tmp_path, "w1-async", "async", sleep=0.02, dead_after=4),
        ]
        wait_until(lambda: query(started_count) == 2, 30, "the workers' startup()", workers)
        t0 = time.monotonic()
        sender = _Sender(server.dsn, n, pace=0.005)
        sender.start()
        # Mid-flow: some tasks done, some in hand, more to come.
        wait_until(
            lambda: query(lambda c: _count(c, "SELECT count(*) FROM processed")) >= n // 4,
            30,
            "a quarter of the tasks to be processed",
            workers,
        )
        before = query(lambda c: _count(c, "SELECT count(*) FROM processed"))
        t_down = time.monotonic()
        if outage == "restart":
            server.restart()
        else:
            server.kill()
            time.sleep(down_for)  # the outage itself
            server.start()
        down = time.monotonic() - t_down

        sender.join(60)
        sender.check(logs)
        wait_until(
            lambda: (
                query(_undone) == 0
                and query(lambda c: _count(c, "SELECT count(*) FROM jobmachine.task")) == n
            ),
            60,
            "every task to be done",
            workers,
            interval=0.1,
        )
        elapsed = time.monotonic() - t0
        outcome = query(lambda c: _check_outcome(c, n, logs))
        assert before < n, f"the outage came after the last task ({before} processed)"
        for w in workers:
            assert _working_session_losses(w) >= 1, (
                f"{w.name} never noticed the outage\n{w.describe()}"
            )
        kept = sum(len(_outcomes_kept(w)) for w in workers)
        # A client that connects after the outage reads the replies.
        with jm.Client(server.dsn, queue=QUEUE) as client:
            last = query(lambda c: _count(c, "SELECT max(task_id) FROM jobmachine.task"))
            assert client.wait(last, timeout=5) == expected_reply(n - 1), logs()

        outcome.record(record_property)
        record_property("outage_seconds", round(down, 3))
        record_property("sends_refused", sender.refused)
        record_property("sends_lost", sender.lost)
        record_property("sender_waits", sender.waits)
        record_property("replies_kept_through_the_outage", kept)
        print(
            f"\n{outage} (down {down_for:.0f} s): {n} tasks in {elapsed:.1f} s, "
            f"server down {down:.2f} s after "
            f"{before} executions; sends refused {sender.refused}, lost {sender.lost} "
            f"(committed anyway {sender.found}), {sender.waits} waits of 50 ms; "
            f"{kept} replies kept through the outage; {outcome.summary()}"
        )
        terminate_and_check(workers, timeout=10)
    finally:
        kill_all(workers)


# ---------------------------------------------------------------------------
# 3. Chaos: workers SIGKILLed and replaced, sessions terminated, 3000 tasks
# ---------------------------------------------------------------------------


def test_chaos_killed_workers_and_terminated_sessions_3000_tasks(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path, record_property: RecordProperty
) -> None:
    """Four workers (two sync, two async, dead_after 2 s) serve 3000 tasks sent
    in bulk by the test, while at random moments a worker is SIGKILLed (and
    replaced by a fresh one) or job_machine sessions of one or all workers are
    terminated. Proves at-least-once delivery under both at once: a killed
    worker's tasks are rescued and done by others, a lost session is ridden
    out, and in the end every task is done with exactly one reply, the right
    one, and was processed at least once."""
    rng = random.Random(seed := _seed())
    n = 3000
    kinds = ["sync", "async", "sync", "async"]
    # A budget of attempts no chaos uses up: a task claimed ahead by several
    # workers that were killed in turn has used an attempt each time (a
    # killed worker cannot say which of its tasks had started), and a task
    # that kills its workers that often is failed by design. What this
    # test proves is delivery, not the budget (test_fencing: lost claims
    # use none).
    options: dict[str, Any] = {"dead_after": 2, "sleep": 0.01, "retries": 20}
    fleet = [
        _start(dsn, tmp_path, f"w{slot}-{kind}-0", kind, **options)
        for slot, kind in enumerate(kinds)
    ]
    everyone = list(fleet)

    def logs() -> str:
        return describe_all(everyone)

    try:
        wait_until(lambda: started_count(db) == len(fleet), 30, "the workers' startup()", fleet)
        t0 = time.monotonic()
        sender = _Sender(dsn, n)
        sender.start()
        kills = rounds = terminated = 0
        next_kill = t0 + rng.uniform(0.3, 1.0)
        chaos_limit = 60.0
        while (sender.is_alive() or _undone(db)) and time.monotonic() - t0 < chaos_limit:
            time.sleep(rng.uniform(0.05, 0.3))  # the faults' schedule, not a wait
            dead = [w for w in fleet if not w.alive()]
            assert not dead, f"a worker died on its own\n{describe_all(dead)}\n{logs()}"
            if time.monotonic() >= next_kill:
                slot = rng.randrange(len(fleet))
                victim = fleet[slot]
                victim.signal(signal.SIGKILL)
                assert victim.wait_exit(5) == -signal.SIGKILL, victim.describe()
                kills += 1
                name = f"w{slot}-{kinds[slot]}-{kills}"
                fleet[slot] = _start(dsn, tmp_path, name, kinds[slot], **options)
                everyone.append(fleet[slot])
                next_kill = time.monotonic() + rng.uniform(0.5, 1.5)
            else:
                ready = _ready(db, fleet)
                if ready:
                    targets = ready if rng.random() < 0.3 else [rng.choice(ready)]
                    terminated += _terminate(db, targets)
                    rounds += 1
        chaos = time.monotonic() - t0

        sender.join(30)
        sender.check(logs)
        # No more faults: what is left (rescues of the last kills) must finish.
        try:
            wait_until(
                lambda: _undone(db) == 0,
                30,
                "every task to be done after the chaos",
                fleet,
                interval=0.1,
            )
        except AssertionError as ex:
            raise AssertionError(f"{ex}\n{_not_done_report(db)}") from None
        elapsed = time.monotonic() - t0
        assert all(w.alive() for w in fleet), logs()
        outcome = _check_outcome(db, n, logs)
        assert kills >= 3 and rounds >= 10, (
            f"too little chaos to prove anything: {kills} kills, {rounds} terminations "
            f"in {chaos:.1f} s"
        )
        assert outcome.errors["WorkerDied"] >= 1, (
            f"{kills} kills, yet no task was rescued from a dead worker: {outcome.summary()}"
        )

        outcome.record(record_property)
        record_property("kills", kills)
        record_property("termination_rounds", rounds)
        record_property("sessions_terminated", terminated)
        record_property("seconds", round(elapsed, 1))
        print(
            f"\nchaos (seed {seed}): {n} tasks in {elapsed:.1f} s ({chaos:.1f} s of chaos): "
            f"{kills} workers SIGKILLed and replaced, {rounds} rounds of terminations "
            f"({terminated} sessions); {outcome.summary()}"
        )
        terminate_and_check(fleet, timeout=10)
    finally:
        kill_all(everyone)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_killed_worker_with_concurrency_loses_no_task(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path, kind: str
) -> None:
    """A worker with concurrency 4 whose tasks return without answering holds
    tasks in its slots, tasks claimed ahead, and done marks not written yet.
    SIGKILLed in the middle of a drain, none of them is lost: a second worker
    takes over after the first is judged dead, and every task ends done."""
    n = 1500
    with jm.Client(dsn, queue=QUEUE) as client:
        client.send_many([{"seq": seq} for seq in range(n)])
    options: dict[str, Any] = {"dead_after": 2, "concurrency": 4, "reply": False}
    first = _start(dsn, tmp_path, f"c4-{kind}-first", kind, sleep=0.002, **options)
    second: Child | None = None
    try:
        wait_until(
            lambda: _count(db, "SELECT count(*) FROM processed") >= n // 4,
            30,
            "a quarter of the tasks processed",
            [first],
        )
        first.signal(signal.SIGKILL)
        assert first.wait_exit(5) == -signal.SIGKILL, first.describe()
        held = _count(db, "SELECT count(*) FROM jobmachine.task WHERE status = 100")
        assert held > 0, "the killed worker held nothing: the test proves nothing"
        second = _start(dsn, tmp_path, f"c4-{kind}-second", kind, **options)
        wait_until(lambda: _undone(db) == 0, 60, "every task done", [second], 0.1)
        processed = {
            int(task_id)
            for (task_id,) in db.execute("SELECT DISTINCT task_id FROM processed").fetchall()
        }
        done = _count(db, "SELECT count(*) FROM jobmachine.task WHERE status = 200")
        assert done == n and len(processed) == n
        rescued = _count(
            db,
            "SELECT count(DISTINCT task_id) FROM jobmachine.result"
            " WHERE resulttype = 'error' AND result::jsonb ->> 'type' = 'WorkerDied'",
        )
        assert rescued == held, (rescued, held)
        terminate_and_check([second], timeout=10)
    finally:
        kill_all([first] + ([second] if second else []))


# ---------------------------------------------------------------------------
# 4. A claim that committed, but whose answer never reached the worker
# ---------------------------------------------------------------------------


class _CuttingProxy:
    """A TCP proxy in front of a server that, once, swallows the first chunk the
    server sends that contains ``marker`` and cuts that connection.

    It stands for a network that fails at the worst moment: the statement
    committed on the server, and the client only sees its connection die.
    Every other byte, and every later connection, passes through untouched.
    """

    def __init__(self, host: str, port: int, marker: bytes) -> None:
        self.upstream = (host, port)
        self.marker = marker
        self.cuts = 0
        self._armed = True
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        threading.Thread(target=self._accept, name="cutting-proxy", daemon=True).start()

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self._server.accept()
            except OSError:
                return  # closed
            try:
                far = socket.create_connection(self.upstream, timeout=5)
                far.settimeout(None)
            except OSError:
                near.close()
                continue
            with self._lock:
                self._sockets += [near, far]
            for src, dst, from_server in ((near, far, False), (far, near, True)):
                threading.Thread(
                    target=self._pump, args=(src, dst, from_server), daemon=True
                ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_server: bool) -> None:
        try:
            while data := src.recv(65536):
                if from_server and self._armed and self.marker in data:
                    with self._lock:
                        cut, self._armed = self._armed, False
                        self.cuts += cut
                    if cut:
                        break  # swallowed: the client never sees the answer
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._server.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_claim_committed_but_its_answer_lost_is_not_stuck_forever(
    tmp_path: Path, private_server: PgServer, kind: str
) -> None:
    """The connection of a worker dies after its claim committed but before
    the claimed row reached the worker (a network cut, or a server crash,
    between the commit and the answer). The task is then started, held by a
    worker that is alive, heartbeats, and never heard of it. Demands that such
    a task is not stuck: it must be done within a few ``dead_after`` while the
    worker lives on (README: "No task is lost when the database goes away").
    The cut is made by a TCP proxy that swallows the one server answer that
    contains the task's marker, which only the claim's RETURNING carries.

    Before the worker handed back what it held on reconnect
    (``task_release_held``), the task stayed started (status 100) until the
    worker stopped, since the rescue only takes tasks of dead workers, and
    ``max_runtime`` is off by default."""
    dead_after = 2.0
    marker = "lost-claim-answer-marker"
    server = private_server
    proxy = _CuttingProxy(server.host, server.port, marker.encode())
    worker: Child | None = None

    def logs() -> str:
        return describe_all([worker] if worker else [])

    try:
        with psycopg.connect(server.dsn, autocommit=True) as db:
            worker = _start(
                proxy.dsn(), tmp_path, f"w-{kind}", kind, dead_after=dead_after, timeout=1
            )
            wait_until(lambda: started_count(db) == 1, 30, "the worker's startup()", [worker])
            with jm.Client(server.dsn, queue=QUEUE) as client:
                stuck = client.send({"seq": 0, "marker": marker})
                wait_until(lambda: proxy.cuts == 1, 10, "the claim's answer to be cut", [worker])
                # The worker reconnects and serves on: a later task is done.
                later = client.send({"seq": 1})
                assert client.wait(later, timeout=10) == expected_reply(1), logs()
                assert worker.alive(), logs()

                bound = 5 * dead_after
                with contextlib.suppress(AssertionError):  # the assert below tells more
                    wait_until(
                        lambda: client.task_info(stuck).state == "done",
                        bound,
                        f"task {stuck} done",
                        interval=0.1,
                    )
                info = client.task_info(stuck)
                assert info.state == "done", (
                    f"task {stuck}, whose claim committed but whose answer was lost, is still "
                    f"{info.state!r} {bound:.0f} s later (dead_after {dead_after} s), held by "
                    f"worker {info.worker} which is alive ({worker.alive()}) and has been "
                    f"serving other tasks; attempts {info.attempts}, errors {info.errors}; "
                    f"processed rows: {_processed_rows(db, stuck)}\n{logs()}"
                )
                assert client.receive(stuck) == expected_reply(0), logs()
        terminate_and_check([worker], timeout=10)
    finally:
        if worker is not None:
            worker.kill()
        proxy.close()


def _processed_rows(conn: psycopg.Connection[Any], tid: int) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT attempt, pid, started_at FROM processed WHERE task_id = %s", (tid,)
    ).fetchall()
