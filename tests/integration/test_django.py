"""The Django tasks backend (job_machine.contrib.django) in a real Django project.

The project is tests/django_project (settings and task functions), on the
test's own database. Enqueueing runs on Django's connection, inside Django's
transactions; the tasks run in a real ``manage.py job_machine_worker``
process (``python -m django job_machine_worker``), and the results are read
back in this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import job_machine

if os.environ.get("CI"):
    import django  # CI installs the test extra, which has Django: never skip there
else:
    django = pytest.importorskip("django")

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, connections, transaction
from django.utils import timezone

from tests.support.procs import wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def django_dsn(dsn: str) -> Iterator[str]:
    """Django configured with the test project, its default database the test's."""
    from tests.django_project.settings import database, settings  # noqa: PLC0415

    if not django_settings.configured:
        django_settings.configure(**settings(dsn))
        django.setup()
    else:
        connections.close_all()
        django_settings.DATABASES["default"].update(database(dsn))
        with contextlib.suppress(AttributeError):  # none made in this thread yet
            del connections["default"]
    yield dsn
    connections.close_all()


@pytest.fixture
def tasks(django_dsn: str) -> Any:
    """The project's task functions (importable once Django is set up)."""
    from tests.django_project import tasks  # noqa: PLC0415

    return tasks


def compat() -> Any:
    from job_machine.contrib.django import _compat  # noqa: PLC0415

    return _compat


def task_row(conn: psycopg.Connection[Any], task_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        """SELECT c.name AS queue, t.parameters, t.priority, t.status, t.max_attempts,
                  t.run_after, t.started
             FROM jobmachine.task t JOIN jobmachine.class c USING (class_id)
            WHERE t.task_id = %s""",
        [int(task_id)],
    ).fetchone()
    if row is None:
        return None
    keys = ("queue", "parameters", "priority", "status", "max_attempts", "run_after", "started")
    return dict(zip(keys, row, strict=True))


def task_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM jobmachine.task").fetchone()
    assert row is not None
    return int(row[0])


class WorkerProcess:
    """``python -m django job_machine_worker`` on the test's database."""

    def __init__(self, dsn: str, log_dir: Path, name: str, *args: str) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = log_dir / f"{name}.stderr"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        env["JOB_MACHINE_DJANGO_DSN"] = dsn
        env["DJANGO_SETTINGS_MODULE"] = "tests.django_project.settings"
        with open(self.log_path, "wb") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "django", "job_machine_worker", *args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def describe(self) -> str:
        return f"--- {self.name} pid={self.pid} rc={self.returncode} ---\n{self.log()}"

    def stop(self, timeout: float = 20.0) -> int:
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)
            raise AssertionError(f"worker ignored SIGTERM\n{self.describe()}") from None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


