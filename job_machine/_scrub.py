"""Secrets kept out of text bound for a page, a log line or an error
message: the DSN's password (however the DSN is written, even one libpq
cannot parse) and other secrets (an access token, a password), in their
plain and URL-quoted forms. Used by the dashboard (job_machine.web) and by
the JSON logs (job_machine.logging); needs nothing beyond psycopg.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus

from psycopg.conninfo import conninfo_to_dict

from ._printable import Lines


class Scrubber:
    """Removes secrets (the DSN's password, the access token, the basic
    password) from text bound for a page, a log line or an error message."""

    def __init__(self, dsn: str, others: Iterable[str | None] = ()) -> None:
        found: list[str] = [o for o in others if o]
        try:
            password = conninfo_to_dict(dsn).get("password")
        except Exception:  # unparsable: anything that may be its password
            found += _guessed_passwords(dsn)
        else:
            if password:
                found.append(str(password))
        forms = {f for s in found for f in (s, quote(s, safe=""), quote_plus(s))}
        # Longest first, so a secret that contains another goes whole.
        self._secrets = sorted((s for s in forms if s), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "********")
        return text

    def install(self, *logger_names: str) -> None:
        """Scrub every record those loggers, their handlers and the root
        logger's handlers emit."""
        for name in ("", *logger_names):
            target = logging.getLogger(name)
            target.addFilter(_ScrubFilter(self))
            for handler in target.handlers:
                handler.addFilter(_ScrubFilter(self))


def _guessed_passwords(dsn: str) -> list[str]:
    """What may be the password of a DSN that libpq cannot parse (its parse
    errors quote the part they stumbled on): the whole DSN, the part of a
    URL's user info after ':', and what follows ``password=`` (whole, and
    each word up to the next ``keyword=``)."""
    found = [dsn]
    if "://" in dsn:
        found.append(dsn.partition("://")[2].rpartition("@")[0].partition(":")[2])
    for match in re.finditer(r"password\s*=\s*(\S.*)", dsn, re.IGNORECASE | re.DOTALL):
        found.append(match[1].strip())
        for word in re.split(r"[\s&]+", match[1]):
            if "=" in word:
                break
            found += [word, word.strip("'\"")]
    return [f for f in found if f]


class _ScrubFilter(logging.Filter):
    def __init__(self, scrub: Scrubber) -> None:
        super().__init__()
        self._scrub = scrub

    def filter(self, record: logging.LogRecord) -> bool:
        # Each part on its own: formatters such as uvicorn's access log
        # unpack record.args, so they stay a tuple of the same length.
        if isinstance(record.msg, str):
            record.msg = self._scrub(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self._clean(a) for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {k: self._clean(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info))
        if record.exc_text:
            record.exc_text = self._scrub(record.exc_text)
        return True

    def _clean(self, value: object) -> object:
        if isinstance(value, str | bytes):
            text = value if isinstance(value, str) else value.decode("utf-8", "replace")
            cleaned = self._scrub(text)
            if cleaned != text:
                return Lines(cleaned) if isinstance(value, Lines) else cleaned
            return value
        if isinstance(value, BaseException):
            text = str(value)
            return (
                value
                if self._scrub(text) == text
                else self._scrub(f"{type(value).__name__}: {text}")
            )
        return value
