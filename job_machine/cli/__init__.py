"""The ``job-machine`` command line: install the schema, run a worker, send
tasks, and look at and act on the machine. ``job-machine --help`` lists the
commands; docs/cli.md describes each one.

Every command that needs a database takes ``--dsn``, by default
``$JOB_MACHINE_DSN``. Errors are one line on stderr: exit code 2 for a
usage error (a bad option, argument or JSON), 1 for a failure at run time
(the database, a task that failed, an action the task's state forbids).
When stdout is not a terminal, tables are tab-separated lines with a header
line, without colors; ``--json`` gives scripts the same data as JSON.

The package: a module per command group (install, worker, send, status,
tasks, queues, schedules, admin, serve, demo) defines its click commands
without registering them; this module makes the ``job-machine`` group and
registers them all in :data:`COMMANDS`. ``_common`` holds what they share:
exit codes, options, argument checks, output and logging setup.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

import job_machine as jm

from .._format import one_line
from ._common import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE
from .admin import purge, reset, workers
from .demo import demo
from .install import install, migrate, roles
from .limits import limits
from .queues import queues
from .schedules import schedules
from .send import send
from .serve import metrics, web
from .status import history, status
from .tasks import tasks
from .worker import worker

__all__ = ["COMMANDS", "cli", "demo_main", "main"]

# -- the command group --------------------------------------------------------


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(jm.__version__, "-V", "--version", prog_name="job-machine")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Hand work from one process to another through PostgreSQL.

    Commands that need a database take --dsn, by default $JOB_MACHINE_DSN.
    Exit codes: 0 success, 1 failure, 2 usage error.
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


#: Every command of ``job-machine``, registered here and only here; each is
#: defined in the module of its group (install.py, worker.py, send.py, ...).
COMMANDS: tuple[click.Command, ...] = (
    install,
    migrate,
    roles,
    worker,
    send,
    status,
    history,
    tasks,
    queues,
    schedules,
    limits,
    workers,
    purge,
    reset,
    web,
    metrics,
    demo,
)
for _command in COMMANDS:
    cli.add_command(_command)

# -- entry points ----------------------------------------------------------------------------


def _error(message: str, code: int) -> int:
    click.echo(f"Error: {message}", err=True)
    return code


def _run(command: click.Command, argv: Sequence[str] | None, prog_name: str) -> int:
    """Run a click command; turn every expected error into one line on stderr
    and an exit code (2 usage, 1 failure, 130 interrupted)."""
    try:
        rv = command.main(
            args=list(argv) if argv is not None else None,
            prog_name=prog_name,
            standalone_mode=False,
        )
    except click.UsageError as ex:
        hint = f" (see '{ex.ctx.command_path} --help')" if ex.ctx is not None else ""
        return _error(one_line(Exception(ex.format_message())) + hint, EXIT_USAGE)
    except click.ClickException as ex:
        return _error(one_line(Exception(ex.format_message())), ex.exit_code)
    except click.Abort:
        return _error("interrupted", EXIT_INTERRUPTED)
    except (jm.JobMachineError, ValueError) as ex:
        return _error(one_line(ex), EXIT_FAILURE)
    return rv if isinstance(rv, int) else 0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``job-machine`` script and ``python -m job_machine.cli``."""
    sys.exit(_run(cli, argv, "job-machine"))


def demo_main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m job_machine.demo``: ``job-machine demo``."""
    sys.exit(_run(demo, argv, "python -m job_machine.demo"))
