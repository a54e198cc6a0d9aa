"""Text a sender chose never reaches an operator's terminal or a log as
control characters: `job-machine tasks show` and `tasks list`, the log
lines of `job-machine work` and of the dashboard (issue 15, item 4)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

import job_machine as jm
from job_machine._printable import printable
from tests.integration.test_web import dashboard

ROOT = Path(__file__).resolve().parents[2]
#: Retitles the terminal window, rings, clears the screen, starts a fake
#: log line, moves back over a line, and reverses what follows.
HOSTILE = "ok\x1b]0;pwned\x07\x1b[2J\nINFO fake line\r\x1b[1A\x9b2J\u202edesrever"
RAW = ("\x1b", "\x07", "\r", "\x9b", "\u202e", "\nINFO fake line")


def _cli(dsn: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "job_machine.cli", *args, "--dsn", dsn],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def _assert_printable(text: str, escaped: bool = True) -> None:
    """No raw control character of HOSTILE in ``text``; with ``escaped``,
    HOSTILE shown with escapes (a table cell has its newline made a space)."""
    for raw in RAW:
        assert raw not in text, (raw, text)
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in text
    if escaped:
        assert "\\x1b[2J\\x0aINFO fake line\\x0d\\x1b[1A\\x9b2J\\u202e" in text


def test_printable_escapes_controls_and_keeps_the_rest() -> None:
    assert printable("a\tb ü 漢 \\x1b") == "a\tb ü 漢 \\x1b"  # as it was
    assert printable("a\nb\x1b[0m") == "a\\x0ab\\x1b[0m"
    assert printable("a\nb\r\n", lines=True) == "a\nb\\x0d\n"
    assert printable(printable(HOSTILE)) == printable(HOSTILE)


def test_tasks_show_and_list_print_no_control_character(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    task_id = client.send({"text": HOSTILE}, queue="mail.send", title=HOSTILE)
    error = {
        "type": HOSTILE,
        "message": HOSTILE,
        "traceback": f"Traceback\n{HOSTILE}\n",
        "attempt": 1,
    }
    conn.execute(
        "INSERT INTO jobmachine.result (task_id, result, resulttype) VALUES (%s, %s, 'error')",
        (task_id, json.dumps(error)),
    )
    # A queue name job_machine refuses, made by hand (or by a Perl sender).
    conn.execute("INSERT INTO jobmachine.class (name) VALUES (%s)", (HOSTILE,))
    conn.execute(
        "INSERT INTO jobmachine.task (class_id, parameters, status, title)"
        " SELECT class_id, '1', 0, %s FROM jobmachine.class WHERE name = %s",
        (HOSTILE, HOSTILE),
    )
    shown = _cli(dsn, "tasks", "show", str(task_id), "--traceback")
    _assert_printable(shown)
    assert "\n    Traceback\n" in shown  # a traceback keeps its lines
    listed = _cli(dsn, "tasks", "list")
    _assert_printable(listed, escaped=False)


def test_worker_log_lines_print_no_control_character() -> None:
    """`job-machine work` logs through the handler _setup_logging makes."""
    code = (
        "import logging, sys\n"
        "from job_machine.cli._common import _setup_logging\n"
        "_setup_logging('info')\n"
        f"log = logging.getLogger('job_machine.worker')\n"
        f"log.info('worker 1: now serving queue %s', {HOSTILE!r})\n"
        f"try:\n    raise ValueError({HOSTILE!r})\n"
        "except ValueError:\n    log.exception('task %d failed', 7)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    _assert_printable(result.stderr)
    assert result.stderr.count("now serving queue") == 1
    assert "Traceback (most recent call last):\n" in result.stderr  # its lines kept


@pytest.mark.parametrize("action", ["pause"])
async def test_dashboard_log_lines_print_no_control_character(
    dsn: str, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture, action: str
) -> None:
    conn.execute("INSERT INTO jobmachine.class (name) VALUES (%s)", (HOSTILE,))
    caplog.set_level(logging.INFO, logger="job_machine.web")
    async with dashboard(dsn) as http:
        await http.get("/locks")
        posted = await http.post(
            f"/do/{action}",
            data={"csrf": http.cookies["jm_csrf"], "target": HOSTILE},
            follow_redirects=False,
        )
    assert posted.status_code == 303
    messages = [r.getMessage() for r in caplog.records if r.name == "job_machine.web"]
    # Any name is a queue now: the hostile one is paused, and the line says so.
    assert any(m.startswith("Queue ") and " paused: " in m for m in messages), messages
    for message in messages:
        _assert_printable(message)
