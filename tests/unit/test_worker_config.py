"""WorkerConfig is the one list of worker settings: the Worker's class
defaults, its constructor's checks and the CLI's options all come from it."""

from __future__ import annotations

import inspect
from datetime import timedelta
from pathlib import Path

import pytest

import job_machine as jm
from job_machine._worker_config import WorkerConfig
from job_machine.cli import worker as worker_command

#: Constructor arguments that are not settings (where and what to serve).
_NOT_SETTINGS = {"self", "dsn", "queue", "conn", "pool", "connect_kwargs", "extra"}


@pytest.mark.parametrize("cls", [jm.Worker, jm.AsyncWorker])
def test_every_constructor_setting_has_one_entry_and_the_class_default(cls: type) -> None:
    params = set(inspect.signature(cls.__init__).parameters) - _NOT_SETTINGS
    assert params == {s.name for s in WorkerConfig.settings}
    for s in WorkerConfig.settings:
        if s.name != "listen_dsn":  # an instance attribute, set from the argument
            assert getattr(cls, s.name) == s.default, s.name


def test_the_worker_command_has_an_option_for_each_setting() -> None:
    names = {p.name for p in worker_command.params}
    assert {s.name for s in WorkerConfig.settings} <= names
    remove_after = next(p for p in worker_command.params if p.name == "remove_after")
    assert remove_after.metavar == "DAYS"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("prefetch", 0, "prefetch must be a whole number >= 1"),
        ("retries", -1, "retries must be a whole number >= 0"),
        ("concurrency", True, "concurrency must be a whole number >= 1"),
        ("timeout", 0, "timeout must be a positive number"),
        ("retry_backoff", -1, "retry_backoff must be a number >= 0"),
        ("remove_after", float("inf"), "remove_after must be a positive number"),
        ("prefetch_seconds", "0.2", "prefetch_seconds must be a positive number"),
    ],
)
def test_checks_refuse_with_the_settings_name(name: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorkerConfig.check(name, value)


def test_checks_convert() -> None:
    assert WorkerConfig.check("retry_backoff", 0) == 0.0
    assert WorkerConfig.check("remove_after", timedelta(hours=12)) == 0.5
    assert WorkerConfig.check("prefetch", 5) == 5
    with pytest.raises(TypeError):
        WorkerConfig.check("min_priority", 1.5)


def _readme_option_table() -> dict[str, str]:
    """The README's table of worker options: option name -> default shown."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = text.index("The options, as constructor arguments or class\nattributes:")
    table: dict[str, str] = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            if table:
                break
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        names = [n.strip("` ") for n in cells[0].split(",")]
        defaults = [d.strip() for d in cells[1].split(",")]
        if names[0] in ("option", "---"):
            continue
        for name, default in zip(names, defaults * len(names), strict=False):
            table[name] = default
    return table


def test_the_readme_lists_every_setting_with_its_default() -> None:
    table = _readme_option_table()
    for s in WorkerConfig.settings:
        if s.kind == "dsn":
            continue  # listen_dsn is told of below the table, with dsn=, conn= and pool=
        assert s.name in table, s.name
        shown = table[s.name].removesuffix(" s").removesuffix(" days")
        assert shown == ("None" if s.default is None else f"{s.default:g}"), (s.name, shown)
