"""The package's floors: no module imports from a floor above its own, no
import cycle, and no hand-written module imports the generated ``_sync``
twins (but the package's ``__init__`` and liveness.py, see CONTRIBUTING).

Read from the source with ``ast``: module-level imports only (an import
inside a function, or under ``if TYPE_CHECKING``, does not run at import
time and cannot make a cycle)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "job_machine"

#: Lowest first: a module may import from its own floor and those below.
FLOORS: list[tuple[str, str]] = [
    (
        "vocabulary",
        r"errors|_validate|_format|_dsn|_codec|_convert|_printable|_scrub|_lock_keys"
        r"|_queries|_schema_sql|_backoff|_waker|_acompat|_shutdown|_prefetch|_otel"
        r"|_options|_cron|channels|task|_db_errors|_worker_config|_taskdef|logging"
        r"|supervisor|pytest_plugin",
    ),
    ("the Store", r"_(?:a)?sync\.(?:connection|store|store_\w+)"),
    (
        "rooms",
        r"_(?:a)?sync\.(?:commands|completer|executor|housekeeper|listener|locks|ownpool"
        r"|outcome|parts|producer|sender|sideloop|slots|stopper|subscriber|waiter)|liveness|replies",
    ),
    ("faces", r"_(?:a)?sync(?:\.(?:client|admin|worker|taskworker|schema))?"),
    ("the package", r"|app|taskfunction|testing|metrics|demo"),
    ("interfaces", r"__main__|(?:cli|web|contrib)(?:\..+)?"),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules ``name`` imports at module level."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.split(".")[0] == "job_machine":
                stem = node.module.removeprefix("job_machine").lstrip(".")
            else:
                continue
            for alias in node.names:
                sub = f"{stem}.{alias.name}" if stem else alias.name
                targets.append(sub if sub in known else stem)
        elif isinstance(node, ast.Import):
            targets = [
                a.name.removeprefix("job_machine").lstrip(".")
                for a in node.names
                if a.name.split(".")[0] == "job_machine"
            ]
        found.update(t for t in targets if t in known and t != name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _floor(name: str) -> int:
    for n, (_, pattern) in enumerate(FLOORS):
        if re.fullmatch(pattern, name):
            return n
    raise AssertionError(f"job_machine.{name} is on no floor: add it to FLOORS")


def test_the_graph_is_read() -> None:
    """The reading finds relative, absolute and package imports."""
    graph = _graph()
    assert {"_async.store_base", "_async.store_tasks"} <= graph["_async.store"]
    assert {"_async.store", "_async.producer", "liveness"} <= graph["_async.worker"]
    assert {"_sync.store", "errors"} <= graph["liveness"]
    assert "" in graph["cli.send"]  # import job_machine as jm


def test_no_module_imports_from_a_floor_above_its_own() -> None:
    graph = _graph()
    upward = [
        f"{name} ({FLOORS[_floor(name)][0]}) imports {target} ({FLOORS[_floor(target)][0]})"
        for name, targets in sorted(graph.items())
        for target in sorted(targets)
        if _floor(target) > _floor(name)
    ]
    assert upward == []


def test_no_import_cycle() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_hand_written_code_never_imports_the_generated_twins() -> None:
    graph = _graph()
    importers = sorted(
        name
        for name, targets in graph.items()
        if not name.startswith("_sync") and any(t.startswith("_sync") for t in targets)
    )
    assert importers == ["", "liveness"]
