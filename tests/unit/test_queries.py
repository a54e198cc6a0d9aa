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


def test_parse_puts_a_part_where_it_is_included_indented_as_the_include() -> None:
    text = (
        "-- name: a\nSELECT 1\n  FROM t\n WHERE x\n   -- include: cond\n\n"
        "-- part: cond\n-- about cond\n    AND y = 1\n      -- why\n    AND (z\n      OR w)\n\n"
        "-- name: b\nSELECT 2 WHERE true\n -- include: cond\n"
    )
    assert parse(text) == {
        "a": "SELECT 1\n  FROM t\n WHERE x\n   AND y = 1\n   AND (z\n     OR w)",
        "b": "SELECT 2 WHERE true\n AND y = 1\n AND (z\n   OR w)",
    }


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("-- name: a\nSELECT 1\n-- include: b\n", "'a' includes 'b', which is no part"),
        ("-- name: a\nSELECT 1\n-- part: b\nAND x\n", "part(s) b included by no query"),
        ("-- name: a\n-- include: b\n-- part: b\n-- only a comment\n", "part 'b' is empty"),
        (
            "-- name: a\n-- include: b\n-- part: b\n-- include: c\n-- part: c\nAND x\n",
            "part 'b' includes a part",
        ),
        ("-- name: a\nSELECT 1\n-- part: a\nAND x\n", "'a' is defined twice"),
    ],
)
def test_parse_rejects_a_part_misused(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        parse(text)


def test_the_claims_share_their_parts() -> None:
    """task_claim and task_claim_limited claim the same tasks and stamp and
    return them alike: the parts of queries.sql, not two copies."""
    q = queries()
    for shared in (
        "AND t.priority >= %(min_priority)s",
        "AND (t.expires_at IS NULL OR t.expires_at > coalesce(%(now)s, now()))",
        "max_runtime = %(max_runtime)s::float8, orphan_after = %(orphan_after)s::float8",
        "extract(epoch FROM t.time_limit)::float8 AS time_limit",
    ):
        assert shared in q["task_claim"]
        assert shared in q["task_claim_limited"]
    assert "-- include:" not in q["task_claim"]


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
