"""The dashboard's views beyond the lists, in a real browser against a real uvicorn server on
loopback (helpers from test_dashboard.py): a schedule's run timeline, a run's session and trace
waterfall, and the cluster panel.

The timeline's runs are made beforehand by a real scheduler on the same SQLite file under a
simulated clock (so their slots, starts and statuses are known), then served with no scheduler.
The waterfall's run is a real workflow run fired by the server's own scheduler.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_dashboard import (
    ARTIFACTS,
    EchoAgent,
    open_page,
    row,
    serving,
    sign_in,
)

from leasecron.kernel import Condition, Step, Workflow
from support import Cluster

pytestmark = pytest.mark.browser


def seed_runs(path) -> None:
    """A schedule every 10 s whose second fire fails (HTTP 503) and is retried 2 s later, under
    a simulated clock, then the replica stops: its next slot is left overdue."""
    cluster = Cluster(path, n=1)
    cluster.target.codes["/mixed"] = [200, 503, 200]  # the last code repeats

    async def scenario():
        await cluster.manager.create(
            "mixed", endpoint="/mixed", interval_seconds=10, max_retries=1, retry_delay_seconds=2
        )
        await cluster.start()
        await cluster.clock.advance(35)
        await cluster.stop()

    # Playwright's sync API holds this thread's event loop: the scheduler runs on another.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, scenario()).result()


def test_the_timeline_draws_each_run_at_its_start_with_its_slot_and_status(tmp_path, browser):
    from playwright.sync_api import expect

    seed_runs(tmp_path / "dash.db")
    with serving(tmp_path, scheduler=False) as s:
        sid = s.http.get("/schedules", params={"q": "mixed"}).json()["data"][0]["id"]
        runs = s.http.get(f"/schedules/{sid}/runs").json()["data"]
        statuses = {(r["status"], r["trigger"]) for r in runs}
        assert {("success", "schedule"), ("failed", "schedule"), ("success", "retry")} <= statuses
        page = open_page(browser, s.url, [])
        sign_in(page)
        row(page, "mixed").click()

        marks = page.locator("#timeline g.tl-run")
        expect(marks).to_have_count(len(runs))
        expect(page.locator("#timeline-legend")).to_contain_text("retry (trigger)")
        for r in runs:
            mark = page.locator(f'#timeline g.tl-run[data-id="{r["id"]}"]')
            kind = r["status"] if r["status"] in ("success", "failed") else "other"
            expect(mark).to_have_class(f"tl-run tl-{kind}")
            title = mark.locator("title")
            started = s_utc(r["triggered_at"])
            expect(title).to_contain_text(f"slot: {s_utc(r['scheduled_for'])}")
            expect(title).to_contain_text(f"started: {started}")
            expect(mark.locator("line.tl-slot")).to_have_count(1)
            shape = "polygon" if r["trigger"] == "retry" else "circle"
            expect(mark.locator(f"{shape}.tl-mark")).to_have_count(1)
        # The mark sits at the start and the tick at the slot: a retry's start is after its slot.
        retry = next(r for r in runs if r["trigger"] == "retry")
        mark = page.locator(f'#timeline g.tl-run[data-id="{retry["id"]}"]')
        tick = float(mark.locator("line.tl-slot").get_attribute("x1"))
        lag_end = float(mark.locator("line.tl-lag").get_attribute("x2"))
        assert lag_end > tick

        page.mouse.move(0, 0)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-timeline.png"), full_page=True)

        # The cluster panel: the replica has stopped and its next slot is overdue.
        expect(page.locator("#cluster")).to_be_visible()
        expect(page.locator("#cluster-overdue")).to_have_text("1")
        expect(page.locator("#overdue-list")).to_contain_text("overdue: mixed")
        expect(page.locator("#cluster-schedules")).to_have_text("1 (1)")


def s_utc(epoch: float) -> str:
    """As the page writes a time: ISO 8601 in UTC, to the second."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pipeline() -> Workflow:
    echo = EchoAgent()
    return Workflow(
        id="pipeline",
        steps=[
            Step("draft", agent=echo),
            Condition("input.size() > 0", steps=[Step("polish", agent=echo)], name="has-input"),
        ],
    )


