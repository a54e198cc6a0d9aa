"""Task functions without a database: names and queues, the payload, and
the conversion of arguments and replies by annotations."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from pydantic import BaseModel

import job_machine as jm
from job_machine._convert import from_json, to_json
from job_machine._taskdef import TaskDef, TaskTable, default_name
from job_machine.task import Task


@dataclass
class Point:
    x: float
    y: float


@dataclass
class Path:
    points: list[Point]
    name: str | None = None


class Model(BaseModel):
    when: datetime
    tags: tuple[str, ...] = ()


def plain(a: int, *rest: Point, flag: bool = False, **more: Point) -> Path:
    return Path([*rest, *more.values()])


def _task(data: Any, queue: str = "q") -> Task:
    return Task(id=1, queue=queue, data=data, attempt=1, created=datetime(2026, 1, 1))


def test_default_names_and_queues() -> None:
    def inner() -> None: ...

    assert default_name(plain) == f"{__name__}.plain"
    assert default_name(inner) == f"{__name__}.test_default_names_and_queues.inner"
    d = TaskDef.of(plain, None, None)
    assert (d.name, d.queue, d.is_async) == (f"{__name__}.plain", f"{__name__}.plain", False)
    assert TaskDef.of(plain, "x.y", "z").queue == "z"
    with pytest.raises(jm.InvalidQueueName, match="pass queue="):
        TaskDef.of(plain, "a\x00b", None)
    with pytest.raises(jm.InvalidQueueName):
        TaskDef.of(plain, None, "")
    assert TaskDef.of(plain, None, "Email Sender").queue == "Email Sender"


def test_two_functions_of_one_name_are_refused() -> None:
    app = jm.App()
    app.task(name="same")(plain)
    app.task(name="same")(plain)  # the same function again is fine
    with pytest.raises(ValueError, match="two task functions are named 'same'"):
        app.task(name="same")(lambda: None)


def test_payload_and_arguments_round_trip() -> None:
    d = TaskDef.of(plain, "t", "q")
    data = d.payload((1, Point(1, 2)), {"flag": True, "extra": Point(3, 4)})
    assert data == {
        "task": "t",
        "args": [1, {"x": 1, "y": 2}],
        "kwargs": {"flag": True, "extra": {"x": 3, "y": 4}},
    }
    table = TaskTable()
    table.add(d)
    found, args, kwargs = table.resolve(_task(data))
    assert found is d
    assert args == [1, Point(1, 2)]
    assert kwargs == {"flag": True, "extra": Point(3, 4)}
    assert d.reply_value({"points": [{"x": 0, "y": 0}], "name": None}) == Path([Point(0, 0)])


def test_rejected_payloads_say_why() -> None:
    table = TaskTable()
    table.add(TaskDef.of(plain, "t", "q"))
    table.add(TaskDef.of(plain, "u", "q"))
    cases = {
        "not a dict": "a task function's data is a JSON object",
        '{"args": [1]}': "names no task function",
        '{"task": "t", "args": {}}': "'args' must be a JSON array",
        '{"task": "t", "kwargs": []}': "'kwargs' must be a JSON object",
        '{"task": "t", "args": [1, {"x": 1}]}': "argument 'rest'",
        '{"task": "nope"}': "no task function named 'nope' in this worker (it knows: t, u)",
    }
    for text, words in cases.items():
        data = json.loads(text) if text.startswith("{") else text
        with pytest.raises(jm.TaskRejected) as rejected:
            table.resolve(_task(data))
        assert words in str(rejected.value), text


def test_conversions_by_annotation() -> None:
    when = datetime(2026, 5, 1, 12, 0)
    assert to_json((Point(1, 2), {"m": Model(when=when, tags=("a",))})) == [
        {"x": 1, "y": 2},
        {"m": {"when": "2026-05-01T12:00:00", "tags": ["a"]}},
    ]
    assert from_json({"when": "2026-05-01T12:00:00"}, Model) == Model(when=when)
    assert from_json([{"x": 1, "y": 2}], list[Point]) == [Point(1, 2)]
    assert from_json({"a": {"x": 1, "y": 2}}, dict[str, Point]) == {"a": Point(1, 2)}
    assert from_json([1, {"x": 1, "y": 2}], tuple[int, Point]) == (1, Point(1, 2))
    assert from_json(None, Point | None) is None
    assert from_json({"x": 1, "y": 2}, Point | None) == Point(1, 2)
    assert from_json([1, 2], tuple) == (1, 2)
    assert from_json({"k": 1}, dict) == {"k": 1}
    with pytest.raises(TypeError, match="Point has no field 'z'"):
        from_json({"x": 1, "y": 2, "z": 3}, Point)


def test_annotations_resolve_on_first_use() -> None:
    """A type defined after the function (a forward reference) still converts."""
    d = LATER
    data = d.payload((Later(1),), {})
    assert data["args"] == [{"n": 1}]
    table = TaskTable()
    table.add(d)
    assert table.resolve(_task(data))[1] == [Later(1)]
    assert d.reply_value({"n": 2}) == Later(2)


def uses_later(item: Later) -> Later:
    return item


#: Made as @app.task would, before Later exists.
LATER = TaskDef.of(uses_later, "later", "q")


@dataclass
class Later:
    n: int
