"""The worker's settings, written once: default, check and help text of each.

``AsyncWorker`` and ``Worker`` take their class defaults from
:class:`WorkerSettings` and check their constructor arguments here; the
``job-machine worker`` command builds its options from
:data:`WorkerConfig.settings` (so a setting cannot be missing there, nor
typed as seconds when it counts days). Neither sync nor async:
hand-written once for both faces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Literal

from ._options import check_priority
from ._validate import is_int, is_number
from .channels import validate_subscription

#: How a setting's value is checked (and typed on the command line):
#: ``seconds`` > 0, ``seconds0`` >= 0, ``days`` > 0 (or a timedelta),
#: ``count`` a whole number >= ``minimum``, ``priority`` a PostgreSQL integer,
#: ``dsn`` a connection string.
Kind = Literal["seconds", "seconds0", "days", "count", "priority", "dsn"]


@dataclass(frozen=True, slots=True)
class Setting:
    """One worker setting."""

    name: str
    kind: Kind
    #: The value a worker has unless given or set on its class (None: off).
    default: Any
    #: One line for ``job-machine worker --help``.
    help: str
    #: The smallest whole number allowed (``count`` only).
    minimum: int = 0
    #: Whether the ``worker`` command has an option for it (``concurrency``
    #: has its own, ``-c``).
    in_cli: bool = True

    @property
    def shown_default(self) -> str:
        """The default as ``--help`` shows it, in brackets."""
        if self.default is None:
            return {"max_runtime": "never", "min_priority": "any"}.get(self.name, "none")
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)

    @property
    def metavar(self) -> str:
        return {
            "count": "N",
            "priority": "N",
            "days": "DAYS",
            "dsn": "DSN",
        }.get(self.kind, "SECONDS")


class WorkerConfig:
    """The worker's settings: defaults, checks and help text."""

    settings: tuple[Setting, ...] = (
        Setting(
            "timeout",
            "seconds",
            30.0,
            "Seconds without a notification after which the worker pings its connection "
            "and reads its queues again",
        ),
        Setting(
            "dead_after", "seconds", 15.0, "Seconds within which a dead worker's tasks wait again"
        ),
        Setting(
            "max_runtime",
            "seconds",
            None,
            "Give up on a task a live worker has run this many seconds (from when process() "
            "started)",
        ),
        Setting(
            "time_limit",
            "seconds",
            None,
            "Stop an attempt that runs longer than this many seconds (TimeLimitExceeded; "
            "a task's own send(time_limit=) wins)",
        ),
        Setting(
            "orphan_after",
            "seconds",
            1800.0,
            "Revive a started task no registered worker holds after this many seconds",
        ),
        Setting("min_priority", "priority", None, "Claim only tasks of at least this priority"),
        Setting("retries", "count", 3, "Retries after the first attempt before a task fails"),
        Setting("retry_backoff", "seconds0", 1.0, "Seconds before the first retry, doubling"),
        Setting("retry_backoff_cap", "seconds0", 300.0, "Longest wait between retries, seconds"),
        Setting(
            "reconnect_backoff", "seconds", 0.5, "Seconds before the first reconnect, doubling"
        ),
        Setting(
            "reconnect_backoff_cap", "seconds", 30.0, "Longest wait between reconnects, seconds"
        ),
        Setting(
            "shutdown_grace",
            "seconds",
            30.0,
            "Seconds the task in hand gets to finish after SIGTERM",
        ),
        Setting(
            "housekeeping_interval",
            "seconds",
            60.0,
            "Seconds between the fleet's slower chores",
        ),
        Setting("remove_after", "days", 30.0, "Days after which finished tasks are deleted"),
        Setting("concurrency", "count", 1, "Tasks processed at once", minimum=1, in_cli=False),
        Setting(
            "prefetch",
            "count",
            100,
            "Most tasks claimed in one statement (1: one at a time)",
            minimum=1,
        ),
        Setting(
            "prefetch_seconds",
            "seconds",
            0.2,
            "Seconds of work a worker may hold claimed ahead",
        ),
        Setting(
            "listen_dsn",
            "dsn",
            None,
            "Where to LISTEN and keep the registry session when --dsn is a PgBouncer "
            "in transaction mode",
        ),
    )

    @classmethod
    def setting(cls, name: str) -> Setting:
        """The setting called ``name``."""
        for s in cls.settings:
            if s.name == name:
                return s
        raise KeyError(name)

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of the setting called ``name``."""
        return cls.setting(name).default

    @classmethod
    def check(cls, name: str, value: Any) -> Any:
        """``value``, checked (and converted: seconds and days to float, a
        timedelta to days) for the setting called ``name``.

        :raises ValueError: out of range, or not a number where one is needed.
        :raises TypeError: a priority that is not an int.
        """
        s = cls.setting(name)
        if s.kind == "priority":
            return check_priority(name, value)
        if s.kind == "count":
            if not is_int(value) or value < s.minimum:
                raise ValueError(f"{name} must be a whole number >= {s.minimum}, not {value!r}")
            return value
        if s.kind == "dsn":
            return value
        if s.kind == "days" and isinstance(value, timedelta):
            value = value.total_seconds() / 86400
        zero_ok = s.kind == "seconds0"  # 0: retry at once
        if (
            not is_number(value)
            or not (value >= 0 if zero_ok else value > 0)
            or value == float("inf")
        ):
            what = "a number >= 0" if zero_ok else "a positive number"
            raise ValueError(f"{name} must be {what} of seconds/days, not {value!r}")
        return float(value)

    @classmethod
    def check_given(cls, given: dict[str, Any]) -> dict[str, Any]:
        """The settings a worker's constructor was given (``given``: its
        arguments by name, settings among them), those that are not None,
        checked (see :meth:`check`). ``listen_dsn`` is left to the caller
        (an attribute of the worker, set even when None)."""
        return {
            s.name: cls.check(s.name, given[s.name])
            for s in cls.settings
            if s.kind != "dsn" and given.get(s.name) is not None
        }

    @staticmethod
    def check_queues(names: str | Sequence[str] | None) -> list[str]:
        """The queues and patterns a worker is to serve, checked.

        :raises ValueError: none given, or an empty list.
        :raises InvalidQueueName: a name or pattern that is not one.
        """
        if names is None:
            raise ValueError("no queue: pass queue= to the worker or set it on the class")
        if isinstance(names, str):
            names = [names]
        queues = [validate_subscription(q) for q in names]
        if not queues:
            raise ValueError("queue list is empty")
        return queues


class WorkerSettings:
    """The settings of ``AsyncWorker`` and ``Worker`` as class attributes,
    with their defaults: each can be given to the constructor or set as a
    class attribute of a subclass."""

    #: The queue(s) to serve when none is given to the constructor.
    queue: ClassVar[str | Sequence[str] | None] = None
    #: Claim only tasks of at least this priority (None: any).
    min_priority: int | None = WorkerConfig.default("min_priority")
    #: Seconds without a notification after which the worker pings its
    #: listening connection and reads its queues again: a lost notification
    #: delays a task by at most this long.
    timeout: float = WorkerConfig.default("timeout")
    #: Seconds within which a dead worker's tasks go back to waiting
    #: (liveness is judged by PostgreSQL: see docs/liveness.md).
    dead_after: float = WorkerConfig.default("dead_after")
    #: Optional limit: seconds after which a task a *live* worker still runs
    #: is given up on (an error is stored and it is retried or failed; the
    #: worker running it can no longer finish it). None: never.
    max_runtime: float | None = WorkerConfig.default("max_runtime")
    #: Optional limit: seconds one attempt may run; a task's own
    #: ``send(time_limit=...)`` wins. Past it the attempt is stopped (the
    #: async worker cancels the coroutine; a thread sees ``task.cancelled``)
    #: and ends with a :class:`~job_machine.TimeLimitExceeded` error,
    #: retried or failed like any error. None: no limit.
    time_limit: float | None = WorkerConfig.default("time_limit")
    #: Whether stopping an attempt (time limit, cancel) ends this process
    #: (exit code :data:`job_machine.supervisor.EXIT_TASK_STOPPED`), after
    #: handing back the other tasks it holds: set in the worker processes of
    #: ``job-machine worker --processes N``, whose supervisor starts a
    #: fresh one at once. Code that never looks at ``task.cancelled`` (a
    #: CPU-bound loop, a blocking call) is thus stopped too.
    exit_on_stop: bool = False
    #: Seconds after which a started task that no registered worker holds (a
    #: Perl worker's, or one claimed by work_once()) is revived, as Perl does.
    orphan_after: float = WorkerConfig.default("orphan_after")
    #: Retries after the first attempt before a task fails.
    retries: int = WorkerConfig.default("retries")
    #: Backoff of a retry: ``retry_backoff * 2 ** (attempt - 1)`` seconds,
    #: capped at ``retry_backoff_cap``, with jitter.
    retry_backoff: float = WorkerConfig.default("retry_backoff")
    retry_backoff_cap: float = WorkerConfig.default("retry_backoff_cap")
    #: Backoff of reconnects after the database went away.
    reconnect_backoff: float = WorkerConfig.default("reconnect_backoff")
    reconnect_backoff_cap: float = WorkerConfig.default("reconnect_backoff_cap")
    #: Seconds the task in hand may take to finish after SIGTERM/SIGINT.
    shutdown_grace: float = WorkerConfig.default("shutdown_grace")
    #: Seconds between the fleet's slower chores (orphans, old finished tasks).
    housekeeping_interval: float = WorkerConfig.default("housekeeping_interval")
    #: Days after which finished tasks are removed.
    remove_after: float = WorkerConfig.default("remove_after")
    #: Whether receive() installs SIGTERM/SIGINT handlers (main thread only).
    handle_signals: bool = True
    #: How many tasks to process at once.
    concurrency: int = WorkerConfig.default("concurrency")
    #: Most tasks a worker claims in one statement. It claims as many as
    #: its slots get through in ``prefetch_seconds`` by the average run time
    #: of its tasks so far: with concurrency 1, 100 tasks of 1 ms, 10 of
    #: 20 ms, long tasks one by one (with concurrency > 1, at least one per
    #: free slot). The tasks claimed ahead wait in the worker, not for
    #: other workers. 1 turns it off.
    prefetch: int = WorkerConfig.default("prefetch")
    #: Seconds of work a worker may hold claimed ahead.
    prefetch_seconds: float = WorkerConfig.default("prefetch_seconds")


@dataclass(frozen=True, slots=True)
class TaskPolicy:
    """The housekeeping settings a worker stamps on every task it claims, so
    that the fleet's housekeeper, whichever worker it is, judges the task by
    the settings of its own queue's worker, not by its own (docs/liveness.md,
    "Whose settings apply").

    ``retries`` and ``remove_after`` become the task's ``max_attempts`` and
    ``keep_for`` where the sender gave none (the first claim's stay);
    ``max_runtime`` and ``orphan_after`` are the limits of each attempt.
    """

    #: Retries after the first attempt: ``max_attempts = retries + 1``.
    retries: int
    #: Seconds a live worker's attempt may run before it is given up; None: never.
    max_runtime: float | None
    #: Seconds an attempt claimed outside receive() may go untouched.
    orphan_after: float
    #: Days a finished task is kept.
    remove_after: float

    def claim_params(self) -> dict[str, Any]:
        """The claim statement's parameters (task_claim in queries.sql)."""
        return {
            "max_attempts": self.retries + 1,
            "keep_for": self.remove_after * 86400.0,
            # Infinity, not NULL: NULL would leave the task to the
            # housekeeper's own max_runtime.
            "max_runtime": float("inf") if self.max_runtime is None else self.max_runtime,
            "orphan_after": self.orphan_after,
        }

    #: The claim's parameters when no policy is given (a claim outside a
    #: worker): nothing stamped, the housekeeper's settings apply.
    NONE: ClassVar[dict[str, Any]] = {
        "max_attempts": None,
        "keep_for": None,
        "max_runtime": None,
        "orphan_after": None,
    }
