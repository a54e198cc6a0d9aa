"""Text a sender chose (a title, a queue name, an error, a traceback), made
safe to print on an operator's terminal or in a log: every control
character, the escape that starts a terminal's control sequences (ESC,
CSI), line and paragraph separators and the bidirectional overrides that
reorder what a reader sees are shown as ``\\xNN`` or ``\\uNNNN`` escapes, so a
title can neither start a fake log line nor move the cursor, retitle the
window or hide text. Used by ``job-machine tasks`` and by the log handlers
of ``job-machine work`` and ``job-machine web``.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Mapping

# C0 controls but tab, DEL, the C1 controls (0x9b is CSI on some terminals),
# the Arabic letter mark, LRM, RLM, the line and paragraph separators, the
# bidi embeddings and overrides (U+202A-E) and isolates (U+2066-9).
_UNSAFE = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_ONE_LINE = re.compile(f"[{_UNSAFE}\n]")
_LINES = re.compile(f"[{_UNSAFE}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, lines: bool = False) -> str:
    """``text`` with every control character and terminal escape shown as an
    escape (``\\x1b``, ``\\u202e``); newlines too, unless ``lines`` (a
    traceback) keeps them. Tabs stay. Backslashes are left alone, so applying
    it twice changes nothing more."""
    return (_LINES if lines else _ONE_LINE).sub(_escape, text)


class Lines(str):
    """A log argument that may span lines (a traceback): :class:`PrintableFilter`
    keeps its newlines, and escapes every other control character."""

    __slots__ = ()


#: The parts of a formatted traceback that are ours, not an exception's message.
_FRAMES = (
    "Traceback (most recent call last):",
    "\nDuring handling of the above exception",
    "\nThe above exception was the direct cause",
)


def format_exception(exc: BaseException) -> str:
    """A traceback, printable: its frames keep their lines (their text is
    code and file names), each exception's message is one line (a newline
    in it cannot start a fake log line)."""
    parts = []
    for chunk in traceback.TracebackException.from_exception(exc).format():
        if chunk.startswith(("  ", *_FRAMES)):
            parts.append(printable(chunk, lines=True))
        else:  # "ValueError: message", a note: one line each
            parts.append(printable(chunk.removesuffix("\n")) + "\n")
    return "".join(parts)


def _arg(value: object) -> object:
    """A log record's argument, printable; numbers and None as they are (for %d)."""
    if value is None or isinstance(value, int | float):
        return value
    if isinstance(value, Lines):
        return Lines(printable(value, lines=True))
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return printable(str(value))


class PrintableFilter(logging.Filter):
    """Makes each record a handler emits printable: its arguments (data: one
    line each, but a :class:`Lines`), its message template and its
    traceback (newlines kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = printable(record.msg, lines=True)
        if isinstance(record.args, tuple):
            record.args = tuple(_arg(a) for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {k: _arg(v) for k, v in record.args.items()}
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = format_exception(record.exc_info[1]).rstrip("\n")
        if record.exc_text:
            record.exc_text = printable(record.exc_text, lines=True)
        if record.stack_info:
            record.stack_info = printable(record.stack_info, lines=True)
        return True
