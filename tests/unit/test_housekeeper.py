"""The housekeeper's policy: which units a round runs, in which order and
transactions, and what it counts and logs. Against an in-memory double of
the Store's housekeeping statements; the statements themselves are tested
on PostgreSQL (tests/integration: test_features, test_schedules,
test_queue_prune, test_perl_fleets, test_liveness, ...)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from job_machine._sync.housekeeper import Housekeeper
from job_machine._sync.store import ChoreCounts

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS: dict[str, Any] = {
    "retries": 3,
    "remove_after_days": 30,
    "grace": 7.5,
    "max_runtime": 60.0,
    "orphan_after": 1800.0,
    "now": NOW,
}


class Connector:
    """Records the connections taken and the transactions (units) opened."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    @contextmanager
    def connection(self) -> Iterator[str]:
        self.log.append("connect")
        yield "own connection"

    @contextmanager
    def unit(self, conn: str) -> Iterator[None]:
        self.log.append(f"begin on {conn}")
        yield
        self.log.append("commit")


class Store:
    """The housekeeping statements of the Store, recorded, with canned answers."""

    def __init__(
        self,
        *,
        lock: bool = True,
        reap: tuple[int, int, int, bool] = (0, 0, 0, False),
        give_up: tuple[int, int] = (0, 0),
        revive: tuple[int, int] = (0, 0),
        expire: int = 0,
        remove: list[int] | None = None,
        prune: list[int] | None = None,
        scheduled: int = 0,
    ) -> None:
        self.log: list[str] = []
        self.connector = Connector(self.log)
        self.lock, self.reap, self.give_up, self.revive = lock, reap, give_up, revive
        self.expire, self.scheduled = expire, scheduled
        self.remove, self.prune = list(remove or [0]), list(prune or [0])
        self.calls: dict[str, dict[str, Any]] = {}
        self.session: str | None = None

    def on(self, conn: str) -> Store:
        """The statements on ``conn`` (recorded with each call), sharing the
        log and the canned answers."""
        bound = copy.copy(self)
        bound.session = conn
        return bound

    def _called(self, name: str, **kwargs: Any) -> None:
        self.log.append(name)
        self.calls[name] = {**kwargs, "conn": self.session}

    def chore_lock(self) -> bool:
        self._called("chore_lock")
        return self.lock

    def worker_reap(self, **kwargs: Any) -> tuple[int, int, int, bool]:
        self._called("worker_reap", **kwargs)
        return self.reap

    def task_give_up(self, **kwargs: Any) -> tuple[int, int]:
        self._called("task_give_up", **kwargs)
        return self.give_up

    def task_revive(self, **kwargs: Any) -> tuple[int, int]:
        self._called("task_revive", **kwargs)
        return self.revive

    def task_expire(self, **kwargs: Any) -> int:
        self._called("task_expire", **kwargs)
        return self.expire

    def task_remove_old(self, **kwargs: Any) -> int:
        self._called("task_remove_old", **kwargs)
        return self.remove.pop(0) if self.remove else 0

    def queue_prune(self, **kwargs: Any) -> int:
        self._called("queue_prune", **kwargs)
        return self.prune.pop(0) if self.prune else 0

    def schedules_dispatch(self, **kwargs: Any) -> int:
        self._called("schedules_dispatch", **kwargs)
        return self.scheduled


def run(store: Store, **overrides: Any) -> ChoreCounts:
    return Housekeeper(store).run(**(SETTINGS | overrides))


