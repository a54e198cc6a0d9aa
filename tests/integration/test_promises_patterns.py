"""docs/features.md, "Routing": a queue a Perl sender creates (no ``jmq``
notification) joins a pattern worker "at the worker's next ``timeout``"."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

import job_machine as jm
from tests.integration.test_perl_compat import Perl
from tests.support.procs import wait_until
from tests.support.rows import task_state
from tests.support.workers import Base, serving

TIMEOUT = 1.0


def _perl_send_to_a_new_queue(dsn: str, queue: str) -> int:
    """A Perl 0.19 client's send: creates the queue's row itself and
    notifies only ``jm:<queue>``, not ``jmq``."""
    perl = Perl(dsn)
    try:
        return perl.send(queue, {"from": "perl"})
    finally:
        perl.close()


def test_an_idle_pattern_worker_serves_a_queue_a_perl_sender_created(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    w = Base(dsn, queue=["gl.*"], timeout=TIMEOUT)
    with jm.Client(dsn) as client, serving(w):
        client.wait(client.send("warm", queue="gl.old"), timeout=10)
        sent = time.monotonic()
        tid = _perl_send_to_a_new_queue(dsn, "gl.new")
        wait_until(lambda: task_state(conn, tid)[0] == 200, 2 * TIMEOUT + 1, "gl.new's task")
        assert time.monotonic() - sent <= 2 * TIMEOUT + 1


def test_a_busy_pattern_worker_serves_a_queue_a_perl_sender_created(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """The same while another queue of the pattern gets a task every 0.3 s,
    so the worker never waits ``timeout`` without a notification: the new
    queue must still join within about two ``timeout``s."""
    w = Base(dsn, queue=["gl.*"], timeout=TIMEOUT)
    stop = threading.Event()

    def feed() -> None:
        with jm.Client(dsn, queue="gl.busy") as feeder:
            while not stop.wait(0.3):  # the load's pace, not a wait for a condition
                feeder.send("busy")

    with jm.Client(dsn) as client, serving(w):
        client.wait(client.send("warm", queue="gl.busy"), timeout=10)
        feeder = threading.Thread(target=feed)
        feeder.start()
        try:
            wait_until(lambda: len(w.seen) >= 3, 10, "the stream to reach the worker")
            sent = time.monotonic()
            tid = _perl_send_to_a_new_queue(dsn, "gl.new")
            wait_until(
                lambda: task_state(conn, tid)[0] == 200,
                2 * TIMEOUT + 2,
                "gl.new's task while gl.busy is busy",
            )
            assert time.monotonic() - sent <= 2 * TIMEOUT + 2
        finally:
            stop.set()
            feeder.join(10)
