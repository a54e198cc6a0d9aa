"""Where the schema file is: inside the installed wheel, or at the checkout's root."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import LiteralString

#: The newest version recorded in jobmachine.schema_version by create_tables.sql.
SCHEMA_VERSION = 3


@cache
def create_tables_sql() -> LiteralString:
    """The text of sql/create_tables.sql.

    The wheel carries it as job_machine/sql/create_tables.sql (hatchling's
    force-include copies the one file at build time); an editable install or
    a checkout reads it from the repository root.
    """
    packaged = files("job_machine").joinpath("sql", "create_tables.sql")
    if packaged.is_file():
        text = packaged.read_text("utf-8")
    else:
        text = (Path(__file__).resolve().parent.parent / "sql" / "create_tables.sql").read_text(
            "utf-8"
        )
    # A file of the project, never built from values.
    return text
