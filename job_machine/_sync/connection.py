# DO NOT EDIT: generated from job_machine/_async/connection.py by tools/async_to_sync.py.
# Change the async source and run `python tools/async_to_sync.py`.
"""Where the core gets its connections: its own, the caller's, or a pool's."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any, Self, TypeVar

import psycopg
from psycopg import Connection
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

from .._acompat import Mutex
from .._db_errors import connect_failed, reraise, translated
from .._dsn import SEARCH_PATH, describe_target, pinned_options
from ..errors import ConnectionFailed, JobMachineError

logger = logging.getLogger("job_machine")

_T = TypeVar("_T")

#: Servers (by describe_target) that refused the options startup parameter:
#: PgBouncer does, unless told to ignore it.
_NO_OPTIONS: set[str] = set()


def connect(dsn: str, **kwargs: Any) -> Connection[Any]:
    """Open an autocommit connection with the pinned search_path
    (:data:`SEARCH_PATH`, in the ``options`` startup parameter after any
    given), or raise ConnectionFailed naming where it tried.

    A server that refuses the ``options`` parameter (PgBouncer) is asked
    again without it, once per process and server: then the connection has
    the path the server gives its role, and a warning says so unless that
    is pinned already (``ALTER ROLE ... SET search_path = pg_catalog,
    pg_temp``).
    """
    target = describe_target(dsn)
    options = None if target in _NO_OPTIONS else pinned_options(dsn, kwargs)
    if options is None:
        return _open(dsn, **kwargs)
    try:
        return _open(dsn, **{**kwargs, "options": options})
    except ConnectionFailed as ex:
        if "unsupported startup parameter" not in str(ex) or kwargs.get("options"):
            raise
    _NO_OPTIONS.add(target)
    conn = _open(dsn, **kwargs)
    try:
        with translated(conn):
            cur = conn.execute("SELECT current_setting('search_path')")
            row = cur.fetchone()
    except JobMachineError:
        conn.close()
        raise
    path = str(row[0]) if row else ""
    if path.replace(" ", "") != SEARCH_PATH.replace(" ", ""):
        logger.warning(
            "%s refused the options startup parameter (a PgBouncer?), so job_machine's "
            "connections there keep the search_path %r instead of %r: set it on the login "
            "role (ALTER ROLE ... SET search_path = %s; docs/roles.md)",
            target,
            path,
            SEARCH_PATH,
            SEARCH_PATH,
        )
    return conn


class PinnedConnection(Connection[Any]):
    """The connection class of the pools job_machine makes itself (a worker's
    for ``concurrency`` > 1): opened by :func:`connect`, so its search_path
    is pinned like every other connection job_machine opens."""

    @classmethod
    def connect(  # type: ignore[override]
        cls, conninfo: str = "", **kwargs: Any
    ) -> Connection[Any]:
        kwargs.pop("autocommit", None)  # connect's connections are autocommit
        return connect(conninfo, **kwargs)


def _open(dsn: str, **kwargs: Any) -> Connection[Any]:
    """Open an autocommit connection, or raise ConnectionFailed naming where it tried."""
    try:
        return Connection.connect(dsn, autocommit=True, **kwargs)
    except psycopg.Error as ex:
        failed = connect_failed(ex, dsn)
    # libpq's parse errors quote the part they stumbled on, which may be the
    # password ('invalid percent-encoded token: "s3cr%ZZet"'): raised here, out
    # of the except block, so that error is not even the __context__.
    raise failed


class Connector:
    """Hands out a connection for one statement or transaction.

    Exactly one source is used:

    - ``dsn``: a connection of our own, in autocommit (each statement is its
      own transaction), opened on first use and reopened after it broke;
    - ``conn``: the caller's connection, never committed behind the
      caller's back. In autocommit, each operation is its own transaction.
      Otherwise each operation is part of the caller's transaction: our
      first statement opens it when the connection is idle (as any
      statement does in psycopg), and only the caller commits or rolls it
      back; a savepoint isolates our own failures (see :meth:`unit`);
    - ``pool``: a connection borrowed from the pool for each operation and
      committed when returned.
    """

    def __init__(
        self,
        dsn: str | None = None,
        conn: Connection[Any] | None = None,
        pool: ConnectionPool | None = None,
        connect_kwargs: dict[str, Any] | None = None,
    ) -> None:
        given = [name for name, v in (("dsn", dsn), ("conn", conn), ("pool", pool)) if v]
        if len(given) != 1:
            raise JobMachineError(
                "give exactly one of dsn=, conn= or pool="
                + (f" (got {', '.join(given)})" if given else "")
            )
        self.dsn = dsn
        self.pool = pool
        self._user_conn = conn
        self._own: Connection[Any] | None = None
        #: Held while opening our own connection: callers arriving at once
        #: share the one connection it opens.
        self._opening = Mutex()
        self._connect_kwargs = connect_kwargs or {}

    @property
    def conninfo(self) -> str:
        """The connection string in use, to open further connections like it."""
        if self.dsn:
            return self.dsn
        if self.pool:
            if not isinstance(self.pool.conninfo, str):
                raise JobMachineError("the pool's conninfo must be a string to open a listener")
            return self.pool.conninfo
        assert self._user_conn is not None
        info = self._user_conn.info
        # info.dsn leaves the password out; a connection opened like it needs it.
        return make_conninfo(info.dsn, password=info.password) if info.password else info.dsn

    @property
    def reconnects(self) -> bool:
        """Whether a broken connection is replaced (not so for the caller's own)."""
        return self._user_conn is None

    @property
    def opened(self) -> Connection[Any] | None:
        """Our own connection if it is open and usable, else None."""
        own = self._own
        return None if own is None or own.closed or own.broken else own

    def own(self) -> Connection[Any]:
        """Our own autocommit connection, (re)opened when needed."""
        assert self.dsn is not None
        own = self._own
        if own is not None and not own.closed and not own.broken:
            return own
        with self._opening:
            if self._own is None or self._own.closed or self._own.broken:
                if self._own is not None:
                    logger.info("reconnecting to %s", describe_target(self.dsn))
                self._own = connect(self.dsn, **self._connect_kwargs)
            return self._own

    @contextmanager
    def connection(self) -> Iterator[Connection[Any]]:
        """A connection to run one unit of work on, committed at the end."""
        if self._user_conn is not None:
            with self.unit(self._user_conn):
                yield self._user_conn
        elif self.pool is not None:
            with _entered(self.pool.connection()) as conn:
                yield conn
        else:
            yield self.own()

    @contextmanager
    def standalone(self) -> Iterator[None]:
        """A block whose statements leave no transaction open behind them: on
        the caller's idle non-autocommit connection, a transaction of its own,
        committed at the end (a waiter's reads, which may repeat, must not
        leave the connection in a transaction the next wait refuses)."""
        conn = self._user_conn
        if (
            conn is None
            or conn.autocommit
            or conn.info.transaction_status != TransactionStatus.IDLE
        ):
            yield
            return
        with _entered(conn.transaction(), conn):
            yield

    def require_no_transaction(self) -> None:
        """Raise when the caller's connection is inside a transaction: a wait
        there could never end (its own uncommitted sends reach no worker)."""
        conn = self._user_conn
        if conn is not None and conn.info.transaction_status != TransactionStatus.IDLE:
            raise JobMachineError(
                "waiting for a reply needs the connection outside a transaction "
                "(a task sent in it reaches no worker until it commits)"
            )

    @contextmanager
    def unit(self, conn: Connection[Any]) -> Iterator[None]:
        """One unit of work on ``conn`` (a connection this connector handed out).

        On our own or a pool's connection, and on the caller's autocommit
        connection, it is a transaction of its own (``conn.transaction()``),
        committed at the end. On the caller's non-autocommit connection it is
        never committed: inside the caller's transaction it is a savepoint
        (released, or rolled back on error, leaving the caller's work
        intact); on an idle connection our first statement opens the
        transaction the caller then commits or rolls back, and an error
        rolls back what the unit did, leaving the connection idle as it was.
        """
        if conn is not self._user_conn or conn.autocommit:
            with _entered(conn.transaction(), conn):
                yield
            return
        if conn.info.transaction_status != TransactionStatus.IDLE:
            # A savepoint in the caller's transaction.
            with _entered(conn.transaction(), conn):
                yield
            return
        try:
            yield
        except BaseException:
            # Nothing of the caller's was in this transaction: undo ours.
            if not (conn.broken or conn.closed) and (
                conn.info.transaction_status != TransactionStatus.IDLE
            ):
                with translated(conn):
                    conn.rollback()
            raise

    @contextmanager
    def serving(self) -> Iterator[None]:
        """For a worker's service loop (``receive()``), which must commit what
        it claims and answers: the caller's connection in autocommit for the
        block (each unit of work its own transaction), its setting restored
        after. Nothing to do for our own connection or a pool's.

        :raises JobMachineError: the caller's connection is in a transaction.
        """
        conn = self._user_conn
        if conn is None:
            yield
            return
        if conn.info.transaction_status != TransactionStatus.IDLE:
            raise JobMachineError(
                "a worker serving on your connection needs it outside a transaction: "
                "commit or roll back first"
            )
        with _autocommit(conn):
            yield

    @contextmanager
    def listening(self) -> Iterator[Connection[Any]]:
        """A connection outside any transaction, fit for LISTEN and waiting for notifications."""
        if self._user_conn is not None:
            conn = self._user_conn
            if conn.info.transaction_status != TransactionStatus.IDLE:
                raise JobMachineError(
                    "waiting for a notification needs a connection outside a transaction "
                    "(notifications are delivered only between transactions): commit or "
                    "roll back first (on a non-autocommit connection, every call opens "
                    "a transaction that only the caller ends)"
                )
            with _autocommit(conn):
                yield conn
        elif self.pool is not None:
            with _entered(self.pool.connection()) as conn, _autocommit(conn):
                yield conn
        else:
            yield self.own()

    def close(self) -> None:
        """Close our own connection; the caller's connection and pool are left alone."""
        if self._own is not None:
            self._own.close()
            self._own = None


@contextmanager
def _autocommit(conn: Connection[Any]) -> Iterator[None]:
    """``conn`` in autocommit for the block, then back to its previous setting."""
    was = conn.autocommit
    if not was:
        with translated(conn):
            conn.set_autocommit(True)
    try:
        yield
    finally:
        if not was and not (conn.closed or conn.broken):
            with translated(conn):
                conn.set_autocommit(False)


@contextmanager
def _entered(cm: AbstractContextManager[_T], conn: Connection[Any] | None = None) -> Iterator[_T]:
    """``cm`` (a transaction of ``conn``, a pool's connection) entered and
    left with psycopg's errors of its own statements (BEGIN, COMMIT, RELEASE
    SAVEPOINT) or of the pool's wait raised as job_machine's; the block's
    own errors pass unchanged (the Store translates them itself)."""
    inside = False
    try:
        with cm as value:
            if conn is None and isinstance(value, Connection):
                conn = value
            inside = True
            yield value
            inside = False
    except psycopg.Error as ex:
        if inside:
            raise
        reraise(ex, conn)


class ConnectorOwner:
    """What Client and Worker share: a connector to close, and ``with``."""

    _connector: Connector

    def close(self) -> None:
        """Close the connection this object opened itself; a connection or
        pool given by the caller stays open."""
        self._connector.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
