"""The actions an operator takes (retry, cancel, remove, pause, resume,
stop...): :data:`ACTIONS`, each with the AsyncAdmin call that does it; a GET
confirmation page, then a POST that acts and redirects."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .._async.admin import AsyncAdmin
from .._printable import printable
from ..errors import UnknownTask
from .render import MAX_ID, _config, _db, _form, _page, _redirect, logger
from .task_page import task_page

#: What an action does: called with the AsyncAdmin and the target; returns
#: facts for its ``done`` message beyond ``{target}``, or None.
Do = Callable[[AsyncAdmin, Any], Awaitable[Mapping[str, object] | None]]


async def _clear_limits(admin: AsyncAdmin, queue: str) -> None:
    """Remove the queue's fleet-wide limits (set_limits with none)."""
    await admin.set_limits(queue)


async def _retry(admin: AsyncAdmin, task_id: int) -> Mapping[str, object]:
    """Retry, then say where the task stands (blocked or waiting, and its queue)."""
    await admin.retry(task_id)
    info = (await task_page(admin, task_id, children=0, results=0)).info
    return {"state": info.state, "queue": info.queue}


async def _stop(admin: AsyncAdmin, worker_id: int) -> None:
    if not await admin.stop_workers(worker_id):
        raise ValueError(f"there is no worker {worker_id}")


@dataclass(frozen=True)
class Action:
    """One thing an operator can do: confirmed on a page, done by a POST
    that calls ``do``."""

    #: What the target is: "task" (an id), "queue" (a name), "worker" (an
    #: id) or "schedule" (a name).
    kind: str
    #: The button, and the title of the confirmation page.
    label: str
    #: What it does, for the confirmation page.
    explain: str
    #: The message once done (``{target}``; a retry also has ``{state}``, ``{queue}``).
    done: str
    #: Where to go afterwards (``{target}``), and after success if elsewhere.
    back: str
    back_done: str | None = None
    #: The call that does it (an AsyncAdmin method, or a function of this module).
    do: Do = field(kw_only=True)


ACTIONS: dict[str, Action] = {
    "retry": Action(
        "task",
        "Retry task",
        "Send the task again, with a fresh budget of attempts. Its earlier results "
        "and errors stay. A task whose parents are not all done is blocked until they are.",
        "Task {target} is {state} again on queue {queue}.",
        "/tasks/{target}",
        do=_retry,
    ),
    "cancel": Action(
        "task",
        "Cancel task",
        "The task fails with a Cancelled error and is not retried; a client waiting "
        "for it is told, and the tasks blocked on it fail too. A running task is "
        "stopped by its worker.",
        "Task {target} cancelled.",
        "/tasks/{target}",
        do=AsyncAdmin.cancel,
    ),
    "remove": Action(
        "task",
        "Remove task",
        "Delete the task and its results, for good.",
        "Task {target} removed.",
        "/tasks/{target}",
        back_done="/tasks",
        do=AsyncAdmin.remove,
    ),
    "pause": Action(
        "queue",
        "Pause queue",
        "The queue still takes tasks, but no worker claims them until it is resumed. "
        "Tasks already running go on.",
        "Queue {target} paused: no worker claims its tasks until it is resumed.",
        "/",
        do=AsyncAdmin.pause,
    ),
    "resume": Action(
        "queue",
        "Resume queue",
        "Workers take the queue's tasks again, woken at once.",
        "Queue {target} resumed.",
        "/",
        do=AsyncAdmin.resume,
    ),
    # set_limits(queue) with no limit clears them (fleet-wide limits).
    "set_limits": Action(
        "queue",
        "Clear limits",
        "Remove the queue's fleet-wide limits: workers claim its tasks as fast as "
        "they run them. Set limits again with job-machine limits set or Admin.set_limits().",
        "Queue {target} has no limits now.",
        "/limits",
        do=_clear_limits,
    ),
    "pause_schedule": Action(
        "schedule",
        "Pause schedule",
        "The schedule sends nothing until it is resumed; the ticks that pass meanwhile "
        "are skipped, not made up. Tasks it sent already go on.",
        "Schedule {target} paused.",
        "/schedules",
        do=AsyncAdmin.pause_schedule,
    ),
    "resume_schedule": Action(
        "schedule",
        "Resume schedule",
        "The schedule sends again from its next tick after now.",
        "Schedule {target} resumed.",
        "/schedules",
        do=AsyncAdmin.resume_schedule,
    ),
    "unschedule": Action(
        "schedule",
        "Remove schedule",
        "Delete the schedule: no tick of it is sent any more. The tasks it sent stay. "
        "A schedule of a task function (@app.task(cron=...)) comes back when its "
        "workers start again: pause it instead, or take cron= out of the code.",
        "Schedule {target} removed.",
        "/schedules",
        do=AsyncAdmin.unschedule,
    ),
    "stop": Action(
        "worker",
        "Stop worker",
        "The worker finishes the task in hand and exits, as on SIGTERM. It reads "
        "the request with its next heartbeat, within a few seconds.",
        "Worker {target} was asked to stop: it finishes the task in hand, then exits.",
        "/workers",
        do=_stop,
    ),
}


