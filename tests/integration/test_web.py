"""The dashboard (job_machine.web) against a real database: its pages, its
actions with confirmation and CSRF protection, read-only mode, access
control, escaping of hostile text, secrets kept out of pages and logs, the
`job-machine web` command, and the title search's plan on a long history.

Requests go through httpx's ASGI transport, in the test's event loop (as
tests/integration/test_example_fastapi.py does); the browser tests are in
test_web_browser.py."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import click
import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from starlette.applications import Starlette

import job_machine as jm
from job_machine._async.admin import AsyncAdmin
from job_machine._db_errors import reraise
from job_machine._dsn import describe_target, redact
from job_machine._queries import queries
from job_machine.cli import web as cli_web
from job_machine.web import DashboardConfig, create_app
from job_machine.web.security import (
    CONTENT_SECURITY_POLICY,
    CSRF_COOKIE,
    Access,
    Guard,
    Scrubber,
)
from tests.integration.test_claim_plan import _explain, _insert_history, _max_rows, _nodes
from tests.support.procs import wait_until
from tests.support.rows import task_state
from tests.support.web_data import XSS, XSS_IMG, XSS_QUEUE, XSS_SCRIPT, Seeded, seed
from tests.support.workers import Holding, serving

ROOT = Path(__file__).resolve().parents[2]
SECRET = "S3cret-Passw0rd-never-shown"
TOKEN = "a-token-of-at-least-16-chars"
BASE_URL = "http://127.0.0.1:8080"


class _Elements(HTMLParser):
    """What a browser would run or style from a page's own markup."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.inline.append("<script> without src")
        self.inline += [f"<{tag} {n}=>" for n in names if n.startswith("on") or n == "style"]
        for name, value in attrs:
            if value and value.strip().lower().startswith("javascript:"):
                self.inline.append(f"<{tag} {name}={value}>")


def inline_code(html: str) -> list[str]:
    """Inline script, event handlers, javascript: links and inline styles of a page."""
    parser = _Elements()
    parser.feed(html)
    parser.close()
    return parser.inline


@asynccontextmanager
async def app_and_client(
    dsn: str, login: bool = True, **options: Any
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """A dashboard of ``dsn``, its lifespan running, and an HTTP client on it
    (as a browser that reached it at http://127.0.0.1:8080). Without
    credentials in ``options`` the dashboard makes up a token; with
    ``login`` the client has logged in with it (the URL `job-machine web`
    prints) and holds the session cookie."""
    config = DashboardConfig(dsn, **options)
    app = create_app(config)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http,
    ):
        if login and config.token_generated:
            logged_in = await http.get("/login", params={"token": config.token})
            assert logged_in.status_code == 303, logged_in.text
        yield app, http


