"""``web`` (the dashboard) and ``metrics`` (Prometheus): the long-running
servers besides the worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

import job_machine as jm

from .._dsn import describe_target
from ._common import (
    _PORT,
    F,
    _dsn_option,
    _log_format_option,
    _need_dsn,
    _setup_logging,
    logger,
)

# -- web ----------------------------------------------------------------------------------


_VISIBLE_TO_PS = "(prefer the variable: a command line is visible to ps)"
#: The dashboard's credentials: (option, environment variable, metavar, help).
_WEB_CREDENTIALS = [
    (
        "--token",
        "JOB_MACHINE_WEB_TOKEN",
        "TOKEN",
        "Ask for this access token (16+ characters) on a login page, or as "
        f"'Authorization: Bearer TOKEN' {_VISIBLE_TO_PS}.",
    ),
    ("--user", "JOB_MACHINE_WEB_USER", "NAME", "Ask for HTTP basic credentials: this user name..."),
    (
        "--password",
        "JOB_MACHINE_WEB_PASSWORD",
        "PASSWORD",
        f"...and this password, 12+ characters {_VISIBLE_TO_PS}.",
    ),
    (
        "--secret",
        "JOB_MACHINE_WEB_SECRET",
        "SECRET",
        "Sign login sessions with this secret (16+ characters), the same for every "
        "dashboard process behind one address; default: a key new in each process "
        f"{_VISIBLE_TO_PS}.",
    ),
]


def _web_credential_options(f: F) -> F:
    for name, envvar, metavar, text in reversed(_WEB_CREDENTIALS):
        option = click.option(name, envvar=envvar, show_envvar=True, metavar=metavar, help=text)
        f = option(f)
    return f


def _seconds_option(
    name: str, kind: click.ParamType[Any], default: float, text: str
) -> Callable[[F], F]:
    """An option of a number of seconds, its default shown."""
    return click.option(
        name, type=kind, default=default, show_default=True, metavar="SECONDS", help=text
    )


@click.command()
@_dsn_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    metavar="ADDRESS",
    help="Address to listen on. Anything but the loopback needs --token or --user/--password.",
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="No credentials at all: anyone who can reach the port reads every task and acts "
    "(loopback only; logged as a warning). Default: a token is made and the URL that "
    "logs in with it printed.",
)
@click.option("--port", type=_PORT, default=8080, show_default=True, help="Port to listen on.")
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Also answer to this host name (repeat for more): a name browsers use to reach "
    "the dashboard, a reverse proxy's. Always answered: 127.0.0.1, localhost, [::1] "
    "and --host; any other is refused.",
)
@_web_credential_options
@click.option("--read-only", is_flag=True, help="Hide every action; refuse action requests.")
@_seconds_option(
    "--refresh", click.IntRange(0, 3600), 5, "How often the overview reloads itself; 0: never."
)
@_seconds_option(
    "--session-lifetime",
    click.IntRange(60, 30 * 86400),
    12 * 3600,
    "How long a login lasts before the browser must log in again.",
)
@_seconds_option(
    "--statement-timeout",
    click.FloatRange(0, 3600),
    10,
    "Cancel a statement of the dashboard that runs longer; 0: the server's setting.",
)
@_log_format_option
def web(*, dsn: str | None, host: str, port: int, log_format: str, **settings: Any) -> None:
    """Serve the admin dashboard: counts, history, tasks, workers, locks,
    and (unless --read-only) retry, cancel, remove, pause, resume and stop,
    each confirmed first.

    It listens on 127.0.0.1 unless told otherwise, and asks for a token it
    makes up, printing the URL that logs in with it (--token, --user and
    --password choose credentials; --no-auth asks for none). Any other
    address needs a token or basic credentials of your own. Needs the web
    extra: pip install 'job_machine[web]'. See docs/dashboard.md.
    """
    target = _need_dsn(dsn)
    try:
        from .. import web as dashboard  # noqa: PLC0415
    except ImportError as ex:
        raise click.ClickException(
            "the dashboard needs the web extra: pip install 'job_machine[web]' "
            f"({(ex.name or 'a module').partition('.')[0]} is not installed)"
        ) from None
    try:
        # token, user, password, secret, no_auth, read_only, refresh,
        # allowed_hosts, session_lifetime, statement_timeout: DashboardConfig's own names.
        config = dashboard.DashboardConfig(target, **settings)
        dashboard.check_exposure(config, host)
    except ValueError as ex:
        raise click.UsageError(str(ex), ctx=click.get_current_context(silent=True)) from None
    _setup_logging("info", log_format, [target], [config.token, config.password, config.secret])
    dashboard.serve(config, host=host, port=port, json_logs=log_format == "json")


# -- metrics ------------------------------------------------------------------------------


@click.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=9187,
    show_default=True,
    help="The port to serve /metrics on (0: any free one, logged).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The address to listen on. The metrics carry queue names and counts and ask "
    "for no credentials: expose them beyond this machine only on a trusted network.",
)
@_dsn_option
def metrics(port: int, host: str, dsn: str | None) -> None:
    """Serve Prometheus metrics on http://HOST:PORT/metrics until SIGTERM or
    Ctrl-C: tasks by queue and state, the oldest waiting age per queue,
    workers running, idle and dead, done and failed counts, paused queues.
    Each scrape reads the database then (a few index reads); nothing runs in
    between. Needs the metrics extra: pip install 'job_machine[metrics]'.
    See docs/observability.md.
    """
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    target = _need_dsn(dsn)
    try:
        from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415

        from ..metrics import JobMachineCollector  # noqa: PLC0415
    except ImportError:
        raise click.ClickException(
            "metrics need the metrics extra: pip install 'job_machine[metrics]' "
            "(prometheus_client is not installed)"
        ) from None
    _setup_logging("info")
    stop = threading.Event()
    with jm.Admin(target) as admin:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(JobMachineCollector(admin))
        server, thread = start_http_server(port, host, registry=registry)
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
        try:
            address = server.server_address
            logger.info(
                "serving metrics of %s on http://%s:%d/metrics",
                describe_target(target),
                f"[{host}]" if ":" in host else host,
                address[1],
            )
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            server.shutdown()
            server.server_close()
            thread.join()
    logger.info("metrics stopped")
