# DO NOT EDIT: generated from job_machine/_async/schema.py by tools/async_to_sync.py.
# Change the async source and run `python tools/async_to_sync.py`.
"""Installing and upgrading the jobmachine schema from Python."""

from __future__ import annotations

from typing import Any

from psycopg import Connection
from psycopg.pq import TransactionStatus

from .._schema_sql import create_tables_sql
from ..errors import JobMachineError
from .connection import connect


def install_schema(target: Connection[Any] | str) -> None:
    """Install or upgrade the ``jobmachine`` schema: the same file as
    ``psql -f sql/create_tables.sql``. Idempotent: safe on a database that has
    the schema already (job_machine's or Perl Job::Machine's), losing no data.

    :param target: a connection (not inside a transaction) or a DSN.
    """
    if isinstance(target, str):
        conn = connect(target)
        try:
            conn.execute(create_tables_sql())
        finally:
            conn.close()
        return
    if target.info.transaction_status != TransactionStatus.IDLE:
        raise JobMachineError("install the schema on a connection outside a transaction")
    was_autocommit = target.autocommit
    if not was_autocommit:
        target.set_autocommit(True)
    try:
        # The file has its own BEGIN/COMMIT; no parameters, so it is sent as
        # one simple query.
        target.execute(create_tables_sql())
    finally:
        # A failed statement leaves the file's own transaction open and
        # aborted: end it, so the connection is usable and the real error
        # is the one raised.
        if target.info.transaction_status != TransactionStatus.IDLE:
            target.execute("ROLLBACK")
        if not was_autocommit:
            target.set_autocommit(False)
