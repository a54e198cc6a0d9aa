"""Issue 14, item 8: every queue name Perl Job::Machine accepts ("anything
PostgreSQL accepts": ``Email Sender``, ``a/b``, ``x:y``) works in Client,
Worker and Admin, on channels a Perl listener hears; a Perl-made name too
long for a channel never aborts a server-side statement."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import job_machine as jm
from job_machine.channels import queue_channel
from tests.integration.test_perl_compat import Perl
from tests.support.procs import wait_until
from tests.support.rows import error_types, task_state
from tests.support.workers import Base, serving

#: Names a Perl client may use (no '"': Perl 0.19 quotes its LISTEN and
#: NOTIFY identifiers without escaping).
NAMES = [
    "Email Sender",
    "a/b",
    "x:y",
    "100% sure?#frag",
    "<script>alert(1)</script>",
    "køb ordre ✓",
    "gl.*",  # served exactly with jm.Exact
]
#: 100 bytes: a Perl client's name whose channel PostgreSQL truncates.
LONG = "Perl Queue/" + "x" * 89


def test_a_100_byte_perl_queue_never_aborts_housekeeping_rescue_retry_or_cancel(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """Before, one such name made every statement that notified its queue
    fail with "channel name too long": each housekeeping round, so also the
    rescue of dead workers, and retries."""
    assert len(LONG.encode()) == 100
    perl = Perl(dsn)
    try:
        abandoned = perl.send(LONG, {"data": "abandoned"})  # NOTIFY truncated, as Perl's LISTEN
        assert perl.claim(LONG) is not None  # a Perl worker took it, then died
        held = perl.send(LONG, {"data": "held by a dead job_machine worker"})
        to_retry = perl.send(LONG, {"data": "failed, retried"})
        to_cancel = perl.send(LONG, {"data": "cancelled"})
    finally:
        perl.close()
    conn.execute(
        "UPDATE jobmachine.task SET modified = now() - interval '1 hour' WHERE task_id = %s",
        [abandoned],
    )
    dead = conn.execute(
        "INSERT INTO jobmachine.worker (host, pid, queues, seen)"
        " VALUES ('gone', 1, %s, now() - interval '1 hour') RETURNING worker_id",
        [[LONG]],
    ).fetchone()
    assert dead is not None
    conn.execute(
        "UPDATE jobmachine.task SET status = 100, worker_id = %s, attempts = 1,"
        " started = now() - interval '1 hour' WHERE task_id = %s",
        [dead[0], held],
    )
    conn.execute("UPDATE jobmachine.task SET status = 900 WHERE task_id = %s", [to_retry])

    # A worker of another queue leads housekeeping for the whole fleet.
    with Base(dsn, queue="other.queue", orphan_after=600) as keeper:
        for _ in range(2):
            keeper.housekeeping()  # raised "channel name too long" before
    assert task_state(conn, abandoned)[0] == jm.Status.WAITING
    assert task_state(conn, held)[0] == jm.Status.WAITING
    assert error_types(conn, held) == ["WorkerDied"]
    with jm.Admin(dsn) as admin:
        admin.retry(to_retry)
        admin.cancel(to_cancel)
        admin.pause(LONG)
        admin.resume(LONG)
    assert task_state(conn, to_retry)[0] == jm.Status.WAITING
    assert task_state(conn, to_cancel)[0] == jm.Status.FAILED

    # And a job_machine worker serves the queue, named in full.
    with Base(dsn, queue=LONG) as w:
        while w.work_once():
            pass
    assert sorted(t.id for t in w.seen) == sorted([abandoned, held, to_retry])


@pytest.mark.parametrize("name", NAMES)
def test_client_worker_and_admin_serve_any_name(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any], name: str
) -> None:
    """A worker woken by LISTEN on the queue (a timeout far away), and a
    Perl listener (``LISTEN "jm:<name>"``) hears the same send."""
    perl_listener = psycopg.connect(dsn, autocommit=True)
    try:
        perl_listener.execute(f'LISTEN "jm:{name}"')
        w = Base(dsn, queue=jm.Exact(name) if name.endswith("*") else name, timeout=300)
        with serving(w):
            wait_until(
                lambda: (
                    w._subscriber.listener is not None
                    and queue_channel(name) in w._subscriber.listener.channels
                ),
                10,
                "the worker LISTENs",
            )
            tid = client.send({"n": 1}, queue=name)
            assert client.wait(tid, timeout=10) == {"echo": {"n": 1}}
        heard = [n.channel for n in perl_listener.notifies(timeout=1, stop_after=1)]
        assert heard == [f"jm:{name}"]
    finally:
        perl_listener.close()
    assert w.seen[0].queue == name
    with jm.Admin(dsn) as admin:
        assert name in admin.queues()
        admin.pause(name)
        admin.resume(name)
        assert admin.task_info(tid).queue == name
        assert [t.id for t in admin.list_tasks(queue=name)] == [tid]


def test_a_pattern_serves_queues_with_any_name_below_it(dsn: str, client: jm.Client) -> None:
    """``gl.*`` serves ``gl.Email Sender`` and ``gl.*`` (a name), woken on
    their channels once housekeeping or the new-queue notice adds them."""
    w = Base(dsn, queue="gl.*", timeout=300)
    with serving(w):
        ids = [client.send(i, queue=q) for i, q in enumerate(["gl.Email Sender", "gl.*", "gl.a/b"])]
        for tid in ids:
            assert client.wait(tid, timeout=10) is not None
    assert sorted(t.queue for t in w.seen) == ["gl.*", "gl.Email Sender", "gl.a/b"]


def test_a_long_name_wakes_job_machine_and_perl_listeners_on_the_truncated_channel(
    dsn: str, client: jm.Client
) -> None:
    """PostgreSQL truncates Perl's ``LISTEN "jm:<100 bytes>"`` to 63 bytes:
    job_machine listens on that channel and notifies it (the name in full
    was refused before)."""
    perl_listener = psycopg.connect(dsn, autocommit=True)
    try:
        perl_listener.execute(f'LISTEN "jm:{LONG}"')  # NOTICE: truncated
        listening = perl_listener.execute("SELECT pg_listening_channels()").fetchall()
        assert listening == [(queue_channel(LONG),)]
        w = Base(dsn, queue=LONG, timeout=300)
        with serving(w):
            wait_until(
                lambda: (
                    w._subscriber.listener is not None
                    and queue_channel(LONG) in w._subscriber.listener.channels
                ),
                10,
                "the worker LISTENs",
            )
            tid = client.send("python", queue=LONG)
            assert client.wait(tid, timeout=10) == {"echo": "python"}
            perl = Perl(dsn)  # a Perl client's NOTIFY "jm:<100 bytes>" wakes the worker
            try:
                ptid = perl.send(LONG, "perl")
            finally:
                perl.close()
            assert client.wait(ptid, timeout=10) == {"echo": "perl"}
        heard = {n.channel for n in perl_listener.notifies(timeout=1, stop_after=2)}
        assert heard == {queue_channel(LONG)}
    finally:
        perl_listener.close()


def test_server_side_channel_function_truncates_as_listen_does(
    conn: psycopg.Connection[Any],
) -> None:
    for name in [*NAMES, LONG, "q" * 60, "q" + "ø" * 40, "ø" * 31]:
        row = conn.execute("SELECT jobmachine.queue_channel(%s)", [name]).fetchone()
        assert row == (queue_channel(name),)
    conn.execute(f'LISTEN "jm:{"q" + "ø" * 40}"')
    heard = conn.execute("SELECT pg_listening_channels()").fetchall()
    assert (queue_channel("q" + "ø" * 40),) in heard
    conn.execute("UNLISTEN *")


def test_exact_serves_a_queue_named_like_a_pattern_and_only_it(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    other = client.send("below", queue="rep.x")
    mine = client.send("mine", queue="rep.*")
    with Base(dsn, queue=jm.Exact("rep.*")) as w:
        while w.work_once():
            pass
    assert [t.id for t in w.seen] == [mine]
    assert task_state(conn, other)[0] == jm.Status.WAITING
