"""JSON encoding of data and replies."""

from __future__ import annotations

import math

import pytest

from job_machine import InvalidData
from job_machine._codec import decode, encode


@pytest.mark.parametrize("value", [None, 1, 1.5, "ø", [1, "a"], {"a": {"b": [True, None]}}])
def test_round_trip(value: object) -> None:
    assert decode(encode(value)) == value


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (object(), "not JSON serializable"),
        ({1, 2}, "set"),
        (math.nan, "Out of range"),
        (math.inf, "Out of range"),
    ],
)
def test_unencodable_data_names_the_problem(value: object, detail: str) -> None:
    with pytest.raises(InvalidData, match=f"data cannot be encoded as JSON.*{detail}"):
        encode(value)


def test_decode_none_is_none() -> None:
    assert decode(None) is None
