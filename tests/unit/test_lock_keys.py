"""The advisory-lock keys of job_machine/_lock_keys.py are the ones the SQL takes."""

from __future__ import annotations

import re
from pathlib import Path

from job_machine import _lock_keys

ROOT = Path(__file__).resolve().parents[2]
SQL = [
    ROOT / "sql" / "create_tables.sql",
    ROOT / "sql" / "roles.sql",
    ROOT / "job_machine" / "queries.sql",
]
#: pg_advisory_lock(...), pg_try_advisory_xact_lock(...) and the like: their first argument.
TAKEN = re.compile(
    r"pg_(?:try_)?advisory(?:_xact)?_lock\(\s*(hashtext\('[^']*'\)|%\(\w+\)s|\d+|[^,)]+)"
)


def _first_arguments() -> set[str]:
    found: set[str] = set()
    for path in SQL:
        found |= {m.group(1).strip() for m in TAKEN.finditer(path.read_text())}
    return found


def test_the_sql_takes_the_keys_of_the_table_and_no_other() -> None:
    expected = {
        f"hashtext('{_lock_keys.INSTALL_KEY_TEXT}')",
        str(_lock_keys.WORKER_KEY),
        str(_lock_keys.NAMED_LOCK_KEY),
        "%(key)s",  # the Store passes CHORE_LOCK_KEY (leader_lock, chore_lock)
    }
    assert _first_arguments() == expected


def test_the_store_passes_the_housekeeper_key() -> None:
    from job_machine._async import store  # noqa: PLC0415

    assert store.CHORE_LOCK_KEY == _lock_keys.CHORE_LOCK_KEY == int.from_bytes(b"jmhk")
    assert int.from_bytes(b"jmwk") == _lock_keys.WORKER_KEY
    assert int.from_bytes(b"jmwl") == _lock_keys.NAMED_LOCK_KEY
