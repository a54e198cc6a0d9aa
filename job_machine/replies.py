"""One reply listener per process and database: every ``wait()`` shares it.

A client waiting for a task's answer needs ``LISTEN "jmr:<task_id>"`` on a
connection that nobody else uses while it waits. Giving each wait a
connection of its own costs a server connection per waiting caller (and a
pool of 10 then allows 10 waiters); sharing the client's connection between
waits makes them consume each other's notifications. So the process keeps
one listening connection per database, in a thread of its own, and routes
each notification to the waiters of its channel, the way pgqueuer's
completion watcher or Oban's notifier do, but woken by NOTIFY, not polling.

- :meth:`ReplyListener.subscribe` asks for the channels of some task ids and
  is told (``on_listening``) once ``LISTEN`` has run, so a waiter that reads
  the table after that cannot miss an answer committed later.
- LISTEN and UNLISTEN of many waiters starting or leaving at once go to the
  server as one batch; a channel is unlistened when its last waiter leaves.
- When the connection dies (a restart, ``pg_terminate_backend``), the thread
  reconnects with backoff, LISTENs again on every channel still awaited and
  wakes every waiter, so each re-reads the table: a notification sent while
  the connection was down delays nobody beyond the reconnect.
- The thread and its connection end when the last client that used it has
  closed and nobody waits, or when the connection is lost with nobody
  waiting; the next waiter starts them again. While a client is open the
  connection stays, so a round trip never pays for a connect.

Both faces use it: a sync waiter's callbacks set a ``threading.Event``, an
asyncio waiter's hand the event to its loop (``call_soon_threadsafe``), so
one process has one listener whatever mix of threads and event loops waits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from ._acompat import select_readable
from ._backoff import Backoff
from ._db_errors import connect_failed, translated
from ._dsn import pinned_options
from ._format import first_line
from ._waker import Waker
from .channels import reply_channel
from .errors import ConnectionFailed, JobMachineError
from .liveness import CLIENT_KEEPALIVES

logger = logging.getLogger("job_machine.replies")

#: Channels per LISTEN/UNLISTEN batch sent to the server in one round trip.
_BATCH = 500


@dataclass(eq=False)
class Subscription:
    """A waiter's interest in the replies of some tasks.

    ``on_wake`` is called (from the listener's thread) when a notification of
    one of its channels arrives, and after a reconnect; ``on_listening`` once
    every channel is LISTENed to. Both must be quick and thread-safe.
    """

    channels: frozenset[str]
    on_wake: Callable[[], None]
    on_listening: Callable[[], None]
    #: Payloads that do not wake it: a waiter for the answer is not woken
    #: by each streamed part ('part').
    ignore: frozenset[str] = frozenset()
    listening: bool = False
    #: Channels of this subscription not LISTENed to yet.
    missing: set[str] = field(default_factory=set)


class ReplyListener:
    """The listening connection of one database, shared by every waiter of
    the process. Get it with :func:`reply_listener`, not by constructing it."""

    def __init__(self, conninfo: str, connect_kwargs: dict[str, Any]) -> None:
        self.conninfo = conninfo
        self._connect_kwargs = connect_kwargs
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = {}
        self._unconfirmed: list[Subscription] = []
        self._thread: threading.Thread | None = None
        self._waker = Waker()
        self._conn: psycopg.Connection[Any] | None = None
        #: Channels LISTENed to on the current connection (the thread's own).
        self._listened: set[str] = set()
        #: How many times the listening connection was (re)opened.
        self.connects = 0
        #: Clients that use the listener and are not closed yet.
        self._clients = 0

    # -- from clients and waiters ------------------------------------------------

    def acquire(self) -> None:
        """A client starts using the listener: its connection stays open
        between waits until every such client has released it."""
        with self._lock:
            self._clients += 1

    def release(self) -> None:
        """A client that acquired the listener is closed."""
        with self._lock:
            self._clients = max(0, self._clients - 1)
        self._waker.wake()

    def subscribe(
        self,
        task_ids: Iterable[int],
        on_wake: Callable[[], None],
        on_listening: Callable[[], None],
        *,
        ignore: Iterable[str] = (),
    ) -> Subscription:
        """Ask for the notifications of ``task_ids``' reply channels, but for
        those whose payload is in ``ignore``."""
        channels = frozenset(reply_channel(t) for t in task_ids)
        sub = Subscription(channels, on_wake, on_listening, frozenset(ignore))
        with self._lock:
            for channel in channels:
                self._subs.setdefault(channel, set()).add(sub)
            sub.missing = set(channels) - self._listened
            if sub.missing:
                self._unconfirmed.append(sub)
                self._ensure_thread()
            else:
                sub.listening = True
        if sub.listening:
            on_listening()
        else:
            self._waker.wake()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """The waiter has its answer or gave up: forget it (its channels are
        unlistened in the thread's next batch when no one else waits on them)."""
        with self._lock:
            for channel in sub.channels:
                waiting = self._subs.get(channel)
                if waiting is not None:
                    waiting.discard(sub)
                    if not waiting:
                        del self._subs[channel]
            if sub in self._unconfirmed:
                self._unconfirmed.remove(sub)
        self._waker.wake()

    def listening_to(self, task_id: int) -> bool:
        """Whether the listening connection LISTENs to the task's reply channel now."""
        with self._lock:
            return reply_channel(task_id) in self._listened

    @property
    def backend_pid(self) -> int | None:
        """The server process of the listening connection, if it is open."""
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    @property
    def waiting(self) -> int:
        """How many channels have waiters now."""
        with self._lock:
            return len(self._subs)

    # -- the thread -----------------------------------------------------------

    def _ensure_thread(self) -> None:
        # Called with the lock held.
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="job_machine-replies", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        backoff = Backoff(0.05, 5.0)
        try:
            while True:
                with self._lock:
                    ending = not self._subs and (self._conn is None or self._clients == 0)
                    if ending:
                        self._thread = None
                if ending:
                    self._close()
                    return
                try:
                    self._serve_once()
                    backoff.reset()
                except JobMachineError as ex:
                    self._close()
                    with self._lock:
                        if not self._subs:
                            self._thread = None
                            return
                    delay = backoff.next()
                    logger.warning(
                        "reply listener: connection lost (%s); reconnecting in %.1f s",
                        first_line(ex),
                        delay,
                    )
                    select_readable([self._waker.fd], delay)
                    self._waker.clear()
        except Exception:
            # Waiters still re-read on their own every few seconds.
            logger.exception("reply listener: stopped by an unexpected error")
            with self._lock:
                self._thread = None
            self._close()

    def _serve_once(self) -> None:
        """Connect if need be, LISTEN and UNLISTEN, route what was heard,
        then wait for the next notification or wake-up. psycopg's errors are
        raised as job_machine's (a dead connection as ConnectionLost)."""
        reconnected = False
        if self._conn is None:
            self._conn = self._connect()
            self.connects += 1
            reconnected = self.connects > 1
        conn = self._conn
        self._waker.clear()
        with translated(conn):
            self._sync_channels(conn)
            if reconnected:
                # Answers may have been sent while no connection listened.
                with self._lock:
                    everyone = {s for subs in self._subs.values() for s in subs}
                for sub in everyone:
                    sub.on_wake()
            self._route(conn.notifies(timeout=0))
            ready = select_readable([conn.pgconn.socket, self._waker.fd], None)
            if conn.pgconn.socket in ready:
                self._route(conn.notifies(timeout=0))

    def _connect(self) -> psycopg.Connection[Any]:
        """The listening connection, with the search_path job_machine pins
        on every connection (asked again without it from a server that
        refuses the ``options`` parameter, as PgBouncer does).

        :raises ConnectionFailed: naming where it tried, never the password.
        """
        kwargs = dict(self._connect_kwargs)
        options = pinned_options(self.conninfo, kwargs)
        if options is not None:
            try:
                return self._open(**{**kwargs, "options": options})
            except ConnectionFailed as ex:
                if "unsupported startup parameter" not in str(ex):
                    raise
        return self._open(**kwargs)

    def _open(self, **kwargs: Any) -> psycopg.Connection[Any]:
        try:
            return psycopg.Connection.connect(self.conninfo, autocommit=True, **kwargs)
        except psycopg.Error as ex:
            failed = connect_failed(ex, self.conninfo)
        # Out of the except block: libpq's error may quote the password.
        raise failed

    def _sync_channels(self, conn: psycopg.Connection[Any]) -> None:
        """LISTEN to the channels newly awaited, UNLISTEN the abandoned ones,
        in batches, then tell the waiters whose channels are all listened to."""
        with self._lock:
            wanted = set(self._subs)
            to_listen = sorted(wanted - self._listened)
            to_unlisten = sorted(self._listened - wanted)
            # Not listened from now on: a waiter arriving for one of them
            # while its UNLISTEN runs waits for the LISTEN of the next round,
            # never takes a channel about to go quiet for a listened one.
            self._listened.difference_update(to_unlisten)
        for verb, channels in (("UNLISTEN", to_unlisten), ("LISTEN", to_listen)):
            for start in range(0, len(channels), _BATCH):
                chunk = channels[start : start + _BATCH]
                statement = sql.SQL("; ").join(
                    sql.SQL(verb + " {}").format(sql.Identifier(c)) for c in chunk
                )
                conn.execute(statement)
                if verb == "LISTEN":
                    with self._lock:
                        self._listened.update(chunk)
        confirmed: list[Subscription] = []
        with self._lock:
            still: list[Subscription] = []
            for sub in self._unconfirmed:
                sub.missing -= self._listened
                if sub.missing:
                    still.append(sub)
                else:
                    sub.listening = True
                    confirmed.append(sub)
            self._unconfirmed = still
        for sub in confirmed:
            sub.on_listening()

    def _route(self, notifies: Iterable[psycopg.Notify]) -> None:
        woken: set[Subscription] = set()
        for n in notifies:
            with self._lock:
                woken.update(s for s in self._subs.get(n.channel, ()) if n.payload not in s.ignore)
        for sub in woken:
            sub.on_wake()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        with self._lock:
            self._listened = set()
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


_listeners: dict[tuple[str, tuple[tuple[str, str], ...]], ReplyListener] = {}
_listeners_lock = threading.Lock()


def reply_listener(conninfo: str, connect_kwargs: dict[str, Any] | None = None) -> ReplyListener:
    """The process's reply listener for this database (made on first use)."""
    kwargs = {**CLIENT_KEEPALIVES, **(connect_kwargs or {})}
    kwargs.pop("autocommit", None)
    key = (conninfo, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    with _listeners_lock:
        listener = _listeners.get(key)
        if listener is None:
            listener = _listeners[key] = ReplyListener(conninfo, kwargs)
        return listener


def _forget_after_fork() -> None:
    # A forked child has none of the parent's threads: it starts its own.
    global _listeners_lock  # noqa: PLW0603
    _listeners.clear()
    _listeners_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
