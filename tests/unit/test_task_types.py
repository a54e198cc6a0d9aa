"""Type hints flow through task functions: mypy --strict accepts code that
uses them as typed, and rejects code that gets their types wrong."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parents[2]

APP = """\
from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass

import job_machine as jm

app = jm.App()


@dataclass
class Point:
    x: float
    y: float


@app.task(queue="math.add")
def add(a: int, b: int) -> int:
    return a + b


@app.task
async def scale(p: Point, by: float = 2.0) -> Point:
    return Point(p.x * by, p.y * by)


@app.task
def countdown(n: int) -> Generator[str, None, str]:
    yield str(n)
    return "liftoff"


@app.task
async def ticks(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i
"""

GOOD = """\
from __future__ import annotations

from app_under_test import Point, add, countdown, scale, ticks


def sync_side() -> None:
    total: int = add.call(1, 2)
    task_id: int = add.send(1, b=2)
    again: int = add.result(task_id)
    here: int = add(1, 2)
    ids: list[int] = add.send_many([(1, 2), add.args(3, b=4)])
    quick: int = add.configure(priority=9, delay=5, timeout=10).call(1, 2)
    p: Point = scale.call(Point(1, 2), by=3)
    print(total, again, here, ids, quick, p.x)
    done: str = countdown.call(3)
    for part in countdown.parts(countdown.send(3)):
        print(part.seq, part.data, done)
    here_too: str = next(countdown(3))
    print(here_too)


async def async_side() -> None:
    total: int = await add.acall(1, 2)
    p: Point = await scale.acall(Point(1, 2))
    local: Point = await scale(Point(1, 2))
    task_id: int = await scale.asend(Point(0, 0))
    print(total, p, local, await scale.aresult(task_id))
    await ticks.acall(3)  # no reply value: an async generator returns nothing
    async for part in ticks.aparts(await ticks.asend(3)):
        print(part.seq)
"""

#: Each line must be an error of its own.
BAD = """\
from __future__ import annotations

from app_under_test import Point, add, countdown, scale


async def wrong() -> None:
    a: str = add.call(1, 2)
    add.call("1", 2)
    add.send(1)
    add.call(1, 2, 3)
    add.configure(priority="high")
    add.args(1, c=2)
    b: int = scale.call(Point(1, 2))
    c: Point = scale(Point(1, 2))
    d: str = await add.acall(1, 2)
    e: int = countdown.call(3)
    countdown.send("3")
    print(a, b, c, d, e)
"""


def test_task_functions_type_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "app_under_test.py").write_text(APP)
    (tmp_path / "good.py").write_text(GOOD)
    (tmp_path / "bad.py").write_text(BAD)
    # The job_machine of this checkout, not another one installed in the venv.
    monkeypatch.setenv("MYPYPATH", str(ROOT))
    monkeypatch.chdir(tmp_path)
    out, err, _ = mypy_api.run(
        [
            "--strict",
            "--no-error-summary",
            "--show-absolute-path",
            "--cache-dir",
            str(ROOT / ".mypy_cache" / "task_types"),
            "good.py",
            "bad.py",
        ]
    )
    errors = [line for line in out.splitlines() if ": error:" in line]
    good = [e for e in errors if "good.py" in e]
    assert not good, "\n".join(good) + err
    bad_lines = {int(m.group(1)) for e in errors if (m := re.search(r"bad\.py:(\d+):", e))}
    expected = {
        n for n, line in enumerate(textwrap.dedent(BAD).splitlines(), 1) if n in range(7, 18)
    }
    assert bad_lines == expected, "\n".join(errors)
    assert not [e for e in errors if "job_machine" in e and "bad.py" not in e], out
