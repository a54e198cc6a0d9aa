"""The named SQL statements of queries.sql, loaded once."""

from __future__ import annotations

import re
import textwrap
from functools import cache
from importlib.resources import files
from typing import LiteralString

_BLOCK = re.compile(r"^-- (name|part): (\w+)\s*$", re.MULTILINE)
_INCLUDE = re.compile(r"^(\s*)-- include: (\w+)\s*$")


def parse(text: str) -> dict[str, LiteralString]:
    """Split a file of ``-- name: x`` blocks into ``{name: statement}``.

    Comment lines are kept out of the statements; a repeated name is an error.
    A ``-- part: y`` block is a piece of SQL that statements share: a
    statement's line ``-- include: y`` stands for it, each of its lines
    indented as that line is. Every part is included somewhere, and parts
    include no part.
    """
    pieces = _BLOCK.split(text)
    blocks: dict[str, tuple[str, str]] = {}
    for kind, name, body in zip(pieces[1::3], pieces[2::3], pieces[3::3], strict=True):
        if name in blocks:
            raise ValueError(f"query {name!r} is defined twice")
        blocks[name] = (kind, body)
    parts = {name: _part(name, body) for name, (kind, body) in blocks.items() if kind == "part"}
    included: set[str] = set()
    queries: dict[str, LiteralString] = {}
    for name, (kind, body) in blocks.items():
        if kind != "name":
            continue
        lines: list[str] = []
        for line in body.splitlines():
            include = _INCLUDE.match(line)
            if include:
                indent, part = include.groups()
                if part not in parts:
                    raise ValueError(f"query {name!r} includes {part!r}, which is no part")
                included.add(part)
                lines += [indent + ln for ln in parts[part]]
            elif not line.lstrip().startswith("--"):
                lines.append(line)
        statement = "\n".join(lines).strip()
        if not statement:
            raise ValueError(f"query {name!r} is empty")
        # The file ships with the package and is never built from values.
        queries[name] = statement
    if unused := sorted(set(parts) - included):
        raise ValueError(f"part(s) {', '.join(unused)} included by no query")
    return queries


def _part(name: str, body: str) -> list[str]:
    """The lines of part ``name``, comments left out, less their common indentation."""
    if any(_INCLUDE.match(line) for line in body.splitlines()):
        raise ValueError(f"part {name!r} includes a part (parts do not nest)")
    kept = "\n".join(
        ln for ln in body.splitlines() if ln.strip() and not ln.lstrip().startswith("--")
    )
    lines = textwrap.dedent(kept).splitlines()
    if not lines:
        raise ValueError(f"part {name!r} is empty")
    return lines


@cache
def queries() -> dict[str, LiteralString]:
    """All run-time statements of job_machine, by name."""
    return parse(files("job_machine").joinpath("queries.sql").read_text("utf-8"))
