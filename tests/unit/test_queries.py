"""The named-query loader and the names the Store uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from job_machine._queries import parse, queries

#: The Store: store.py and the files of its statements (store_*.py).
STORE = sorted((Path(__file__).resolve().parents[2] / "job_machine" / "_async").glob("store*.py"))


def test_parse_splits_named_blocks_and_drops_comments() -> None:
    text = "-- header\n-- name: a\n-- about a\nSELECT 1\n\n-- name: b\nSELECT\n  2\n"
    assert parse(text) == {"a": "SELECT 1", "b": "SELECT\n  2"}


def test_parse_rejects_a_repeated_name() -> None:
    with pytest.raises(ValueError, match="'a' is defined twice"):
        parse("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n")


def test_parse_rejects_an_empty_block() -> None:
    with pytest.raises(ValueError, match="'a' is empty"):
        parse("-- name: a\n-- only a comment\n-- name: b\nSELECT 1\n")


def test_every_query_the_store_runs_exists_and_every_query_is_used() -> None:
    text = "".join(path.read_text() for path in STORE)
    used = set(re.findall(r'self\._(?:one|all)\(\s*"(\w+)"', text))
    assert used, "found no query names in the Store's files"
    assert used <= set(queries()), f"missing from queries.sql: {used - set(queries())}"
    assert set(queries()) <= used, f"unused queries: {set(queries()) - used}"


def test_queries_use_named_placeholders_only() -> None:
    for name, statement in queries().items():
        assert "%s" not in statement, f"{name} uses a positional placeholder"


def test_schema_version_constant_matches_the_schema_file() -> None:
    """SCHEMA_VERSION is what the tests and tools expect create_tables.sql to record."""
    from job_machine._schema_sql import SCHEMA_VERSION, create_tables_sql  # noqa: PLC0415

    recorded = [int(v) for v in re.findall(r"VALUES \((\d+), '", create_tables_sql())]
    assert max(recorded) == SCHEMA_VERSION
    assert recorded == list(range(1, SCHEMA_VERSION + 1))
