"""Installing and upgrading the jobmachine schema, and its roles, from Python."""

from __future__ import annotations

from typing import Any, LiteralString

from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus

from .._db_errors import translated
from .._schema_sql import (
    DEFAULT_ROLE_PREFIX,
    ROLE_PREFIX_SETTING,
    Roles,
    create_tables_sql,
    roles_sql,
)
from ..errors import JobMachineError
from .connection import AsyncConnector, aconnect
from .store import AsyncStore


async def ainstall_schema(target: AsyncConnection[Any] | str) -> None:
    """Install or upgrade the ``jobmachine`` schema: the same file as
    ``psql -f sql/create_tables.sql``. Idempotent: safe on a database that has
    the schema already (job_machine's or Perl Job::Machine's), losing no data.

    :param target: a connection (not inside a transaction) or a DSN.
    :raises DatabaseError: the file refused to run (a check of its own, such
        as duplicate queue names a Perl client left: SQLSTATE P0001, its
        message and HINT say what to do); nothing was changed.
    """
    await _run_file(target, create_tables_sql(), "install the schema", {})


async def ainstall_roles(
    target: AsyncConnection[Any] | str, prefix: str = DEFAULT_ROLE_PREFIX
) -> Roles:
    """Create the least-privilege group roles and grant them what they need
    on the ``jobmachine`` schema: the same file as ``psql -f sql/roles.sql``
    (see docs/roles.md). Idempotent; run it again after every schema upgrade.

    Run it as the owner of the schema; the first run also needs CREATEROLE.

    :param target: a connection (not inside a transaction) or a DSN.
    :param prefix: the roles are ``<prefix>_sender``, ``_worker``,
        ``_reader`` and ``_admin``; roles are cluster-wide, so give each
        application of a shared cluster its own prefix.
    :return: the names of the roles.
    :raises ValueError: a prefix that is not a lower-case identifier of up
        to 56 characters.
    :raises DatabaseError: the file refused to run (no schema, or one older
        than the roles need: SQLSTATE P0001; a role that may not create
        roles: 42501); nothing was changed.
    """
    roles = Roles(prefix)
    await _run_file(target, roles_sql(), "install the roles", {ROLE_PREFIX_SETTING: prefix})
    return roles


async def _run_file(
    target: AsyncConnection[Any] | str,
    text: LiteralString,
    what: str,
    settings: dict[str, str],
) -> None:
    """Run one of the files of sql/ (each has its own BEGIN/COMMIT), with
    ``settings`` set for the session while it runs; psycopg's errors raised
    as job_machine's."""
    if isinstance(target, str):
        conn = await aconnect(target)
        try:
            with translated(conn):
                await _run_on(conn, text, settings)
        finally:
            await conn.close()
        return
    if target.info.transaction_status != TransactionStatus.IDLE:
        raise JobMachineError(f"{what} on a connection outside a transaction")
    with translated(target):
        was_autocommit = target.autocommit
        if not was_autocommit:
            await target.set_autocommit(True)
        try:
            await _run_on(target, text, settings)
        finally:
            if not was_autocommit:
                await target.set_autocommit(False)


async def _run_on(
    conn: AsyncConnection[Any], text: LiteralString, settings: dict[str, str]
) -> None:
    """Run the file on ``conn`` (in autocommit), and leave no transaction open."""
    store = AsyncStore(AsyncConnector(conn=conn)).on(conn)
    await store.session_set(settings)
    try:
        # No parameters, so the file is sent as one simple query.
        await conn.execute(text)
    finally:
        if not (conn.broken or conn.closed):
            # A failed statement leaves the file's own transaction open and
            # aborted: end it, so the connection is usable and the real
            # error is the one raised.
            if conn.info.transaction_status != TransactionStatus.IDLE:
                await conn.execute("ROLLBACK")
            # Leave the caller's session as it was (sql/roles.sql reads an
            # empty setting as unset).
            await store.session_set(dict.fromkeys(settings, ""))
