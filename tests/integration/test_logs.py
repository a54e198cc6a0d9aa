"""`job-machine worker --log-format json`: a real worker process whose
stderr is one JSON object per line, with the task's fields on every record
about a task, and secrets scrubbed."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg.conninfo import make_conninfo

import job_machine as jm
from job_machine.logging import JsonFormatter
from tests.integration.test_web import TOKEN, web_process
from tests.support.procs import wait_until

pytestmark = pytest.mark.db

ROOT = Path(__file__).resolve().parents[2]
SECRET = "S3cret-Passw0rd-never-logged"


def _lines(path: Path) -> list[dict[str, Any]]:
    """The complete lines written so far, each parsed as JSON (a line that
    is not JSON fails the test)."""
    text = path.read_text("utf-8")
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def test_a_worker_logs_one_json_object_per_line(dsn: str, tmp_path: Path) -> None:
    # The password is in the DSN the worker gets (the test server trusts
    # local connections, so any password connects): it must never be logged.
    secret_dsn = make_conninfo(dsn, password=SECRET)
    log = tmp_path / "worker.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        *(sys.executable, "-m", "job_machine.cli", "worker", "tests.support.log_workers:Chatty"),
        *("--log-format", "json", "--retries", "1", "--retry-backoff", "0"),
        *("--dsn", secret_dsn),
    ]
    with log.open("w") as err:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        with jm.Client(dsn) as client:
            hello = client.send("hello", queue="logs.q")
            assert client.wait(hello, timeout=60) == "hello"
            failing = client.send({"fail": f"wrong password {SECRET} \x1b[31m"}, queue="logs.q")

            def failed() -> list[dict[str, Any]]:
                assert proc.poll() is None, log.read_text()
                return [r for r in _lines(log) if r["level"] == "ERROR"]

            wait_until(failed, 60, "the task's failure in the log")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()

    raw = log.read_text("utf-8")
    assert SECRET not in raw and "\x1b" not in raw
    records = _lines(log)
    assert len(records) == len(raw.splitlines())  # every line is one object
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    assert all(r.get("worker_id") is not None for r in records if "task_id" in r)
    worker_id = next(r["worker_id"] for r in records if "task_id" in r)
    assert isinstance(worker_id, int)
    assert all(r.get("worker_id") in (worker_id, None) for r in records)

    said = [r for r in records if r["logger"] == "tests.chatty"]
    assert [(r["message"], r["task_id"], r["queue"], r["attempt"]) for r in said] == [
        ("said hello", hello, "logs.q", 1)
    ]
    about = [r for r in records if r.get("task_id") == failing]
    assert [(r["level"], r["queue"], r["attempt"]) for r in about] == [
        ("WARNING", "logs.q", 1),
        ("ERROR", "logs.q", 2),
    ]
    # The error's repr shows the escape as text; the secret is gone.
    assert "wrong password ******** \\x1b[31m" in about[-1]["message"]
    starting = next(r for r in records if r["message"].startswith("starting Chatty"))
    assert starting["logger"] == "job_machine.cli"


def test_the_formatter_in_a_program_of_ones_own() -> None:
    """JsonFormatter scrubs the DSN's password and a given secret, writes the
    task fields and any other ``extra=``, escapes control characters, and
    leaves a task field that is None out."""
    formatter = JsonFormatter(dsn="postgresql://u:pa55-w0rd-1234@db/x", secrets=["tok-123456"])
    logger = logging.getLogger("tests.logs.own")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        fields = {"task_id": 7, "queue": "q", "attempt": 2, "worker_id": None}
        logger.warning(
            "%s and %s\x1b[2J",
            "pa55-w0rd-1234",
            "tok-123456",
            extra={**fields, "mine": "tok-123456"},
        )
    finally:
        logger.removeHandler(handler)
    text = formatter.format(records[0])
    assert "\n" not in text and "\x1b" not in text
    line = json.loads(text)
    assert line["message"] == "******** and ********\x1b[2J"
    assert (line["task_id"], line["queue"], line["attempt"]) == (7, "q", 2)
    assert "worker_id" not in line
    assert line["mine"] == "********"
    assert line["level"] == "WARNING" and line["logger"] == "tests.logs.own"


def test_the_dashboard_logs_json_too(dsn: str) -> None:
    """`job-machine web --log-format json`: its own records and uvicorn's
    (startup, each request) are JSON lines, with no secret in them."""
    with web_process(dsn, "--log-format", "json") as (url, proc, secret):
        assert httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).is_success
        # Secrets in a request's URL (the access log shows it): the DSN's password, the token.
        assert httpx.get(url + f"/login?token={secret}", timeout=10).status_code == 401
        assert httpx.get(url + f"/login?token={TOKEN}", timeout=10).status_code == 303
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert secret not in out and TOKEN not in out
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    loggers = {r["logger"] for r in records}
    assert {"job_machine.web", "uvicorn.error", "uvicorn.access"} <= loggers, out
    assert any("/metrics" in r["message"] for r in records if r["logger"] == "uvicorn.access")


def test_the_formatter_scrubs_the_password_of_each_dsn() -> None:
    """A worker's DSN and its listen_dsn: both passwords are scrubbed."""
    formatter = JsonFormatter(
        dsn=["host=a password=first-pw-1234", "postgresql://u:second-pw-5678@b/x"]
    )
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "%s %s", ("first-pw-1234", "second-pw-5678"), None
    )
    assert json.loads(formatter.format(record))["message"] == "******** ********"
