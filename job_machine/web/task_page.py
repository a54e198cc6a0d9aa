"""A task's page, bounded: whatever a task holds (a million children, a
thousand results, a traceback of megabytes), one page reads and shows a
bounded amount of it, and links to the rest: children by id
(``children_after``), results and errors newest first (``results_before``,
``errors_before``: result ids), each value cut, and the whole of one value
as plain text at ``/tasks/ID/results/RESULT_ID``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from .._async.admin import AsyncAdmin
from ..errors import UnknownTask
from ..task import TaskInfo

#: Children listed on one page of a task.
CHILDREN_PAGE = 100
#: Results, and errors, shown on one page of a task (the newest first).
RESULTS_PAGE = 10
#: Parents listed (a task's own column: there is no page of more).
MAX_PARENTS = 200
#: Characters of one value (data, notes, a result) read for a page.
MAX_TEXT = 100_000
#: Characters of one error read for a page: room for a long traceback,
#: which is cut to its end for the page (an error beyond it shows as text).
MAX_ERROR_TEXT = 1_000_000
#: Characters of a traceback shown on a page: its end (where it failed).
MAX_TRACEBACK = 20_000
#: Characters of an error's message shown on a page.
MAX_MESSAGE = 2_000
#: Characters of a title, grouping or unique key shown.
MAX_LABEL = 2_000
#: The most characters of one value served as plain text.
MAX_RAW = 10_000_000


@dataclass(frozen=True)
class Value:
    """One result or error as a page shows it."""

    #: Its result id (the link to the whole value).
    id: int
    #: The decoded JSON, or the text when it was cut or is not JSON.
    value: Any
    #: Its length in characters when it was cut for the page, else None.
    cut: int | None = None
    #: An error's traceback as shown: its end when it was long.
    traceback: str | None = None
    #: The characters of the traceback left out.
    traceback_cut: int = 0


@dataclass(frozen=True)
class TaskPage:
    """A bounded view of one task and the links to the rest."""

    #: The task, its children, results and errors those of this page only.
    info: TaskInfo
    #: The data as text, cut at MAX_TEXT; its length when cut.
    data_cut: int | None
    notes_cut: int | None
    parents_count: int
    results: list[Value] = field(default_factory=list)
    errors: list[Value] = field(default_factory=list)
    #: Links to the next page of children, the older results and errors,
    #: and back to the first ones (None: nothing there).
    more_children: str | None = None
    first_children: str | None = None
    older_results: str | None = None
    newest_results: str | None = None
    older_errors: str | None = None
    newest_errors: str | None = None


def _decode(text: str | None, length: int | None) -> tuple[Any, int | None]:
    """The value of a JSON text read at most MAX_TEXT long: decoded when
    whole and valid, else the text; and its length when it was cut."""
    if text is None:
        return None, None
    if length is not None and length > len(text):
        return text, length
    try:
        return json.loads(text), None
    except ValueError:
        return text, None


def _value(row: dict[str, Any], error: bool) -> Value:
    value, cut = _decode(row["result"], row["length"])
    tb, tb_cut = None, 0
    if error and isinstance(value, dict):
        if value.get("traceback"):
            tb = str(value["traceback"])
            if len(tb) > MAX_TRACEBACK:
                tb_cut = len(tb) - MAX_TRACEBACK
                tb = tb[-MAX_TRACEBACK:]
        if isinstance(value.get("message"), str) and len(value["message"]) > MAX_MESSAGE:
            value = {**value, "message": value["message"][:MAX_MESSAGE] + " …"}
    return Value(int(row["result_id"]), value, cut, tb, tb_cut)


async def task_page(
    admin: AsyncAdmin,
    task_id: int,
    *,
    children_after: int = 0,
    results_before: int | None = None,
    errors_before: int | None = None,
    children: int = CHILDREN_PAGE,
    results: int = RESULTS_PAGE,
) -> TaskPage:
    """One page of a task: at most ``children`` children after the id
    ``children_after``, the ``results`` newest results and errors below the
    result ids given.

    :raises UnknownTask: there is no such task.
    """
    store = admin._store
    row = await store.admin_task_page(
        task_id,
        max_text=MAX_TEXT,
        max_label=MAX_LABEL,
        max_parents=MAX_PARENTS,
        children_after=children_after,
        children=children + 1,
    )
    if row is None:
        raise UnknownTask(f"there is no task {task_id}")
    found: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for errors, before in ((False, results_before), (True, errors_before)):
        if results:
            found[errors] = await store.admin_task_page_results(
                task_id,
                errors=errors,
                before=before or 2**63 - 1,
                max_text=MAX_ERROR_TEXT if errors else MAX_TEXT,
                limit=results + 1,
            )
    data, data_cut = _decode(row["parameters"], row["parameters_length"])
    notes, notes_cut = _decode(row["notes"], row["notes_length"])
    kids = [int(c) for c in row["children"]]
    shown = {e: [_value(r, e) for r in found[e][:results]] for e in (False, True)}
    info = TaskInfo.from_row(
        row,
        data=data,
        notes=notes or {},
        errors=[v.value for v in reversed(shown[True])],
        results=[v.value for v in reversed(shown[False])],
        children=kids[:children],
    )
    here = {
        "children_after": children_after or None,
        "results_before": results_before,
        "errors_before": errors_before,
    }

    def link(**changes: int | None) -> str:
        query = {k: v for k, v in {**here, **changes}.items() if v}
        return f"/tasks/{task_id}" + (f"?{urlencode(query)}" if query else "")

    def older(values: list[Value], rows: list[dict[str, Any]], name: str) -> str | None:
        return link(**{name: values[-1].id}) if len(rows) > results else None

    return TaskPage(
        info=info,
        data_cut=data_cut,
        notes_cut=notes_cut,
        parents_count=int(row["parents_count"]),
        # Oldest first on the page, as in task_info.
        results=list(reversed(shown[False])),
        errors=list(reversed(shown[True])),
        more_children=(
            link(children_after=kids[children - 1]) if children and len(kids) > children else None
        ),
        first_children=link(children_after=None) if children_after else None,
        older_results=older(shown[False], found[False], "results_before"),
        newest_results=link(results_before=None) if results_before else None,
        older_errors=older(shown[True], found[True], "errors_before"),
        newest_errors=link(errors_before=None) if errors_before else None,
    )


async def raw_result(admin: AsyncAdmin, task_id: int, result_id: int) -> str | None:
    """The text of one result or error of a task (at most MAX_RAW
    characters); None if the task has no such result."""
    return await admin._store.admin_result_text(task_id, result_id, MAX_RAW)
