"""Queue names and the notification channels derived from them.

A task sent to queue ``q`` is announced on channel ``jm:q``, and the reply to
task ``n`` on ``jmr:n``: the names Perl Job::Machine uses. PostgreSQL channel
names are identifiers of at most 63 bytes, so a queue name may have at most 60
bytes of UTF-8; a longer one is refused (not truncated or hashed, which would
break the contract with Perl workers listening on the full name).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import InvalidQueueName

QUEUE_PREFIX = "jm:"
#: Announces a queue's first task (payload: the queue name), for workers
#: subscribed to a branch of queues.
NEW_QUEUE_CHANNEL = "jmq"
REPLY_PREFIX = "jmr:"
#: The payload on ``jmr:<task_id>`` that announces a streamed part (not an
#: answer: a waiter for the answer is not woken by it).
PART_PAYLOAD = "part"
MAX_IDENTIFIER_BYTES = 63
MAX_QUEUE_BYTES = MAX_IDENTIFIER_BYTES - len(QUEUE_PREFIX)

# Dotted segments of letters, digits, '_' and '-': "gl.accounting",
# "message.email". '*' and '#' stay free for subscription patterns.
_QUEUE = re.compile(r"[\w-]+(?:\.[\w-]+)*")


def validate_queue(name: object) -> str:
    """Return ``name`` if it is a valid queue name, else raise InvalidQueueName saying why."""
    if not isinstance(name, str):
        raise InvalidQueueName(f"queue name must be a string, not {type(name).__name__}")
    if not name:
        raise InvalidQueueName("queue name is empty")
    if not _QUEUE.fullmatch(name):
        raise InvalidQueueName(
            f"queue name {name!r} is malformed: use dot-separated segments of letters, "
            "digits, '_' and '-' (like 'gl.accounting')"
        )
    size = len(name.encode("utf-8"))
    if size > MAX_QUEUE_BYTES:
        raise InvalidQueueName(
            f"queue name {name[:20]!r}... is {size} bytes; at most {MAX_QUEUE_BYTES} fit in "
            f"a PostgreSQL channel name ({QUEUE_PREFIX!r} + name <= {MAX_IDENTIFIER_BYTES} bytes)"
        )
    return name


def queue_channel(queue: str) -> str:
    """The channel a queue's new tasks are announced on."""
    return QUEUE_PREFIX + validate_queue(queue)


def reply_channel(task_id: int) -> str:
    """The channel the reply to a task is announced on."""
    return f"{REPLY_PREFIX}{int(task_id)}"


def is_pattern(name: str) -> bool:
    """Whether a worker's queue entry is a pattern (``gl.*``, ``gl.**``)."""
    return name in {"*", "**"} or name.endswith((".*", ".**"))


def validate_subscription(name: object) -> str:
    """Return ``name`` if a worker may serve it: a queue name, or a pattern.

    ``gl.*`` takes the queues one level below ``gl`` (``gl.accounting``, not
    ``gl`` nor ``gl.accounting.eu``); ``gl.**`` takes every queue below
    ``gl`` at any depth; ``*`` and ``**`` do the same from the top. The
    wildcard is only allowed as the last segment.

    :raises InvalidQueueName: neither a queue name nor such a pattern.
    """
    if isinstance(name, str) and is_pattern(name):
        if "." in name:
            try:
                validate_queue(name.rpartition(".")[0])
            except InvalidQueueName as ex:
                raise InvalidQueueName(f"queue pattern {name!r}: {ex}") from None
        return name
    return validate_queue(name)


def matches(pattern: str, queue: str) -> bool:
    """Whether ``queue`` is served by the subscription ``pattern``."""
    if not is_pattern(pattern):
        return pattern == queue
    stem, _, wildcard = pattern.rpartition(".")
    if stem:
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
    #: Existing queues a pattern matches whose names cannot be a channel
    #: (a Perl client's queue named with spaces, say).
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
        try:
            validate_queue(name)
        except InvalidQueueName:
            unservable.append(name)
            continue
        chosen[name] = None
    before = set(served)
    return Subscription(
        served=list(chosen),
        added=[q for q in chosen if q not in before],
        dropped=[q for q in served if q not in chosen],
        unservable=unservable,
    )
