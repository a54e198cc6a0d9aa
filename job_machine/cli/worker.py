"""``worker``: run a Worker class or an App's task functions, in this process
or in N supervised ones."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import sys
from typing import Any

import click

import job_machine as jm

from .. import supervisor as _supervisor
from .._dsn import describe_target
from .._format import one_line
from ..channels import Exact
from ._common import (
    _WORKER_OPTIONS,
    ENV_DSN,
    F,
    _check_subscriptions,
    _dsn_option,
    _log_format_option,
    _need_dsn,
    _setup_logging,
    logger,
)

# -- worker ---------------------------------------------------------------------


def _worker_options(f: F) -> F:
    for name, kind, metavar, text in reversed(_WORKER_OPTIONS):
        option = click.option(
            "--" + name.replace("_", "-"), name, type=kind, metavar=metavar, help=text
        )
        f = option(f)
    return f


def _describe(obj: object) -> str:
    if inspect.ismodule(obj):
        return "a module"
    if isinstance(obj, type):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    if callable(obj):
        return "a function"
    return f"a {type(obj).__name__}"


def _import_spec(spec: str, form: str, example: str, hint: str) -> object:
    """Import ``module:name`` (``name`` may be dotted), looking in the working
    directory first; ``hint`` names the argument in errors."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(f"{spec!r} is not {form} (for example {example})", param_hint=hint)
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as ex:
        if ex.name and (module_name == ex.name or module_name.startswith(ex.name + ".")):
            raise click.BadParameter(
                f"no module named {ex.name!r} (looked in {cwd} and the installed packages)",
                param_hint=hint,
            ) from None
        logger.debug("importing %s failed", module_name, exc_info=True)
        raise jm.JobMachineError(
            f"could not import {module_name}: {type(ex).__name__}: {ex} "
            "(--log-level debug shows the traceback)"
        ) from None
    except Exception as ex:
        logger.debug("importing %s failed", module_name, exc_info=True)
        raise jm.JobMachineError(
            f"could not import {module_name}: {type(ex).__name__}: {one_line(ex)} "
            "(--log-level debug shows the traceback)"
        ) from None
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise click.BadParameter(
                f"module {module_name!r} has no {attr!r}", param_hint=hint
            ) from None
    return obj


def _load_app(spec: str) -> jm.App:
    """Import ``module:app``, a :class:`job_machine.App`."""
    obj = _import_spec(spec, "MODULE:APP", "myapp.tasks:app", "'--app'")
    if not isinstance(obj, jm.App):
        raise click.BadParameter(
            f"{spec} is {_describe(obj)}, not a job_machine.App", param_hint="'--app'"
        )
    if not obj.functions:
        raise click.BadParameter(
            f"{spec} has no task functions (decorate some with @app.task)", param_hint="'--app'"
        )
    return obj


def _load_worker_class(spec: str) -> type[jm.Worker] | type[jm.AsyncWorker]:
    """Import ``module:ClassName``, looking in the working directory first."""
    obj = _import_spec(spec, "MODULE:CLASS", "myapp.workers:Accounting", "'MODULE:CLASS'")
    bases = (jm.Worker, jm.AsyncWorker)
    if obj in bases:
        raise click.BadParameter(
            f"{spec} is job_machine's own base class: name your subclass of it",
            param_hint="'MODULE:CLASS'",
        )
    if not (isinstance(obj, type) and issubclass(obj, bases)):
        raise click.BadParameter(
            f"{spec} is {_describe(obj)}, not a subclass of job_machine.Worker "
            "or job_machine.AsyncWorker",
            param_hint="'MODULE:CLASS'",
        )
    if obj.process in (jm.Worker.process, jm.AsyncWorker.process):
        raise click.BadParameter(
            f"{spec} does not override process(task)", param_hint="'MODULE:CLASS'"
        )
    return obj


