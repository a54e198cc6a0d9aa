"""The sync twin is generated from the async source and kept up to date."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_sync_modules_are_up_to_date() -> None:
    run = subprocess.run(
        [sys.executable, "tools/async_to_sync.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr


def test_sync_twin_has_no_async_left() -> None:
    for path in (ROOT / "job_machine" / "_sync").glob("*.py"):
        text = path.read_text()
        assert "await " not in text, path
        assert "async def" not in text, path
        assert "Async" not in text, path


def test_public_sync_and_async_classes_have_the_same_methods() -> None:
    import job_machine as jm  # noqa: PLC0415

    for sync, asyn in ((jm.Client, jm.AsyncClient), (jm.Worker, jm.AsyncWorker)):
        public = lambda cls: {n for n in vars(cls) if not n.startswith("_")}  # noqa: E731
        assert public(sync) == public(asyn)
