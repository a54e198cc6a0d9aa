"""``python -m job_machine.cli`` is the ``job-machine`` command."""

from __future__ import annotations

from job_machine.cli import main

main()
