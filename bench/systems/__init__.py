"""The queue systems the bench measures: one module each, and how to install it.

job_machine runs in the interpreter that runs ``python -m bench`` (the
checkout's own code). Each peer runs in a virtual environment of its own,
created on first use with ``pip install`` of :attr:`System.install` (never
vendored): ``bench/.venvs/<name>`` by default, ``--venvs DIR`` to put them
elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class System:
    """A queue system: its adapter module and, for a peer, its venv's pip arguments."""

    name: str
    module: str
    #: pip install arguments of its venv; empty: runs in the bench's own interpreter.
    install: tuple[str, ...] = ()


#: Pinned to the versions of the shared RESULTS.md, so the numbers compare;
#: change a pin here to measure another version (the venv is rebuilt).
SYSTEMS: dict[str, System] = {
    s.name: s
    for s in (
        System("job_machine", "bench.systems.jm"),
        System(
            "pgqueuer",
            "bench.systems.pgqueuer_peer",
            ("pgqueuer==1.6.0", "asyncpg==0.32.0", "psycopg[binary]==3.3.9"),
        ),
        System(
            "procrastinate",
            "bench.systems.procrastinate_peer",
            ("procrastinate==3.10.0", "psycopg[binary]==3.3.9"),
        ),
    )
}
