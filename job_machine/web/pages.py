"""The pages: overview, tasks, one task (and one result whole), workers,
locks, schedules and the Prometheus metrics."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from .._async.admin import status_line
from ..task import COUNTED_STATES
from .chart import _chart
from .render import MAX_ID, _config, _db, _int_param, _page
from .task_page import CHILDREN_PAGE, MAX_PARENTS, raw_result, task_page

#: The most parents and children whose states a task's page looks up.
MAX_RELATED = MAX_PARENTS + CHILDREN_PAGE


async def overview(request: Request) -> Response:
    """Totals, queues, workers and the last 24 hours; refreshes itself."""
    refresh = _int_param(request, "refresh", 0, 3600)
    if refresh is None:
        refresh = _config(request).refresh
    async with _db(request).use() as admin:
        stats = await admin.stats()
        history = await admin.history()
    totals = {s: stats.total(s) for s in COUNTED_STATES}
    return _page(
        request,
        "overview.html",
        stats=stats,
        totals=totals,
        status=status_line(stats),
        chart=_chart(history),
        refresh=refresh,
        default_refresh=_config(request).refresh or 5,
    )


async def tasks(request: Request) -> Response:
    """Tasks newest first, filtered by state, queue and title; keyset pages."""
    config = _config(request)
    params = request.query_params
    state = params.get("state") or None
    queue = params.get("queue") or None
    title = params.get("title", "").strip() or None
    before_id = _int_param(request, "before_id", 1, MAX_ID)
    error = None
    page = None
    async with _db(request).use() as admin:
        queues = await admin.queues()
        try:
            page = await admin.search_tasks(
                state=state,
                queue=queue,
                title=title,
                before_id=before_id,
                limit=config.page_size,
                scan=config.scan,
            )
        except ValueError as ex:  # an unknown state, an empty or NUL queue name
            error = str(ex)
    if queue is not None and queue not in queues:
        queues.append(queue)
    filters = {k: v for k, v in (("state", state), ("queue", queue), ("title", title)) if v}
    next_url = None
    if page is not None and page.next_before_id is not None:
        next_url = "/tasks?" + urlencode({**filters, "before_id": page.next_before_id})
    return _page(
        request,
        "tasks.html",
        400 if error else 200,
        page=page,
        error=error,
        queues=queues,
        state=state,
        queue=queue,
        title=title,
        before_id=before_id,
        first_url="/tasks?" + urlencode(filters) if before_id else None,
        next_url=next_url,
        scan=config.scan,
    )


def _task_id(request: Request) -> int:
    task_id: int = request.path_params["task_id"]
    if not 1 <= task_id <= MAX_ID:  # beyond a bigint: no such task, no query
        raise HTTPException(404, f"there is no task {task_id}")
    return task_id


async def task(request: Request) -> Response:
    """One task, a page of it: its fields, its children by id, its newest
    results and errors, each value cut (task_page.py)."""
    task_id = _task_id(request)
    children_after = _int_param(request, "children_after", 0, MAX_ID) or 0
    results_before = _int_param(request, "results_before", 1, MAX_ID)
    errors_before = _int_param(request, "errors_before", 1, MAX_ID)
    async with _db(request).use() as admin:
        found = await task_page(
            admin,
            task_id,
            children_after=children_after,
            results_before=results_before,
            errors_before=errors_before,
        )
        info = found.info
        related = await admin.task_states([*info.parents, *info.children][:MAX_RELATED])
    return _page(request, "task.html", info=info, page=found, related=related)


async def task_result(request: Request) -> Response:
    """One result or error of a task, whole, as plain text (the task page cuts it)."""
    task_id = _task_id(request)
    result_id: int = request.path_params["result_id"]
    text = None
    if 1 <= result_id <= MAX_ID:
        async with _db(request).use() as admin:
            text = await raw_result(admin, task_id, result_id)
    if text is None:
        raise HTTPException(404, f"task {task_id} has no result {result_id}")
    return PlainTextResponse(text)


async def workers(request: Request) -> Response:
    """The registered workers."""
    async with _db(request).use() as admin:
        found = await admin.workers()
    return _page(request, "workers.html", workers=found)


async def metrics(request: Request) -> Response:
    """The Prometheus metrics (job_machine.metrics), read now; a scraper
    authenticates with ``Authorization: Bearer <token>``."""
    try:
        from ..metrics import CONTENT_TYPE_LATEST, render_async  # noqa: PLC0415
    except ImportError:  # the optional extra is not installed
        return PlainTextResponse(
            "Metrics need prometheus-client: pip install 'job_machine[metrics]'.",
            status_code=501,
        )
    async with _db(request).use() as admin:
        body = await render_async(admin)
    return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def locks(request: Request) -> Response:
    """The named locks."""
    async with _db(request).use() as admin:
        found = await admin.locks()
    return _page(request, "locks.html", locks=found)


async def schedules(request: Request) -> Response:
    """The cron schedules."""
    async with _db(request).use() as admin:
        found = await admin.schedules()
    return _page(request, "schedules.html", schedules=found)


async def limits(request: Request) -> Response:
    """The queues' fleet-wide limits (its action is "set_limits": clear)."""
    async with _db(request).use() as admin:
        found = await admin.limits()
    return _page(request, "limits.html", limits=found)
