"""JSON in and out of the parameters and result columns."""

from __future__ import annotations

import json
from typing import Any

from .errors import InvalidData

# One encoder for every call: json.dumps with non-default options builds a
# new JSONEncoder each time, which costs as much as encoding a small task.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def encode(data: Any, what: str = "data") -> str:
    """JSON-encode ``data``, or raise InvalidData naming what could not be encoded.

    NaN and infinities are refused: they are not JSON, and Perl's decoder and
    PostgreSQL's json parser would reject them on the other side.
    """
    try:
        text = _ENCODER.encode(data)
        if not text.isascii():
            text.encode("utf-8")  # a lone surrogate is valid Python text but not UTF-8
    except (TypeError, ValueError) as ex:  # UnicodeEncodeError is a ValueError
        raise InvalidData(f"{what} cannot be encoded as JSON: {ex}") from None
    return text


def decode(text: str | None) -> Any:
    """Decode a stored JSON column; None stays None."""
    if text is None:
        return None
    return json.loads(text)
