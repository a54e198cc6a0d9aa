"""How many server connections an app holds, counted by the server.

The app under test connects with an ``application_name`` of its own in its
DSN (:func:`named`); :class:`PeakConnections` counts that name's rows of
``pg_stat_activity`` from a thread, all along, and keeps the highest count.
A connection opened and left open shows up in the count; one opened and
closed between two looks may not, so the peak is a lower bound of the truth.
"""

from __future__ import annotations

import contextlib
import threading
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg.conninfo import make_conninfo

from tests.support.procs import wait_until

_COUNT_SQL = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE application_name = %s AND datname = current_database()"
)


def named(dsn: str, application_name: str) -> str:
    """``dsn`` with this ``application_name``."""
    return make_conninfo(dsn, application_name=application_name)


def count(conn: psycopg.Connection[Any], application_name: str) -> int:
    """The server connections open now with this ``application_name``."""
    row = conn.execute(_COUNT_SQL, (application_name,)).fetchone()
    return int(row[0]) if row else 0


class PeakConnections:
    """Counts the connections named ``application_name`` every ``interval``
    seconds, in a thread, while the ``with`` block runs; :attr:`peak` is the
    highest count seen, :meth:`now` counts once more."""

    def __init__(self, dsn: str, application_name: str, interval: float = 0.005) -> None:
        self.dsn = dsn
        self.name = application_name
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors: list[BaseException] = []

    def now(self) -> int:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return count(conn, self.name)

    def _run(self, conn: psycopg.Connection[Any]) -> None:
        try:
            while True:
                self.peak = max(self.peak, count(conn, self.name))
                self.samples += 1
                if self._stop.wait(self.interval):
                    return
        except BaseException as ex:  # surfaced in __exit__
            self._errors.append(ex)

    def __enter__(self) -> Self:
        conn = psycopg.connect(self.dsn, autocommit=True)
        self.peak = count(conn, self.name)
        self._thread = threading.Thread(target=self._watch, args=(conn,), daemon=True)
        self._thread.start()
        return self

    def _watch(self, conn: psycopg.Connection[Any]) -> None:
        with conn:
            self._run(conn)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._errors and exc is None:
            raise self._errors[0]


def wait_closed(dsn: str, application_name: str, timeout: float = 10.0) -> int:
    """Wait until no connection has this name (a backend ends a moment after
    its client closes it); return how many are left when ``timeout`` passes."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        with contextlib.suppress(AssertionError):
            wait_until(lambda: count(conn, application_name) == 0, timeout, "no connection left")
        return count(conn, application_name)


def terminate(conn: psycopg.Connection[Any], *application_names: str) -> int:
    """pg_terminate_backend every session of ``conn``'s database with one of
    these names (never ``conn``'s own, as a server restart or a network cut
    would end them); how many went."""
    rows = conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = ANY(%s)"
        "   AND pid <> pg_backend_pid()",
        (list(application_names),),
    ).fetchall()
    return sum(1 for (ok,) in rows if ok)
