"""The wheel carries the schema and roles files, byte for byte, and the
dashboard's templates and static files."""

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
        roles = zf.read("job_machine/sql/roles.sql")
    assert shipped == (ROOT / "sql" / "create_tables.sql").read_bytes()
    assert roles == (ROOT / "sql" / "roles.sql").read_bytes()
    web = ROOT / "job_machine" / "web"
    for folder in ("templates", "static"):
        files = sorted((web / folder).iterdir())
        assert files, folder
        for path in files:
            assert f"job_machine/web/{folder}/{path.name}" in names
