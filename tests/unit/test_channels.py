"""Queue-name validation and channel names."""

from __future__ import annotations

import pytest

from job_machine import InvalidQueueName, queue_channel, reply_channel, validate_queue
from job_machine.channels import MAX_QUEUE_BYTES


@pytest.mark.parametrize(
    "name", ["job.task", "gl.accounting", "message.email", "a", "a-b_c.d9", "køb.ordre"]
)
def test_valid_names(name: str) -> None:
    assert validate_queue(name) == name
    assert queue_channel(name) == "jm:" + name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("a..b", "malformed"),
        (".a", "malformed"),
        ("a.", "malformed"),
        ("has space", "malformed"),
        ("gl.*", "malformed"),
        ('a"b', "malformed"),
        ("a\nb", "malformed"),
    ],
)
def test_invalid_names_say_why(name: str, why: str) -> None:
    with pytest.raises(InvalidQueueName, match=why):
        validate_queue(name)


def test_non_string_name() -> None:
    with pytest.raises(InvalidQueueName, match="must be a string"):
        validate_queue(42)


def test_longest_name_fits_a_channel_and_one_more_byte_does_not() -> None:
    assert MAX_QUEUE_BYTES == 60
    longest = "q" * 60
    assert len(queue_channel(longest).encode()) == 63
    with pytest.raises(InvalidQueueName, match="63 bytes"):
        validate_queue("q" * 61)
    # Bytes, not characters: 30 two-byte letters are 60 bytes, 31 are too many.
    validate_queue("ø" * 30)
    with pytest.raises(InvalidQueueName, match="62 bytes"):
        validate_queue("ø" * 31)


def test_reply_channel() -> None:
    assert reply_channel(42) == "jmr:42"
