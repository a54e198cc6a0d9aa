"""Bad input gets a clear exception that names what was wrong, and writes nothing."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psycopg
import pytest

import job_machine as jm
from tests.support.workers import Observed

UNREACHABLE = "host=127.0.0.1 port=1 dbname=x user=u password=s3cret connect_timeout=2"
UNREACHABLE_URI = "postgresql://u:s3cret@127.0.0.1:1/x?connect_timeout=2"


class Echo(Observed):
    handle_signals = False

    def process(self, task: jm.Task) -> None:
        self.reply({"echo": task.data})


def counts(conn: psycopg.Connection[Any]) -> tuple[int, int, int]:
    """(tasks, classes, results)."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM jobmachine.task),"
        "       (SELECT count(*) FROM jobmachine.class),"
        "       (SELECT count(*) FROM jobmachine.result)"
    ).fetchone()
    assert row is not None
    return (int(row[0]), int(row[1]), int(row[2]))


# -- data that is not JSON -----------------------------------------------------


class Thing:
    pass


UNENCODABLE: list[tuple[str, Any, str]] = [
    # (case, data, what the message must name)
    ("object", object(), "object"),
    ("instance", Thing(), "Thing"),
    ("set", {1, 2, 3}, "set"),
    ("nan", float("nan"), "float"),
    ("inf", float("inf"), "float"),
    ("nested-inf", {"deep": [1, {"deeper": float("-inf")}]}, "float"),
    ("module", {"when": time}, "module"),
    ("tuple-key", {(1, 2): "tuple key"}, "tuple"),
    ("bytes", b"bytes", "bytes"),
]


def test_unencodable_data_is_refused_before_any_sql(
    dsn: str, conn: psycopg.Connection[Any], subtests: Any
) -> None:
    before = counts(conn)
    with jm.Client(dsn, queue="never.created") as c:
        for case, data, named in UNENCODABLE:
            with subtests.test(case):
                with pytest.raises(jm.InvalidData, match="cannot be encoded as JSON") as info:
                    c.send(data)
                assert named in str(info.value)
                assert isinstance(info.value, TypeError)
                assert c.id is None
                with pytest.raises(jm.InvalidData):
                    c.send(data, queue="also.never.created")
                # Before any SQL indeed: refused without even a connection.
                with (
                    jm.Client(UNREACHABLE, queue="q") as unconnected,
                    pytest.raises(jm.InvalidData),
                ):
                    unconnected.send(data)
    assert counts(conn) == before
    assert conn.execute(
        "SELECT count(*) FROM jobmachine.class WHERE name LIKE '%%never.created'"
    ).fetchone() == (0,)


def test_send_failing_on_bad_data_keeps_the_previous_current_task(client: jm.Client) -> None:
    tid = client.send("good")
    with pytest.raises(jm.InvalidData):
        client.send({1, 2})
    assert client.id == tid


