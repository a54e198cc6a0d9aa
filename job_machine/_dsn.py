"""DSNs as job_machine shows and uses them, the same for the sync and async
faces: a description without the password, a redacted DSN, and the
``options`` startup parameter that pins every connection's search_path."""

from __future__ import annotations

import os
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

#: The error of a DSN that libpq cannot parse (its own message may quote the password).
UNPARSABLE_DSN = (
    "invalid DSN: it cannot be parsed (check its keywords, quoting and percent-encoding)"
)


def describe_target(conninfo: str) -> str:
    """``host=... port=... dbname=... user=...`` of a DSN, never its password."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "an unparsable DSN"
    shown = {k: params[k] for k in ("host", "hostaddr", "port", "dbname", "user") if k in params}
    if "host" not in shown and "hostaddr" not in shown:
        shown["host"] = "(default socket)"
    return " ".join(f"{k}={v}" for k, v in shown.items())


def redact(conninfo: str) -> str:
    """The DSN with its password removed, for logs and error messages."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    params.pop("password", None)
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


#: The search_path of every connection job_machine opens: the built-ins
#: first, then nothing any role can create in (docs/roles.md). Its queries
#: name their tables with the schema; the path decides which function a
#: call like json_build_object(...) or count(...) finds, and a role that
#: may CREATE in a schema of the server's default path (public, before
#: PostgreSQL 15) could otherwise put a closer match there.
SEARCH_PATH = "pg_catalog, pg_temp"
_PIN = "-c search_path=pg_catalog,pg_temp"


def pinned_options(dsn: str, kwargs: dict[str, Any]) -> str | None:
    """The ``options`` startup parameter of a connection job_machine opens:
    those given (``options`` in ``kwargs``, else the DSN's, else
    $PGOPTIONS, which libpq reads only when none is given), then the pinned
    search_path; None when the DSN cannot be parsed (connecting says so)."""
    if "options" in kwargs:
        base = str(kwargs["options"] or "")
    else:
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError:
            return None
        base = str(params.get("options") or os.environ.get("PGOPTIONS", ""))
    return f"{base} {_PIN}".strip()
