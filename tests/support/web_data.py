"""Tasks for the dashboard's tests: a few queues with tasks in every state,
a day of history, a named lock, and hostile text (script in a payload, a
title, an error, a note and a queue name) that must never run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

import job_machine as jm
from tests.support.workers import Base

#: Sets window.__pwned if a page ever lets it run.
XSS_SCRIPT = "<script>window.__pwned=1</script>"
XSS_IMG = '<img src=x onerror="window.__pwned=1">'
XSS = XSS_SCRIPT + XSS_IMG
#: A queue name job_machine refuses (validate_queue) but a Perl sender, or
#: an INSERT by hand, can create.
XSS_QUEUE = "<script>window.__pwned=1</script>"


class Raises(Base):
    """Fails every task whose data is "bad" with a hostile message."""

    def handle(self, task: jm.Task) -> None:
        if task.data == "bad":
            raise ValueError(f"bad input {XSS}")
        self.reply({"ok": task.data})


@dataclass
class Seeded:
    done: int
    failed: int
    waiting: int
    blocked: int
    parent: int
    hostile: int
    hostile_queue_task: int


def seed(dsn: str, history: bool = False, hostile: bool = True) -> Seeded:
    """Queues mail.send, report.build (paused) and gl.accounting with done,
    failed, waiting, delayed and blocked tasks; a held lock; with
    ``hostile``, script everywhere a user can put text, and a queue whose
    name is a script. ``history`` adds a day of finished tasks spread over
    the hours (for the chart)."""
    with jm.Client(dsn, queue="mail.send") as client:
        done = client.send("hello", title="welcome mail")
        failed = client.send("bad", title="invoice mail")
        client.send_many(["a", "b", "c"], queue="mail.send", title="newsletter")
        with Raises(dsn, queue="mail.send", retries=0) as w:
            while w.work_once():
                pass
        waiting = client.send({"month": "2026-11"}, queue="report.build", title="monthly report")
        client.send_many(list(range(4)), queue="report.build", title="daily report")
        client.send("later", queue="report.build", delay=3600, title="delayed report")
        parent = client.send({"lines": 3}, queue="gl.accounting", title="post ledger")
        blocked = client.send("after", queue="gl.accounting", parents=[parent], title="close books")
        if hostile:
            hostile_id = client.send({"html": XSS}, queue="gl.accounting", title=f"hostile {XSS}")
            client.note(hostile_id, comment=XSS)
        else:
            hostile_id = client.send({"account": 4711}, queue="gl.accounting", title="reconcile")
        client.lock("smtp", expire=600, limit=2)
    with jm.Admin(dsn) as admin:
        admin.pause("report.build")
    with psycopg.connect(dsn, autocommit=True) as conn:
        hostile_queue_task = _hostile_queue_task(conn) if hostile else 0
        if history:
            _history(conn)
    return Seeded(done, failed, waiting, blocked, parent, hostile_id, hostile_queue_task)


def _hostile_queue_task(conn: psycopg.Connection[Any]) -> int:
    conn.execute("INSERT INTO jobmachine.class (name) VALUES (%s)", (XSS_QUEUE,))
    row = conn.execute(
        "INSERT INTO jobmachine.task (class_id, parameters, status, title)"
        " SELECT class_id, %s, 0, %s FROM jobmachine.class WHERE name = %s RETURNING task_id",
        ('{"from": "perl"}', "perl task", XSS_QUEUE),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _history(conn: psycopg.Connection[Any]) -> None:
    """Finished tasks over the last 24 hours: a busy working day, a few failures."""
    conn.execute(
        "INSERT INTO jobmachine.task (class_id, parameters, status, attempts, modified, title)"
        " SELECT c.class_id, '{}', CASE WHEN g % 23 = 0 THEN 900 ELSE 200 END, 1,"
        "        now() - make_interval(hours => (g % 24), mins => (g % 50)), 'history'"
        "   FROM jobmachine.class c, generate_series(1, 2400) g"
        "  WHERE c.name = 'mail.send'"
        "    AND (g % 24) NOT IN (3, 4, 5) AND (g % 7 <> 0 OR g % 24 BETWEEN 9 AND 17)"
    )
