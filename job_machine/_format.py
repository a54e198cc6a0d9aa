"""How job_machine writes errors and times for people, the same in the
core, the command line and the dashboard (not sync or async: never twinned).
"""

from __future__ import annotations

from datetime import datetime


def first_line(ex: BaseException) -> str:
    """The first line of an error's message (its type's name when it has no
    message), for a log line that says why something is retried."""
    text = str(ex).strip()
    return text.splitlines()[0] if text else type(ex).__name__


def one_line(ex: BaseException) -> str:
    """The whole message of an error on one line, white space folded (its
    type's name when it has no message): the command line's ``Error: ...``."""
    return " ".join(str(ex).split()) or type(ex).__name__


def local_time(value: datetime | None, *, zone: bool = False, seconds: bool = True) -> str:
    """A timestamp in this machine's zone, ``2026-12-04 19:25:36`` (with
    ``zone``: ``... UTC``; without ``seconds``: to the minute); ``-`` for None."""
    if value is None:
        return "-"
    shape = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return value.astimezone().strftime(f"{shape} %Z" if zone else shape)
