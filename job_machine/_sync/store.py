# DO NOT EDIT: generated from job_machine/_async/store.py by tools/async_to_sync.py.
# Change the async source and run `python tools/async_to_sync.py`.
"""The only code that talks SQL: one method per named query of queries.sql.

:class:`Store` is the one Store the rest of job_machine uses; its
statements live one file per table or area, each a part of it built on the
seam of store_base.py:

- store_base.py: the connector, the cursor that turns psycopg's errors into
  job_machine's, the session and the server;
- store_tasks.py: sending, claiming and reading tasks;
- store_outcomes.py: done marks, results, errors, answers, parts;
- store_workers.py: the worker registry, commands, named locks;
- store_admin.py: statistics, lists, cancel, retry, purge, pauses, limits;
- store_schedules.py: cron schedules and their dispatch;
- store_housekeeping.py: the statements of a housekeeping round (its
  policy is housekeeper.py's).
"""

from __future__ import annotations

from .._lock_keys import CHORE_LOCK_KEY
from .store_admin import AdminStatements
from .store_base import Answer, Registration
from .store_housekeeping import (
    OUTAGE_GRACES,
    QUEUE_PRUNE_AFTER,
    ChoreCounts,
    HousekeepingStatements,
)
from .store_outcomes import OutcomeStatements
from .store_schedules import ScheduleStatements
from .store_tasks import TaskStatements
from .store_workers import WorkerStatements

#: What other modules import from here besides the Store itself.
__all__ = [
    "CHORE_LOCK_KEY",
    "OUTAGE_GRACES",
    "QUEUE_PRUNE_AFTER",
    "Answer",
    "ChoreCounts",
    "Registration",
]


class Store(
    AdminStatements,
    TaskStatements,
    OutcomeStatements,
    WorkerStatements,
    ScheduleStatements,
    HousekeepingStatements,
):
    """Runs job_machine's statements on connections from a Connector."""
