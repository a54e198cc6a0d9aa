"""The named SQL statements of queries.sql, loaded once."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from typing import LiteralString

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, LiteralString]:
    """Split a file of ``-- name: x`` blocks into ``{name: statement}``.

    Comment lines are kept out of the statements; a repeated name is an error.
    """
    parts = _NAME.split(text)
    queries: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        lines = [ln for ln in body.splitlines() if not ln.lstrip().startswith("--")]
        statement = "\n".join(lines).strip()
        if not statement:
            raise ValueError(f"query {name!r} is empty")
        # The file ships with the package and is never built from values.
        queries[name] = statement
    return queries


@cache
def queries() -> dict[str, LiteralString]:
    """All run-time statements of job_machine, by name."""
    return parse(files("job_machine").joinpath("queries.sql").read_text("utf-8"))
