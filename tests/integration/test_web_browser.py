"""The dashboard in a real browser: Debian's headless Chromium, driven by
Selenium through Debian's chromedriver, against uvicorn serving the app on
127.0.0.1 with real tasks in the real database.

Without Chromium (or chromedriver, or selenium) these tests skip, saying
why; with JOB_MACHINE_REQUIRE_BROWSER=1 (CI sets it) a missing browser is a
failure. `apt-get install chromium chromium-driver` gives both.

One test saves a screenshot of the overview: into $JOB_MACHINE_SCREENSHOT_DIR
when set (docs/img/ holds the one in the docs), else into the test's tmp_path.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
import uvicorn

import job_machine as jm
from job_machine.web import DashboardConfig, create_app
from tests.support.procs import wait_until
from tests.support.rows import task_state
from tests.support.web_data import XSS, XSS_QUEUE, XSS_SCRIPT, seed
from tests.support.workers import Base, Holding, serving

try:
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.wait import WebDriverWait
except ImportError:  # the test extra is not installed
    webdriver = None  # type: ignore[assignment]

#: Where to look; $JOB_MACHINE_CHROMIUM and $JOB_MACHINE_CHROMEDRIVER name others.
CHROMIUM = (os.environ.get("JOB_MACHINE_CHROMIUM") or "chromium", "chromium-browser")
CHROMEDRIVER = (os.environ.get("JOB_MACHINE_CHROMEDRIVER") or "chromedriver",)
REQUIRE = os.environ.get("JOB_MACHINE_REQUIRE_BROWSER") == "1"
TOKEN = "browser-test-token-0123456789"
#: A name the browser resolves to 127.0.0.1.
REBOUND = "evil.example"


def _find(names: tuple[str, ...]) -> str | None:
    """The first of ``names`` that is an executable (a path, or on $PATH)."""
    return next((found for name in names if (found := shutil.which(name))), None)


def _missing(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"{reason}, and JOB_MACHINE_REQUIRE_BROWSER=1 requires the browser tests")
    pytest.skip(f"{reason} (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    """Headless Chromium, one for the module, with a fresh profile."""
    if webdriver is None:
        _missing("selenium is not installed")
    chromium, chromedriver = _find(CHROMIUM), _find(CHROMEDRIVER)
    if chromium is None:
        _missing(f"no Chromium browser found (looked for {', '.join(CHROMIUM)})")
    if chromedriver is None:
        _missing(f"no chromedriver found (looked for {', '.join(CHROMEDRIVER)})")
    profile = tempfile.mkdtemp(prefix="jm-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        # evil.example "rebinds" to this machine, as a DNS rebinding attack makes it.
        f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        browser = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    except WebDriverException as ex:
        shutil.rmtree(profile, ignore_errors=True)
        _missing(f"Chromium did not start: {ex.msg}")
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def serve(dsn: str, browser: Any) -> Iterator[Callable[..., str]]:
    """Start the dashboard of the test's database with uvicorn in a thread;
    returns its base URL. Stopped at the end of the test. A dashboard
    without credentials of its own makes up a token: the browser has
    opened the URL `job-machine web` prints for it, and is logged in."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**options: Any) -> str:
        options.setdefault("refresh", 0)  # the page must not reload under a test
        port = _free_port()
        dashboard = DashboardConfig(dsn, **options)
        config = uvicorn.Config(
            create_app(dashboard),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))

        def started() -> bool:
            assert thread.is_alive(), "uvicorn stopped"
            return bool(server.started)

        wait_until(started, 10, "uvicorn to start")
        url = f"http://127.0.0.1:{port}"
        if dashboard.token_generated:
            browser.get(f"{url}/login?{urlencode({'token': dashboard.token})}")
            assert browser.current_url == url + "/", "the login URL did not log in"
        return url

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def browser(driver: Any) -> Iterator[Any]:
    """The browser, clean: no cookies, no dialog, no console messages left."""
    yield driver
    with contextlib.suppress(NoAlertPresentException):
        driver.switch_to.alert.dismiss()
    driver.delete_all_cookies()
    driver.get_log("browser")


def _text(browser: Any, css: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, css).text)


def _click(browser: Any, css: str) -> None:
    """Click and wait for the next page to load."""
    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, css).click()
    WebDriverWait(browser, 10).until(lambda b: _stale(old))
    WebDriverWait(browser, 10).until(
        lambda b: b.execute_script("return document.readyState") == "complete"
    )


def _stale(element: Any) -> bool:
    try:
        element.is_enabled()
        return False
    except WebDriverException:
        return True


def _full_page_png(browser: Any) -> bytes:
    """A screenshot of the whole page, beyond the window's height."""
    size = browser.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
    )
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1},
        },
    )
    return base64.b64decode(shot["data"])


