"""``demo``: watch tasks flow through a throwaway PostgreSQL."""

from __future__ import annotations

import click

from .. import demo as _demo
from ._common import ENV_DSN

# -- demo ---------------------------------------------------------------------------------


@click.command()
@click.option(
    "--dsn",
    metavar="DSN",
    help=f"PostgreSQL to use. Default: start a throwaway embedded PostgreSQL "
    f"(${ENV_DSN} is not read: the demo writes tasks).",
)
@click.option(
    "--tasks",
    "count",
    type=click.IntRange(1, 100_000),
    metavar="N",
    default=10,
    show_default=True,
    help="How many tasks to send.",
)
@click.option(
    "--work",
    type=click.FloatRange(0, 60),
    metavar="SECONDS",
    default=0.1,
    show_default=True,
    help="Seconds each task takes the worker, to watch them flow; 0 measures throughput.",
)
def demo(dsn: str | None, count: int, work: float) -> None:
    """Watch tasks flow: install the schema, start a worker in another
    process, send it tasks and show the replies coming back.

    Without --dsn it starts a throwaway PostgreSQL (pip install
    'job_machine[embedded]').
    """
    _demo.demo(dsn, count, work)
