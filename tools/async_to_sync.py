"""Generate job_machine/_sync/ from job_machine/_async/.

The async modules are the only hand-written implementation of the core. This
script writes their sync twins by dropping ``async``/``await`` and renaming
each async name to its sync partner (the table below), the way psycopg
generates its sync classes. Differences a rename cannot express live in
job_machine/_acompat.py.

    python tools/async_to_sync.py           # regenerate
    python tools/async_to_sync.py --check   # fail if a generated file is stale (CI)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "job_machine" / "_async"
DST = ROOT / "job_machine" / "_sync"

#: async name -> sync name, matched as whole words.
NAMES = {
    "AsyncAdmin": "Admin",
    "AsyncClient": "Client",
    "AsyncWorker": "Worker",
    "AsyncTaskWorker": "TaskWorker",
    "ARUNS_COROUTINES": "RUNS_COROUTINES",
    "AsyncStore": "Store",
    "AsyncListener": "Listener",
    "AsyncConnector": "Connector",
    "AsyncConnectorOwner": "ConnectorOwner",
    "AsyncConnection": "Connection",
    "AsyncConnectionPool": "ConnectionPool",
    "AsyncCursor": "Cursor",
    "AsyncIterator": "Iterator",
    "AsyncGenerator": "Generator",
    "AsyncExitStack": "ExitStack",
    "asynccontextmanager": "contextmanager",
    "aclosing": "closing",
    "enter_async_context": "enter_context",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "aconnect": "connect",
    "asleep": "sleep",
    "aselect_readable": "select_readable",
    "arun_blocking": "run_blocking",
    "aspawn": "spawn",
    "AHandle": "Handle",
    "AWakeup": "Wakeup",
    "AMutex": "Mutex",
    "ajoin_all": "join_all",
    "ainstall_schema": "install_schema",
    "ainstall_roles": "install_roles",
}

HEADER = (
    "# DO NOT EDIT: generated from job_machine/_async/{name} by tools/async_to_sync.py.\n"
    "# Change the async source and run `python tools/async_to_sync.py`.\n"
)

_WORDS = re.compile(r"\b(" + "|".join(map(re.escape, NAMES)) + r")\b")
_DOC_ASYNC = re.compile(r"\bAsync(?=[A-Z])")


def to_sync(source: str, name: str) -> str:
    """The sync twin of one async module's source."""
    text = re.sub(r"\basync (def|with|for)\b", r"\1", source)
    text = re.sub(r"\bawait ", "", text)
    text = re.sub(r"\bAwaitable\[(\w+)\]", r"\1", text)  # a sync callable returns the value
    text = re.sub(r"\bAwaitable, ", "", text)
    text = _WORDS.sub(lambda m: NAMES[m.group(1)], text)
    text = _DOC_ASYNC.sub("", text)
    text = text.replace("The async implementation", "The sync implementation")
    return HEADER.format(name=name) + text


def expected() -> dict[Path, str]:
    """Every generated file and the text it must have."""
    out = {}
    for src in sorted(SRC.glob("*.py")):
        out[DST / src.name] = to_sync(src.read_text("utf-8"), src.name)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if a generated file is stale")
    args = ap.parse_args()
    wanted = expected()
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text("utf-8") != text]
    extra = [p for p in DST.glob("*.py") if p not in wanted]
    if args.check:
        for p in stale + extra:
            print(f"stale: {p.relative_to(ROOT)}", file=sys.stderr)
        if stale or extra:
            print("run: python tools/async_to_sync.py", file=sys.stderr)
            return 1
        return 0
    DST.mkdir(exist_ok=True)
    for p in stale:
        p.write_text(wanted[p], "utf-8")
        print(f"wrote {p.relative_to(ROOT)}")
    for p in extra:
        p.unlink()
        print(f"removed {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
