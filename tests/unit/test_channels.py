"""Queue-name validation and channel names."""

from __future__ import annotations

import time

import pytest

import job_machine as jm
from job_machine import InvalidQueueName, queue_channel, reply_channel, validate_queue
from job_machine.channels import MAX_QUEUE_BYTES, Exact, is_pattern, matches, subscription


@pytest.mark.parametrize(
    "name", ["job.task", "gl.accounting", "message.email", "a", "a-b_c.d9", "køb.ordre"]
)
def test_valid_names(name: str) -> None:
    assert validate_queue(name) == name
    assert queue_channel(name) == "jm:" + name


WEIRD_NAMES = [
    "Email Sender",
    "a/b",
    "x:y",
    "gl..x",
    ".a",
    "a.",
    'a"b',
    "a\nb",
    "100% ?#&=+",
    "<script>alert(1)</script>",
    "køb ordre ✓",
    "gl.*",  # a queue name; as a worker subscription, a pattern unless Exact
]


@pytest.mark.parametrize("name", WEIRD_NAMES)
def test_any_name_perl_accepts_is_a_queue(name: str) -> None:
    """Issue 14, item 8: Perl's queues "can be named anything PostgreSQL
    accepts"; job_machine refused everything outside dotted [\\w-] segments."""
    assert validate_queue(name) == name
    assert queue_channel(name) == "jm:" + name


@pytest.mark.parametrize(("name", "why"), [("", "empty"), ("a\x00b", "NUL")])
def test_invalid_names_say_why(name: str, why: str) -> None:
    with pytest.raises(InvalidQueueName, match=why):
        validate_queue(name)


def test_non_string_name() -> None:
    with pytest.raises(InvalidQueueName, match="must be a string"):
        validate_queue(42)


def test_a_long_names_channel_is_truncated_as_postgresql_truncates_listen() -> None:
    """The channel is what Perl's ``LISTEN "jm:<name>"`` hears: the first 63
    bytes, cut on a character boundary; a longer name is no longer refused."""
    assert MAX_QUEUE_BYTES == 60
    assert queue_channel("q" * 60) == "jm:" + "q" * 60
    assert queue_channel("q" * 100) == "jm:" + "q" * 60
    # Bytes, not characters: 30 two-byte letters fit, the 31st is cut whole.
    assert queue_channel("ø" * 30) == "jm:" + "ø" * 30
    assert queue_channel("ø" * 31) == "jm:" + "ø" * 30
    assert queue_channel("q" + "ø" * 40) == "jm:q" + "ø" * 29  # 62 bytes, not half a letter


def test_exact_serves_a_queue_named_like_a_pattern() -> None:
    assert jm.validate_subscription("gl.*") == "gl.*"
    assert is_pattern("gl.*") and is_pattern("**")
    assert not is_pattern(Exact("gl.*")) and not is_pattern(Exact("**"))
    sub = subscription([Exact("gl.*")], [], ["gl.*", "gl.a"])
    assert sub.served == ["gl.*"]
    sub = subscription(["gl.*"], [], ["gl.*", "gl.a", "gl.a b"])
    assert sub.served == ["gl.*", "gl.a", "gl.a b"]  # "*" is a name one level below gl
    worker = jm.Worker(
        "postgresql://nowhere/db", queue=[Exact("gl.*"), "x.**"], handle_signals=False
    )
    assert worker._subscriber.served == ["gl.*"] and worker._subscriber.patterns == ["x.**"]
    assert type(worker._subscriber.served[0]) is str


def test_a_pattern_matches_below_its_stem_whatever_the_names() -> None:
    assert matches("gl.*", "gl.a b") and not matches("gl.*", "gl.a.b")
    assert matches("gl..*", "gl..x") and not matches("gl..*", "gl.x")
    assert matches(".*", ".x") and not matches(".*", "x")
    assert matches("*", "Email Sender") and not matches("*", "a.b")
    assert matches("a/b.**", "a/b.c.d")


def test_reply_channel() -> None:
    assert reply_channel(42) == "jmr:42"


def test_a_subscription_serves_the_exact_queues_and_the_matching_ones_that_exist() -> None:
    sub = subscription(
        ["billing", "gl.*", "mail.**"],
        ["billing", "gl.old", "mail.a"],
        ["gl.new", "gl.deep.x", "mail.a", "mail.b.c", "has space", "gl.has space", "other"],
    )
    assert sub.served == ["billing", "gl.new", "mail.a", "mail.b.c", "gl.has space"]
    assert sub.added == ["gl.new", "mail.b.c", "gl.has space"]
    assert sub.dropped == ["gl.old"]  # removed by housekeeping; never an exact queue
    assert sub.unservable == []  # "gl.has space" is served like any name
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
    worker._subscriber.subscribe(None)
    worker._subscriber.subscribe(None)  # nothing new: the second look costs the same
    assert time.perf_counter() - started < 1.5
    assert worker._subscriber.served == names
    monkeypatch.setattr(worker._store, "queue_names", lambda conn=None: names[1:])
    worker._subscriber.subscribe(None)
    assert worker._subscriber.served == names[1:]


def test_a_task_functions_queue_is_served_by_name_even_if_it_looks_like_a_pattern() -> None:
    app = jm.App()

    @app.task(queue="reports.*")
    def report() -> None: ...

    @app.task(queue="Email Sender")
    def mail() -> None: ...

    worker = app.worker(dsn="postgresql://nowhere/db", handle_signals=False)
    assert (
        worker._subscriber.served == ["reports.*", "Email Sender"]
        and worker._subscriber.patterns == []
    )
    assert app.worker("reports.*", dsn="postgresql://nowhere/db")._subscriber.patterns == [
        "reports.*"
    ]


def test_a_channel_two_long_names_share_is_kept_while_one_is_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = "q" * 60 + ".a", "q" * 60 + ".b"
    assert queue_channel(a) == queue_channel(b)

    class Listener:
        def __init__(self) -> None:
            self.calls: list[tuple[str, str]] = []

        def listen(self, channel: str) -> None:
            self.calls.append(("listen", channel))

        def unlisten(self, channel: str) -> None:
            self.calls.append(("unlisten", channel))

    listener = Listener()
    worker = jm.Worker("postgresql://nowhere/db", queue="**", handle_signals=False)
    monkeypatch.setattr(worker._store, "queue_names", lambda conn=None: [a, b])
    worker._subscriber.subscribe(listener)  # type: ignore[arg-type]
    monkeypatch.setattr(worker._store, "queue_names", lambda conn=None: [b])
    worker._subscriber.subscribe(listener)  # type: ignore[arg-type]
    assert ("unlisten", queue_channel(a)) not in listener.calls
    monkeypatch.setattr(worker._store, "queue_names", lambda conn=None: [])
    worker._subscriber.subscribe(listener)  # type: ignore[arg-type]
    assert listener.calls[-1] == ("unlisten", queue_channel(b))