def _csp_violations(browser: Any) -> list[str]:
    """Console messages about the Content-Security-Policy (our pages cause none)."""
    return [e["message"] for e in browser.get_log("browser") if "Content Security" in e["message"]]


def _not_pwned(browser: Any) -> None:
    assert browser.execute_script("return window.__pwned === undefined"), "hostile script ran"
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text


# -- the tests -------------------------------------------------------------------------------


def test_the_overview_shows_the_counts_and_looks_right(
    dsn: str, serve: Callable[..., str], browser: Any, tmp_path: Path
) -> None:
    """Queues and tasks in every state, two workers (one busy), a day of
    history: the numbers match Admin's, and the screenshot is saved."""
    seed(dsn, history=True, hostile=False)
    busy = Holding(dsn, queue=["gl.accounting"])
    with serving(busy), serving(Base(dsn, queue=["billing.idle"])):
        assert busy.started.wait(10)
        url = serve(refresh=30)
        browser.set_window_size(1280, 900)
        browser.get(url + "/")
        with jm.Admin(dsn) as admin:
            stats = admin.stats()
        assert _text(browser, "#count-waiting .card-n") == str(stats.total("waiting"))
        assert _text(browser, "#count-failed .card-n") == f"{stats.total('failed'):,}"
        assert _text(browser, "#count-blocked .card-n") == str(stats.total("blocked"))
        assert _text(browser, "#count-workers .card-n") == "1 / 2 workers"
        assert _text(browser, "#status-line").startswith("W=")
        rows = browser.find_elements(By.CSS_SELECTOR, "#queues tbody tr")
        assert [r.find_element(By.TAG_NAME, "a").text for r in rows] == [
            "gl.accounting",
            "mail.send",
            "report.build",
        ]
        assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar-done")) > 10
        meta = browser.find_elements(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]')
        assert [m.get_attribute("content") for m in meta] == ["30"]

        folder = Path(os.environ.get("JOB_MACHINE_SCREENSHOT_DIR") or tmp_path)
        folder.mkdir(parents=True, exist_ok=True)
        shot = folder / "dashboard-overview.png"
        shot.write_bytes(_full_page_png(browser))
        assert shot.stat().st_size > 10_000

        _click(browser, "#refresh-toggle")  # stop the auto-refresh
        assert browser.find_elements(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]') == []
        assert "Auto-refresh off" in _text(browser, ".refresh")
        busy.release.set()
    _not_pwned(browser)
    assert _csp_violations(browser) == []


def test_filter_the_tasks_and_open_one(dsn: str, serve: Callable[..., str], browser: Any) -> None:
    seeded = seed(dsn)
    browser.get(serve() + "/tasks")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#tasks tbody tr")) > 10
    # Choosing a state submits the form by itself (static/app.js).
    old = browser.find_element(By.TAG_NAME, "html")
    Select(browser.find_element(By.NAME, "state")).select_by_value("failed")
    WebDriverWait(browser, 10).until(lambda b: _stale(old))
    assert "state=failed" in browser.current_url
    field = browser.find_element(By.NAME, "title")
    field.send_keys("INVOICE")
    _click(browser, "form.filters button[type=submit]")
    rows = browser.find_elements(By.CSS_SELECTOR, "#tasks tbody tr")
    assert [r.find_element(By.CSS_SELECTOR, "td a").text for r in rows] == [str(seeded.failed)]
    _click(browser, f'#tasks a[href="/tasks/{seeded.failed}"]')
    assert _text(browser, "h1").startswith(f"Task #{seeded.failed}")
    assert _text(browser, "#task-title") == "invoice mail"
    assert "ValueError" in _text(browser, ".error-entry")
    assert "Traceback (most recent call last)" in _text(browser, "pre.traceback")
    # static/app.js ran (under the CSP): times are in the browser's zone, titled.
    assert browser.find_element(By.CSS_SELECTOR, "time").get_attribute("title")
    assert _csp_violations(browser) == []


def test_retry_a_failed_task_through_its_confirmation(
    dsn: str, serve: Callable[..., str], browser: Any, conn: psycopg.Connection[Any]
) -> None:
    seeded = seed(dsn)
    browser.get(serve() + f"/tasks/{seeded.failed}")
    _click(browser, f'a[href="/confirm/retry?target={seeded.failed}"]')
    assert _text(browser, "h1") == f"Retry task #{seeded.failed}?"
    assert task_state(conn, seeded.failed)[0] == 900  # asking changed nothing
    _click(browser, "#confirm")
    assert browser.current_url.endswith(f"/tasks/{seeded.failed}")
    assert _text(browser, "#flash") == f"Task {seeded.failed} is waiting again on queue mail.send."
    assert _text(browser, "h1 .badge") == "waiting"
    assert task_state(conn, seeded.failed)[0] == 0
    browser.refresh()  # the message shows once
    assert browser.find_elements(By.ID, "flash") == []


