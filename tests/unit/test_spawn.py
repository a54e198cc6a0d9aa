"""The sync worker's task threads (job_machine._acompat.spawn): reused while
work comes, ended when idle, each job in a copy of the spawner's context,
``done`` called and ``join`` returning after the job."""

from __future__ import annotations

import contextvars
import threading

import pytest

from job_machine import _acompat
from tests.support.procs import wait_until

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


def _task_threads() -> set[int | None]:
    return {t.ident for t in threading.enumerate() if t.name == "job_machine-task"}


def test_threads_are_reused_one_job_after_another() -> None:
    before = _task_threads()
    seen: set[int] = set()
    for _ in range(50):
        h = _acompat.spawn(lambda: seen.add(threading.get_ident()), lambda: None)
        h.join(5)
        # join() returns as the job ends, a moment before its thread counts
        # itself idle: the next job is for that thread once it has.
        wait_until(
            lambda: _acompat._idle_threads > 0, 5, "the task thread idle again", interval=0.001
        )
    started = seen - before
    assert len(started) <= 1, f"{len(started)} new threads for 50 jobs in a row"


def test_jobs_at_once_get_threads_of_their_own() -> None:
    gate = threading.Barrier(5, timeout=5)
    ran_on: list[int] = []
    passed: list[bool] = []

    def job() -> None:
        ran_on.append(threading.get_ident())
        gate.wait()  # raises BrokenBarrierError unless all four run at once
        passed.append(True)

    handles = [_acompat.spawn(job, lambda: None) for _ in range(4)]
    gate.wait()  # all four run at the same moment, or this times out
    for h in handles:
        h.join(5)
    assert passed == [True] * 4
    assert len(set(ran_on)) == 4, f"4 jobs at once ran on {len(set(ran_on))} threads"
    assert threading.get_ident() not in ran_on


def test_done_runs_and_join_returns_after_the_job() -> None:
    events: list[str] = []
    release = threading.Event()

    def job() -> None:
        release.wait(5)
        events.append("job")

    h = _acompat.spawn(job, lambda: events.append("done"))
    h.join(0.05)
    assert events == []  # join(timeout) gave up while the job waits
    release.set()
    h.join(5)
    assert events == ["job", "done"]


def test_a_job_runs_in_a_copy_of_the_spawners_context() -> None:
    seen: list[str] = []

    def job() -> None:
        seen.append(WHO.get())
        WHO.set("the job")

    token = WHO.set("the spawner")
    try:
        _acompat.spawn(job, lambda: None).join(5)
        assert seen == ["the spawner"]
        assert WHO.get() == "the spawner"  # the job's change stayed in its copy
    finally:
        WHO.reset(token)


def test_idle_threads_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_acompat, "IDLE_THREAD_SECONDS", 0.05)
    before = _task_threads()
    ran_on: set[int | None] = set()
    jobs = len(before) + 4  # more at once than threads earlier tests left idle
    gate = threading.Barrier(jobs + 1, timeout=5)

    def job() -> None:
        ran_on.add(threading.get_ident())
        gate.wait()

    handles = [_acompat.spawn(job, lambda: None) for _ in range(jobs)]
    gate.wait()
    for h in handles:
        h.join(5)
    started = ran_on - before
    assert started, "no new thread: nothing to see end"
    wait_until(
        lambda: not started & {t.ident for t in threading.enumerate()},
        5,
        f"the {len(started)} idle task threads to end",
    )
