"""Bounded queues (issue 15, item 3): housekeeping removes the queues that
have no task, are not paused, and were neither created nor paused or
resumed for a day (store.QUEUE_PRUNE_AFTER); a send to a queue being
removed waits for the removal and creates the queue again, instead of
failing on the foreign key; and a worker subscribed to ``**`` stops serving
a removed queue."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import psycopg
import pytest

import job_machine as jm
from job_machine._sync.store import QUEUE_PRUNE_AFTER
from tests.support.procs import wait_until
from tests.support.workers import Base


def queues(conn: psycopg.Connection[Any]) -> list[str]:
    return [n for (n,) in conn.execute("SELECT name FROM jobmachine.class ORDER BY name")]


def add_queue(
    conn: psycopg.Connection[Any],
    name: str,
    age: str,
    *,
    modified: str | None = None,
    paused: bool = False,
) -> None:
    """A queue created ``age`` ago (and last modified ``modified`` ago)."""
    conn.execute(
        "INSERT INTO jobmachine.class (name, created, modified, paused)"
        " VALUES (%s, now() - %s::interval, now() - %s::interval, %s)",
        [name, age, modified or age, paused],
    )


def test_housekeeping_removes_the_empty_unused_queues_only(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    assert QUEUE_PRUNE_AFTER == 86400.0  # the age docs/features.md states
    add_queue(conn, "old.empty", "2 days")
    add_queue(conn, "new.empty", "1 hour")
    add_queue(conn, "old.paused", "2 days", paused=True)
    add_queue(conn, "old.resumed", "2 days", modified="1 hour")
    for name in ("old.waiting", "old.done", "old.kept"):
        add_queue(conn, name, "2 days")
    with jm.Client(dsn) as client:
        client.send({}, "old.waiting")
        done = client.send({}, "old.done")
        kept = client.send({}, "old.kept", remove_after=timedelta(days=7))
    conn.execute(
        "UPDATE jobmachine.task SET status = 200, modified = now() - CASE task_id"
        " WHEN %s THEN interval '40 days' ELSE interval '1 day' END WHERE task_id = ANY(%s)",
        [done, [done, kept]],
    )
    with Base(dsn, queue="nothing", handle_signals=False) as worker:
        counts = worker.housekeeping()
        # The done task is removed by retention first, then its queue.
        assert (counts.removed, counts.pruned) == (1, 2)
        assert queues(conn) == [
            "new.empty",
            "old.kept",
            "old.paused",
            "old.resumed",
            "old.waiting",
        ]
        assert worker.housekeeping().pruned == 0
    # A send to a removed queue creates it again.
    with jm.Client(dsn) as client:
        client.send({"again": True}, "old.empty")
    assert "old.empty" in queues(conn)


def test_a_queue_a_sender_is_inserting_into_is_not_removed(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """A send inside the caller's open transaction holds its queue's row
    (queue_find(), and the foreign key check): housekeeping skips the queue,
    and the task is there when the caller commits."""
    add_queue(conn, "busy", "2 days")
    with psycopg.connect(dsn) as caller:
        jm.Client(conn=caller).send({"n": 1}, "busy")
        with Base(dsn, queue="nothing", handle_signals=False) as worker:
            assert worker.housekeeping().pruned == 0
        caller.commit()
    assert queues(conn) == ["busy"]
    assert conn.execute("SELECT count(*) FROM jobmachine.task").fetchone() == (1,)


@pytest.mark.parametrize("sender", ["send", "send_many", "send_full"])
def test_a_send_that_meets_a_removal_in_progress_creates_the_queue_again(
    dsn: str, conn: psycopg.Connection[Any], sender: str
) -> None:
    """The race the age alone does not close: a sender looks up a queue that
    housekeeping is removing (its delete not committed yet). Looking it up
    by a plain SELECT, the send then inserted its task with the old
    class_id and failed on the foreign key once the removal committed.
    queue_find() waits for the removal, finds no row, and the statement
    creates the queue again."""
    add_queue(conn, "race.q", "2 days")
    outcome: list[Any] = []

    def send() -> None:
        try:
            with jm.Client(dsn, queue="race.q") as client:
                if sender == "send":
                    outcome.append(client.send({"n": 1}))
                elif sender == "send_many":
                    outcome.append(client.send_many([{"n": 1}])[0])
                else:
                    outcome.append(client.send({"n": 1}, unique_key="k"))
        except Exception as ex:
            outcome.append(ex)

    with psycopg.connect(dsn) as remover:
        # What queue_prune() does, held open: the row locked and deleted.
        remover.execute("DELETE FROM jobmachine.class WHERE name = 'race.q'")
        thread = threading.Thread(target=send)
        thread.start()
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        )

        def send_waits() -> bool:
            assert thread.is_alive(), outcome
            return conn.execute(waiting).fetchone() == (1,)

        wait_until(send_waits, 20, "the send waiting for the removal")
        remover.commit()
    thread.join(20)
    [task_id] = outcome
    assert isinstance(task_id, int), task_id
    assert conn.execute(
        "SELECT c.name FROM jobmachine.task t JOIN jobmachine.class c USING (class_id)"
        " WHERE t.task_id = %s",
        [task_id],
    ).fetchone() == ("race.q",)


def test_a_worker_serving_every_queue_drops_a_removed_one_and_takes_it_back(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    add_queue(conn, "gone.soon", "2 days")
    with Base(dsn, queue="**", handle_signals=False) as worker:
        assert not worker.work_once()
        assert worker._subscriber.served == ["gone.soon"]
        assert worker.housekeeping().pruned == 1
        assert not worker.work_once()
        assert worker._subscriber.served == []
        with jm.Client(dsn) as client:
            client.send({"n": 1}, "gone.soon")
        assert worker.work_once()
        assert worker._subscriber.served == ["gone.soon"]