def test_pause_a_queue_from_the_overview(
    dsn: str, serve: Callable[..., str], browser: Any, conn: psycopg.Connection[Any]
) -> None:
    seed(dsn)
    browser.get(serve() + "/")
    _click(browser, 'a[href="/confirm/pause?target=mail.send"]')
    assert _text(browser, "h1") == "Pause queue mail.send?"
    _click(browser, "#confirm")
    assert "Queue mail.send paused" in _text(browser, "#flash")
    row = browser.find_element(By.XPATH, "//table[@id='queues']//tr[td/a[text()='mail.send']]")
    assert "paused" in row.text and "Resume" in row.text
    paused = conn.execute("SELECT paused FROM jobmachine.class WHERE name = 'mail.send'")
    assert paused.fetchone() == (True,)


def test_a_hostile_payload_title_error_and_queue_name_never_run(
    dsn: str, serve: Callable[..., str], browser: Any
) -> None:
    seeded = seed(dsn)
    url = serve()
    for path in (
        "/",
        "/tasks",
        f"/tasks/{seeded.hostile}",
        f"/tasks/{seeded.failed}",
        f"/tasks/{seeded.hostile_queue_task}",
        "/tasks?state=waiting",
    ):
        browser.get(url + path)
        _not_pwned(browser)
    browser.get(url + f"/tasks/{seeded.hostile}")
    assert _text(browser, "#task-title") == f"hostile {XSS}"
    assert XSS_SCRIPT in _text(browser, "#task-data")
    assert XSS_SCRIPT in _text(browser, "#task-notes")
    # Acting on the queue whose name is a script: done (a queue like any
    # other, issue 14), and shown as text.
    browser.get(url + "/")
    link = browser.find_element(By.XPATH, f"//table[@id='queues']//tr[td/a[text()='{XSS_QUEUE}']]")
    old = browser.find_element(By.TAG_NAME, "html")
    link.find_element(By.LINK_TEXT, "Pause").click()
    WebDriverWait(browser, 10).until(lambda b: _stale(old))
    _click(browser, "#confirm")
    assert f"Queue {XSS_QUEUE} paused" in _text(browser, "#flash")
    _not_pwned(browser)
    assert _csp_violations(browser) == []


def test_a_token_dashboard_asks_for_it_on_a_login_page(
    dsn: str, serve: Callable[..., str], browser: Any
) -> None:
    seed(dsn)
    url = serve(token=TOKEN, read_only=True)
    browser.get(url + "/workers")
    assert browser.current_url.startswith(url + "/login")
    browser.find_element(By.NAME, "token").send_keys("not the token at all")
    _click(browser, "button[type=submit]")
    assert "That is not the token" in _text(browser, ".error-box")
    browser.find_element(By.NAME, "token").send_keys(TOKEN)
    _click(browser, "button[type=submit]")
    assert browser.current_url == url + "/workers"
    assert _text(browser, ".top-right .pill") == "read-only"
    browser.get(url + "/")
    assert browser.find_elements(By.CSS_SELECTOR, 'a[href^="/confirm/"]') == []
    _click(browser, ".top-right button")  # log out
    browser.get(url + "/")
    assert browser.current_url.startswith(url + "/login")


def test_a_dashboard_is_locked_until_its_login_url_is_opened(
    dsn: str, serve: Callable[..., str], browser: Any
) -> None:
    """No credentials given: the dashboard makes up a token; the browser
    opened the URL that logs in with it (serve), and the address bar no
    longer holds it. Logging out refuses even a copy of the session."""
    seed(dsn)
    url = serve()
    browser.get(url + "/")
    assert "mail.send" in _text(browser, "#queues")
    session = browser.get_cookie("jm_session")
    assert session is not None and session["httpOnly"]
    _click(browser, ".top-right button")  # log out
    browser.get(url + "/tasks")
    assert browser.current_url.startswith(url + "/login")
    browser.add_cookie({"name": "jm_session", "value": session["value"], "path": "/"})
    browser.get(url + "/tasks")  # the old session, kept by a thief: refused
    assert browser.current_url.startswith(url + "/login")


def test_a_page_of_a_name_rebound_to_this_machine_reads_nothing(
    dsn: str, serve: Callable[..., str], browser: Any
) -> None:
    """DNS rebinding: evil.example now points to 127.0.0.1, so its pages are
    same-origin with http://evil.example:PORT/, the dashboard of a browser
    on this machine; but the dashboard does not answer to that name."""
    seed(dsn)
    url = serve()
    rebound = url.replace("127.0.0.1", REBOUND)
    browser.get(rebound + "/tasks")
    body = _text(browser, "body")
    assert "does not answer to that host name" in body
    assert "mail.send" not in body
    assert browser.get_cookies() == []  # not even a CSRF token
    browser.get(url + "/tasks")  # the real name still works
    assert "mail.send" in _text(browser, "#tasks")
