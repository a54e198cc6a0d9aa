"""Client against a real PostgreSQL: send, the queue notification, check /
receive / wait / uncheck, transactional sends, pools, big payloads."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

import job_machine as jm
from tests.support.procs import wait_until
from tests.support.workers import waiting

# -- helpers ------------------------------------------------------------------


class Echo(jm.Worker):
    """Replies {"echo": data}; data {"raise": msg} raises ValueError(msg)."""

    handle_signals = False

    def process(self, task: jm.Task) -> None:
        if isinstance(task.data, dict) and "raise" in task.data:
            raise ValueError(task.data["raise"])
        self.reply({"echo": task.data})


def work_all(dsn: str, cls: type[jm.Worker] = Echo, **kw: Any) -> int:
    """Process every waiting task of the queue in this thread; return how many."""
    n = 0
    kw.setdefault("queue", "job.task")
    with cls(dsn, **kw) as w:
        while w.work_once():
            n += 1
    return n


@contextmanager
def listening(dsn: str, channel: str) -> Iterator[psycopg.Connection[Any]]:
    """A second connection that LISTENs on ``channel``."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        yield c


def notes(
    c: psycopg.Connection[Any], timeout: float, expect: int | None = None
) -> list[psycopg.Notify]:
    """Notifications received within ``timeout`` s (returning early once ``expect`` came)."""
    return list(c.notifies(timeout=timeout, stop_after=expect))


def task_row(conn: psycopg.Connection[Any], tid: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT t.task_id, t.parameters, t.status, c.name AS queue"
            "  FROM jobmachine.task t JOIN jobmachine.class c USING (class_id)"
            " WHERE t.task_id = %s",
            [tid],
        )
        return cur.fetchone()


def count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM jobmachine.{table}").fetchone()
    assert row is not None
    return int(row[0])


@contextmanager
def once_waiting(client: jm.Client, tid: int, fn: Any, *args: Any) -> Iterator[list[float]]:
    """Run fn(*args) in a thread once ``client`` waits for the task (listens
    for its answer); yields a list that gets when fn started. Re-raises
    fn's error at the end."""
    errors: list[BaseException] = []
    ran: list[float] = []

    def run() -> None:
        try:
            wait_until(lambda: waiting(client, tid), 10, f"the client's wait for task {tid}")
            ran.append(time.monotonic())
            fn(*args)
        except BaseException as ex:  # surfaced in the test thread below
            errors.append(ex)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield ran
    finally:
        t.join(30)
    assert not t.is_alive()
    if errors:
        raise errors[0]


# -- send -------------------------------------------------------------------

SAMPLES: list[Any] = [
    0,
    -17,
    2.5,
    "text",
    "",
    True,
    False,
    None,
    [],
    {},
    [1, "a", None, [2.5, True]],
    {"a": {"b": [1, {"c": None}], "d": "e"}, "n": 12345678901234},
    "ünïcødé ✓ 日本語 🎉",
    {"ключ": "значение", "emoji": "👍🏽"},
    "NUL \x00 and controls \t\n\r\x1b",
]