def spans_in_order(spans, depth=0):
    for span in spans:
        yield span, depth
        yield from spans_in_order(span["children"], depth + 1)


def test_a_runs_session_and_trace_waterfall_open_on_a_click(tmp_path, browser):
    from playwright.sync_api import expect

    with serving(tmp_path, workflows=[pipeline()]) as s:
        body = {"name": "pipeline-job", "endpoint": "/workflows/pipeline/runs"}
        body["payload"] = {"message": "draft this"}
        assert s.http.post("/schedules", json=body).status_code == 201
        page = open_page(browser, s.url, [])
        sign_in(page)
        row(page, "pipeline-job").locator("button.trigger").click()
        run = page.locator("#run-table tbody tr").first
        expect(run.locator("td.run-status")).to_have_text("success")
        expect(run).to_have_class("has-detail")
        run.click()

        run_id = run.get_attribute("data-run-id")
        expect(page.locator("#detail-run-id")).to_have_text(run_id)
        sid = row(page, "pipeline-job").get_attribute("data-id")
        stored = s.http.get(f"/schedules/{sid}/runs").json()["data"][0]
        assert stored["run_id"] == run_id
        expect(page.locator("#session-facts")).to_contain_text(stored["session_id"])
        expect(page.locator(f'#session-runs tr[data-run-id="{run_id}"]')).to_have_class("selected")

        trace = s.http.get(f"/traces/{run_id}").json()
        expected = list(spans_in_order(trace["spans"]))
        kinds = [span["kind"] for span, _ in expected]
        assert kinds[0] == "workflow" and {"step", "agent", "condition", "cel"} <= set(kinds)
        bars = page.locator("#waterfall g.wf-span")
        expect(bars).to_have_count(len(expected))
        xs = []
        for i, (span, depth) in enumerate(expected):
            bar = bars.nth(i)
            assert bar.get_attribute("data-name") == span["name"]
            assert bar.get_attribute("data-kind") == span["kind"]
            assert bar.get_attribute("data-depth") == str(depth)
            expect(bar.locator(".wf-duration")).not_to_be_empty()
            xs.append(float(bar.locator("rect.wf-bar").get_attribute("x")))
        # The workflow starts first: every other bar is offset from it, none before it.
        assert all(x >= xs[0] for x in xs)
        # A name is indented by its depth.
        name_x = [float(bars.nth(i).locator(".wf-name").get_attribute("x")) for i in (0, 1)]
        assert name_x[1] > name_x[0]

        page.mouse.move(0, 0)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-trace.png"), full_page=True)
        page.click("#close-detail")
        expect(page.locator("#run-detail")).to_be_hidden()


def test_the_cluster_panel_shows_the_replica_and_the_last_hours_failure(tmp_path, browser):
    from playwright.sync_api import expect

    with serving(tmp_path) as s:
        flaky = s.create("flaky-job", agent="flaky")
        page = open_page(browser, s.url, [])
        sign_in(page)
        expect(page.locator("#cluster")).to_be_visible()
        assert s.http.post(f"/schedules/{flaky['id']}/trigger").status_code in (200, 201, 202)
        # Polled every 5 s: the failure shows without a reload.
        expect(page.locator("#cluster-failures")).to_have_text("1")
        expect(page.locator("#failure-list")).to_contain_text("failed: flaky-job")
        status = s.http.get("/status").json()
        replica = status["replicas"][0]
        line = page.locator(f'#replica-table tr[data-replica="{replica["replica"]}"]')
        expect(line.locator("td.fires")).to_have_text(str(replica["fires"]))
        expect(line.locator("td.leases")).to_have_text(str(replica["leases"]))
        expect(page.locator("#cluster-failures-label")).to_have_text("failures, last 1 hour")
        page.click("#logout")
        expect(page.locator("#cluster")).to_be_hidden()
