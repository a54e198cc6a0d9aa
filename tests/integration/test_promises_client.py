"""Client-side promises of README's "What is guaranteed" and "Waiting for
answers": a failed statement is not a lost connection, the 2 s re-read of a
wait, Perl's reply wake, and ``as_completed``'s order."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus

import job_machine as jm
from tests.support.procs import wait_until

QUEUE = "prom.q"
APP = "prom_client"


def _backends(conn: psycopg.Connection[Any], app: str = APP) -> list[int]:
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
        " AND datname = current_database() ORDER BY pid",
        (app,),
    ).fetchall()
    return [int(r[0]) for r in rows]


def _task_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM jobmachine.task").fetchone()
    assert row is not None
    return int(row[0])


@contextmanager
def _table_locked(dsn: str) -> Iterator[None]:
    """Another session holds jobmachine.task's strongest lock, so every
    statement that touches the table waits."""
    with psycopg.connect(dsn) as other:
        other.execute("LOCK TABLE jobmachine.task IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            other.rollback()


# -- gap 6: a client's statement that fails ---------------------------------------


def test_a_client_statement_timeout_commits_nothing_and_the_same_connection_serves_again(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """README: a statement timeout raises ``StatementTimeout`` (a
    ``StatementFailed``, not a ``ConnectionLost``), nothing of the call is
    committed, and the connection still works: the next call runs on the
    same server session, no reconnect."""
    slow = make_conninfo(dsn, application_name=APP, options="-c statement_timeout=200")
    with jm.Client(slow, queue=QUEUE) as client:
        first = client.send("before")
        (backend,) = _backends(conn)
        with _table_locked(dsn):
            started = time.monotonic()
            with pytest.raises(jm.StatementTimeout) as caught:
                client.send("during the lock")
            assert time.monotonic() - started < 5
        assert not isinstance(caught.value, jm.ConnectionLost)
        assert isinstance(caught.value, jm.StatementFailed)
        assert _task_count(conn) == 1, "the failed send left a task behind"
        again = client.send("after")
        assert again > first
        assert _backends(conn) == [backend], "the client reconnected after a statement failure"
        assert client.check(first) is False
    rows = conn.execute("SELECT parameters FROM jobmachine.task ORDER BY task_id").fetchall()
    assert [r[0] for r in rows] == ['"before"', '"after"']


def test_a_statement_timeout_inside_the_callers_transaction_keeps_the_callers_work(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """``Client(conn=)``: the failing call is undone by its savepoint; the
    caller's earlier insert survives, its transaction is still open and
    usable, and committing it commits that insert and nothing of the call."""
    conn.execute("CREATE TABLE mine (v text)")
    with psycopg.connect(dsn, options="-c statement_timeout=200") as caller:
        client = jm.Client(conn=caller, queue=QUEUE)
        client.send("warm up")  # creates the queue's row outside the lock
        caller.commit()
        caller.execute("INSERT INTO mine VALUES ('kept')")
        with _table_locked(dsn), pytest.raises(jm.StatementTimeout):
            client.send("during the lock")
        assert caller.info.transaction_status == TransactionStatus.INTRANS
        assert caller.execute("SELECT v FROM mine").fetchall() == [("kept",)]
        tid = client.send("after")  # the same transaction goes on
        caller.commit()
        client.close()
    assert conn.execute("SELECT v FROM mine").fetchall() == [("kept",)]
    rows = conn.execute("SELECT task_id, parameters FROM jobmachine.task ORDER BY task_id")
    assert [r[1] for r in rows.fetchall()] == ['"warm up"', '"after"']
    assert tid > 0


def test_a_deadlock_between_two_callers_transactions_raises_transaction_conflict(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """Two callers note two tasks in opposite orders inside their own
    transactions: PostgreSQL breaks the deadlock by failing one statement,
    which raises ``TransactionConflict`` (a ``StatementFailed``); the other
    call goes through, and each caller's transaction is still usable."""
    with jm.Client(dsn, queue=QUEUE) as sender:
        a, b = sender.send("a"), sender.send("b")
    fast = "-c deadlock_timeout=100"  # superuser-settable; the test server's role is
    with psycopg.connect(dsn, options=fast) as c1, psycopg.connect(dsn, options=fast) as c2:
        one = jm.Client(conn=c1, queue=QUEUE)
        two = jm.Client(conn=c2, queue=QUEUE)
        one.note(a, by="one")
        two.note(b, by="two")
        outcome: dict[str, tuple[BaseException | None, TransactionStatus]] = {}

        def finish(name: str, caller: psycopg.Connection[Any], client: jm.Client, tid: int) -> None:
            """Note the other task, then commit (freeing the other caller)."""
            error: BaseException | None = None
            try:
                client.note(tid, by=name)
            except BaseException as ex:  # examined by the test thread
                error = ex
            outcome[name] = (error, caller.info.transaction_status)
            caller.commit()

        t = threading.Thread(target=finish, args=("one", c1, one, b))
        t.start()
        # one's note of b waits for two's lock before two notes a.
        wait_until(
            lambda: conn.execute(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            ).fetchone()[0],  # type: ignore[index]
            10,
            "one's note to wait for two's lock",
        )
        finish("two", c2, two, a)
        t.join(10)
        assert not t.is_alive()
        one.close()
        two.close()
    failed = {name: ex for name, (ex, _) in outcome.items() if ex is not None}
    assert len(failed) == 1, outcome
    ((loser, ex),) = failed.items()
    assert isinstance(ex, jm.TransactionConflict), repr(ex)
    assert isinstance(ex, jm.StatementFailed)
    # Only the failed statement was undone: both transactions stayed usable.
    assert {status for _, status in outcome.values()} == {TransactionStatus.INTRANS}
    winner = "two" if loser == "one" else "one"
    with jm.Client(dsn, queue=QUEUE) as reader:
        # The winner's second note came after the loser's first (it waited
        # for the loser's commit); the loser's failed note left nothing.
        assert [reader.task_info(tid).notes for tid in (a, b)] == [{"by": winner}] * 2


