"""Queue-name validation and channel names."""

from __future__ import annotations

import time

import pytest

import job_machine as jm
from job_machine import InvalidQueueName, queue_channel, reply_channel, validate_queue
from job_machine.channels import MAX_QUEUE_BYTES, subscription


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


def test_a_subscription_serves_the_exact_queues_and_the_matching_ones_that_exist() -> None:
    sub = subscription(
        ["billing", "gl.*", "mail.**"],
        ["billing", "gl.old", "mail.a"],
        ["gl.new", "gl.deep.x", "mail.a", "mail.b.c", "has space", "gl.has space", "other"],
    )
    assert sub.served == ["billing", "gl.new", "mail.a", "mail.b.c"]
    assert sub.added == ["gl.new", "mail.b.c"]
    assert sub.dropped == ["gl.old"]  # removed by housekeeping; never an exact queue
    assert sub.unservable == ["gl.has space"]
    assert subscription(["**"], [], []).served == []


def test_a_workers_subscription_to_every_queue_is_linear_in_the_queues(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 15, item 3: a ``**`` worker compared each queue name with every
    name it served already (a list): 30,000 queues took seconds of one core
    at each look (quadratic). One pass with a set takes milliseconds."""
    names = [f"q{i:05d}.x" for i in range(30_000)]
    worker = jm.Worker("postgresql://nowhere/db", queue="**", handle_signals=False)
    monkeypatch.setattr(worker._store, "queue_names", lambda conn=None: names)
    started = time.perf_counter()
    worker._subscribe(None)
    worker._subscribe(None)  # nothing new: the second look costs the same
    assert time.perf_counter() - started < 1.5
    assert worker._served == names
    monkeypatch.setattr(worker._store, "queue_names", lambda conn=None: names[1:])
    worker._subscribe(None)
    assert worker._served == names[1:]
