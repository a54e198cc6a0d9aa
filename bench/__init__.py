"""job_machine's benchmark: ``python -m bench --help`` (see bench/README.md).

Nothing is imported here: the measuring modules (``bench.harness``,
``bench.runner``, ``bench.systems.*``) also run inside the peers' virtual
environments, which have psycopg but neither job_machine nor rich.
"""
