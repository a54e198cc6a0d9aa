"""Running the dashboard: the safety checks before listening, then uvicorn."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import sys
from urllib.parse import urlencode

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from .._async.admin import AsyncAdmin
from .._dsn import describe_target
from .._printable import PrintableFilter
from ..errors import JobMachineError, SchemaMissing
from .app import create_app
from .config import DashboardConfig
from .security import LOCAL_HOSTS, Scrubber, host_key, is_loopback

logger = logging.getLogger("job_machine.web")


class ExposureError(ValueError):
    """Listening beyond this machine without credentials."""


def check_exposure(config: DashboardConfig, host: str) -> None:
    """Refuse to listen on anything but the loopback without credentials of
    one's own: a token made up by the dashboard is for the loopback only
    (its login URL is printed, and plain HTTP would carry it across the
    network), and so is ``no_auth``.

    :raises ExposureError: ``host`` is not a loopback address and neither a
        token nor basic credentials are configured.
    """
    chosen = (config.token and not config.token_generated) or config.user
    if not is_loopback(host) and not chosen:
        raise ExposureError(
            f"listening on {host} would let anyone on the network act on your tasks: "
            "give an access token (--token) or basic credentials (--user and --password), "
            "or listen on 127.0.0.1"
        )


def _unspecified(host: str) -> bool:
    """Whether ``host`` is every address (0.0.0.0, ::), which no browser uses as a name."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return host == ""


async def _check_database(config: DashboardConfig) -> int:
    async with AsyncAdmin(config.dsn) as admin:
        version = await admin.schema_version()
    if version is None:
        raise SchemaMissing()
    return version


def serve(
    config: DashboardConfig,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_level: str = "info",
    json_logs: bool = False,
) -> None:
    """Check the exposure and the database, then serve the dashboard until
    SIGINT or SIGTERM. It answers to ``host`` as a host name besides
    ``config.allowed_hosts`` and the loopback names.

    With ``json_logs`` uvicorn's loggers get no handlers of their own: their
    records reach the root logger's handlers (``job-machine web --log-format
    json`` sets a :class:`~job_machine.logging.JsonFormatter` up there).

    :raises ExposureError: see :func:`check_exposure`.
    :raises JobMachineError: the database cannot be reached or has no schema
        (the message names host, port, database and user, never the password).
    """
    check_exposure(config, host)
    scrub = Scrubber(config.dsn, [config.token, config.password])
    try:
        version = asyncio.run(_check_database(config))
    except JobMachineError as ex:
        raise type(ex)(scrub(str(ex))) from None
    named = config.allowed_hosts
    if host_key(host):  # not "" (every address, to uvicorn)
        config = dataclasses.replace(config, allowed_hosts=(*named, host))
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            server_header=False,
            log_config=None if json_logs else LOGGING_CONFIG,
        )
    )
    # uvicorn set its loggers up in Config(); ours need a handler somewhere.
    if not logging.getLogger("job_machine").hasHandlers():
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)-9s %(message)s"))
        logging.getLogger("job_machine").addHandler(handler)
        logging.getLogger("job_machine").setLevel(log_level.upper())
    # Printable first: it formats a record's traceback, which the scrubber then scrubs.
    _install_printable("job_machine", "uvicorn", "uvicorn.error", "uvicorn.access")
    scrub.install("job_machine", "uvicorn", "uvicorn.error", "uvicorn.access")
    base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    logger.info(
        "dashboard of %s (schema version %s)%s at %s/",
        describe_target(config.dsn),
        version,
        ", read-only" if config.read_only else "",
        base,
    )
    if config.no_auth:
        logger.warning(
            "NO AUTHENTICATION (--no-auth): every local user, container sharing this network "
            "and page or server able to send requests to %s can read every task's data, "
            "results and tracebacks%s",
            base,
            "" if config.read_only else ", and retry, cancel, remove, pause and stop",
        )
    elif config.token_generated:
        # Printed once, past the log handlers (which scrub the token out).
        url = f"{base}/login?{urlencode({'token': config.token})}"
        print(
            f"\nTo open the dashboard, visit this URL (it logs you in):\n\n    {url}\n\n"
            "Give --token or $JOB_MACHINE_WEB_TOKEN to choose the token.\n",
            file=sys.stderr,
            flush=True,
        )
    if not named and _unspecified(host):
        logger.warning(
            "answering to the host names %s only: give --allowed-host NAME for each name "
            "browsers use to reach it",
            ", ".join((*LOCAL_HOSTS, host)),
        )
    server.run()


def _install_printable(*logger_names: str) -> None:
    """No control character or terminal escape of a sender's text (a queue
    name, an error) in a log line: on those loggers, their handlers and the
    root logger's handlers."""
    for name in ("", *logger_names):
        target = logging.getLogger(name)
        target.addFilter(PrintableFilter())
        for handler in target.handlers:
            handler.addFilter(PrintableFilter())
