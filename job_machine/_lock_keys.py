"""Every PostgreSQL advisory lock job_machine takes, in one table.

Advisory locks share one key space per database with the application's
own: these keys are job_machine's, chosen to spell "jm.." in ASCII. The SQL
that takes them (sql/ and job_machine/queries.sql) writes the numbers
literally; tests/unit/test_lock_keys.py checks that it takes no key this
table does not list, and every key listed here.

The table (key; how it is held; what for; where it is taken):

- ``hashtext('jobmachine.install')`` (:data:`INSTALL_KEY_TEXT`): one
  bigint, for a transaction. One schema install or upgrade at a time, and
  the roles script beside it: sql/create_tables.sql, sql/roles.sql.
- ``(WORKER_KEY, worker_id % 2^31)``: two int4, for a session. A worker is
  alive while its registry session holds it: queries.sql worker_register
  and worker_relock take it; the reaper reads it in pg_locks
  (``objsubid = 2``).
- ``(NAMED_LOCK_KEY, hashtext(name))``: two int4, for a transaction.
  Serialises the holders of one named lock: ``jobmachine.lock()`` in
  sql/create_tables.sql.
- ``CHORE_LOCK_KEY``: one bigint, for a session and for a transaction. The
  fleet's housekeeper holds it for its registry session (queries.sql
  leader_lock); the chores take it for their transaction (chore_lock). The
  Store passes it as ``%(key)s``.

A one-bigint key and a two-int4 key never collide, even with the same
number: PostgreSQL tells them apart (``objsubid`` 1 and 2 in pg_locks).
"""

from __future__ import annotations

#: The text whose hashtext() keys the install lock.
INSTALL_KEY_TEXT = "jobmachine.install"
#: The first int4 of a worker's liveness lock: "jmwk".
WORKER_KEY = 0x6A6D_776B
#: The first int4 of a named lock's serialising lock: "jmwl".
NAMED_LOCK_KEY = 0x6A6D_776C
#: The bigint of the housekeeper's and the chores' lock: "jmhk".
CHORE_LOCK_KEY = 0x6A6D_686B