def test_a_round_judges_in_one_transaction_then_batches_then_schedules() -> None:
    store = Store(
        reap=(2, 3, 1, False),
        give_up=(1, 2),
        revive=(4, 1),
        expire=5,
        remove=[6],
        prune=[7],
        scheduled=8,
    )
    counts = run(store)
    assert store.log == [
        "connect",
        "begin on own connection",
        "chore_lock",
        "worker_reap",
        "task_give_up",
        "task_revive",
        "task_expire",
        "commit",
        "begin on own connection",
        "task_remove_old",
        "commit",
        "begin on own connection",
        "queue_prune",
        "commit",
        "schedules_dispatch",
    ]
    assert counts == ChoreCounts(
        ran=True,
        reaped=2,
        revived=3 + 1 + 4,
        failed=1 + 2 + 1,
        expired=5,
        removed=6,
        pruned=7,
        scheduled=8,
        outage=False,
    )
    # The settings reach the statements they are for.
    assert store.calls["worker_reap"] == {
        "grace": 7.5,
        "retries": 3,
        "now": NOW,
        "conn": "own connection",
        "outage": False,
    }
    assert store.calls["task_give_up"]["max_runtime"] == 60.0
    assert store.calls["task_revive"]["orphan_after"] == 1800.0
    assert store.calls["task_expire"]["limit"] == 1000
    assert store.calls["task_remove_old"]["remove_after_days"] == 30
    assert store.calls["task_remove_old"]["limit"] == 1000
    assert store.calls["schedules_dispatch"] == {"now": NOW, "conn": "own connection"}


def test_a_round_on_the_callers_connection_takes_none() -> None:
    store = Store()
    run(store, conn="registry")
    assert "connect" not in store.log
    assert store.log[0] == "begin on registry"
    assert store.calls["schedules_dispatch"]["conn"] == "registry"


def test_nothing_runs_while_another_housekeeper_holds_the_lock() -> None:
    store = Store(lock=False)
    assert run(store) == ChoreCounts(ran=False)
    assert store.log == ["connect", "begin on own connection", "chore_lock", "commit"]


def test_without_cleanup_no_revive_retention_or_pruning() -> None:
    store = Store()
    assert run(store, cleanup=False).ran
    assert "task_revive" not in store.log
    assert "task_remove_old" not in store.log
    assert "queue_prune" not in store.log
    assert {"task_give_up", "task_expire", "schedules_dispatch"} <= set(store.log)


def test_without_reap_dead_workers_are_not_judged() -> None:
    store = Store(reap=(9, 9, 9, True))
    counts = run(store, reap=False)
    assert "worker_reap" not in store.log
    assert (counts.reaped, counts.revived, counts.failed, counts.outage) == (0, 0, 0, False)


def test_an_outage_is_passed_to_the_reaper_and_reported() -> None:
    store = Store(reap=(0, 0, 0, True))
    assert run(store, outage=True).outage
    assert store.calls["worker_reap"]["outage"] is True


@pytest.mark.parametrize(
    ("batches", "max_batches", "removed", "units"),
    [
        ([4, 4, 4, 4], 3, 12, 3),  # at most max_batches a round: the rest next round
        ([4, 2, 4], 3, 6, 2),  # a short batch: nothing more to remove
        ([4, 4, 0], 5, 8, 3),
    ],
)
def test_retention_runs_bounded_batches_each_in_its_own_transaction(
    batches: list[int], max_batches: int, removed: int, units: int
) -> None:
    store = Store(remove=batches)
    counts = run(store, remove_limit=4, max_batches=max_batches)
    assert counts.removed == removed
    assert store.log.count("task_remove_old") == units
    first = store.log.index("task_remove_old")
    one = ["begin on own connection", "task_remove_old", "commit"]
    assert store.log[first - 1 : first + 3 * units - 1] == one * units


def test_queues_are_pruned_in_batches_too() -> None:
    store = Store(prune=[1000, 1000, 3])
    assert run(store).pruned == 2003
    assert store.log.count("queue_prune") == 3


def test_a_round_that_changed_something_is_logged_in_one_wording(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="job_machine.housekeeping")
    run(Store(reap=(1, 2, 0, False), give_up=(0, 3), remove=[4]))
    assert [r.getMessage() for r in caplog.records] == [
        "housekeeping: 1 dead worker(s) reaped, 2 task(s) back to waiting, 3 failed, 4 removed"
    ]
    caplog.clear()
    run(Store(scheduled=1))
    assert caplog.records == []
