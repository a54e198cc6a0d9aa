"""One :class:`~job_machine.App` for a FastAPI (or any Starlette/ASGI)
process: opened with the web app, closed with it.

::

    from fastapi import FastAPI
    from job_machine.contrib.fastapi import lifespan
    from myapp.tasks import add, app as tasks

    api = FastAPI(lifespan=lifespan(tasks))

    @api.get("/add")
    async def sum_of(a: int, b: int) -> int:
        return await add.acall(a, b)    # a worker computes it; woken by NOTIFY

Every request shares the app's one :class:`~job_machine.AsyncClient` (one
connection for its statements, the process's one reply listener for every
wait), made on the first ``asend``/``acall`` on the server's event loop and
closed when the server shuts down, before that loop ends. A sync endpoint
(run by FastAPI in a thread) may use ``send``/``call``: the app's sync
:class:`~job_machine.Client`, shared by those threads, closed too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from ..app import App

#: Where the lifespan leaves the app: ``request.app.state.job_machine``.
STATE_NAME = "job_machine"

Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def lifespan(
    app: App, *, dsn: str | None = None, then: Lifespan | None = None
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    """A lifespan for ``FastAPI(lifespan=...)`` (or Starlette) that serves
    ``app`` to the process and closes its clients at shutdown.

    :param dsn: point ``app`` at this database when it starts (default:
        the app's own ``dsn=``, else ``$JOB_MACHINE_DSN``).
    :param then: a lifespan of yours, run inside this one (its state, if
        any, is what the combined lifespan yields).
    """

    @asynccontextmanager
    async def serve(asgi_app: Any) -> AsyncIterator[Any]:
        if dsn is not None:
            app.dsn = dsn
        state = getattr(asgi_app, "state", None)
        if state is not None:
            setattr(state, STATE_NAME, app)
        try:
            if then is None:
                yield None
            else:
                async with then(asgi_app) as inner:
                    yield inner
        finally:
            await app.aclose()

    return serve
