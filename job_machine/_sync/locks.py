# DO NOT EDIT: generated from job_machine/_async/locks.py by tools/async_to_sync.py.
# Change the async source and run `python tools/async_to_sync.py`.
"""Named locks and task notes: shared by Client and Worker."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from .. import _codec
from .._validate import is_int, is_number
from ..errors import UnknownTask
from .store import Store

#: Longest hold of a named lock: a century, far beyond any use, well within
#: PostgreSQL's timestamps.
_MAX_EXPIRE = 100 * 365.25 * 86400
_MAX_LIMIT = 2**31 - 1


class LocksAndNotes:
    """Named locks shared across processes, and notes on tasks."""

    _store: Store

    def lock(self, name: str, expire: float | timedelta, limit: int = 1) -> int | None:
        """Take one of the ``limit`` holds of the named lock for ``expire``
        seconds (Minion's ``lock``): the hold's id (a positive int; pass it
        to :meth:`unlock`), or None when all holds are taken. Atomic across
        processes. A hold ends at :meth:`unlock` or when it expires, so a
        holder that dies never blocks the others for longer than ``expire``.

        :raises ValueError: a bad name, expire (> 0, at most a century) or
            limit (>= 1).
        """
        _check_name(name)
        seconds = expire.total_seconds() if isinstance(expire, timedelta) else expire
        if not is_number(seconds) or not math.isfinite(seconds) or not 0 < seconds <= _MAX_EXPIRE:
            raise ValueError(
                f"expire must be a number of seconds > 0 (at most a century), not {expire!r}"
            )
        return self._store.lock_take(name, float(seconds), _check_limit(limit))

    def lock_free(self, name: str, limit: int = 1) -> bool:
        """Whether :meth:`lock` with this ``limit`` would get a hold now
        (takes none; by the time you call :meth:`lock` it may be gone)."""
        _check_name(name)
        return self._store.lock_take(name, 0.0, _check_limit(limit)) is not None

    def unlock(self, name: str, lock_id: int | None = None) -> bool:
        """Release a hold of the named lock: ``lock_id`` (what :meth:`lock`
        returned), or else the hold that expires first. False when there was
        no such unexpired hold.

        :raises ValueError: ``lock_id`` is not a hold id.
        """
        _check_name(name)
        if lock_id is not None and (not is_int(lock_id) or lock_id < 1):
            raise ValueError(f"lock_id must be an id that lock() returned, not {lock_id!r}")
        return self._store.lock_release(name, lock_id)

    def _note(self, task_id: int, notes: dict[str, Any]) -> None:
        if not notes:
            return
        texts = {
            key: None if value is None else _codec.encode(value, f"note {key!r}")
            for key, value in notes.items()
        }
        if not self._store.task_note(task_id, texts):
            raise UnknownTask(f"there is no task {task_id}")


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"lock name must be a non-empty string, not {name!r}")


def _check_limit(limit: object) -> int:
    if not is_int(limit) or not 1 <= limit <= _MAX_LIMIT:
        raise ValueError(f"limit must be a whole number from 1 to {_MAX_LIMIT}, not {limit!r}")
    return limit