# -- gap 9: an end that notifies nobody, and Perl's empty-payload wake -----------


class _Reads:
    """Counts the waiter's reads of the table (wrapping the real read), so a
    test knows that a wait is subscribed and has read once before it acts."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from job_machine._sync.waiter import AnswerReader  # noqa: PLC0415

        self.count = 0
        original = AnswerReader.read

        def read(reader: AnswerReader, task_ids: Any) -> Any:
            found = original(reader, task_ids)
            self.count += 1
            return found

        monkeypatch.setattr(AnswerReader, "read", read)

    def wait_first(self, waiting: _Waiting) -> None:
        """Wait for the first read of ``waiting``'s wait, which must not have returned."""

        def read_once() -> bool:
            assert waiting.returned is None, "the wait returned before reading"
            return self.count >= 1

        wait_until(read_once, 10, "the wait's first read", interval=0.01)


class _Waiting:
    """``client.wait(tid)`` in a thread; ``returned`` is when it came back."""

    def __init__(self, client: jm.Client, tid: int, timeout: float) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.returned: float | None = None
        self.thread = threading.Thread(target=self._run, args=(client, tid, timeout))
        self.thread.start()

    def _run(self, client: jm.Client, tid: int, timeout: float) -> None:
        try:
            self.value = client.wait(tid, timeout=timeout)
        except BaseException as ex:  # examined by the test thread
            self.error = ex
        self.returned = time.monotonic()

    def join(self, timeout: float) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the wait did not return"
        if self.error is not None:
            raise self.error
        return self.value


def _perl_result(dsn: str, tid: int, data: Any, notify: bool) -> float:
    """A Perl worker's ``result`` (notify False) or ``reply`` (True): its
    statements, untyped, its NOTIFY with an empty payload. Returns when the
    answer was committed."""
    from tests.integration.test_perl_compat import Perl  # noqa: PLC0415

    perl = Perl(dsn)
    try:
        if notify:
            perl.reply(tid, data)
        else:
            perl._run('INSERT INTO "jobmachine".result (task_id,result) VALUES ($1,$2)', tid, '"x"')
            perl._run('UPDATE "jobmachine".task SET status=$1 WHERE task_id=$2', 200, tid)
        return time.monotonic()
    finally:
        perl.close()