async def _run(admin: AsyncAdmin, name: str, target: Any) -> str:
    """Do action ``name`` on ``target``; the message saying what was done.

    :raises ValueError: the state of the target forbids it, or there is no such target.
    :raises UnknownTask: there is no such task.
    """
    action = ACTIONS[name]
    facts = await action.do(admin, target) or {}
    return action.done.format(target=target, **facts)


def _action(request: Request) -> tuple[str, Action]:
    if _config(request).read_only:
        raise HTTPException(403, "This dashboard is read-only: it takes no actions.")
    if _db(request).server_read_only:
        raise HTTPException(
            403, "This database is a standby (a read-only replica): it takes no actions."
        )
    name = request.path_params["action"]
    action = ACTIONS.get(name)
    if action is None:
        raise HTTPException(404, f"There is no action {name!r}.")
    return name, action


def _target(action: Action, raw: object) -> Any:
    """The action's target from the query or form: an id, or a queue name."""
    if not isinstance(raw, str) or not raw:
        raise HTTPException(400, "No target given.")
    if action.kind in ("queue", "schedule"):
        return raw
    if raw.isascii() and raw.isdigit() and 0 < int(raw) <= MAX_ID:
        return int(raw)
    raise HTTPException(400, f"{raw!r} is not a {action.kind} id.")


async def confirm(request: Request) -> Response:
    """The page that asks before an action (a form that POSTs, no JS needed)."""
    name, action = _action(request)
    target = _target(action, request.query_params.get("target"))
    subject: Any = None
    async with _db(request).use() as admin:
        if action.kind == "task":
            subject = (await task_page(admin, target, children=0, results=0)).info
        elif action.kind == "worker":
            subject = next((w for w in await admin.workers() if w.id == target), None)
            if subject is None:
                raise HTTPException(404, f"There is no worker {target}.")
        elif action.kind == "schedule":
            subject = next((s for s in await admin.schedules() if s.name == target), None)
            if subject is None:
                raise HTTPException(404, f"There is no schedule {target!r}.")
    back = action.back.format(target=target)
    return _page(
        request, "confirm.html", name=name, action=action, target=target, subject=subject, back=back
    )


async def act(request: Request) -> Response:
    """Do an action (POST from the confirmation page) and redirect."""
    name, action = _action(request)
    form = await _form(request)
    target = _target(action, form.get("target"))
    client = request.client.host if request.client else "?"
    back = action.back.format(target=target)
    try:
        async with _db(request).use() as admin:
            message = await _run(admin, name, target)
    except (ValueError, UnknownTask) as ex:  # the state forbids it, no such thing
        message = f"{action.label} {target}: {ex}"
        logger.info("refused: %s (from %s)", printable(message), client)
        return _redirect(request, back, "error", message)
    logger.info("%s (from %s)", printable(message), client)
    return _redirect(request, action.back_done or back, "ok", message)
