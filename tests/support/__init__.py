"""What the tests share: worker classes and processes, a private PostgreSQL,
task functions and rows to look at (tests/integration imports them; worker
processes import them by module path, ``tests.support.procs`` and the like)."""