def test_an_end_that_notifies_nobody_is_seen_within_the_two_second_reread(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: a wait re-reads the table every 2 s, so an end that notifies
    nobody (a Perl worker's ``result``) is seen within that, not at the
    wait's timeout."""
    reads = _Reads(monkeypatch)
    with jm.Client(dsn, queue=QUEUE) as client:
        tid = client.send("silent")
        waiting = _Waiting(client, tid, timeout=10)
        reads.wait_first(waiting)  # subscribed, and found no answer
        answered = _perl_result(dsn, tid, "x", notify=False)
        assert waiting.join(15) == "x"
        assert waiting.returned is not None
        assert waiting.returned - answered <= 2.5, (
            f"a silent end was seen {waiting.returned - answered:.2f} s later (re-read: 2 s)"
        )


def test_a_perl_reply_wakes_a_wait_at_once_without_the_reread(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Perl worker's reply notifies ``jmr:<id>`` with an empty payload: it
    wakes a wait at once. The re-read is put off to a minute, so only the
    notification can answer in time."""
    monkeypatch.setattr("job_machine._async.waiter.RECHECK", 60.0)
    monkeypatch.setattr("job_machine._sync.waiter.RECHECK", 60.0)
    reads = _Reads(monkeypatch)
    with jm.Client(dsn, queue=QUEUE) as client:
        tid = client.send("perl")
        waiting = _Waiting(client, tid, timeout=10)
        reads.wait_first(waiting)
        answered = _perl_result(dsn, tid, {"data": "from perl"}, notify=True)
        assert waiting.join(15) == {"data": "from perl"}
        assert waiting.returned is not None
        assert waiting.returned - answered <= 0.5


# -- gap 10: what a Perl 0.19 client reads while Python attempts fail ------------


class _FailsFirst(jm.Worker):
    """Raises on a task's first attempt; on a later one, waits for
    ``release`` (so a test can read in between), then replies ``{"data": x}``
    as a worker answering a Perl 0.19 client does. ``{"always": ...}`` fails
    every attempt."""

    handle_signals = False

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.ready = threading.Event()
        self.retrying = threading.Event()
        self.release = threading.Event()

    def startup(self) -> None:
        self.ready.set()

    def process(self, task: jm.Task) -> None:
        if task.attempt == 1 or task.data == "always":
            raise RuntimeError(f"attempt {task.attempt} fails")
        self.retrying.set()
        self.release.wait(30)
        self.reply({"data": "ok"})


def _perl_receive(perl_conn: psycopg.Connection[Any], tid: int) -> tuple[bool, Any]:
    """Perl 0.19's ``receive``: the newest ``result`` row of the task (any
    kind), and its ``data`` member (undef, None here, when it has none).
    Returns (a row was there, what receive returns)."""
    row = perl_conn.execute(
        'SELECT * FROM "jobmachine".result WHERE task_id=%s ORDER BY result_id DESC', (tid,)
    ).fetchone()
    if row is None:
        return False, None
    import json  # noqa: PLC0415

    stored = json.loads(row[2])
    return True, stored.get("data") if isinstance(stored, dict) else None


def test_a_perl_0_19_client_reads_a_failed_attempts_error_row_as_an_empty_reply(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """README (Perl compatibility) documents this: job_machine stores an
    error row in ``result`` for a failed attempt (and for a task failed for
    good). A Perl 0.19 client takes the newest ``result`` row, whatever its
    ``resulttype``, for the reply: between the failed attempt and the
    retry's reply it finds a row whose ``data`` is missing (undef, like an
    empty reply); after the retry's reply it reads the reply. A Python
    client never takes the error row for an answer."""
    from tests.support.workers import serving  # noqa: PLC0415

    w = _FailsFirst(dsn, queue=QUEUE, retry_backoff=0.01, timeout=1)
    with jm.Client(dsn, queue=QUEUE) as client, serving(w):
        tid = client.send("retried")
        assert w.retrying.wait(10)
        # Between the failed attempt and the retry's reply:
        assert _perl_receive(conn, tid) == (True, None)
        row = conn.execute(
            "SELECT resulttype, result::json->>'type' FROM jobmachine.result WHERE task_id = %s"
            " ORDER BY result_id DESC LIMIT 1",
            (tid,),
        ).fetchone()
        assert row == ("error", "RuntimeError")
        assert client.check(tid) is False  # not an answer for job_machine
        w.release.set()
        assert client.wait(tid, timeout=10) == {"data": "ok"}
        assert _perl_receive(conn, tid) == (True, "ok")

        failed = client.send("always", attempts=1)
        with pytest.raises(jm.TaskFailed):
            client.wait(failed, timeout=10)
        assert _perl_receive(conn, failed) == (True, None)


# -- gap 13: as_completed yields the first answered first -------------------------


class _HoldsA(jm.Worker):
    """Replies "B" at once; holds "A" until ``release``. ``answered_b`` is
    when B's reply was committed (reply() of a lone task commits it)."""

    handle_signals = False

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.ready = threading.Event()
        self.holding_a = threading.Event()
        self.release = threading.Event()
        self.answered_b: float | None = None

    def startup(self) -> None:
        self.ready.set()

    def process(self, task: jm.Task) -> None:
        if task.data == "A":
            self.holding_a.set()
            self.release.wait(30)
            self.reply("A")
        else:
            self.reply("B")
            self.answered_b = time.monotonic()


def test_as_completed_yields_the_first_answered_first_and_at_once(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """README: ``as_completed`` yields the first answered first. A is sent
    before B, but B (a higher priority) is answered first while A runs:
    ``as_completed([A, B])`` yields B within 0.5 s of its reply, with A
    still running, then A once it is answered."""
    from tests.support.workers import serving  # noqa: PLC0415

    with jm.Client(dsn, queue=QUEUE) as client:
        a = client.send("A")
        b = client.send("B", priority=10)
        w = _HoldsA(dsn, queue=QUEUE, prefetch=1)
        with serving(w):
            answers = client.as_completed([a, b], timeout=20)
            first = next(answers)
            got_first = time.monotonic()
            assert first.task_id == b and first.value() == "B"
            assert w.answered_b is not None
            assert got_first - w.answered_b <= 0.5
            assert w.holding_a.wait(10)
            assert task_state_of(conn, a) == 100  # A still running
            w.release.set()
            second = next(answers)
            assert second.task_id == a and second.value() == "A"
            assert list(answers) == []


def task_state_of(conn: psycopg.Connection[Any], tid: int) -> int:
    row = conn.execute("SELECT status FROM jobmachine.task WHERE task_id = %s", (tid,)).fetchone()
    assert row is not None
    return int(row[0])
