# DO NOT EDIT: generated from job_machine/_async/store_workers.py by tools/async_to_sync.py.
# Change the async source and run `python tools/async_to_sync.py`.
"""The Store's statements of the worker registry (jobmachine.worker): a
worker's registration, heartbeat, commands, the tasks it gives back; and
the named locks a task takes (jobmachine.lock)."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

from .._dsn import describe_target
from .._lock_keys import CHORE_LOCK_KEY
from ..channels import worker_channel
from ..errors import JobMachineError
from .store_base import Registration, StoreBase


class WorkerStatements(StoreBase):
    """Workers: registration, liveness, commands; and named locks."""

    def worker_register(
        self,
        host: str,
        pid: int,
        queues: Sequence[str],
        *,
        dead_after: float | None = None,
    ) -> Registration:
        """Register a worker and take its liveness lock (on its registry
        session: a Store from ``on(conn)``); ``dead_after`` gives it its own
        reconnect grace when reaped."""
        params = {"host": host, "pid": pid, "queues": list(queues), "dead_after": dead_after}
        row = self._one("worker_register", params)
        assert row is not None
        return Registration(int(row["worker_id"]), bool(row["locked"]))

    def check_registered_here(self, worker_id: int, registry: str) -> None:
        """Check that the worker registered through ``registry`` (its
        ``listen_dsn``) is in the database this store works on.

        :raises JobMachineError: it is not: ``registry`` reaches another
            database, where the worker's liveness lock and heartbeat mean
            nothing to the housekeeping of the database its tasks are in
            (they would be rescued from under it), and where it listens for
            notifications the work database never sends.
        """
        row = self._one("worker_registered", {"worker_id": worker_id})
        if row is not None and row["registered"]:
            return
        raise JobMachineError(
            f"listen_dsn ({describe_target(registry)}) reaches another database than the "
            f"work connection ({describe_target(self.connector.conninfo)}): worker "
            f"{worker_id}, registered through listen_dsn, is not in the work database; "
            "point listen_dsn at the same database (directly, past the pooler)"
        )

    def worker_heartbeat(
        self,
        worker_id: int,
        host: str,
        pid: int,
        queues: Sequence[str],
        *,
        dead_after: float | None = None,
    ) -> tuple[bool, str | None, str | None]:
        """Mark the worker seen and (re)take its liveness lock: whether the
        session holds it, the command left for the worker, if any, and which life of
        the server this is (it changes with a restart or a promotion)."""
        params = {
            "worker_id": worker_id,
            "host": host,
            "pid": pid,
            "queues": list(queues),
            "dead_after": dead_after,
        }
        row = self._one("worker_heartbeat", params)
        if row is None:
            return False, None, None
        return bool(row["locked"]), row["command"], row["server_life"]

    def worker_listen(self, worker_id: int) -> None:
        """LISTEN on the worker's own channel ``jmw:<worker_id>`` (cancels of
        the tasks it runs), on its registry connection."""
        with self._cursor() as cur:
            cur.execute(sql.SQL("LISTEN {}").format(sql.Identifier(worker_channel(worker_id))))

    def worker_commands_take(self, worker_id: int) -> list[tuple[str, str | None]]:
        """Take the commands left for this worker, oldest first: (command, args JSON)."""
        rows = self._all("worker_commands_take", {"worker_id": worker_id})
        return [(r["command"], r["args"]) for r in rows]

    def task_cancelled_held(
        self,
        held: Sequence[tuple[int, int]],
    ) -> list[tuple[int, int]]:
        """Of the attempts ``held`` ((task id, attempt) pairs a worker runs),
        those whose task was cancelled meanwhile."""
        params = {"task_ids": [h[0] for h in held], "attempts": [h[1] for h in held]}
        rows = self._all("task_cancelled_held", params)
        return [(int(r["task_id"]), int(r["attempt"])) for r in rows]

    def task_release_held(self, worker_id: int, keep: Sequence[int] = ()) -> int:
        """Put back to waiting the started tasks of ``worker_id`` other than ``keep``;
        how many there were."""
        params = {"worker_id": worker_id, "keep": list(keep)}
        return len(self._all("task_release_held", params))

    def task_unclaim(self, task_ids: Sequence[int], worker_id: int) -> int:
        """Give back claimed tasks that never started; how many there were."""
        if not task_ids:
            return 0
        params = {"task_ids": list(task_ids), "worker_id": worker_id}
        return len(self._all("task_unclaim", params))

    def leader_lock(self) -> bool:
        """Try to become (or stay) the fleet's housekeeper on this session
        (a Store from ``on(conn)``)."""
        row = self._one("leader_lock", {"key": CHORE_LOCK_KEY})
        return bool(row and row["got"])

    # -- named locks (locks.py) ---------------------------------------------

    def lock_take(self, name: str, expire: float, limit: int) -> int | None:
        """Take a hold of a named lock: its id (0 for a check), None if all are held."""
        row = self._one("lock_take", {"name": name, "expire": expire, "limit": limit})
        return None if row is None or row["lock_id"] is None else int(row["lock_id"])

    def lock_release(self, name: str, lock_id: int | None) -> bool:
        """Release a hold of a named lock; False if there was none."""
        row = self._one("lock_release", {"name": name, "lock_id": lock_id})
        return row is not None and row["lock_id"] is not None
