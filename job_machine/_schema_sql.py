"""Where the SQL files of sql/ are: inside the installed wheel, or at the
checkout's root; and the names of the roles sql/roles.sql creates."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import LiteralString

#: The newest version recorded in jobmachine.schema_version by create_tables.sql.
SCHEMA_VERSION = 10

#: The prefix of the role names of sql/roles.sql when none is given.
DEFAULT_ROLE_PREFIX = "jobmachine"

#: What sql/roles.sql accepts as a prefix: the longest role name
#: (``<prefix>_sender``) must fit in an identifier (63 bytes).
_ROLE_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,55}")

#: The session setting sql/roles.sql reads its prefix from.
ROLE_PREFIX_SETTING = "jobmachine.role_prefix"


@cache
def _sql_file(name: str) -> LiteralString:
    """The text of sql/<name>.

    The wheel carries the files as job_machine/sql/<name> (hatchling's
    force-include copies each at build time); an editable install or a
    checkout reads them from the repository root.
    """
    packaged = files("job_machine").joinpath("sql", name)
    if packaged.is_file():
        text = packaged.read_text("utf-8")
    else:
        text = (Path(__file__).resolve().parent.parent / "sql" / name).read_text("utf-8")
    # A file of the project, never built from values.
    return text


def create_tables_sql() -> LiteralString:
    """The text of sql/create_tables.sql: the schema, installed or upgraded in place."""
    return _sql_file("create_tables.sql")


def roles_sql() -> LiteralString:
    """The text of sql/roles.sql: the least-privilege group roles (docs/roles.md)."""
    return _sql_file("roles.sql")


@dataclass(frozen=True, slots=True)
class Roles:
    """The names of the group roles sql/roles.sql creates for one prefix:
    ``Roles().sender == "jobmachine_sender"``.

    :raises ValueError: a prefix sql/roles.sql would refuse (up to 56
        lower-case letters, digits and underscores, not starting with a digit).
    """

    prefix: str = DEFAULT_ROLE_PREFIX
    #: Sends tasks and reads their replies (Client).
    sender: str = field(init=False)
    #: Runs workers, their housekeeping included (Worker).
    worker: str = field(init=False)
    #: Reads everything, writes nothing (a dashboard's Admin.stats and the like).
    reader: str = field(init=False)
    #: The reader, plus an operator's actions (cancel, retry, remove, pause...).
    admin: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not _ROLE_PREFIX.fullmatch(self.prefix):
            raise ValueError(
                "role prefix must be up to 56 lower-case letters, digits and underscores, "
                f"not starting with a digit; not {self.prefix!r}"
            )
        for kind in ("sender", "worker", "reader", "admin"):
            object.__setattr__(self, kind, f"{self.prefix}_{kind}")

    @property
    def all(self) -> tuple[str, str, str, str]:
        """The four names: sender, worker, reader, admin."""
        return (self.sender, self.worker, self.reader, self.admin)
