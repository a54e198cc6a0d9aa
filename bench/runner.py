"""``python -m bench.runner --system NAME --metric M ...``: one measurement.

Run by ``python -m bench`` with the system's interpreter (a peer's venv), in a
fresh process per measurement; prints one JSON line (see bench.harness).
"""

from __future__ import annotations

import importlib
import sys

from bench import harness
from bench.systems import SYSTEMS


def main(argv: list[str]) -> int:
    name = argv[argv.index("--system") + 1] if "--system" in argv else ""
    if name not in SYSTEMS:
        print(f"--system must be one of {', '.join(SYSTEMS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(SYSTEMS[name].module)
    adapter: type[harness.Adapter] = module.ADAPTER
    return harness.main(adapter, argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