@pytest.fixture
def start_worker(django_dsn: str, tmp_path: Path) -> Iterator[Any]:
    started: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        worker = WorkerProcess(django_dsn, tmp_path, f"worker{len(started)}", *args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


def finished(*results: Any) -> bool:
    for result in results:
        if not result.is_finished:
            result.refresh()
    return all(r.is_finished for r in results)


# -- enqueueing ---------------------------------------------------------------


def test_enqueue_sends_plain_json_and_reads_back(tasks: Any, conn: psycopg.Connection[Any]) -> None:
    c = compat()
    result = tasks.add.enqueue(2, 3)
    assert result.status == c.READY
    assert result.id.isdigit()
    assert result.backend == "default"
    assert result.enqueued_at is not None and timezone.is_aware(result.enqueued_at)
    row = task_row(conn, result.id)
    assert row is not None
    assert row["queue"] == "django.default"
    assert json.loads(row["parameters"]) == {
        "task": "tests.django_project.tasks.add",
        "args": [2, 3],
        "kwargs": {},
    }
    assert (row["priority"], row["status"], row["max_attempts"]) == (0, 0, 1)

    # queue, priority and keyword arguments map onto job_machine's
    shouted = tasks.shout.using(priority=-100).enqueue("hi", times=2)
    row = task_row(conn, shouted.id)
    assert row is not None
    assert (row["queue"], row["priority"]) == ("django.emails", -100)
    assert json.loads(row["parameters"])["kwargs"] == {"times": 2}
    assert task_row(conn, tasks.shout.enqueue("x").id)["priority"] == 10  # type: ignore[index]

    # read back, by the backend or by the task
    again = tasks.add.get_result(result.id)
    assert again.status == c.READY
    assert again.args == [2, 3] and again.kwargs == {}
    assert again.task.func is tasks.add.func
    assert again.task.queue_name == "default"
    assert again.enqueued_at is not None and again.started_at is None
    assert again.attempts == 0 and again.errors == []
    with pytest.raises(ValueError, match="not finished"):
        _ = again.return_value
    with pytest.raises(c.TaskResultMismatch):
        tasks.shout.get_result(result.id)
    backend = c.task_backends["default"]
    for missing in ("999999", "abc", "", "-1"):
        with pytest.raises(c.TaskResultDoesNotExist):
            backend.get_result(missing)


def test_run_after_and_invalid_tasks(tasks: Any, conn: psycopg.Connection[Any]) -> None:
    c = compat()
    when = timezone.now() + timedelta(hours=1)
    result = tasks.add.using(run_after=when).enqueue(1, 1)
    row = task_row(conn, result.id)
    assert row is not None and row["run_after"] == when
    with pytest.raises(c.InvalidTask):
        tasks.add.using(queue_name="nope").enqueue(1, 1)  # not in QUEUES
    with pytest.raises(c.InvalidTask):
        tasks.add.using(priority=101)
    with pytest.raises(TypeError):
        tasks.add.enqueue(object(), 1)
    assert task_count(conn) == 1


def test_enqueue_opens_djangos_connection(tasks: Any, conn: psycopg.Connection[Any]) -> None:
    connections["default"].close()
    assert connection.connection is None
    result = tasks.add.enqueue(1, 2)
    assert connection.connection is not None
    assert isinstance(connection.connection, psycopg.Connection)
    assert task_row(conn, result.id) is not None


def test_enqueue_is_part_of_djangos_transaction(tasks: Any, conn: psycopg.Connection[Any]) -> None:
    c = compat()
    # The first statement of the block: the task exists only once it commits.
    with transaction.atomic():
        committed = tasks.add.enqueue(1, 1)
        assert task_row(conn, committed.id) is None  # not visible to others yet
        assert tasks.add.get_result(committed.id).status == c.READY  # but to itself
    assert task_row(conn, committed.id) is not None

    # Rolled back: no row, ever.
    ids = []
    with pytest.raises(RuntimeError), transaction.atomic():
        ids.append(tasks.add.enqueue(2, 2).id)
        raise RuntimeError("roll back")
    with pytest.raises(RuntimeError), transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("SELECT 1")  # Django's transaction begun by the ORM first
        ids.append(tasks.add.enqueue(3, 3).id)
        raise RuntimeError("roll back")
    # A savepoint rolled back inside a transaction that commits.
    with transaction.atomic():
        kept = tasks.add.enqueue(4, 4)
        with pytest.raises(RuntimeError), transaction.atomic():
            ids.append(tasks.add.enqueue(5, 5).id)
            raise RuntimeError("roll back the savepoint")
    assert task_row(conn, kept.id) is not None
    for task_id in ids:
        assert task_row(conn, task_id) is None
        with pytest.raises(c.TaskResultDoesNotExist):
            tasks.add.get_result(task_id)
    assert task_count(conn) == 2
    # Django's autocommit is back on, and the connection usable.
    assert connection.get_autocommit()
    assert tasks.add.enqueue(6, 6).status == c.READY


def test_enqueue_in_a_broken_atomic_block_is_refused(tasks: Any) -> None:
    from django.db import DatabaseError  # noqa: PLC0415
    from django.db.transaction import TransactionManagementError  # noqa: PLC0415

    with transaction.atomic():
        with (
            pytest.raises(DatabaseError),
            transaction.atomic(savepoint=False),
            connection.cursor() as cur,
        ):
            cur.execute("SELECT 1/0")
        with pytest.raises(TransactionManagementError):
            tasks.add.enqueue(1, 1)
        transaction.set_rollback(True)


async def test_aenqueue_and_arefresh(tasks: Any, conn: psycopg.Connection[Any]) -> None:
    from asgiref.sync import sync_to_async  # noqa: PLC0415

    c = compat()
    try:
        result = await tasks.double.aenqueue(4)
        assert result.status == c.READY
        assert task_row(conn, result.id) is not None
        await result.arefresh()
        assert result.status == c.READY
        again = await tasks.double.aget_result(result.id)
        assert again.args == [4]
    finally:
        await sync_to_async(connections.close_all)()


# -- running: the worker command in a real process -------------------------------


def test_worker_command_runs_tasks(
    tasks: Any, conn: psycopg.Connection[Any], start_worker: Any, django_dsn: str
) -> None:
    c = compat()
    worker = start_worker("--concurrency", "2")  # tasks in threads, each with its connection
    results = {
        "add": tasks.add.enqueue(2, 3),
        "shout": tasks.shout.enqueue("hi", times=2),
        "whoami": tasks.whoami.enqueue(7),
        "double": tasks.double.enqueue(21),
        "fail": tasks.fail.enqueue("bad input"),
        "late": tasks.add.using(run_after=timezone.now() + timedelta(seconds=1)).enqueue(1, 1),
    }
    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.record.enqueue("never")
        raise RuntimeError("roll back")
    with transaction.atomic():
        results["record"] = tasks.record.enqueue("once")
    # job_machine's own wait, woken by the reply's notification (Django's API only polls)
    with job_machine.Client(django_dsn) as client:
        assert client.wait(int(results["add"].id), timeout=30) == 5
        with pytest.raises(job_machine.TaskFailed, match="bad input"):
            client.wait(int(results["fail"].id), timeout=30)
    wait_until(lambda: finished(*results.values()), 60, "the tasks to finish", [worker])

    added = results["add"]
    assert added.status == c.SUCCESSFUL and added.return_value == 5
    assert added.attempts == 1 and added.worker_ids[0].isdigit()
    assert added.errors == []
    assert added.enqueued_at <= added.started_at <= added.finished_at
    assert results["shout"].return_value["text"] == "HIHI"
    assert results["shout"].return_value["pid"] == worker.pid
    assert results["whoami"].return_value == {"id": results["whoami"].id, "attempt": 1, "x": 7}
    assert results["double"].return_value == 42  # an async task function
    # the rolled-back task never ran: the one that did saw only its own row
    assert results["record"].return_value == 1
    assert [r[0] for r in conn.execute("SELECT word FROM recorded")] == ["once"]
    late = task_row(conn, results["late"].id)
    assert late is not None and late["started"] >= late["run_after"]

    failed = results["fail"]
    assert failed.status == c.FAILED
    with pytest.raises(ValueError, match="failed"):
        _ = failed.return_value
    (error,) = failed.errors
    assert error.exception_class_path == "tests.django_project.tasks.Boom"
    assert error.exception_class is tasks.Boom
    assert "bad input" in error.traceback and "raise Boom(message)" in error.traceback
    assert failed.finished_at is not None

    # Read afresh by id, as another process would.
    backend = c.task_backends["default"]
    again = backend.get_result(added.id)
    assert (again.status, again.return_value) == (c.SUCCESSFUL, 5)
    assert task_count(conn) == len(results)

    assert worker.stop() == 0, worker.describe()
    assert "serving django.default, django.emails" in worker.log()


def test_worker_retries_then_succeeds(
    tasks: Any, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    c = compat()
    worker = start_worker("--backend", "retrying")
    result = tasks.flaky.enqueue("m1")
    assert task_row(conn, result.id)["queue"] == "retrying.default"  # type: ignore[index]

    def retried() -> bool:
        result.refresh()
        return bool(result.errors)

    wait_until(retried, 30, "the first attempt to fail", [worker])
    assert result.status in (c.READY, c.RUNNING, c.SUCCESSFUL)
    wait_until(lambda: finished(result), 30, "the retry", [worker])
    assert result.status == c.SUCCESSFUL and result.return_value == "m1"
    assert result.attempts == 2
    (error,) = result.errors
    assert error.exception_class is RuntimeError
    assert "first attempt of m1" in error.traceback
    assert worker.stop() == 0, worker.describe()


def test_worker_serves_only_the_queues_asked(
    tasks: Any, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    c = compat()
    worker = start_worker("--queue", "emails")
    left = tasks.add.enqueue(1, 2)
    served = tasks.shout.enqueue("a")
    wait_until(lambda: finished(served), 30, "the emails task", [worker])
    assert served.status == c.SUCCESSFUL
    assert worker.stop() == 0, worker.describe()
    left.refresh()
    assert left.status == c.READY
    assert "serving django.emails\n" in worker.log()


def test_worker_command_refuses_other_backends(django_dsn: str) -> None:
    from django.core.management import CommandError, call_command  # noqa: PLC0415

    with pytest.raises(CommandError, match="no task backend 'nope'"):
        call_command("job_machine_worker", backend="nope")
    with pytest.raises(CommandError, match="NUL"):
        call_command("job_machine_worker", queues=["no\x00nul"])


# -- the worker in this process -------------------------------------------------


def test_worker_priority_and_signals(
    tasks: Any, django_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    from job_machine.contrib.django import DjangoTaskWorker  # noqa: PLC0415

    c = compat()
    low = tasks.add.using(priority=-5).enqueue(1, 1)
    high = tasks.add.using(priority=50).enqueue(2, 2)
    failing = tasks.fail.enqueue("oops")
    seen: list[tuple[str, str, str]] = []

    def started(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append(("started", task_result.id, task_result.status))

    def ended(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append(("finished", task_result.id, task_result.status))

    def broken(sender: Any, task_result: Any, **kwargs: Any) -> None:
        raise RuntimeError("a receiver's bug")

    c.task_started.connect(started)
    c.task_finished.connect(ended)
    c.task_finished.connect(broken)  # logged; the task's outcome stands
    worker = DjangoTaskWorker(c.task_backends["default"], handle_signals=False)
    try:
        assert worker.work_once()
        high.refresh()
        low.refresh()
        assert (high.status, high.return_value) == (c.SUCCESSFUL, 4)
        assert low.status == c.READY
        assert worker.work_once() and worker.work_once()  # the rest, best first
        assert not worker.work_once()
    finally:
        worker.close()
        c.task_started.disconnect(started)
        c.task_finished.disconnect(ended)
        c.task_finished.disconnect(broken)
    assert seen == [  # priority 50, then 0, then -5
        ("started", high.id, c.RUNNING),
        ("finished", high.id, c.SUCCESSFUL),
        ("started", failing.id, c.RUNNING),
        ("finished", failing.id, c.FAILED),
        ("started", low.id, c.RUNNING),
        ("finished", low.id, c.SUCCESSFUL),
    ]
    failing.refresh()
    assert failing.status == c.FAILED
    assert failing.errors[0].exception_class is tasks.Boom
    assert len(failing.errors) == 1  # not the receiver's error
    broken_logged = [r for r in caplog.records if "receiver of Django's task signal" in r.message]
    assert len(broken_logged) == 3


def test_get_result_of_a_task_that_is_not_djangos(tasks: Any, dsn: str) -> None:
    c = compat()
    with job_machine.Client(dsn) as client:
        plain = client.send({"n": 1}, "django.default")
        other = client.send({"task": "x", "args": [], "kwargs": {}}, "elsewhere")
    for task_id in (plain, other):
        with pytest.raises(c.TaskResultDoesNotExist):
            c.task_backends["default"].get_result(str(task_id))


# -- configuration and errors, no database -------------------------------------------


def test_backend_options_are_checked(django_dsn: str) -> None:
    from job_machine.contrib.django import JobMachineBackend  # noqa: PLC0415

    with pytest.raises(ImproperlyConfigured, match="unknown option"):
        JobMachineBackend("x", {"OPTIONS": {"ATTEMTPS": 1}})
    with pytest.raises(ImproperlyConfigured, match="ATTEMPTS"):
        JobMachineBackend("x", {"OPTIONS": {"ATTEMPTS": 0}})
    backend = JobMachineBackend("x", {"OPTIONS": {"DATABASE": "nope"}})
    assert [m.id for m in backend.check()] == ["job_machine.E001"]
    c = compat()
    assert list(c.task_backends["default"].check()) == []
    # what the worker serves, and where it connects
    assert backend.worker_queues() == ["django.default"]
    assert JobMachineBackend("y", {"QUEUES": []}).worker_queues() == ["django.**"]
    with pytest.raises(ImproperlyConfigured):
        JobMachineBackend("z", {"QUEUES": [], "OPTIONS": {"QUEUE_PREFIX": ""}}).worker_queues()
    dsn = psycopg.conninfo.conninfo_to_dict(c.task_backends["default"].worker_dsn())
    assert dsn["dbname"] == psycopg.conninfo.conninfo_to_dict(django_dsn)["dbname"]
    assert "cursor_factory" not in dsn and "context" not in dsn


def test_exception_paths_from_tracebacks() -> None:
    from job_machine.contrib.django.backend import exception_path, task_error  # noqa: PLC0415

    def trace_of(ex: BaseException) -> tuple[str, str, str]:
        import traceback  # noqa: PLC0415

        try:
            raise ex
        except BaseException as raised:
            trace = "".join(traceback.format_exception(raised))
            return type(raised).__qualname__, trace, str(raised)

    assert exception_path(*trace_of(ValueError("a\nb: c"))) == "builtins.ValueError"
    assert exception_path(*trace_of(KeyError())) == "builtins.KeyError"
    assert exception_path(*trace_of(psycopg.errors.UniqueViolation("x"))) == (
        "psycopg.errors.UniqueViolation"
    )
    assert exception_path(*trace_of(ExceptionGroup("g", [OSError("o")]))) == (
        "builtins.ExceptionGroup"
    )
    with_note = ImproperlyConfigured("x")
    with_note.add_note("ImproperlyConfigured: x")
    assert exception_path(*trace_of(with_note)) == "django.core.exceptions.ImproperlyConfigured"
    qualname, trace, _ = trace_of(ImproperlyConfigured("y"))
    assert exception_path(qualname, trace) == "django.core.exceptions.ImproperlyConfigured"
    assert exception_path("Gone", "no traceback line") == "__main__.Gone"
    died = task_error({"type": "WorkerDied", "message": "worker 3 ended", "attempt": 1})
    assert died.exception_class_path == "job_machine.contrib.django.WorkerError"
    assert "WorkerDied: worker 3 ended" in died.traceback
    from job_machine.contrib.django import WorkerError  # noqa: PLC0415

    assert died.exception_class is WorkerError
