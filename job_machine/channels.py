"""Queue names and the notification channels derived from them.

A task sent to queue ``q`` is announced on channel ``jm:q``, and the reply to
task ``n`` on ``jmr:n``: the names Perl Job::Machine uses. A queue may be
named anything PostgreSQL accepts, as in Perl (``Email Sender``, ``a/b``,
``x:y``): any non-empty string without NUL. Names reach SQL as parameters
or quoted identifiers only.

PostgreSQL channel names are identifiers of at most 63 bytes: a Perl worker's
``LISTEN "jm:<queue>"`` of a longer name is truncated by the server to its
first 63 bytes (on a character boundary). :func:`queue_channel` returns that
truncated name, so job_machine LISTENs on exactly what Perl's listener hears
and notifies a channel that reaches it (the server-side notifies use the SQL
function ``jobmachine.queue_channel``, the same rule). Queues whose names
share their first 60 bytes share a channel: a worker of one is then also
woken by the other's tasks, finds none of its own and waits again
(notifications are only wake-up hints).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import InvalidQueueName

QUEUE_PREFIX = "jm:"
#: Announces a queue's first task (payload: the queue name), for workers
#: subscribed to a branch of queues.
NEW_QUEUE_CHANNEL = "jmq"
REPLY_PREFIX = "jmr:"
#: The prefix of a worker's own channel, ``jmw:<worker_id>``: the cancel of
#: a task it runs (Admin.cancel) is announced there.
WORKER_PREFIX = "jmw:"
#: The payload on ``jmr:<task_id>`` that announces a streamed part (not an
#: answer: a waiter for the answer is not woken by it).
PART_PAYLOAD = "part"
MAX_IDENTIFIER_BYTES = 63
MAX_QUEUE_BYTES = MAX_IDENTIFIER_BYTES - len(QUEUE_PREFIX)


class Exact(str):
    """A worker subscription to the queue of exactly this name, even if it
    ends in a wildcard segment: ``Worker(queue=Exact("reports.*"))`` serves
    the queue named ``reports.*``, where ``"reports.*"`` serves every queue
    one level below ``reports``. (The CLI's ``--exact-queue``.)"""

    __slots__ = ()


def validate_queue(name: object) -> str:
    """Return ``name`` if it is a valid queue name (any non-empty string
    without NUL, as PostgreSQL accepts in a Perl client's ``class.name``),
    else raise InvalidQueueName saying why."""
    if not isinstance(name, str):
        raise InvalidQueueName(f"queue name must be a string, not {type(name).__name__}")
    if not name:
        raise InvalidQueueName("queue name is empty")
    if "\x00" in name:
        raise InvalidQueueName(f"queue name {name!r} contains NUL (PostgreSQL text cannot)")
    return name


def truncate_identifier(name: str) -> str:
    """``name`` as PostgreSQL truncates an identifier: to its first 63 bytes,
    cut on a character boundary (in a UTF-8 database)."""
    data = name.encode("utf-8")
    if len(data) <= MAX_IDENTIFIER_BYTES:
        return name
    return data[:MAX_IDENTIFIER_BYTES].decode("utf-8", errors="ignore")


def queue_channel(queue: str) -> str:
    """The channel a queue's new tasks are announced on: ``jm:<queue>`` as a
    Perl worker's ``LISTEN "jm:<queue>"`` hears it, truncated to 63 bytes."""
    return truncate_identifier(QUEUE_PREFIX + validate_queue(queue))


def reply_channel(task_id: int) -> str:
    """The channel the reply to a task is announced on."""
    return f"{REPLY_PREFIX}{int(task_id)}"


def is_pattern(name: str) -> bool:
    """Whether a worker's queue entry is a pattern (``gl.*``, ``gl.**``);
    never an :class:`Exact` name."""
    if isinstance(name, Exact):
        return False
    return name in {"*", "**"} or name.endswith((".*", ".**"))


def validate_subscription(name: object) -> str:
    """Return ``name`` if a worker may serve it: a queue name, or a pattern.

    ``gl.*`` takes the queues one level below ``gl`` (``gl.accounting``, not
    ``gl`` nor ``gl.accounting.eu``); ``gl.**`` takes every queue below
    ``gl`` at any depth; ``*`` and ``**`` do the same from the top. The
    wildcard is only allowed as the last segment. Any other name, and any
    :class:`Exact` one, is a queue served as named.

    :raises InvalidQueueName: neither a queue name nor such a pattern.
    """
    return validate_queue(name)


def matches(pattern: str, queue: str) -> bool:
    """Whether ``queue`` is served by the subscription ``pattern``."""
    if not is_pattern(pattern):
        return pattern == queue
    stem, dot, wildcard = pattern.rpartition(".")
    if dot:  # "gl.*": below "gl"; ".*" below "" (names starting with ".")
        if not queue.startswith(stem + "."):
            return False
        rest = queue[len(stem) + 1 :]
    else:
        rest = queue
    return bool(rest) and (wildcard == "**" or "." not in rest)


@dataclass(frozen=True, slots=True)
class Subscription:
    """What a worker serves, given its subscriptions and the queues that exist."""

    #: The queue names to serve: the exact ones subscribed to, then the
    #: existing queues the patterns match, in the order listed.
    served: list[str]
    #: Matched queues not served before (to LISTEN on).
    added: list[str]
    #: Queues served before that a pattern matched and that no longer exist
    #: (removed by housekeeping: to UNLISTEN).
    dropped: list[str]
    #: Kept for compatibility: always empty now that every name a Perl
    #: client can create can be served.
    unservable: list[str]


def subscription(
    subscriptions: Sequence[str], served: Sequence[str], existing: Iterable[str]
) -> Subscription:
    """What a worker subscribed to ``subscriptions`` (queue names and
    patterns) serves, now that the queues ``existing`` exist, when it served
    ``served`` so far. One pass over the queues, each looked up in a set:
    O(queues x patterns), however many a sender created."""
    patterns = [p for p in subscriptions if is_pattern(p)]
    exact = [q for q in subscriptions if not is_pattern(q)]
    chosen = dict.fromkeys(exact)
    unservable: list[str] = []
    for name in existing:
        if name in chosen or not any(matches(p, name) for p in patterns):
            continue
        chosen[name] = None
    before = set(served)
    return Subscription(
        served=list(chosen),
        added=[q for q in chosen if q not in before],
        dropped=[q for q in served if q not in chosen],
        unservable=unservable,
    )


def worker_channel(worker_id: int) -> str:
    """The channel a registered worker LISTENs on for cancels of its tasks
    and for the commands of Admin.broadcast (a wake-up: it then takes them)."""
    return f"{WORKER_PREFIX}{worker_id}"