def test_send_returns_increasing_ids_and_stores_exactly_the_data(
    client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    ids = []
    for data in SAMPLES:
        tid = client.send(data)
        assert isinstance(tid, int) and not isinstance(tid, bool)
        assert client.id == tid
        ids.append(tid)
        row = task_row(conn, tid)
        assert row is not None
        assert row["status"] == 0
        assert row["queue"] == "job.task"
        stored = json.loads(row["parameters"])
        assert stored == data
        assert type(stored) is type(data)  # True stays true, not 1; 0 stays 0, not false
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert count(conn, "task") == len(SAMPLES)
    assert count(conn, "class") == 1


def test_send_to_another_queue(client: jm.Client, conn: psycopg.Connection[Any]) -> None:
    t1 = client.send({"n": 1}, queue="other.queue")
    t2 = client.send({"n": 2})
    assert client.queue == "job.task"
    assert client.id == t2
    r1, r2 = task_row(conn, t1), task_row(conn, t2)
    assert r1 is not None and r2 is not None
    assert r1["queue"] == "other.queue"
    assert r2["queue"] == "job.task"
    names = {r[0] for r in conn.execute("SELECT name FROM jobmachine.class")}
    assert names == {"other.queue", "job.task"}
    # The same queue again reuses its class row.
    client.send({"n": 3}, queue="other.queue")
    assert count(conn, "class") == 2


def test_client_without_queue_needs_one_per_send(dsn: str, conn: psycopg.Connection[Any]) -> None:
    with jm.Client(dsn) as c:
        with pytest.raises(ValueError, match="queue"):
            c.send(1)
        tid = c.send(1, queue="given.here")
    row = task_row(conn, tid)
    assert row is not None and row["queue"] == "given.here"


def test_send_notifies_the_queue_channel_with_the_task_id(dsn: str, client: jm.Client) -> None:
    with listening(dsn, "jm:job.task") as lc, listening(dsn, "jm:other.q") as other:
        tid = client.send({"hello": "world"})
        got = notes(lc, 2, 1)
        assert [(n.channel, n.payload) for n in got] == [("jm:job.task", str(tid))]
        # Nothing on a queue nobody sent to.
        assert notes(other, 0.1) == []
        tid2 = client.send(1, queue="other.q")
        got = notes(other, 2, 1)
        assert [(n.channel, n.payload) for n in got] == [("jm:other.q", str(tid2))]
        assert notes(lc, 0.1) == []


def test_concurrent_first_sends_to_a_new_queue_make_one_class_row(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    n = 8
    barrier = threading.Barrier(n)
    ids: list[int] = []
    errors: list[BaseException] = []
    clients = [jm.Client(dsn, queue="brand.new.queue") for _ in range(n)]
    for c in clients:  # connect up front so the sends really race
        c.send(0, queue="warm.up")

    def send(c: jm.Client) -> None:
        try:
            barrier.wait(5)
            ids.append(c.send({"racing": True}))
        except BaseException as ex:
            errors.append(ex)

    threads = [threading.Thread(target=send, args=(c,)) for c in clients]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    finally:
        for c in clients:
            c.close()
    assert errors == []
    assert len(set(ids)) == n
    rows = conn.execute("SELECT count(*) FROM jobmachine.class WHERE name = 'brand.new.queue'")
    assert rows.fetchone() == (1,)
    row = conn.execute(
        "SELECT count(*) FROM jobmachine.task t JOIN jobmachine.class c USING (class_id)"
        " WHERE c.name = 'brand.new.queue'"
    ).fetchone()
    assert row == (n,)


# -- check / receive --------------------------------------------------------


def test_check_and_receive_before_and_after_the_reply(dsn: str, client: jm.Client) -> None:
    tid = client.send({"q": 42})
    assert client.check() is False
    assert client.check("reply") is False
    assert client.check(tid) is False
    assert client.receive() is None
    assert client.receive(tid) is None

    assert work_all(dsn) == 1

    assert client.check() is True
    assert client.check("reply") is True
    assert client.check(tid) is True
    assert client.receive() == {"echo": {"q": 42}}
    assert client.receive(tid) == {"echo": {"q": 42}}


def test_check_and_receive_name_a_task_other_than_the_current_one(
    dsn: str, client: jm.Client
) -> None:
    first = client.send("first")
    work_all(dsn)
    second = client.send("second")
    assert client.id == second
    assert client.check(first) is True
    assert client.check() is False
    assert client.receive(first) == {"echo": "first"}
    assert client.receive() is None


def test_check_from_a_new_client_long_after_the_reply(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send(["late", "reader"])
    work_all(dsn)
    client.close()
    # Pretend it all happened a week ago: nothing depends on the notification.
    conn.execute(
        "UPDATE jobmachine.task SET created = now() - interval '7 days',"
        " modified = now() - interval '7 days' WHERE task_id = %s",
        [tid],
    )
    conn.execute(
        "UPDATE jobmachine.result SET created = now() - interval '7 days' WHERE task_id = %s",
        [tid],
    )
    with jm.Client(dsn) as fresh:
        assert fresh.id is None
        assert fresh.check(tid) is True
        assert fresh.receive(tid) == {"echo": ["late", "reader"]}
        assert fresh.wait(tid, timeout=1) == {"echo": ["late", "reader"]}
        with pytest.raises(jm.NoCurrentTask):
            fresh.check()


def test_receive_returns_the_newest_reply(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send("x")
    work_all(dsn)
    assert client.receive() == {"echo": "x"}
    # A newer result row (as a Perl worker's second result() would add).
    conn.execute(
        "INSERT INTO jobmachine.result (task_id, result) VALUES (%s, %s)",
        [tid, json.dumps({"newer": 2})],
    )
    assert client.receive() == {"newer": 2}
    conn.execute(
        "INSERT INTO jobmachine.result (task_id, result, resulttype) VALUES (%s, %s, 'json')",
        [tid, json.dumps({"newest": 3})],
    )
    assert client.receive(tid) == {"newest": 3}
    # A still newer error row is not a reply.
    conn.execute(
        "INSERT INTO jobmachine.result (task_id, result, resulttype) VALUES (%s, %s, 'error')",
        [tid, json.dumps({"message": "not a reply"})],
    )
    assert client.receive(tid) == {"newest": 3}
    assert client.wait(tid, timeout=1) == {"newest": 3}


def test_error_results_are_not_replies(dsn: str, client: jm.Client) -> None:
    class Complains(jm.Worker):
        handle_signals = False

        def process(self, task: jm.Task) -> None:
            self.error_result({"complaint": task.data})

    tid = client.send("meh")
    assert work_all(dsn, Complains) == 1
    # Done (process returned) without a reply: answered, but nothing to receive.
    assert client.check(tid) is True
    assert client.receive(tid) is None
    assert client.wait(tid, timeout=1) is None


def test_a_failed_attempt_that_will_be_retried_is_not_an_answer(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send({"raise": "try again"})
    with Echo(dsn, queue="job.task", retries=3) as w:
        assert w.work_once() is True
    row = task_row(conn, tid)
    assert row is not None and row["status"] == 0
    assert client.check(tid) is False
    assert client.receive(tid) is None
    with pytest.raises(jm.WaitTimeout):
        client.wait(tid, timeout=0.2)


def test_failed_task_makes_check_true_and_receive_raise(dsn: str, client: jm.Client) -> None:
    tid = client.send({"raise": "boom 42"})
    assert work_all(dsn, retries=0) == 1
    assert client.check(tid) is True
    with pytest.raises(jm.TaskFailed, match="boom 42") as info:
        client.receive(tid)
    assert info.value.task_id == tid
    error = info.value.error
    assert isinstance(error, dict)
    assert error["type"] == "ValueError"
    assert error["message"] == "boom 42"
    assert "Traceback" in error["traceback"]
    assert str(tid) in str(info.value)
    with pytest.raises(jm.TaskFailed, match="boom 42"):
        client.receive()
    t0 = time.monotonic()
    with pytest.raises(jm.TaskFailed, match="boom 42"):
        client.wait(tid, timeout=5)
    assert time.monotonic() - t0 < 1


def test_the_reply_of_a_retried_task_wins_over_its_earlier_error(
    dsn: str, client: jm.Client
) -> None:
    class FailsOnce(jm.Worker):
        handle_signals = False

        def process(self, task: jm.Task) -> None:
            if task.attempt == 1:
                raise RuntimeError("first attempt fails")
            self.reply({"attempt": task.attempt})

    tid = client.send("retry me")
    assert work_all(dsn, FailsOnce, retries=2, retry_backoff=0) == 2
    assert client.check(tid) is True
    assert client.receive(tid) == {"attempt": 2}


# -- wait -------------------------------------------------------------------


def test_wait_returns_a_reply_committed_before_it_began_at_once(
    dsn: str, client: jm.Client
) -> None:
    tid = client.send("early")
    work_all(dsn)
    t0 = time.monotonic()
    assert client.wait(timeout=10) == {"echo": "early"}
    assert client.wait(tid, timeout=10) == {"echo": "early"}
    assert time.monotonic() - t0 < 1


def test_wait_is_woken_by_the_reply_notification(dsn: str, client: jm.Client) -> None:
    tid = client.send("wake me")
    t0 = time.monotonic()
    with once_waiting(client, tid, work_all, dsn) as ran:
        assert client.wait(tid, timeout=20) == {"echo": "wake me"}
        returned = time.monotonic()
    # The wait listened before the worker started, and returned after that.
    assert ran and ran[0] <= returned, (ran, returned)
    assert returned - t0 < 3, returned - t0


def test_wait_is_woken_when_the_task_fails(dsn: str, client: jm.Client) -> None:
    tid = client.send({"raise": "no luck"})
    t0 = time.monotonic()
    with once_waiting(client, tid, lambda: work_all(dsn, retries=0)):
        with pytest.raises(jm.TaskFailed, match="no luck"):
            client.wait(tid, timeout=20)
        elapsed = time.monotonic() - t0
    assert elapsed < 3, elapsed


def test_wait_times_out(dsn: str, client: jm.Client) -> None:
    tid = client.send("nobody works here")
    t0 = time.monotonic()
    with pytest.raises(jm.WaitTimeout, match=str(tid)) as info:
        client.wait(timeout=0.3)
    elapsed = time.monotonic() - t0
    assert 0.29 <= elapsed < 2, elapsed
    assert isinstance(info.value, TimeoutError)
    # The client is still usable, and a later wait gets the reply.
    work_all(dsn)
    assert client.wait(tid, timeout=5) == {"echo": "nobody works here"}


def test_uncheck_forgets_the_current_task(dsn: str, client: jm.Client) -> None:
    first = client.send(1)
    second = client.send(2)
    client.uncheck(first)  # not the current one: nothing changes
    assert client.id == second
    client.uncheck()
    assert client.id is None
    with pytest.raises(jm.NoCurrentTask):
        client.check()
    with pytest.raises(jm.NoCurrentTask):
        client.receive()
    with pytest.raises(jm.NoCurrentTask):
        client.wait(timeout=0.1)
    # Explicit ids still work, and the next send sets a current task again.
    assert client.check(second) is False
    third = client.send(3)
    assert client.id == third
    client.uncheck(third)
    assert client.id is None


# -- transactions, pools, attributes, size, lifetime --------------------------


def test_send_in_a_rolled_back_transaction_leaves_no_task_and_no_notification(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with listening(dsn, "jm:job.task") as lc, psycopg.connect(dsn) as user:
        c = jm.Client(conn=user, queue="job.task")
        with user.transaction():
            tid = c.send({"in": "transaction"})
            assert isinstance(tid, int)
            raise psycopg.Rollback()
        assert count(conn, "task") == 0
        assert count(conn, "class") == 0
        assert notes(lc, 0.5) == []
        c.close()
        assert not user.closed  # the caller's connection is left alone


def test_send_in_a_committed_transaction_appears_and_notifies_at_commit(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with listening(dsn, "jm:job.task") as lc, psycopg.connect(dsn) as user:
        c = jm.Client(conn=user, queue="job.task")
        with user.transaction():
            user.execute("CREATE TABLE jobmachine_test_business (x int)")
            tid = c.send({"in": "transaction"})
            # Not visible and not announced before the caller commits.
            assert task_row(conn, tid) is None
            assert notes(lc, 0.3) == []
        row = task_row(conn, tid)
        assert row is not None and row["status"] == 0
        assert json.loads(row["parameters"]) == {"in": "transaction"}
        got = notes(lc, 2, 1)
        assert [(n.channel, n.payload) for n in got] == [("jm:job.task", str(tid))]
        # Outside a transaction the next send opens one, which the caller
        # commits (psycopg's semantics: job_machine never commits it).
        tid2 = c.send("autonomous")
        assert task_row(conn, tid2) is None
        user.commit()
        assert task_row(conn, tid2) is not None
        work_all(dsn)
        assert c.receive(tid) == {"echo": {"in": "transaction"}}
        user.rollback()  # receive() read in a transaction of the caller's; wait() needs none
        assert c.wait(tid2, timeout=5) == {"echo": "autonomous"}


def test_client_with_a_pool_sends_checks_and_waits(dsn: str) -> None:
    with ConnectionPool(dsn, min_size=1, max_size=4, open=True) as pool:
        c = jm.Client(pool=pool, queue="job.task")
        tid = c.send({"via": "pool"})
        assert c.check(tid) is False
        with once_waiting(c, tid, work_all, dsn):
            assert c.wait(tid, timeout=10) == {"echo": {"via": "pool"}}
        assert c.receive(tid) == {"echo": {"via": "pool"}}
        assert c.check(tid) is True
        c.close()
        # The pool is the caller's: still open and working.
        with pool.connection() as pc:
            assert pc.execute("SELECT count(*) FROM jobmachine.task").fetchone() == (1,)


def test_client_with_a_pool_waits_for_a_reply_it_hears(dsn: str) -> None:
    with ConnectionPool(dsn, min_size=1, max_size=4, open=True) as pool:
        c = jm.Client(pool=pool, queue="job.task")
        tid = c.send("pool wait")
        t0 = time.monotonic()
        with once_waiting(c, tid, work_all, dsn) as ran:
            assert c.wait(tid, timeout=10) == {"echo": "pool wait"}
            returned = time.monotonic()
        assert ran and ran[0] <= returned, (ran, returned)
        assert returned - t0 < 3


def test_client_waits_with_a_pool_of_one_connection(dsn: str) -> None:
    """wait() must not need two pool connections at once: with a pool of N
    connections, N concurrent waits would otherwise starve each other."""
    with ConnectionPool(dsn, min_size=1, max_size=1, timeout=2, open=True) as pool:
        c = jm.Client(pool=pool, queue="job.task")
        tid = c.send("small pool")
        work_all(dsn)
        assert c.receive(tid) == {"echo": "small pool"}
        # The reply is already there: wait() must return it at once.
        assert c.wait(tid, timeout=5) == {"echo": "small pool"}


def test_extra_keyword_arguments_become_attributes(dsn: str) -> None:
    with jm.Client(dsn, queue="job.task", owner="billing", retries_hint=3) as c:
        assert c.owner == "billing"  # type: ignore[attr-defined]
        assert c.retries_hint == 3  # type: ignore[attr-defined]
        assert c.queue == "job.task"


def test_ten_megabyte_payload_round_trip(dsn: str, client: jm.Client) -> None:
    big = {"blob": "x" * (10 * 1024 * 1024), "tail": ["ü", 1, None]}
    with listening(dsn, "jm:job.task") as lc:
        tid = client.send(big)
        got = notes(lc, 5, 1)
        # The notification carries the id only, never the data.
        assert [n.payload for n in got] == [str(tid)]
    seen: list[int] = []

    class Big(jm.Worker):
        handle_signals = False

        def process(self, task: jm.Task) -> None:
            seen.append(len(task.data["blob"]))
            intact.append(task.data == big)
            self.reply(task.data)

    intact: list[bool] = []
    assert work_all(dsn, Big) == 1
    assert seen == [10 * 1024 * 1024]
    assert intact == [True]
    assert client.wait(tid, timeout=10) == big


def test_client_as_context_manager_closes_its_connection(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    app = "jm_ctx_test"
    tagged = make_conninfo(dsn, application_name=app)

    def backends() -> int:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [app]
        ).fetchone()
        assert row is not None
        return int(row[0])

    with jm.Client(tagged, queue="job.task") as c:
        tid = c.send("ctx")
        assert c.check(tid) is False
        assert backends() == 1
    wait_until(lambda: backends() == 0, 5, "the client's connection to close", interval=0.05)


def test_client_with_a_callers_connection_leaves_it_open(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as user:
        with jm.Client(conn=user, queue="job.task") as c:
            tid = c.send("mine")
        assert not user.closed
        assert user.execute(
            "SELECT status FROM jobmachine.task WHERE task_id = %s", [tid]
        ).fetchone() == (0,)


@pytest.mark.parametrize(
    ("dsn", "fragment"),
    [("postgresql://u:s3cr%ZZet@h/db", "s3cr"), ("host=x password=my secret", "secret")],
    ids=["uri", "keywords"],
)
def test_an_unparsable_dsn_is_refused_without_quoting_its_password(dsn: str, fragment: str) -> None:
    """libpq's parse error quotes the part it stumbled on, here the password:
    the error says the DSN cannot be parsed, and chains nothing that quotes it."""
    with jm.Client(dsn, queue="job.task") as c, pytest.raises(jm.ConnectionFailed) as info:
        c.send({"x": 1})
    assert "invalid DSN: it cannot be parsed" in str(info.value)
    error: BaseException | None = info.value
    while error is not None:
        assert fragment not in f"{error} {error!r}"
        error = error.__cause__ or error.__context__


# -- send_many ----------------------------------------------------------------


def test_send_many_inserts_in_order_in_one_transaction_and_notifies_once(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    conn.execute('LISTEN "jm:job.task"')
    ids = client.send_many([{"n": n} for n in range(500)])
    assert len(ids) == 500 and ids == sorted(ids)
    assert client.id == ids[-1]
    rows = conn.execute(
        "SELECT task_id, parameters, status, xmin::text FROM jobmachine.task ORDER BY task_id"
    ).fetchall()
    assert [r[0] for r in rows] == ids
    assert [json.loads(r[1]) for r in rows] == [{"n": n} for n in range(500)]
    assert {r[2] for r in rows} == {0}
    assert len({r[3] for r in rows}) == 1  # one transaction
    notes = list(conn.notifies(timeout=0.5))
    assert [(n.channel, n.payload) for n in notes] == [("jm:job.task", "500")]


def test_send_many_stores_awkward_text_exactly(
    client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """The payloads travel as one binary text[] parameter: characters an
    array literal would have to quote arrive unchanged."""
    items: list[Any] = [
        'quote " and \\ backslash',
        "{braces}, commas, NULL",
        "NULL",
        "",
        "ünïcødé ✓ 日本語 \u2028",
        {"nested": ["a,b", "{c}", None, 1.5]},
        None,
        "x" * 100_000,
    ]
    ids = client.send_many(items)
    rows = conn.execute(
        "SELECT parameters FROM jobmachine.task WHERE task_id = ANY(%s) ORDER BY task_id", (ids,)
    ).fetchall()
    assert [json.loads(r[0]) for r in rows] == items


def test_send_many_refuses_the_whole_batch_when_one_item_is_bad(
    client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    with pytest.raises(jm.InvalidData, match="item 2 cannot be encoded as JSON"):
        client.send_many([1, 2, {3}, 4])
    assert conn.execute("SELECT count(*) FROM jobmachine.task").fetchone() == (0,)
    assert client.send_many([]) == []
    with pytest.raises(jm.InvalidQueueName):
        client.send_many([1], queue="")


def test_a_worker_drains_a_batch_sent_with_send_many(dsn: str, client: jm.Client) -> None:
    ids = client.send_many(range(50), queue="batch.q")

    class Echo(jm.Worker):
        handle_signals = False

        def process(self, task: jm.Task) -> None:
            self.reply(task.data)

    with Echo(dsn, queue="batch.q") as w:
        while w.work_once():
            pass
    assert [client.receive(t) for t in ids] == list(range(50))


async def test_async_send_many(dsn: str) -> None:
    async with jm.AsyncClient(dsn, queue="job.task") as client:
        ids = await client.send_many(["a", "b"])
        assert len(ids) == 2 and await client.check(ids[0]) is False
