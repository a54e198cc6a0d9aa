"""The wheel carries the one schema file, byte for byte."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_create_tables_sql(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("job_machine-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert "job_machine/sql/create_tables.sql" in names
        assert "job_machine/queries.sql" in names
        assert "job_machine/py.typed" in names
        shipped = zf.read("job_machine/sql/create_tables.sql")
    assert shipped == (ROOT / "sql" / "create_tables.sql").read_bytes()
