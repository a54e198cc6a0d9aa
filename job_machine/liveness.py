"""A worker's registry session: how the fleet tells a dead worker from a slow one.

Every running worker (sync or async) keeps one extra connection in a thread of
its own. On it the worker registers in ``jobmachine.worker`` and holds a
session-level advisory lock keyed by its id. PostgreSQL releases that lock the
moment the session ends, however the worker ended (SIGKILL, crash, power
loss once TCP keepalives notice), so liveness is judged by the database
itself, not guessed from how long a task has run. The thread also:

- heartbeats (``seen``) every ``dead_after / 4`` seconds, which gives a live
  worker whose session dropped (server restart, ``pg_terminate_backend``)
  time to reconnect before anyone calls it dead;
- keeps the modified time of its started tasks fresh, so a Perl worker's
  ``max_runtime`` revive never takes them;
- competes for the fleet's housekeeper lock; the one holder rescues dead
  workers' tasks every heartbeat, and every ``housekeeping_interval`` does
  the slower chores (orphans, old finished tasks). It judges others only
  once it has itself been connected for the reconnect grace since it
  started, since it was last cut off for more than a blip, and since the
  server restarted or was promoted: right after an outage, the others have
  not had their time to reconnect yet.

Being a thread, none of this waits for ``process()``: a task that runs for
hours keeps its worker alive, and a blocked event loop does not stop the
heartbeat. See docs/liveness.md for the choice and its bounds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from . import _codec
from ._acompat import select_readable
from ._backoff import Backoff
from ._format import first_line
from ._sync.connection import Connector
from ._sync.housekeeper import Housekeeper
from ._sync.store import OUTAGE_GRACES, Store
from ._waker import Waker
from .errors import ConnectionFailed, DatabaseUnavailable, JobMachineError

logger = logging.getLogger("job_machine.liveness")

#: Server-side TCP keepalive settings of the registry session: PostgreSQL
#: drops the session of a worker that vanished from the network (and so
#: releases its liveness lock) within about 10 seconds. Ignored on Unix sockets.
SERVER_KEEPALIVES = {
    "tcp_keepalives_idle": "4",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "10000",
}

#: libpq keepalives for the worker's long-lived connections, so the worker
#: notices a half-open link (a NAT that forgot it) instead of waiting forever.
CLIENT_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10000,
}


class Liveness:
    """The registry session of one worker, run in a daemon thread.

    :param conninfo: where to connect; must be a direct or session-pooled
        connection (advisory locks live in a session).
    :param queues: the worker's queues, shown in the registry.
    :param dead_after: seconds within which a dead worker's tasks are back
        to waiting.
    :param retries: the worker's retries.
    :param max_runtime: seconds after which a live worker's task is given up
        on; None never gives up.
    :param orphan_after: seconds after which a started task that no
        registered worker holds (a Perl worker's) is revived.
    :param remove_after_days: days after which finished tasks are deleted.

    As the fleet's housekeeper it applies ``retries``, ``max_runtime``,
    ``orphan_after``, ``remove_after_days`` and its own reconnect grace only
    to tasks and workers that carry none of their own (claimed by Perl or by
    an older job_machine): every task carries its claiming worker's, every
    worker row its ``dead_after``.
    :param housekeeping_interval: seconds between the slower chores.
    :param on_command: called with a command left for the worker.
    :param on_broadcast: called with each command sent to the worker by
        ``Admin.broadcast`` and its args (decoded JSON), once, in order.
    :param held: the (task id, attempt) of the tasks whose process() runs.
    :param on_cancel: called with the id and attempt of a task it holds
        that was cancelled: heard on channel ``jmw:<worker_id>`` (LISTENed on the
        registry connection, whose readable socket wakes the thread), or
        found by the heartbeat among ``held()`` (the fallback).
    """

    def __init__(
        self,
        conninfo: str,
        queues: Sequence[str],
        *,
        dead_after: float,
        retries: int,
        max_runtime: float | None,
        orphan_after: float,
        remove_after_days: float,
        housekeeping_interval: float,
        on_command: Callable[[str], None] | None = None,
        on_broadcast: Callable[[str, Any], None] | None = None,
        held: Callable[[], list[tuple[int, int]]] | None = None,
        on_cancel: Callable[[int, int], None] | None = None,
    ) -> None:
        self.held = held
        self.on_cancel = on_cancel
        self.queues = [str(q) for q in queues]
        #: Called in the liveness thread with a command an operator left for
        #: the worker (``Admin.stop_workers``).
        self.on_command = on_command
        self.on_broadcast = on_broadcast
        self.dead_after = dead_after
        self.interval = dead_after / 4
        self.grace = dead_after / 2
        self.retries = retries
        self.max_runtime = max_runtime
        self.orphan_after = orphan_after
        self.remove_after_days = remove_after_days
        self.housekeeping_interval = housekeeping_interval
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.worker_id: int | None = None
        self.leader = False
        self._connector = Connector(dsn=conninfo, connect_kwargs=dict(CLIENT_KEEPALIVES))
        self._store = Store(self._connector)
        self._waker = Waker()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._next_cleanup = 0.0
        #: Until when (monotonic) the end of an outage is still being judged.
        self._outage_until = 0.0
        self._backoff = Backoff(base=0.05, cap=self.interval)
        #: time.monotonic() since which this worker may judge others: its
        #: start, its return from a cut longer than a blip, or a new life of
        #: the server (restart, promotion).
        self.judge_since = time.monotonic()
        self._last_beat = time.monotonic()
        self._cut_off = False
        self._server_life: str | None = None

    # -- from the worker ----------------------------------------------------

    def start(self) -> int:
        """Connect, register and take the liveness lock, then start the thread.

        :raises ConnectionFailed: the first connection failed.
        :raises SchemaMissing: the schema is not installed or not upgraded.
        """
        conn = self._connect()
        try:
            reg = self._store.on(conn).worker_register(
                self.host, self.pid, self.queues, dead_after=self.dead_after
            )
            self.worker_id = reg.worker_id
            self._listen(conn)
        except BaseException:
            # Not registered (no schema, or a role that may not register), or
            # the session ended at once (PostgreSQL releases the liveness
            # lock): no thread will ever close what start() opened.
            self._connector.close()
            self._waker.close()
            raise
        if not reg.locked:  # only if a stale session of a reused id holds it
            logger.warning("worker %d: liveness lock is held elsewhere", reg.worker_id)
        self._thread = threading.Thread(
            target=self._run, name=f"job_machine-liveness-{reg.worker_id}", daemon=True
        )
        self._thread.start()
        return reg.worker_id

    def stop(self, hand_back: bool = True, unclaim: Sequence[int] = ()) -> None:
        """Stop the thread, then remove the registration; with ``hand_back``
        the worker's started tasks go back to waiting at once (a clean stop
        should hold none). ``unclaim``: tasks claimed ahead but never started,
        given back first as if never claimed."""
        self._stopping = True
        self._waker.wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        try:
            if unclaim and self.worker_id is not None:
                self._store.on(self._connect()).task_unclaim(unclaim, self.worker_id)
            if hand_back and self.worker_id is not None:
                _, revived, failed, _ = self._store.on(self._connect()).worker_reap(
                    grace=self.grace, retries=self.retries, worker_id=self.worker_id
                )
                if revived or failed:
                    logger.warning(
                        "worker %d stopped holding %d task(s): %d back to waiting, %d failed",
                        self.worker_id,
                        revived + failed,
                        revived,
                        failed,
                    )
        except JobMachineError as ex:
            logger.warning("could not deregister worker %s: %s", self.worker_id, ex)
        finally:
            self._connector.close()
            self._waker.close()

    # -- the thread ---------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        before = self._connector.opened
        conn = self._connector.own()
        if conn is not before:
            self._store.on(conn).session_set(SERVER_KEEPALIVES)
            if self.worker_id is not None:
                self._listen(conn)
        return conn

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        """LISTEN on the worker's channel: cancels of the tasks it runs, and
        the wake-up of a broadcast command (the readable socket ends the
        thread's sleep; its next round takes the command)."""
        if self.on_cancel is None or self.worker_id is None:
            return
        conn.add_notify_handler(self._heard)
        self._store.on(conn).worker_listen(self.worker_id)

    def _heard(self, notify: psycopg.Notify) -> None:
        """A notification on the registry connection
        ('cancel:<task_id>:<attempt>'), delivered while a statement of this
        thread runs."""
        kind, _, arg = notify.payload.partition(":")
        task_id, _, attempt = arg.partition(":")
        if kind == "cancel" and task_id.isdigit() and attempt.isdigit() and self.on_cancel:
            self.on_cancel(int(task_id), int(attempt))

    def _run(self) -> None:
        delay = self.interval
        while not self._stopping:
            self._sleep(delay)
            if self._stopping:
                break
            try:
                self._tick()
                delay = self.interval
                self._backoff.reset()
            except (ConnectionFailed, DatabaseUnavailable) as ex:
                self.leader = False
                self._cut_off = True
                self._connector.close()
                delay = self._backoff.next()
                logger.warning(
                    "worker %s: registry connection lost (%s); reconnecting in %.2f s",
                    self.worker_id,
                    first_line(ex),
                    delay,
                )
            except Exception:
                logger.exception("worker %s: liveness round failed", self.worker_id)
                delay = self.interval

    def may_judge(self) -> bool:
        """Whether this worker has been connected long enough to judge others
        dead: for the reconnect grace since :attr:`judge_since`. A judge
        that just came back from an outage would otherwise reap every live
        worker that has not reconnected yet."""
        return time.monotonic() - self.judge_since >= self.grace

    def _note_beat(self, server_life: str | None) -> None:
        """After a heartbeat: restart the judge's clock when it comes back from
        a cut longer than a blip (more than ``interval / 2`` beyond a regular
        beat) or finds the server in a new life (restarted, or a standby
        promoted: a new timeline)."""
        now = time.monotonic()
        why = None
        if self._cut_off and now - self._last_beat > self.interval * 1.5:
            why = f"cut off for {now - self._last_beat:.1f} s"
        elif self._server_life is not None and server_life != self._server_life:
            why = f"the server restarted or was promoted ({server_life})"
        if why is not None:
            self.judge_since = now
            logger.info(
                "worker %s: %s; judges no worker dead for %.1f s",
                self.worker_id,
                why,
                self.grace,
            )
        self._server_life = server_life
        self._last_beat = now
        self._cut_off = False

    def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early when stopped or when the server says something
        on the idle registry connection (it is about to close it)."""
        fds = [self._waker.fd]
        own = self._connector.opened
        if own is not None:
            fds.append(own.pgconn.socket)
        ready = select_readable(fds, seconds)
        if self._waker.fd in ready:
            self._waker.clear()

    def _tick(self) -> None:
        assert self.worker_id is not None
        conn = self._connect()
        session = self._store.on(conn)
        locked, command, server_life = session.worker_heartbeat(
            self.worker_id, self.host, self.pid, self.queues, dead_after=self.dead_after
        )
        self._note_beat(server_life)
        if not locked:
            logger.warning("worker %d: liveness lock is held elsewhere", self.worker_id)
        if command is not None and self.on_command is not None:
            self.on_command(command)
        if self.on_broadcast is not None:
            for name, args in session.worker_commands_take(self.worker_id):
                try:
                    self.on_broadcast(name, _codec.decode(args))
                except Exception:
                    logger.exception("worker %s: command %r failed", self.worker_id, name)
        held = self.held() if self.held is not None else []
        if held and self.on_cancel is not None:
            # The fallback of a lost jmw:<worker_id> notification.
            for task_id, attempt in session.task_cancelled_held(held):
                self.on_cancel(task_id, attempt)
        if not session.leader_lock():
            self.leader = False
            return
        if not self.leader:
            logger.info("worker %d is now the fleet's housekeeper", self.worker_id)
            self.leader = True
        cleanup = time.monotonic() >= self._next_cleanup
        counts = Housekeeper(self._store).run(
            reap=self.may_judge(),
            outage=time.monotonic() < self._outage_until,
            retries=self.retries,
            remove_after_days=self.remove_after_days,
            grace=self.grace,
            max_runtime=self.max_runtime,
            orphan_after=self.orphan_after,
            cleanup=cleanup,
            conn=conn,
        )
        if counts.outage:
            # The workers cut off come back one by one: until the last of
            # them had time to, the stragglers are judged as in an outage.
            self._outage_until = time.monotonic() + self.grace * OUTAGE_GRACES
        if cleanup:
            self._next_cleanup = time.monotonic() + self.housekeeping_interval