def test_text_that_utf8_cannot_carry_is_invalid_data(
    client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """A lone surrogate is a Python str but no UTF-8 text: send() must say
    InvalidData (its documented error for data it cannot store), not leak a
    UnicodeEncodeError from the driver."""
    before = counts(conn)
    with pytest.raises(jm.InvalidData, match=r"JSON|UTF-8|surrogate"):
        client.send({"text": "half a pair \ud800"})
    assert counts(conn) == before


def test_reply_with_unencodable_data(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send("x")
    seen: list[Any] = []

    class W(Echo):
        def process(self, task: jm.Task) -> None:
            for answer in (self.reply, self.result, self.error_result):
                with pytest.raises(jm.InvalidData, match="set") as info:
                    answer({"bad": {1, 2}})
                seen.append(str(info.value))
            with pytest.raises(jm.InvalidData, match="float"):
                self.reply(float("nan"))
            row = conn.execute(
                "SELECT status, (SELECT count(*) FROM jobmachine.result r"
                "                 WHERE r.task_id = t.task_id)"
                "  FROM jobmachine.task t WHERE task_id = %s",
                [task.id],
            ).fetchone()
            seen.append(row)
            self.reply("the good answer")

    with W(dsn, queue="job.task") as w:
        assert w.work_once()
    assert seen[-1] == (100, 0)  # still held, nothing stored
    assert "reply data" in seen[0]
    assert "error_result data" in seen[2]
    assert client.receive(tid) == "the good answer"
    assert counts(conn) == (1, 1, 1)


# -- queue names -----------------------------------------------------------------

#: Every other name is a queue, as in Perl (issue 14, item 8; test_queue_names.py).
BAD_NAMES = ["", "a\x00b"]


def test_malformed_queue_names(dsn: str, conn: psycopg.Connection[Any], subtests: Any) -> None:
    before = counts(conn)
    with jm.Client(dsn, queue="good.queue") as good:
        for name in BAD_NAMES:
            with subtests.test(name=name):
                expected = "empty" if name == "" else "NUL"

                with pytest.raises(jm.InvalidQueueName, match=expected) as info:
                    jm.Client(dsn, queue=name)
                assert isinstance(info.value, ValueError)
                if name:
                    assert repr(name) in str(info.value)

                with pytest.raises(jm.InvalidQueueName, match=expected):
                    good.send({"x": 1}, queue=name)
                assert good.id is None

                with pytest.raises(jm.InvalidQueueName, match=expected):
                    Echo(dsn, queue=name)
                with pytest.raises(jm.InvalidQueueName, match=expected):
                    Echo(dsn, queue=["fine", name])
    assert counts(conn) == before


def test_queue_name_that_is_not_a_string(dsn: str) -> None:
    with pytest.raises(jm.InvalidQueueName, match="string"):
        jm.Client(dsn, queue=42)  # type: ignore[arg-type]
    with pytest.raises(jm.InvalidQueueName, match="string"):
        Echo(dsn, queue=[b"bytes"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        ("q" * 60, "q" * 61),
        ("é" * 30, "é" * 30 + "x"),  # 2-byte letters: 60 bytes is 30 characters
        ("日" * 20, "日" * 21),  # 3-byte letters: 63 bytes is only 21 characters
        ("a." + "b" * 58, "a." + "b" * 59),
    ],
    ids=["ascii", "2-byte", "3-byte", "dotted"],
)
def test_queue_name_length_limit(
    dsn: str, conn: psycopg.Connection[Any], good: str, bad: str
) -> None:
    assert len(good.encode()) == 60
    assert len(bad.encode()) > 60  # refused before issue 14

    # 61+ bytes: accepted (a Perl client makes such names), on the channel
    # PostgreSQL truncates a Perl worker's LISTEN to (test_queue_names.py).
    with jm.Client(dsn, queue=bad) as c:
        bad_id = c.send({"x": 1})
        with Echo(dsn, queue=bad) as e:
            assert e.work_once()
        assert c.receive(bad_id) == {"echo": {"x": 1}}

    # 60 bytes ("jm:" + name = 63 bytes, the identifier limit): works end to
    # end, through a worker woken by LISTEN on the full channel name.
    picked = threading.Event()
    queues: list[str] = []

    class W(Echo):
        def process(self, task: jm.Task) -> None:
            queues.append(task.queue)
            picked.set()
            super().process(task)

    w = W(dsn, queue=good, timeout=60)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            w.receive()
        except BaseException as ex:
            errors.append(ex)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        w.wait_idle(after=0)  # LISTENing (a lost wake-up would show as > 1 s below)
        with jm.Client(dsn, queue=good) as c:
            t0 = time.monotonic()
            tid = c.send({"long": "name"})
            assert picked.wait(5), errors
            assert time.monotonic() - t0 < 1.0
            assert queues == [good]
            assert c.wait(tid, timeout=5) == {"echo": {"long": "name"}}
    finally:
        w.stop()
        t.join(10)
    assert not errors
    assert not t.is_alive()
    names = conn.execute("SELECT name FROM jobmachine.class ORDER BY class_id").fetchall()
    assert names == [(bad,), (good,)]


# -- unknown and missing tasks ---------------------------------------------------


def test_unknown_task_id(client: jm.Client) -> None:
    missing = 987654
    with pytest.raises(jm.UnknownTask, match=str(missing)) as info:
        client.check(missing)
    assert isinstance(info.value, LookupError)
    with pytest.raises(jm.UnknownTask, match=str(missing)):
        client.receive(missing)
    t0 = time.monotonic()
    with pytest.raises(jm.UnknownTask, match=str(missing)):
        client.wait(missing, timeout=5)
    assert time.monotonic() - t0 < 1  # at once, not after the timeout
    # Still usable afterwards.
    tid = client.send("after")
    assert client.check(tid) is False


def test_task_id_of_the_wrong_type(client: jm.Client) -> None:
    for bad in ("12", 1.0, True):
        with pytest.raises(TypeError, match="task id"):
            client.check(bad)  # type: ignore[arg-type]


def test_no_current_task(dsn: str) -> None:
    with jm.Client(dsn, queue="job.task") as c:
        for call in (c.check, c.receive, c.wait, c.uncheck):
            with pytest.raises(jm.NoCurrentTask, match="current task"):
                call()
        with pytest.raises(jm.NoCurrentTask):
            c.check("reply")


# -- connections and schema ---------------------------------------------------------


@pytest.mark.parametrize("bad_dsn", [UNREACHABLE, UNREACHABLE_URI], ids=["keywords", "uri"])
def test_dsn_that_cannot_connect(bad_dsn: str) -> None:
    def check(ex: BaseException) -> None:
        text = f"{ex} {ex!r}"
        assert "127.0.0.1" in text
        assert "port=1" in text
        assert "s3cret" not in text
        cause = ex.__cause__ or ex.__context__
        while cause is not None:  # nor anywhere in a chained exception
            assert "s3cret" not in f"{cause} {cause!r}"
            cause = cause.__cause__ or cause.__context__

    with jm.Client(bad_dsn, queue="job.task") as c:
        with pytest.raises(jm.ConnectionFailed) as info:
            c.send({"x": 1})
        check(info.value)
        with pytest.raises(jm.ConnectionFailed) as info:
            c.check(1)
        check(info.value)

    w = Echo(bad_dsn, queue="job.task")
    with pytest.raises(jm.ConnectionFailed) as info:
        w.work_once()
    check(info.value)
    with pytest.raises(jm.ConnectionFailed) as info:
        w.receive()
    check(info.value)

    with pytest.raises(jm.ConnectionFailed) as info:
        jm.install_schema(bad_dsn)
    check(info.value)


def test_database_without_the_schema(empty_dsn: str) -> None:
    with jm.Client(empty_dsn, queue="job.task") as c:
        with pytest.raises(jm.SchemaMissing, match="jobmachine") as info:
            c.send({"x": 1})
        assert "install_schema" in str(info.value) or "create_tables.sql" in str(info.value)
        with pytest.raises(jm.SchemaMissing):
            c.check(1)
        with pytest.raises(jm.SchemaMissing):
            c.receive(1)
    with Echo(empty_dsn, queue="job.task") as w, pytest.raises(jm.SchemaMissing):
        w.work_once()
    # Nothing was created by the attempts.
    with psycopg.connect(empty_dsn, autocommit=True) as c2:
        row = c2.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'jobmachine'"
        ).fetchone()
        assert row == (0,)


def test_exactly_one_connection_source(dsn: str, conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(jm.JobMachineError, match=r"dsn.*conn"):
        jm.Client(dsn, conn=conn, queue="job.task")
    with pytest.raises(jm.JobMachineError, match="exactly one"):
        jm.Client(queue="job.task")
    with pytest.raises(jm.JobMachineError, match="exactly one"):
        Echo(dsn, conn=conn, queue="job.task")
    with pytest.raises(jm.JobMachineError, match="exactly one"):
        Echo(queue="job.task")
    assert counts(conn) == (0, 0, 0)


def test_wait_on_a_connection_inside_a_transaction(dsn: str) -> None:
    with psycopg.connect(dsn) as user:
        c = jm.Client(conn=user, queue="job.task")
        with user.transaction():
            tid = c.send("in tx")
            with pytest.raises(jm.JobMachineError, match="transaction"):
                c.wait(tid, timeout=0.2)


BAD_OPTIONS: list[tuple[str, Any]] = [
    ("retries", -1),
    ("retries", 1.5),
    ("retries", True),
    ("retries", "3"),
    ("timeout", 0),
    ("timeout", -1),
    ("timeout", "5"),
    ("max_runtime", 0),
    ("remove_after", 0),
    ("remove_after", -2.5),
]


def test_bad_worker_options(subtests: Any) -> None:
    for option, value in BAD_OPTIONS:
        with subtests.test(option=option, value=value):
            # Refused in the constructor, before any connection is made.
            with pytest.raises(ValueError, match=option) as info:
                Echo(UNREACHABLE, queue="job.task", **{option: value})
            assert repr(value) in str(info.value)


def test_worker_without_a_queue() -> None:
    with pytest.raises(ValueError, match="queue"):
        Echo(UNREACHABLE)
    with pytest.raises(ValueError, match="queue"):
        Echo(UNREACHABLE, queue=[])


def test_bad_input_leaves_a_sent_task_untouched(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    tid = client.send({"keep": "me"})
    before = counts(conn)
    for bad in ({1}, object(), float("nan")):
        with pytest.raises(jm.InvalidData):
            client.send(bad)
    with pytest.raises(jm.InvalidQueueName):
        client.send(1, queue="")
    with pytest.raises(jm.UnknownTask):
        client.check(tid + 1000)
    assert counts(conn) == before
    row = conn.execute(
        "SELECT parameters, status FROM jobmachine.task WHERE task_id = %s", [tid]
    ).fetchone()
    assert row is not None
    assert (json.loads(row[0]), row[1]) == ({"keep": "me"}, 0)