@asynccontextmanager
async def dashboard(
    dsn: str, login: bool = True, **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on a dashboard of ``dsn``, its lifespan running,
    logged in (see :func:`app_and_client`)."""
    async with app_and_client(dsn, login, **options) as (_, http):
        yield http


@pytest.fixture
def seeded(dsn: str) -> Seeded:
    return seed(dsn)


async def _post(
    http: httpx.AsyncClient,
    path: str,
    data: dict[str, Any],
    csrf: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a form with this browser's CSRF token (after a GET sets it)."""
    if CSRF_COOKIE not in http.cookies:
        await http.get("/static/app.css")
        await http.get("/locks")
    token = http.cookies[CSRF_COOKIE] if csrf is None else csrf
    return await http.post(
        path, data={"csrf": token, **data}, headers=headers, follow_redirects=False
    )


def _basic(user: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


async def _act(http: httpx.AsyncClient, action: str, target: object) -> httpx.Response:
    """Confirm (GET) then do (POST) an action, and follow the redirect."""
    page = await http.get(f"/confirm/{action}", params={"target": str(target)})
    assert page.status_code == 200, page.text
    assert f'action="/do/{action}"' in page.text
    posted = await _post(http, f"/do/{action}", {"target": str(target)})
    assert posted.status_code == 303, posted.text
    return await http.get(posted.headers["location"])


def _status(conn: psycopg.Connection[Any], task_id: int) -> int | None:
    """A task's status, None once it is removed."""
    try:
        return task_state(conn, task_id)[0]
    except AssertionError:
        return None


# -- pages ---------------------------------------------------------------------------


async def test_overview_shows_counts_queues_workers_and_a_day_of_history(dsn: str) -> None:
    seed(dsn, history=True)
    async with dashboard(dsn) as http:
        page = await http.get("/")
        with jm.Admin(dsn) as admin:
            status = admin.status_string()
    assert page.status_code == 200
    html = page.text
    assert f'<code id="status-line">{status}</code>' in html
    for queue in ("mail.send", "report.build", "gl.accounting"):
        assert f'href="/tasks?queue={queue}"' in html
    for state, count in (("waiting", 8), ("delayed", 1), ("blocked", 1), ("running", 0)):
        assert re.search(rf'id="count-{state}">\s*<span class="card-n">{count}</span>', html)
    assert re.search(r'id="count-failed">\s*<span class="card-n">\d\d+</span>', html)
    assert '0<span class="card-of"> / 0 workers</span>' in html  # busy / alive
    assert 'report.build</a> <span class="pill pill-warn">paused</span>' in html
    assert 'href="/confirm/resume?target=report.build"' in html
    assert 'href="/confirm/pause?target=mail.send"' in html
    # 24 hourly bars, some done, some failed, and their totals.
    assert html.count('class="bar-hit"') == 24
    assert 'class="bar-done"' in html and 'class="bar-failed"' in html
    assert '<meta http-equiv="refresh" content="5">' in html


async def test_auto_refresh_can_be_turned_off_and_on(dsn: str) -> None:
    async with dashboard(dsn, refresh=7) as http:
        off = (await http.get("/?refresh=0")).text
        on = (await http.get("/")).text
        bad = await http.get("/?refresh=soon")
    assert 'http-equiv="refresh"' not in off
    assert 'href="/?refresh=7" id="refresh-toggle">Start' in off
    assert '<meta http-equiv="refresh" content="7">' in on
    assert 'href="/?refresh=0" id="refresh-toggle">Stop' in on
    assert bad.status_code == 400


async def test_tasks_filter_by_state_queue_and_title(dsn: str, seeded: Seeded) -> None:
    def ids(html: str) -> list[int]:
        return [int(i) for i in re.findall(r'<td class="n"><a href="/tasks/(\d+)">', html)]

    with jm.Admin(dsn) as admin:
        every = [t.id for t in admin.list_tasks(limit=100)]
        waiting_reports = [t.id for t in admin.list_tasks(state="waiting", queue="report.build")]
    async with dashboard(dsn) as http:
        assert ids((await http.get("/tasks")).text) == every
        failed = (await http.get("/tasks", params={"state": "failed"})).text
        reports = await http.get("/tasks", params={"state": "waiting", "queue": "report.build"})
        titled = await http.get("/tasks", params={"title": "REPORT", "queue": "report.build"})
        newsletter = await http.get("/tasks", params={"title": "newsletter", "state": "done"})
        nothing = await http.get("/tasks", params={"title": "no such title"})
        bad_state = await http.get("/tasks", params={"state": "lost"})
        bad_queue = await http.get("/tasks", params={"queue": "nul\x00queue"})
    assert ids(failed) == [seeded.failed]
    assert ids(reports.text) == waiting_reports and len(waiting_reports) == 6
    assert len(ids(titled.text)) == 6  # monthly, 4 daily and the delayed report
    assert len(ids(newsletter.text)) == 3
    assert 'id="no-tasks"' in nothing.text
    assert bad_state.status_code == 400 and "state must be one of" in bad_state.text
    assert bad_queue.status_code == 400 and "NUL" in bad_queue.text
    assert '<option value="report.build" selected>' in reports.text


async def test_task_pages_follow_the_keyset_to_the_oldest(dsn: str, client: jm.Client) -> None:
    sent = client.send_many(list(range(7)), queue="page.q", title="paged")
    async with dashboard(dsn, page_size=3) as http:
        seen: list[int] = []
        url: str | None = "/tasks?queue=page.q"
        pages = 0
        while url:
            html = (await http.get(url)).text
            seen += [int(i) for i in re.findall(r'<a href="/tasks/(\d+)">\1</a>', html)]
            found = re.search(r'<a class="button" href="([^"]+)" id="older">', html)
            url = found[1].replace("&amp;", "&") if found else None
            pages += 1
            if pages > 1:
                assert 'class="button quiet" href="/tasks?queue=page.q">Newest' in html
    assert seen == sorted(sent, reverse=True)
    assert pages == 3


async def test_a_title_search_reads_a_bounded_window_and_says_so(
    dsn: str, client: jm.Client
) -> None:
    """With scan=5, a rare title is found window by window: each page says
    where it stopped, and the link searches on below it."""
    ids = client.send_many(list(range(12)), queue="win.q", title="plain")
    rare = client.send("x", queue="win.q", title="The Rare One")
    client.send_many(list(range(6)), queue="win.q", title="plain")
    oldest_rare = client.send("y", queue="win.q", title="rare too")  # newest id, found first
    async with dashboard(dsn, page_size=2, scan=5) as http:
        found: list[int] = []
        url: str | None = "/tasks?" + urlencode({"title": "rare", "queue": "win.q"})
        notes = 0
        for _ in range(10):
            if url is None:
                break
            html = (await http.get(url)).text
            found += [int(i) for i in re.findall(r'<a href="/tasks/(\d+)">\1</a>', html)]
            notes += "Searched the 5 newest tasks" in html
            older = re.search(r'href="([^"]+)" id="older">(Search older tasks|Older)', html)
            url = older[1].replace("&amp;", "&") if older else None
    assert found == [oldest_rare, rare]
    assert notes >= 3  # 20 tasks, 5 a page
    assert ids[0] < rare


async def test_a_task_page_shows_data_results_errors_notes_and_relatives(
    dsn: str, seeded: Seeded
) -> None:
    async with dashboard(dsn) as http:
        failed = (await http.get(f"/tasks/{seeded.failed}")).text
        done = (await http.get(f"/tasks/{seeded.done}")).text
        blocked = (await http.get(f"/tasks/{seeded.blocked}")).text
        parent = (await http.get(f"/tasks/{seeded.parent}")).text
        hostile = (await http.get(f"/tasks/{seeded.hostile}")).text
        missing = await http.get("/tasks/999999")
    assert "Attempt 1: ValueError</strong>: bad input" in failed
    assert "Traceback (most recent call last)" in failed and "in handle" in failed
    assert 'href="/confirm/retry?target=' in failed
    assert "&#34;ok&#34;: &#34;hello&#34;" in done  # the reply
    assert 'href="/confirm/cancel?target=' in blocked

    def related(task_id: int, state: str) -> str:
        return f'<a href="/tasks/{task_id}">#{task_id}</a> <span class="badge badge-{state}">'

    assert related(seeded.parent, "waiting") in blocked
    assert related(seeded.blocked, "blocked") in parent
    assert 'id="task-notes"' in hostile and "comment" in hostile
    assert missing.status_code == 404 and "there is no task 999999" in missing.text


async def test_a_task_page_shows_its_deadlines(dsn: str, client: jm.Client) -> None:
    limited = client.send(1, queue="deadline.q", time_limit=90, expire_after=7200)
    plain = client.send(2, queue="deadline.q")
    with jm.Admin(dsn) as admin:
        admin.cancel(plain)
        cancelled_at = admin.task_info(plain).cancelled_at
    assert cancelled_at is not None
    async with dashboard(dsn) as http:
        shown = (await http.get(f"/tasks/{limited}")).text
        other = (await http.get(f"/tasks/{plain}")).text

    def cell(html: str, name: str) -> str | None:
        found = re.search(rf'<td id="task-{name}">(.*?)</td>', html)
        return None if found is None else found[1]

    assert cell(shown, "time-limit") == "1.5 min an attempt"
    assert (cell(shown, "expires") or "").endswith(" unless started")
    assert cell(shown, "cancelled") is None
    assert cell(other, "time-limit") == "the worker's time_limit"
    assert cell(other, "expires") == "\N{EN DASH}"
    assert cell(other, "cancelled") is not None


async def test_a_task_page_is_paged_and_its_values_cut(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """A task with 250 children, 25 results and 15 errors of a traceback of
    400,000 characters each: a page shows 100 children, the 10 newest
    results and errors, the end of each traceback, and links to the rest."""
    parent = client.send("p", queue="big.q")
    conn.execute("UPDATE jobmachine.task SET has_children = true WHERE task_id = %s", (parent,))
    kids = [
        r[0]
        for r in conn.execute(
            "INSERT INTO jobmachine.task (class_id, parameters, status, parents)"
            " SELECT class_id, '1', 10, ARRAY[task_id]"
            " FROM jobmachine.task, generate_series(1, 250) WHERE task_id = %s"
            " RETURNING task_id",
            (parent,),
        )
    ]
    trace = "Traceback (most recent call last):\n" + "  a frame\n" * 40_000 + "ValueError: the end"
    error = json.dumps({"type": "ValueError", "message": "no", "traceback": trace, "attempt": 1})
    conn.execute(
        "INSERT INTO jobmachine.result (task_id, result, resulttype)"
        " SELECT %s, json_build_object('n', g)::text, 'json' FROM generate_series(1, 25) g",
        (parent,),
    )
    conn.execute(
        "INSERT INTO jobmachine.result (task_id, result, resulttype)"
        " SELECT %s, %s, 'error' FROM generate_series(1, 15)",
        (parent, error),
    )
    huge = conn.execute(
        "INSERT INTO jobmachine.result (task_id, result, resulttype) VALUES (%s, %s, 'json')"
        " RETURNING result_id",
        (parent, json.dumps("y" * 300_000)),
    ).fetchone()[0]

    def shown(html: str) -> list[int]:
        cell = html.partition('id="task-children"')[2].partition("</td>")[0]
        return [int(i) for i in re.findall(r'href="/tasks/(\d+)">#', cell)]

    def link(html: str, name: str) -> str:
        found = re.search(rf'href="([^"]+)" id="{name}"', html)
        assert found is not None, name
        return found[1].replace("&amp;", "&")

    async with dashboard(dsn) as http:
        first = (await http.get(f"/tasks/{parent}")).text
        second = (await http.get(link(first, "more-children"))).text
        last = (await http.get(link(second, "more-children"))).text
        older = (await http.get(link(first, "older-results"))).text
        older_errors = (await http.get(link(first, "older-errors"))).text
        whole = await http.get(f"/tasks/{parent}/results/{huge}")
        whole_error_link = re.search(r'href="(/tasks/\d+/results/\d+)">the whole error', first)
        assert whole_error_link is not None
        whole_error = await http.get(whole_error_link[1])
        not_its = await http.get(f"/tasks/{kids[0]}/results/{huge}")
    assert len(first) < 500_000  # 15 tracebacks of 400,000 characters, 250 children
    assert shown(first) == kids[:100] and shown(second) == kids[100:200]
    assert shown(last) == kids[200:] and 'id="more-children"' not in last
    assert 'id="first-children"' in second
    # Results: the newest 10 (the huge one, n = 25..17), then older ones.
    assert "&#34;n&#34;: 25" in first and "&#34;n&#34;: 16" not in first
    assert (
        "&#34;n&#34;: 16" in older and "&#34;n&#34;: 7" in older and 'id="newest-results"' in older
    )
    assert "Cut: 300,002 characters in all" in first
    assert whole.status_code == 200 and whole.text == json.dumps("y" * 300_000)
    assert (
        first.count('class="error-entry"') == 10 and older_errors.count('class="error-entry"') == 5
    )
    assert "ValueError: the end" in first and "characters left out" in first
    assert whole_error.status_code == 200 and whole_error.text == error
    assert not_its.status_code == 404


async def test_workers_and_locks_pages(dsn: str, conn: psycopg.Connection[Any]) -> None:
    seed(dsn)
    conn.execute(
        "INSERT INTO jobmachine.worker (host, pid, queues) VALUES ('box-7', 4242, %s)",
        (["mail.send", "gl.*"],),
    )
    async with dashboard(dsn) as http:
        workers = (await http.get("/workers")).text
        locks = (await http.get("/locks")).text
    assert "<td>box-7</td>" in workers and ">4242<" in workers
    assert "mail.send, gl.*" in workers
    assert '<span class="badge badge-failed">dead</span>' in workers
    assert "/confirm/stop" not in workers  # a dead worker reads no command
    assert re.search(r"<td>smtp</td>\s*<td class=\"n\">1</td>", locks)


async def test_a_live_busy_worker_shows_its_task_and_can_be_stopped(
    dsn: str, client: jm.Client
) -> None:
    w = Holding(dsn, queue=["job.task"], hold=10)
    with serving(w):
        tid = client.send("x")
        assert w.started.wait(5)
        async with dashboard(dsn) as http:
            page = (await http.get("/workers")).text
            overview = (await http.get("/")).text
            assert '<span class="badge badge-running">busy</span>' in page
            assert f'<a href="/tasks/{tid}">#{tid}</a>' in page
            assert '1<span class="card-of"> / 1 workers</span>' in overview
            done = await _act(http, "stop", w.worker_id)
        assert f"Worker {w.worker_id} was asked to stop" in done.text
        w.release.set()
        assert client.wait(tid, timeout=5) == "ok"


# -- actions -----------------------------------------------------------------------


async def test_retry_asks_first_then_acts_and_says_what_it_did(
    dsn: str, seeded: Seeded, conn: psycopg.Connection[Any]
) -> None:
    async with dashboard(dsn) as http:
        confirm = await http.get("/confirm/retry", params={"target": seeded.failed})
        assert _status(conn, seeded.failed) == 900  # the GET changed nothing
        assert "Retry task" in confirm.text and 'name="csrf"' in confirm.text
        posted = await _post(http, "/do/retry", {"target": str(seeded.failed)})
        assert posted.status_code == 303
        assert posted.headers["location"] == f"/tasks/{seeded.failed}"
        page = await http.get(posted.headers["location"])
        assert f"Task {seeded.failed} is waiting again on queue mail.send." in page.text
        assert 'class="flash flash-ok"' in page.text
        again = await http.get(f"/tasks/{seeded.failed}")  # the message shows once
        assert "flash" not in again.text
    assert _status(conn, seeded.failed) == 0


async def test_cancel_remove_pause_resume_and_their_refusals(
    dsn: str, seeded: Seeded, conn: psycopg.Connection[Any]
) -> None:
    async with dashboard(dsn) as http:
        cancelled = await _act(http, "cancel", seeded.waiting)
        assert f"Task {seeded.waiting} cancelled." in cancelled.text
        assert _status(conn, seeded.waiting) == 900

        # A running task is offered for cancelling too, confirmed first.
        conn.execute("UPDATE jobmachine.task SET status = 100 WHERE task_id = %s", (seeded.parent,))
        running = (await http.get(f"/tasks/{seeded.parent}")).text
        assert 'href="/confirm/cancel?target=' in running
        confirm = await http.get("/confirm/cancel", params={"target": str(seeded.parent)})
        assert "A running task is stopped by its worker" in confirm.text
        stopped = await _act(http, "cancel", seeded.parent)
        assert f"Task {seeded.parent} cancelled." in stopped.text
        assert _status(conn, seeded.parent) == 900

        refused = await _act(http, "cancel", seeded.done)
        assert 'class="flash flash-error"' in refused.text
        assert "only a waiting, blocked or running task can be cancelled" in refused.text
        assert _status(conn, seeded.done) == 200

        removed = await _act(http, "remove", seeded.done)
        assert str(removed.url).endswith("/tasks")
        assert f"Task {seeded.done} removed." in removed.text
        assert _status(conn, seeded.done) is None

        paused = await _act(http, "pause", "mail.send")
        assert "Queue mail.send paused" in paused.text
        assert 'mail.send</a> <span class="pill pill-warn">paused</span>' in paused.text
        resumed = await _act(http, "resume", "report.build")
        assert "Queue report.build resumed." in resumed.text

        hostile = await _act(http, "pause", XSS_QUEUE)  # a queue like any other (issue 14)
        assert 'class="flash flash-ok"' in hostile.text
        assert "Queue &lt;script&gt;window.__pwned=1&lt;/script&gt; paused" in hostile.text
        unknown = await _act(http, "pause", "no.such.queue")
        assert "there is no queue" in unknown.text

        assert (await http.get("/confirm/explode?target=1")).status_code == 404
        assert (await http.get("/confirm/retry?target=abc")).status_code == 400
        assert (await http.get("/confirm/retry?target=999999")).status_code == 404
        assert (await http.get("/do/retry")).status_code == 405
    paused_queues = dict(conn.execute("SELECT name, paused FROM jobmachine.class").fetchall())
    assert paused_queues["mail.send"] is True and paused_queues["report.build"] is False


async def test_an_action_without_the_csrf_token_is_forbidden(
    dsn: str, seeded: Seeded, conn: psycopg.Connection[Any]
) -> None:
    # No credentials: the CSRF token alone must refuse these.
    async with dashboard(dsn, no_auth=True) as http:
        await http.get("/")
        target = {"target": str(seeded.failed)}
        missing = await http.post("/do/retry", data=target, follow_redirects=False)
        wrong = await _post(http, "/do/retry", target, csrf="x" * 43)
        empty = await _post(http, "/do/retry", target, csrf="")
        # A form from another site carries no cookie of ours at all.
        http.cookies.clear()
        foreign = await http.post(
            "/do/retry", data={**target, "csrf": "y" * 43}, follow_redirects=False
        )
    for response in (missing, wrong, empty, foreign):
        assert response.status_code == 403, response.text
        assert "security token" in response.text
    assert _status(conn, seeded.failed) == 900


async def test_read_only_hides_every_action_and_refuses_them(
    dsn: str, seeded: Seeded, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("INSERT INTO jobmachine.worker (host, pid, queues) VALUES ('h', 1, '{q}')")
    async with dashboard(dsn, read_only=True) as http:
        pages = [
            (await http.get(path)).text
            for path in ("/", "/tasks", f"/tasks/{seeded.failed}", f"/tasks/{seeded.waiting}")
        ]
        pages.append((await http.get("/workers")).text)
        confirm = await http.get("/confirm/retry", params={"target": seeded.failed})
        posted = await _post(http, "/do/retry", {"target": str(seeded.failed)})
    for html in pages:
        assert "/confirm/" not in html and "/do/" not in html
        assert ">read-only</span>" in html
    assert confirm.status_code == 403 and "read-only" in confirm.text
    assert posted.status_code == 403
    assert _status(conn, seeded.failed) == 900


# -- safety ----------------------------------------------------------------------------


async def test_hostile_text_is_shown_never_run(dsn: str, seeded: Seeded) -> None:
    """Script in a payload, a title, an error, a note and a queue name (one
    only a Perl sender or a hand-written INSERT can create) comes out as
    text on every page."""
    escaped = "&lt;script&gt;window.__pwned=1&lt;/script&gt;"
    async with dashboard(dsn) as http:
        paths = [
            "/",
            "/tasks",
            "/tasks?" + urlencode({"title": "hostile"}),
            "/tasks?" + urlencode({"queue": XSS_QUEUE}),
            f"/tasks/{seeded.hostile}",
            f"/tasks/{seeded.hostile_queue_task}",
            f"/tasks/{seeded.failed}",
            "/confirm/pause?" + urlencode({"target": XSS_QUEUE}),
            f"/confirm/retry?target={seeded.failed}",
            "/workers",
            "/locks",
        ]
        pages = {path: await http.get(path) for path in paths}
        flashed = await _act(http, "pause", XSS_QUEUE)
    pages["flash"] = flashed
    for path, page in pages.items():
        html = page.text
        assert XSS_SCRIPT not in html, path
        assert XSS_IMG not in html, path
        assert inline_code(html) == [], path
    assert escaped in pages["/"].text  # the queue name, on the overview
    assert escaped in pages[f"/tasks/{seeded.hostile}"].text  # data, title and note
    assert escaped in pages[f"/tasks/{seeded.failed}"].text  # the error and its traceback
    assert escaped in pages["flash"].text
    assert f"hostile {XSS}" not in pages["/tasks"].text


async def test_every_response_forbids_inline_script_and_framing(dsn: str) -> None:
    async with dashboard(dsn, no_auth=True) as http:
        responses = [
            await http.get(p) for p in ("/", "/tasks", "/nope", "/static/app.js", "/locks")
        ]
    for response in responses:
        csp = response.headers["content-security-policy"]
        assert csp == CONTENT_SECURITY_POLICY
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
    for page in responses[:3]:
        assert inline_code(page.text) == []  # the policy would block it
        assert page.headers["cache-control"] == "no-store"
    cookie = responses[0].headers["set-cookie"]  # the first response sets it
    assert cookie.startswith(f"{CSRF_COOKIE}=") and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie


async def test_a_token_guards_every_page_but_the_login(dsn: str, seeded: Seeded) -> None:
    async with dashboard(dsn, token=TOKEN) as http:
        away = await http.get("/tasks?state=failed", follow_redirects=False)
        assert away.status_code == 303
        assert away.headers["location"] == "/login?" + urlencode({"next": "/tasks?state=failed"})
        assert (await http.get("/static/app.css")).status_code == 200
        assert (await _post(http, "/do/retry", {"target": "1"})).status_code == 401
        assert (await http.get("/login")).status_code == 200
        wrong = await _post(http, "/login", {"token": "not-the-token-at-all", "next": "/"})
        assert wrong.status_code == 401 and "That is not the token" in wrong.text
        evil = await _post(http, "/login", {"token": TOKEN, "next": "//evil.example/"})
        assert evil.status_code == 303 and evil.headers["location"] == "/"
        assert TOKEN not in evil.headers["set-cookie"]
        assert (await http.get("/tasks")).status_code == 200
        page = await http.get("/")
        assert TOKEN not in page.text and "Log out" in page.text
        out = await _post(http, "/logout", {})
        assert out.status_code == 303
        assert (await http.get("/", follow_redirects=False)).status_code == 303
    async with dashboard(dsn, token=TOKEN) as http:
        bearer = await http.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
        bad = await http.get("/", headers={"Authorization": "Bearer nope"}, follow_redirects=False)
    assert bearer.status_code == 200 and bad.status_code == 303


async def test_a_dashboard_without_credentials_is_locked_by_its_own_token(
    dsn: str, seeded: Seeded, conn: psycopg.Connection[Any]
) -> None:
    """No token, no user given: a random token, asked for like a given one
    (only no_auth opens the dashboard to anyone)."""
    async with app_and_client(dsn, login=False) as (app, http):
        config: DashboardConfig = app.state.config
        assert config.token_generated and config.token and len(config.token) >= 32
        for path in ("/", "/tasks", f"/tasks/{seeded.failed}", "/workers", "/locks", "/schedules"):
            away = await http.get(path, follow_redirects=False)
            assert away.status_code == 303, path
            assert away.headers["location"].startswith("/login?")
        assert (await _post(http, "/do/pause", {"target": "mail.send"})).status_code == 401
        wrong = await http.get("/login", params={"token": "x" * 43})
        assert wrong.status_code == 401
        bearer = await http.get("/", headers={"Authorization": f"Bearer {config.token}"})
        assert bearer.status_code == 200
        url = await http.get("/login", params={"token": config.token, "next": "/tasks"})
        assert url.status_code == 303 and url.headers["location"] == "/tasks"
        assert config.token not in url.headers["set-cookie"]
        assert (await http.get("/tasks")).status_code == 200
    assert (
        conn.execute("SELECT paused FROM jobmachine.class WHERE name = 'mail.send'").fetchone()[0]
        is False
    )
    async with dashboard(dsn, no_auth=True) as http:
        assert (await http.get("/", follow_redirects=False)).status_code == 200
    other = DashboardConfig(dsn)
    assert other.token != config.token  # new in every dashboard


def _session(response: httpx.Response) -> str:
    found = re.search(r"jm_session=([^;]+)", response.headers["set-cookie"])
    assert found is not None, response.headers["set-cookie"]
    return found[1]


async def test_a_session_is_signed_expires_and_is_revoked_by_logging_out(dsn: str) -> None:
    """The session cookie: new at each login (an issue time and an id,
    signed), refused after session_lifetime, after a logout even where a
    copy of it survives, and by another process unless they share a secret."""
    async with app_and_client(dsn, token=TOKEN, session_lifetime=3600) as (app, http):
        login = await _post(http, "/login", {"token": TOKEN, "next": "/"})
        first = _session(login)
        assert "Max-Age=3600" in login.headers["set-cookie"]
        second = _session(await _post(http, "/login", {"token": TOKEN, "next": "/"}))
        assert first != second  # not a function of the token alone
        access: Access = app.state.access

        async def lets_in(session: str) -> bool:
            http.cookies.clear()
            page = await http.get("/", headers={"Cookie": f"jm_session={session}"})
            return page.status_code == 200 and not page.history

        assert await lets_in(first) and await lets_in(second)
        issued = int(first.partition("-")[0])
        assert access.valid_session(first, now=issued + 3599)
        assert not access.valid_session(first, now=issued + 3601)  # expired
        assert not access.valid_session(first, now=issued - 3600)  # not issued yet
        forged = f"{issued + 7200}-{first.partition('-')[2]}"
        assert not await lets_in(forged)  # an issue time changed: the signature fails
        # Log out with the first session: a copy of it is refused from now on.
        http.cookies.clear()
        await http.get("/", headers={"Cookie": f"jm_session={first}"})
        csrf = http.cookies[CSRF_COOKIE]
        out = await http.post(
            "/logout",
            data={"csrf": csrf},
            headers={"Cookie": f"jm_session={first}; {CSRF_COOKIE}={csrf}"},
            follow_redirects=False,
        )
        assert out.status_code == 303 and 'jm_session=""' in out.headers["set-cookie"]
        assert not await lets_in(first)
        assert await lets_in(second)  # another browser's login stays
    # Another process: its own key, unless both have the same secret.
    assert not Access(TOKEN).valid_session(second)
    shared = "a-secret-for-two-dashboards"
    one, two = Access(TOKEN, secret=shared), Access(TOKEN, secret=shared)
    session = one.session_value()
    assert two.valid_session(session) and two.valid_csrf(one.new_csrf())
    assert not Access("another-token-of-16-chars", secret=shared).valid_session(session)


async def test_logouts_beyond_the_limit_refuse_every_older_session() -> None:
    access = Access(TOKEN, lifetime=600)
    now = time.time()
    sessions = [access.session_value(now) for _ in range(3)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("job_machine.web.security.MAX_REVOKED", 2)
        access.revoke(sessions[0], now)
        access.revoke(sessions[1], now)
        assert access.valid_session(sessions[2], now)
        access.revoke(sessions[2], now)  # one too many: every session issued until now goes
        assert not any(access.valid_session(s, now) for s in sessions)
        assert not access.valid_session(access.session_value(now), now)
    assert access.valid_session(access.session_value(now + 2), now + 2)


async def test_basic_credentials_guard_every_page(dsn: str) -> None:
    async with dashboard(dsn, user="ops", password="hunter2hunter2") as http:
        none = await http.get("/")
        wrong = await http.get("/", headers=_basic("ops", "hunter3"))
        who = await http.get("/", headers=_basic("dev", "hunter2hunter2"))
        junk = await http.get("/", headers={"Authorization": "Basic !!!"})
        right = await http.get("/workers", headers=_basic("ops", "hunter2hunter2"))
    for response in (none, wrong, who, junk):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith('Basic realm="job_machine"')
    assert right.status_code == 200


async def test_wrong_credentials_are_answered_after_a_delay(dsn: str) -> None:
    """As a wrong token on the login page: guessing goes no faster by basic
    credentials or a bearer token. A request without any is asked at once."""

    async def timed(http: httpx.AsyncClient, headers: dict[str, str]) -> tuple[int, float]:
        started = time.monotonic()
        response = await http.get("/", headers=headers, follow_redirects=False)
        return response.status_code, time.monotonic() - started

    async with dashboard(dsn, user="ops", password="hunter2hunter2") as http:
        wrong_password = await timed(http, _basic("ops", "hunter3hunter3"))
        asked = await timed(http, {})
    async with dashboard(dsn, token=TOKEN) as http:
        wrong_token = await timed(http, {"Authorization": "Bearer not-the-token-at-all"})
    assert wrong_password[0] == 401 and wrong_password[1] >= 0.45
    assert wrong_token[0] == 303 and wrong_token[1] >= 0.45
    assert asked[0] == 401 and asked[1] < 0.45


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 characters"):
        DashboardConfig("dbname=x", token="short")
    with pytest.raises(ValueError, match="both a user name and a password"):
        DashboardConfig("dbname=x", user="ops")
    with pytest.raises(ValueError, match="both a user name and a password"):
        DashboardConfig("dbname=x", password="pw")
    with pytest.raises(ValueError, match=r"password .* at least 12 characters"):
        DashboardConfig("dbname=x", user="ops", password="hunter2")
    for name in ("http://dash.example/", "dash example", "", "[no-ip]"):
        with pytest.raises(ValueError, match="not a host name"):
            DashboardConfig("dbname=x", allowed_hosts=(name,))
    with pytest.raises(ValueError, match="not one string"):
        DashboardConfig("dbname=x", allowed_hosts="dash.example")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="statement_timeout"):
        DashboardConfig("dbname=x", statement_timeout=-1)
    with pytest.raises(ValueError, match="connection_wait"):
        DashboardConfig("dbname=x", connection_wait=0)


def test_no_secret_in_the_repr_of_the_settings() -> None:
    config = DashboardConfig(f"postgresql://jm:{SECRET}@db/jm", token=TOKEN)
    basic = DashboardConfig("dbname=jm", user="ops", password=SECRET)
    texts = [repr(config), repr(basic), repr(Access(TOKEN)), repr(Access(None, "ops", SECRET))]
    for text in texts:
        assert SECRET not in text and TOKEN not in text, text
    assert "read_only=False" in texts[0] and "user='ops'" in texts[3]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_database_never_shows_its_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dsn = f"postgresql://jm:{SECRET}@127.0.0.1:{_closed_port()}/jm"
    caplog.set_level(logging.DEBUG)
    async with dashboard(dsn) as http:
        paths = ("/", "/tasks", "/tasks/1", "/workers", "/locks", "/schedules")
        pages = [await http.get(p) for p in paths]
    for page in pages:
        assert page.status_code == 503
        assert "could not connect to PostgreSQL at host=127.0.0.1" in page.text
        assert SECRET not in page.text
        assert "jm:" + SECRET not in page.text
    assert "could not connect" in caplog.text
    assert SECRET not in caplog.text


UNPARSABLE = {  # DSNs libpq cannot parse, and the part of the password its error quotes
    "postgresql://u:s3cr%ZZet@h/db": "s3cr",
    "host=x password=my secret": "secret",
}


@pytest.mark.parametrize("dsn", UNPARSABLE)
async def test_an_unparsable_dsn_is_never_quoted(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    fragment = UNPARSABLE[dsn]
    with pytest.raises(psycopg.ProgrammingError) as parsed:
        conninfo_to_dict(dsn)
    assert fragment in str(parsed.value)  # what libpq says
    assert fragment not in Scrubber(dsn)(f"{parsed.value} in {dsn}")
    assert fragment not in describe_target(dsn) + redact(dsn)
    caplog.set_level(logging.DEBUG)
    async with dashboard(dsn) as http:
        page = await http.get("/locks")
    assert page.status_code == 503 and "invalid DSN: it cannot be parsed" in page.text
    assert fragment not in page.text and fragment not in caplog.text


# -- requests from elsewhere -------------------------------------------------------------


async def test_a_request_for_another_host_name_is_refused(dsn: str, seeded: Seeded) -> None:
    """DNS rebinding: a page of evil.example whose name now points to
    127.0.0.1 is same-origin with the dashboard, but its requests say
    Host: evil.example, and get nothing: no page, no CSRF cookie."""
    async with dashboard(dsn, allowed_hosts=("dash.example",)) as http:
        for host in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example", "[::2]"):
            page = await http.get("/tasks", headers={"Host": host})
            assert page.status_code == 400, host
            assert "does not answer to that host name" in page.text
            assert "mail.send" not in page.text and "<html" not in page.text
            assert "set-cookie" not in page.headers
        posted = await http.post(
            "/do/pause", data={"target": "mail.send"}, headers={"Host": "evil.example"}
        )
        assert posted.status_code == 400
        for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "LOCALHOST", "dash.example"):
            assert (await http.get("/tasks", headers={"Host": host})).status_code == 200, host


async def test_a_planted_csrf_cookie_is_not_trusted(
    dsn: str, seeded: Seeded, conn: psycopg.Connection[Any]
) -> None:
    """A neighbour (another port of this host, a sibling subdomain) can set
    the dashboard's cookie, and put the same value in its form; but it cannot
    sign it, so the dashboard replaces the cookie and refuses the form."""
    async with dashboard(dsn, no_auth=True) as http:
        for planted in ("p" * 43, Access().new_csrf()):  # unsigned; signed by another process
            http.cookies.clear()
            response = await http.post(
                "/do/retry",
                data={"target": str(seeded.failed), "csrf": planted},
                headers={"Cookie": f"{CSRF_COOKIE}={planted}"},
                follow_redirects=False,
            )
            assert response.status_code == 403 and "security token" in response.text
            assert response.headers["set-cookie"].startswith(f"{CSRF_COOKIE}=")
    assert _status(conn, seeded.failed) == 900


async def test_a_post_from_another_site_is_refused(
    dsn: str, seeded: Seeded, conn: psycopg.Connection[Any]
) -> None:
    """What the browser says of where a POST comes from: Origin (another
    scheme, host or port is another site) and Sec-Fetch-Site."""
    target = {"target": str(seeded.failed)}
    async with dashboard(dsn, token=TOKEN) as http:
        for headers in (
            {"Origin": "http://evil.example"},
            {"Origin": "http://127.0.0.1:9999"},
            {"Origin": "https://127.0.0.1:8080"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
            {"Sec-Fetch-Site": "same-origin", "Origin": "http://evil.example"},
        ):
            refused = await _post(http, "/login", {"token": TOKEN}, headers=headers)
            assert refused.status_code == 403 and "another site" in refused.text, headers
            assert "set-cookie" not in refused.headers or "jm_session" not in str(refused.headers)
        ours = {"Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "same-origin"}
        login = await _post(http, "/login", {"token": TOKEN}, headers=ours)
        assert login.status_code == 303
        refused = await _post(http, "/do/retry", target, headers={"Sec-Fetch-Site": "cross-site"})
        assert refused.status_code == 403
        assert _status(conn, seeded.failed) == 900
        done = await _post(http, "/do/retry", target, headers=ours)
        assert done.status_code == 303
    assert _status(conn, seeded.failed) == 0


async def test_a_large_body_is_refused(dsn: str) -> None:
    """Before any credentials: a login form of 100 KB, told or streamed."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b"token="
        for _ in range(100):
            yield b"x" * 1000

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    async with dashboard(dsn, token=TOKEN) as http:
        sized = await _post(http, "/login", {"token": "x" * 100_000})
        streamed = await http.post("/login", content=chunks(), headers=form)
        fine = await _post(http, "/login", {"token": TOKEN, "next": "/"})
    for response in (sized, streamed):
        assert response.status_code == 413 and "too large" in response.text
    assert "content-length" not in streamed.request.headers
    assert fine.status_code == 303


async def test_a_websocket_is_refused() -> None:
    """The Guard lets only HTTP (and the lifespan) through: nothing behind
    it checks credentials of a websocket."""
    reached: list[str] = []
    sent: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["type"])

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    guard = Guard(app, Access(), Scrubber("dbname=x"))
    headers = [(b"host", b"127.0.0.1:8080")]
    await guard({"type": "websocket", "path": "/", "headers": headers}, receive, send)
    assert reached == [] and sent == [{"type": "websocket.close", "code": 1008}]
    await guard({"type": "lifespan"}, receive, send)
    assert reached == ["lifespan"]


# -- the database, slow or failing -------------------------------------------------------


async def test_the_dashboard_connection_has_a_statement_timeout(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10 s by default, added to the DSN's own options; a statement beyond
    it is cancelled and the page says the database was too slow."""
    with_options = make_conninfo(dsn, options="-c application_name=jm-dashboard")
    async with app_and_client(with_options) as (app, http):
        assert (await http.get("/locks")).status_code == 200
        async with app.state.db.use() as admin:
            own = await admin._connector.own()
            cur = await own.execute(
                "SELECT current_setting('statement_timeout'), current_setting('application_name')"
            )
            assert await cur.fetchone() == ("10s", "jm-dashboard")

    async def sleepy(self: AsyncAdmin) -> list[Any]:
        # Through the Store, as every statement of the dashboard: its
        # QueryCanceled becomes StatementTimeout there.
        async with self._store._cursor() as cur:
            await cur.execute("SELECT pg_sleep(10)")
        return []

    monkeypatch.setattr(AsyncAdmin, "locks", sleepy)
    async with dashboard(dsn, statement_timeout=0.2) as http:
        started = time.monotonic()
        page = await http.get("/locks")
        assert time.monotonic() - started < 5
        assert page.status_code == 503 and "statement timeout (0.2 s)" in page.text
        monkeypatch.undo()
        assert (await http.get("/locks")).status_code == 200  # the connection still serves


async def test_a_request_that_waits_too_long_for_the_connection_is_told_busy(
    dsn: str,
) -> None:
    async with app_and_client(dsn, connection_wait=0.2) as (app, http):
        async with asyncio.timeout(5), app.state.db.use():  # a request that takes its time
            page = await http.get("/locks")
        after = await http.get("/locks")
    assert page.status_code == 503 and "busy" in page.text
    assert page.headers["retry-after"] == "5"
    assert after.status_code == 200


async def test_the_tasks_page_lists_the_queues_without_counting_tasks(
    dsn: str, seeded: Seeded, monkeypatch: pytest.MonkeyPatch, conn: psycopg.Connection[Any]
) -> None:
    async def counted(self: AsyncAdmin) -> None:
        raise AssertionError("the tasks page counted every queue's tasks")

    monkeypatch.setattr(AsyncAdmin, "stats", counted)
    async with dashboard(dsn) as http:
        page = await http.get("/tasks")
    names = [r[0] for r in conn.execute("SELECT name FROM jobmachine.class ORDER BY name")]
    with jm.Admin(dsn) as admin:
        assert admin.queues() == names
    assert page.status_code == 200
    assert {"gl.accounting", "mail.send", "report.build"} <= set(names)
    for name in names:
        assert f'<option value="{escape(name)}">' in page.text


async def test_a_task_id_beyond_a_bigint_is_not_found(dsn: str) -> None:
    async with dashboard(dsn) as http:
        for task_id in ("99999999999999999999", str(2**63), "0", str(2**63 - 1)):
            page = await http.get(f"/tasks/{task_id}")
            assert page.status_code == 404, task_id
            assert f"there is no task {task_id}" in page.text


async def test_a_failed_query_is_an_internal_error_logged_without_secrets(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not "the database is not available": a 500 that says nothing of the
    error, which goes to the log, scrubbed."""

    async def failing(self: AsyncAdmin) -> None:
        # As the Store raises it: job_machine's DatabaseError, psycopg's its cause.
        try:
            raise psycopg.errors.NumericValueOutOfRange(f"bigint out of range near {SECRET}")
        except psycopg.Error as ex:
            reraise(ex)

    monkeypatch.setattr(AsyncAdmin, "locks", failing)
    caplog.set_level(logging.ERROR, logger="job_machine.web")
    async with dashboard(f"postgresql://jm:{SECRET}@127.0.0.1:{_closed_port()}/jm") as http:
        page = await http.get("/locks")
    assert page.status_code == 500 and "The request failed" in page.text
    assert "not available" not in page.text and "out of range" not in page.text
    assert SECRET not in page.text
    assert "NumericValueOutOfRange: bigint out of range near ********" in caplog.text
    assert SECRET not in caplog.text


# -- the command ------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    base = {k: v for k, v in os.environ.items() if not k.startswith("JOB_MACHINE_")}
    return subprocess.run(
        [sys.executable, "-m", "job_machine.cli", *args],
        cwd=ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_web_refuses_to_listen_beyond_the_loopback_without_credentials() -> None:
    exposed = _cli("web", "--dsn", "dbname=x", "--host", "0.0.0.0")
    assert exposed.returncode == 2
    assert "listening on 0.0.0.0 would let anyone on the network" in exposed.stderr
    assert "--token" in exposed.stderr
    short = _cli("web", "--dsn", "dbname=x", "--token", "short")
    assert short.returncode == 2 and "at least 16 characters" in short.stderr
    half = _cli("web", "--dsn", "dbname=x", "--user", "ops")
    assert half.returncode == 2 and "both a user name and a password" in half.stderr
    weak = _cli("web", "--dsn", "dbname=x", "--user", "ops", env={"JOB_MACHINE_WEB_PASSWORD": "pw"})
    assert weak.returncode == 2 and "at least 12 characters" in weak.stderr
    bad_name = _cli("web", "--dsn", "dbname=x", "--allowed-host", "http://dash.example/")
    assert bad_name.returncode == 2 and "not a host name" in bad_name.stderr


def test_web_help_says_secrets_on_its_command_line_are_visible() -> None:
    options = {p.name: p for p in cli_web.params if isinstance(p, click.Option)}
    for name, variable in (
        ("token", "JOB_MACHINE_WEB_TOKEN"),
        ("password", "JOB_MACHINE_WEB_PASSWORD"),
    ):
        assert "visible to ps" in (options[name].help or ""), name
        assert options[name].envvar == variable
    nodb = _cli("web")
    assert nodb.returncode == 2 and "no database" in nodb.stderr


def test_web_says_how_to_install_the_extra_when_it_is_missing() -> None:
    code = (
        "import sys; sys.modules['starlette'] = None\n"
        "from job_machine.cli import main; main(['web', '--dsn', 'dbname=x'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "pip install 'job_machine[web]'" in result.stderr
    assert "starlette is not installed" in result.stderr


@pytest.mark.parametrize("dsn", UNPARSABLE)
def test_web_with_an_unparsable_dsn_fails_without_quoting_it(dsn: str) -> None:
    result = _cli("web", "--dsn", dsn, "--port", "0")
    assert result.returncode == 1
    assert "invalid DSN: it cannot be parsed" in result.stderr
    assert UNPARSABLE[dsn] not in result.stderr + result.stdout


def test_web_answers_to_its_address_and_the_allowed_names_only(dsn: str) -> None:
    with web_process(dsn, "--allowed-host", "dash.example", host="127.0.0.2") as (url, _, _):
        port = url.rpartition(":")[2]

        def status(host: str) -> int:
            return httpx.get(url + "/login", headers={"Host": host}).status_code

        assert status(f"127.0.0.2:{port}") == 200  # --host
        assert status("dash.example") == 200  # --allowed-host
        assert status(f"localhost:{port}") == 200
        assert status(f"evil.example:{port}") == 400


def test_web_with_an_unreachable_database_fails_without_its_password() -> None:
    dsn = f"host=127.0.0.1 port={_closed_port()} dbname=jm user=jm password={SECRET}"
    result = _cli("web", "--dsn", dsn, "--port", "0")
    assert result.returncode == 1
    assert "could not connect to PostgreSQL at host=127.0.0.1" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def _free_port() -> int:
    return _closed_port()


@contextmanager
def web_process(
    dsn: str, *args: str, host: str = "127.0.0.1", token: str | None = TOKEN
) -> Iterator[tuple[str, subprocess.Popen[str], str]]:
    """`job-machine web` in a subprocess, with a password in its DSN (the
    test server's own, or one it ignores), an access token (None: none
    given) and ``args``; yields its URL, the process and the password,
    once it answers (so what it prints before serving is in the pipe)."""
    params = conninfo_to_dict(dsn)
    secret = str(params.get("password") or SECRET)
    with_password = make_conninfo(dsn, password=secret)
    port = _free_port()
    command = ["web", "--host", host, "--port", str(port), *args]
    if token is not None:
        command += ["--token", token]
    proc = subprocess.Popen(
        [sys.executable, "-m", "job_machine.cli", *command],
        cwd=ROOT,
        env={**os.environ, "JOB_MACHINE_DSN": with_password},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://{host}:{port}"
    try:

        def answers() -> bool:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                httpx.get(url + "/login", timeout=1)
            except httpx.TransportError:
                return False
            return True

        wait_until(answers, 30, "the dashboard to start", interval=0.1)
        yield url, proc, secret
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture
def served(dsn: str) -> Iterator[tuple[str, subprocess.Popen[str], str]]:
    with web_process(dsn) as found:
        yield found


def test_web_serves_the_dashboard_and_logs_no_secret(
    served: tuple[str, subprocess.Popen[str], str], seeded: Seeded
) -> None:
    url, proc, secret = served
    headers = {"Authorization": f"Bearer {TOKEN}"}
    page = httpx.get(url + "/", headers=headers)
    assert page.status_code == 200 and "mail.send" in page.text
    assert secret not in page.text
    login = httpx.get(url + f"/login?next=/tasks&token={TOKEN}")
    assert login.status_code == 303 and login.headers["location"] == "/tasks"
    assert httpx.get(url + "/tasks", follow_redirects=False).status_code == 303
    proc.terminate()
    output, _ = proc.communicate(timeout=10)
    assert "dashboard of host=" in output and "http://127.0.0.1:" in output
    assert '"GET / HTTP/1.1" 200' in output  # uvicorn's access log
    assert secret not in output
    assert TOKEN not in output  # even where a request put it in the URL


def _printed_login_url(proc: subprocess.Popen[str]) -> str:
    """The login URL a running `job-machine web` printed before it served."""
    assert proc.stdout is not None
    for line in proc.stdout:  # printed before serving: already in the pipe
        if "/login?token=" in line:
            return line.strip()
        if "Uvicorn running on" in line:  # serving, and nothing printed
            break
    raise AssertionError("no login URL printed")


def test_web_makes_up_a_token_and_prints_the_url_that_logs_in(dsn: str, seeded: Seeded) -> None:
    with web_process(dsn, token=None) as (url, proc, secret):
        login_url = _printed_login_url(proc)
        assert login_url.startswith(url + "/login?token=")
        token = login_url.partition("=")[2]
        assert len(token) >= 32
        # Locked: no page, no action without it.
        assert httpx.get(url + "/", follow_redirects=False).status_code == 303
        assert httpx.get(url + f"/tasks/{seeded.failed}", follow_redirects=False).status_code == 303
        assert httpx.post(url + "/do/pause", data={"target": "mail.send"}).status_code == 401
        with httpx.Client(base_url=url) as browser:
            opened = browser.get(login_url, follow_redirects=True)
            assert opened.status_code == 200 and "mail.send" in opened.text
            assert str(opened.url) == url + "/"  # the token left the address bar
        proc.terminate()
        output, _ = proc.communicate(timeout=10)
    assert token not in output  # printed once, never logged (the request's URL neither)
    assert secret not in output


def test_web_no_auth_serves_anyone_and_says_so_loudly(dsn: str, seeded: Seeded) -> None:
    with web_process(dsn, "--no-auth", token=None) as (url, proc, _):
        assert httpx.get(url + "/", follow_redirects=False).status_code == 200
        proc.terminate()
        output, _ = proc.communicate(timeout=10)
    assert "WARNING" in output and "NO AUTHENTICATION (--no-auth)" in output
    assert "/login?token=" not in output
    exposed = _cli("web", "--dsn", "dbname=x", "--no-auth", "--host", "0.0.0.0")
    assert exposed.returncode == 2 and "would let anyone on the network" in exposed.stderr
    both = _cli("web", "--dsn", "dbname=x", "--no-auth", "--token", TOKEN)
    assert both.returncode == 2 and "exclude each other" in both.stderr


# -- the Admin calls the dashboard uses ---------------------------------------------------


def test_admin_search_tasks_pages_and_windows(dsn: str, client: jm.Client) -> None:
    a = client.send_many(list(range(5)), queue="s.q", title="Alpha")
    b = client.send_many(list(range(5)), queue="s.q", title="beta")
    with jm.Admin(dsn) as admin:
        plain = admin.search_tasks(queue="s.q", limit=4)
        assert [t.id for t in plain.tasks] == b[::-1][:4]
        assert plain.next_before_id == b[1] and not plain.window_ended
        last = admin.search_tasks(queue="s.q", limit=4, before_id=a[2])
        assert [t.id for t in last.tasks] == [a[1], a[0]] and last.next_before_id is None

        full = admin.search_tasks(title="ALPHA", limit=3)
        assert [t.id for t in full.tasks] == a[::-1][:3] and full.next_before_id == a[2]
        window = admin.search_tasks(title="alpha", limit=3, scan=6)  # 5 betas, 1 alpha
        assert [t.id for t in window.tasks] == [a[4]]
        assert window.window_ended and window.next_before_id == a[4]
        rest = admin.search_tasks(title="alpha", limit=10, scan=10, before_id=a[4])
        assert [t.id for t in rest.tasks] == a[3::-1] and rest.next_before_id is None
        assert admin.search_tasks(title="gamma", state="done").tasks == []
        assert admin.search_tasks(limit=10_000).next_before_id is None
        with pytest.raises(ValueError, match="scan must be"):
            admin.search_tasks(title="a", limit=10, scan=5)
        with pytest.raises(ValueError, match="state must be"):
            admin.search_tasks(title="a", state="lost")
        with pytest.raises(jm.InvalidQueueName):
            admin.search_tasks(title="a", queue="a\x00b")


def test_admin_locks_and_task_states(dsn: str, client: jm.Client) -> None:
    first = client.lock("smtp", expire=60, limit=3)
    client.lock("smtp", expire=120, limit=3)
    client.lock("gone", expire=0.05)
    parent = client.send("p")
    child = client.send("c", parents=[parent])
    with jm.Admin(dsn) as admin:
        locks = wait_until(
            lambda: (
                (found := {lock.name: lock for lock in admin.locks()})["gone"].held == 0 and found
            ),
            5,
            "the 0.05 s hold to expire",
        )
        assert locks["smtp"].held == 2 and locks["smtp"].expired == 0
        assert locks["smtp"].next_expiry is not None and locks["smtp"].last_expiry is not None
        assert locks["smtp"].next_expiry < locks["smtp"].last_expiry
        assert (locks["gone"].held, locks["gone"].expired) == (0, 1)
        assert admin.task_states([parent, child, 424242]) == {parent: "waiting", child: "blocked"}
        assert admin.task_states([]) == {}
    assert first is not None


# -- the title search on a long history ------------------------------------------------


def test_a_title_search_reads_its_window_not_the_history(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """200,000 done tasks and a rare title: a page of the search reads at
    most ``scan`` rows of an index, for every combination of filters the
    dashboard sends, and never scans the table."""
    _insert_history(conn, "big.q", 200_000, 200)
    _insert_history(conn, "big.q", 40, 900)
    client.send_many(range(30), queue="big.q", title="nightly")
    client.send("needle", queue="big.q", title="the needle")
    conn.execute("ANALYZE jobmachine.task")
    base = {"title": "needle", "status": None, "queue": None, "before_id": None}
    base |= {"limit": 50, "scan": 10_000}
    for params in (
        base,
        {**base, "queue": "big.q"},
        {**base, "status": 200},
        {**base, "status": 900},
        {**base, "status": 0, "queue": "big.q"},
        {**base, "before_id": 150_000},
        {**base, "title": "no such title at all"},
    ):
        plan = _explain(conn, queries()["admin_search_tasks"], params)
        scans = [n for n in _nodes(plan) if n["Node Type"] == "Seq Scan"]
        assert [n.get("Relation Name") for n in scans if n.get("Relation Name") == "task"] == []
        # The window (scan), and the one row ahead that PostgreSQL 15's
        # WindowAgg reads to close its frame (PostgreSQL 18's does not).
        assert _max_rows(plan) <= 10_001, (params, plan)
    with jm.Admin(dsn) as admin:
        page = admin.search_tasks(title="NEEDLE")
        assert [t.title for t in page.tasks] == ["the needle"]
        assert page.window_ended and page.next_before_id is not None
        failed = admin.search_tasks(title="", state="failed", limit=10)
        assert len(failed.tasks) == 10


#: Queue names a Perl client may make (issue 14, item 8).
ODD_QUEUES = ["Email Sender", "a/b", "x:y", "100%", "what?", "#tag", "køb ✓", "<script>q</script>"]


async def test_any_queue_name_is_shown_linked_and_acted_on(
    dsn: str, client: jm.Client, conn: psycopg.Connection[Any]
) -> None:
    """Each name is escaped in the page, URL-encoded in its links (the
    overview's filter and action links), and pause, resume and the task
    filter act on exactly that queue."""
    ids = {name: client.send({"q": name}, queue=name) for name in ODD_QUEUES}
    async with dashboard(dsn) as http:
        overview = (await http.get("/")).text
        assert inline_code(overview) == []
        for name, tid in ids.items():
            assert f">{escape(name)}</a>" in overview, name
            link = "/tasks?" + urlencode({"queue": name}, quote_via=_quote)
            assert f'href="{escape(link)}"' in overview, (name, link)
            confirm = "/confirm/pause?" + urlencode({"target": name}, quote_via=_quote)
            assert f'href="{escape(confirm)}"' in overview, (name, confirm)

            listed = await http.get(link)
            assert listed.status_code == 200
            assert re.findall(r'href="/tasks/(\d+)"', listed.text) == [str(tid)], name
            page = (await http.get(f"/tasks/{tid}")).text
            assert f'href="{escape(link)}">{escape(name)}</a>' in page, name

            paused = await _act(http, "pause", name)
            assert f"Queue {escape(name)} paused" in paused.text, name
            assert conn.execute(
                "SELECT paused FROM jobmachine.class WHERE name = %s", [name]
            ).fetchone() == (True,)
            resumed = await _act(http, "resume", name)
            assert f"Queue {escape(name)} resumed." in resumed.text, name
    paused_now = conn.execute("SELECT count(*) FROM jobmachine.class WHERE paused").fetchone()
    assert paused_now == (0,)


def _quote(
    text: str, safe: str = "", encoding: str | None = None, errors: str | None = None
) -> str:
    """URL-encoding as Jinja's urlencode filter does it (``/`` left as is)."""
    from urllib.parse import quote  # noqa: PLC0415

    return quote(text, safe="/", encoding=encoding, errors=errors)
