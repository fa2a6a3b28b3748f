"""The operators' dashboard (`GET /`): its files served open from the installed package, and the
page driven in a real browser (Debian's chromium through Playwright) against a real uvicorn
server on loopback with a token: sign in, see the schedules, filter and page them, enable,
disable and trigger, and watch a triggered run arrive in the runs table.

The server runs on the system clock: its scheduler fires a triggered run as soon as it polls,
and the browser's waits (Playwright's, with timeouts) are the only waiting; nothing is timed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from leasecron.adapters.fastapi import AgentOS
from leasecron.adapters.fastapi.dashboard import FILES

TOKEN = "dash-s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
DOCS_SHOT = ROOT / "docs" / "dashboard.png"  # LEASECRON_DASHBOARD_SHOT=1 renews it
WAIT_MS = 30_000  # what any browser wait may take on a loaded box
# A failure long enough that a table cell would be tempted to cut it (the kernel keeps 500).
LONG_ERROR = "the report service refused the request: " + "quota exhausted for this hour; " * 8


class EchoAgent:
    id = "echo"
    name = "echo agent"
    description = "says it back"

    async def arun(self, message, *, session_id=None, user_id=None, **kwargs):
        return f"echo: {message}"


class FailingAgent:
    id = "flaky"
    name = "flaky agent"
    description = "always fails"

    async def arun(self, message, *, session_id=None, user_id=None, **kwargs):
        raise RuntimeError(LONG_ERROR)


@dataclass
class Server:
    url: str
    http: httpx.Client

    def create(self, name: str, agent: str = "echo", **fields: Any) -> dict:
        body = {"name": name, "endpoint": f"/agents/{agent}/runs"}
        body |= {"payload": {"message": f"hello from {name}"}, **fields}
        r = self.http.post("/schedules", json=body)
        assert r.status_code == 201, r.text
        return r.json()


@contextlib.contextmanager
def serving(tmp_path: Path, **options: Any) -> Iterator[Server]:
    """An AgentOS with a token under uvicorn on a loopback port (`options` change its arguments).
    The socket listens before the server starts, so a connection made early waits in the
    backlog: nothing polls for readiness."""
    arguments = {
        "db": str(tmp_path / "dash.db"),
        "agents": [EchoAgent(), FailingAgent()],
        "token": TOKEN,
        "scheduler": True,
        "scheduler_poll_interval": 0.05,
        "name": "leasecron AgentOS",
    }
    agent_os = AgentOS(**(arguments | options))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(agent_os.get_app(), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, headers=AUTH, timeout=WAIT_MS / 1000) as http:
            yield Server(url, http)
    finally:
        server.should_exit = True
        thread.join(timeout=WAIT_MS / 1000)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


# -- the files, served open ----------------------------------------------------------------------


def test_the_page_and_its_files_are_served_without_a_token_over_a_real_socket(tmp_path):
    with serving(tmp_path) as s, httpx.Client(base_url=s.url) as anonymous:
        page = anonymous.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert '<script src="/dashboard/app.js"' in page.text
        assert '<link rel="stylesheet" href="/dashboard/style.css">' in page.text
        script = anonymous.get("/dashboard/app.js")
        style = anonymous.get("/dashboard/style.css")
        assert (script.status_code, style.status_code) == (200, 200)
        assert script.headers["content-type"].startswith("text/javascript")
        assert style.headers["content-type"].startswith("text/css")
        # The page's data stays behind the token.
        assert anonymous.get("/schedules").status_code == 401
        assert TOKEN not in page.text + script.text + style.text
        # The page is not part of the API's document.
        assert "/" not in s.http.get("/openapi.json").json()["paths"]


def test_the_files_fetch_nothing_from_another_origin():
    folder = ROOT / "adapters" / "fastapi" / "dashboard"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    for name in FILES:
        text = (folder / name).read_text()
        for needle in ("http://", "https://", "//cdn", "@import", "url("):
            assert needle not in text, f"{name} refers to {needle!r}"


def test_a_build_of_the_package_ships_the_dashboard_files(tmp_path):
    """What a non-editable install gets: setuptools' build of a copy of the project."""
    src = tmp_path / "src"
    for part in ("kernel", "adapters"):
        shutil.copytree(ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / part, src / part)
    out = tmp_path / "lib"
    build = "from setuptools import setup; setup()"
    done = subprocess.run(
        [sys.executable, "-c", build, "-q", "build_py", "--build-lib", str(out)],
        cwd=src,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    shipped = out / "leasecron" / "adapters" / "fastapi" / "dashboard"
    assert sorted(p.name for p in shipped.iterdir()) == sorted(FILES)


# -- in a real browser (the `browser` fixture is in conftest.py) ----------------------------------


def open_page(browser, url: str, requests: list):
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    # A zone other than UTC, so the viewer's local time differs from the UTC one shown.
    context = browser.new_context(
        viewport={"width": 1280, "height": 860}, timezone_id="Europe/Berlin"
    )
    page = context.new_page()
    page.on("request", lambda request: requests.append(request))
    page.goto(url + "/")
    return page


def sign_in(page, token: str = TOKEN) -> None:
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")


def row(page, name: str):
    return page.locator("#schedule-table tbody tr", has=page.locator("td.name", has_text=name))


@pytest.mark.browser
def test_sign_in_see_the_schedule_trigger_it_and_watch_the_run_succeed(tmp_path, browser):
    from playwright.sync_api import expect

    requests: list = []
    with serving(tmp_path) as s:
        s.create("nightly-report", cron_expr="0 2 * * *", timezone="Europe/Berlin")
        s.create("inbox-sweep", interval_seconds=900)
        digest = s.create("weekday-digest", cron_expr="30 9 * * 1-5")
        s.create("legacy-export", enabled=False)
        page = open_page(browser, s.url, requests)

        # The schedules answer 401: the page asks for the token; a wrong one is refused.
        expect(page.locator("#login")).to_be_visible()
        sign_in(page, "not-the-token")
        expect(page.locator("#login-error")).to_have_text("That token was refused.")
        sign_in(page)
        expect(page.locator("#login")).to_be_hidden()

        r = row(page, "weekday-digest")
        expect(r).to_be_visible()
        expect(r.locator("td").nth(1)).to_contain_text("weekdays at 09:30 (UTC)")
        expect(r.locator("td.next-run")).to_contain_text(digest["next_run_at_iso"])
        expect(r.locator("td.next-run .local")).to_contain_text("GMT+1")  # the viewer's zone
        expect(r.locator("td.enabled")).to_have_text("yes")
        expect(row(page, "inbox-sweep").locator("td").nth(1)).to_have_text("every 15 minutes")
        expect(row(page, "nightly-report").locator("td").nth(1)).to_contain_text(
            "daily at 02:00 (Europe/Berlin)"
        )
        # Next runs also in the schedule's own zone (a UTC one shows UTC only).
        expect(row(page, "nightly-report").locator("td.next-run .zone")).to_contain_text("02:00:00")
        expect(row(page, "nightly-report").locator("td.next-run .zone")).to_contain_text(
            "(Europe/Berlin)"
        )
        expect(r.locator("td.next-run .zone")).to_have_count(0)
        expect(row(page, "legacy-export").locator("td.enabled")).to_have_text("no")
        expect(row(page, "legacy-export").locator("button.trigger")).to_be_disabled()

        r.locator("button.trigger").click()
        expect(page.locator("#runs-name")).to_have_text("weekday-digest")
        run = page.locator("#run-table tbody tr").first
        expect(run.locator("td.run-status")).to_have_text("success")
        expect(run.locator("td.trigger")).to_have_text("manual")
        expect(run.locator("td.duration")).not_to_be_empty()
        expect(r.locator("td.last-status")).to_have_text("success")  # the list is polled too

        page.mouse.move(0, 0)  # no hover highlight in the picture
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        # The README's copy is replaced on request only: a test run leaves the tree clean.
        if os.environ.get("LEASECRON_DASHBOARD_SHOT") or not DOCS_SHOT.exists():
            DOCS_SHOT.parent.mkdir(exist_ok=True)
            shutil.copy(shot, DOCS_SHOT)

        # Kept for the tab (sessionStorage): a reload needs no new sign-in.
        page.reload()
        expect(row(page, "weekday-digest")).to_be_visible()
        expect(page.locator("#login")).to_be_hidden()

    # The token went out in a header only, never in an address: none before the first 401,
    # then the wrong one once, then the right one on every call (the reload's first included).
    assert not [q.url for q in requests if TOKEN in q.url]
    sent = [q.headers.get("authorization") for q in requests if "/schedules" in q.url]
    assert sent[:2] == [None, "Bearer not-the-token"]
    assert len(sent) > 4
    assert set(sent[2:]) == {f"Bearer {TOKEN}"}


@pytest.mark.browser
def test_filter_page_disable_enable_and_read_a_failed_runs_error_whole(tmp_path, browser):
    from playwright.sync_api import expect

    requests: list = []
    with serving(tmp_path) as s:
        for i in range(23):
            s.create(f"batch-{i:02d}", interval_seconds=3600)
        s.create("flaky-job", agent="flaky")
        page = open_page(browser, s.url, requests)
        sign_in(page)

        # 24 schedules, 20 a page, by name: "flaky-job" is on page 2.
        rows = page.locator("#schedule-table tbody tr")
        expect(rows).to_have_count(20)
        expect(page.locator("#schedule-pager .info")).to_have_text("page 1 of 2 (24 in all)")
        page.click("#schedule-pager .next")
        expect(rows).to_have_count(4)
        expect(row(page, "flaky-job")).to_be_visible()

        # The filter asks the server (q): one match, one page.
        page.fill("#filter", "BATCH-1")
        expect(rows).to_have_count(10)
        expect(page.locator("#schedule-pager")).to_be_hidden()
        page.fill("#filter", "flaky")
        expect(rows).to_have_count(1)
        assert any("q=flaky" in q.url for q in requests)

        r = row(page, "flaky-job")
        r.locator("button.disable").click()
        expect(r.locator("td.enabled")).to_have_text("no")
        expect(r.locator("button.trigger")).to_be_disabled()
        assert s.http.get("/schedules", params={"q": "flaky"}).json()["data"][0]["enabled"] is False
        r.locator("button.enable").click()
        expect(r.locator("td.enabled")).to_have_text("yes")

        r.locator("button.trigger").click()
        run = page.locator("#run-table tbody tr").first
        expect(run.locator("td.run-status")).to_have_text("failed")
        sid = r.get_attribute("data-id")
        error = s.http.get(f"/schedules/{sid}/runs").json()["data"][0]["error"]
        assert "quota exhausted" in error
        expect(run.locator("td.error-text")).to_have_text(error)  # the whole text, not cut
        expect(r.locator("td.last-status .failures")).to_have_text("1 failed in a row")

        # Close hides the runs (and ends their poll, which this test does not wait to see).
        page.click("#close-runs")
        expect(page.locator("#runs")).to_be_hidden()