@click.command()
@click.argument("worker_class", metavar="[MODULE:CLASS]", required=False)
@click.option(
    "--app",
    "app_spec",
    metavar="MODULE:APP",
    help="Serve the task functions of this job_machine.App instead of a Worker class "
    "(docs/tasks.md).",
)
@click.option(
    "-q",
    "--queue",
    "queues",
    multiple=True,
    metavar="QUEUE",
    callback=_check_subscriptions,
    help="A queue to serve, or a pattern: gl.* (the queues one level below gl), "
    "gl.** (every queue below gl); repeat for several. Default: the class's `queue`, "
    "or the queues of the app's task functions.",
)
@click.option(
    "--exact-queue",
    "exact_queues",
    multiple=True,
    metavar="QUEUE",
    callback=_check_subscriptions,
    help="A queue to serve by its exact name, even one ending in * or ** (a Perl "
    "client's queue named `reports.*`, say); repeat for several.",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    metavar="N",
    help="Tasks processed at once (passed as concurrency=N to the class).",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    metavar="N",
    help="Run N worker processes under a supervisor that restarts one that dies "
    "(for CPU-bound work; each process runs --concurrency tasks at once).",
)
@_worker_options
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="Log to stderr from this level up.",
)
@_log_format_option
@_dsn_option
def worker(
    *,
    worker_class: str | None,
    app_spec: str | None,
    queues: tuple[str, ...],
    exact_queues: tuple[str, ...],
    concurrency: int | None,
    processes: int | None,
    log_level: str,
    log_format: str,
    dsn: str | None,
    **options: Any,
) -> None:
    """Run a worker: serve its queues until SIGTERM or Ctrl-C.

    MODULE:CLASS names a subclass of job_machine.Worker or AsyncWorker, for
    example myapp.workers:Accounting; or --app MODULE:APP names a
    job_machine.App, whose task functions are served (under asyncio when one
    of them is an async def). The working directory is searched first. An
    AsyncWorker runs under asyncio. --queue also takes patterns:
    gl.* serves the queues one level below gl, gl.** every queue below it,
    including queues created while it runs. Logs go to stderr. Options left
    out keep the class's own values (job_machine's defaults in brackets).

    On SIGTERM or SIGINT the worker stops claiming, finishes the task in hand
    within --shutdown-grace and exits 0; a second signal exits at once
    (128 + the signal) and the task goes back to waiting.

    With --processes N a supervisor runs N worker processes with these
    options, restarts one that dies (with backoff; it gives up on a crash
    loop, exit 1) and passes SIGTERM and SIGINT on to them.
    """
    _setup_logging(log_level, log_format, [dsn, options.get("listen_dsn")])
    if (worker_class is None) == (app_spec is None):
        raise click.UsageError(
            "name a Worker class (MODULE:CLASS) or an app (--app MODULE:APP), one of them",
            ctx=click.get_current_context(silent=True),
        )
    queues = queues + tuple(Exact(q) for q in exact_queues)
    options["concurrency"] = concurrency
    kwargs = {name: value for name, value in options.items() if value is not None}
    instance: jm.Worker | jm.AsyncWorker
    app: jm.App | None = None
    if app_spec is not None:
        app = _load_app(app_spec)
        target = _need_dsn(dsn)
        if app.dsn is None:  # its functions' own sends go where the worker works
            app.dsn = target
        make = app.async_worker if app.needs_asyncio else app.worker
        name = app_spec
        try:
            instance = make(list(queues) or None, dsn=target, **kwargs)
        except ValueError as ex:
            raise click.UsageError(str(ex), ctx=click.get_current_context(silent=True)) from None
    else:
        assert worker_class is not None
        cls = _load_worker_class(worker_class)
        target = _need_dsn(dsn)
        if not queues and getattr(cls, "queue", None) is None:
            raise click.UsageError(
                f"no queue: pass --queue, or set `queue` on {cls.__name__}",
                ctx=click.get_current_context(silent=True),
            )
        name = cls.__name__
        try:
            instance = cls(target, queue=list(queues) or None, **kwargs)
        except ValueError as ex:
            raise click.UsageError(str(ex), ctx=click.get_current_context(silent=True)) from None
    kind = "asyncio" if isinstance(instance, jm.AsyncWorker) else "sync"
    if processes is not None:
        ctx = click.get_current_context()
        # The worker and app were made to check the arguments once, here:
        # each process makes its own.
        _supervise(
            ctx,
            name=name,
            kind=kind,
            target=target,
            processes=processes,
            grace=instance.shutdown_grace,
        )
        return
    # A supervisor's worker process ends itself to stop a task's attempt
    # (time limit, cancel); a fresh one follows.
    instance.exit_on_stop = _supervisor.watch_supervisor()
    _log_worker_context(instance, log_format)
    logger.info(
        "starting %s (%s) on %s, pid %d, database %s",
        name,
        kind,
        ", ".join(instance.queues),
        os.getpid(),
        describe_target(target),
    )
    if isinstance(instance, jm.AsyncWorker):
        asyncio.run(_receive_then_close(instance, app))
    else:
        try:
            instance.receive()
        finally:
            if app is not None:  # what its functions sent went through its clients
                app.close()
    logger.info("%s stopped", name)


def _child_args(ctx: click.Context) -> list[str]:
    """The arguments of a worker process: the worker command's own, as
    given (not --processes, and not --dsn: it goes in the environment,
    which ps does not show)."""
    args: list[str] = []
    for param in ctx.command.params:
        name = param.name
        if name is None or name in ("processes", "dsn"):
            continue
        if ctx.get_parameter_source(name) in (None, click.core.ParameterSource.DEFAULT):
            continue
        value = ctx.params.get(name)
        if value is None:
            continue
        if isinstance(param, click.Argument):
            args.append(str(value))
            continue
        assert isinstance(param, click.Option)
        if param.is_flag:
            if value:
                args.append(param.opts[0])
            elif param.secondary_opts:
                args.append(param.secondary_opts[0])
            continue
        for one in value if param.multiple else [value]:
            args += [param.opts[0], str(one)]
    return args


def _supervise(
    ctx: click.Context, *, name: str, kind: str, target: str, processes: int, grace: float
) -> None:
    """Run ``processes`` worker processes of the command in ``ctx`` until a
    signal (docs/cli.md, "Worker processes")."""
    env = dict(os.environ)
    env[ENV_DSN] = target
    env[_supervisor.ENV_SUPERVISOR] = str(os.getpid())
    command = _supervisor.child_command(_child_args(ctx))
    logger.info(
        "supervising %d worker processes of %s (%s), pid %d, database %s",
        processes,
        name,
        kind,
        os.getpid(),
        describe_target(target),
    )
    code = _supervisor.Supervisor(command, env, processes, shutdown_grace=grace).run()
    if code:
        ctx.exit(code)


def _log_worker_context(instance: jm.Worker | jm.AsyncWorker, log_format: str) -> None:
    """JSON logs: worker_id on every record, and the fields of the task in
    hand on the records logged inside process() (the user's own too)."""
    if log_format == "json":
        from ..logging import WorkerContext  # noqa: PLC0415

        for handler in logging.getLogger().handlers:
            handler.addFilter(WorkerContext(instance))


async def _receive_then_close(worker: jm.AsyncWorker, app: jm.App | None) -> None:
    """Serve, then close the app's clients on the loop they were used on."""
    try:
        await worker.receive()
    finally:
        if app is not None:
            await app.aclose()
