"""The worker's settings, written once: default, check and help text of each.

``AsyncWorker`` and ``Worker`` take their class defaults and check their
constructor arguments here; the ``job-machine worker`` command builds its
options from :data:`WorkerConfig.settings` (so a setting cannot be missing
there, nor typed as seconds when it counts days). Neither sync nor async:
hand-written once for both faces.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Literal

from ._options import check_priority

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
            if isinstance(value, bool) or not isinstance(value, int) or value < s.minimum:
                raise ValueError(f"{name} must be a whole number >= {s.minimum}, not {value!r}")
            return value
        if s.kind == "dsn":
            return value
        if s.kind == "days" and isinstance(value, timedelta):
            value = value.total_seconds() / 86400
        zero_ok = s.kind == "seconds0"  # 0: retry at once
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (value >= 0 if zero_ok else value > 0)
            or value == float("inf")
        ):
            what = "a number >= 0" if zero_ok else "a positive number"
            raise ValueError(f"{name} must be {what} of seconds/days, not {value!r}")
        return float(value)


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
