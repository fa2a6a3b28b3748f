"""The dashboard over 10,000 schedules: a SQLite file, the AgentOS app under uvicorn on loopback
(no scheduler), and Debian's chromium through Playwright loading `/`, signing in and showing
the first page of schedules; then a name filter typed in the box.

Prints, from the same run:
- page load + sign-in -> the first page of 20 rows visible (target < 1 s), and sign-in alone;
- filter typed -> the filtered page visible (the page waits 250 ms after typing stops before it
  asks: that pause is inside this figure and printed beside it);
- `GET /schedules` and `GET /schedules?q=` answered over loopback (median of 20, httpx), and the
  scan the route did before the filter moved into SQL (every row listed, names matched in
  Python) timed on the same file as the baseline;
- `GET /status`, which the cluster panel reads every 5 s, over loopback (median of 5).
No assertion on any time.

Usage: python tests/bench/bench_dashboard.py [N]   (N schedules, default 10000)
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable

import httpx
import uvicorn

from common import bulk_schedules_sql, machine, temp_db
from leasecron.adapters.fastapi import AgentOS
from leasecron.kernel import ScheduleManager, SqliteStore
from leasecron.kernel.cli.serve import listen

TOKEN = "bench-dashboard-token"
NEEDLE = "BENCH-00012"  # 100 of 10,000 names, in another case than theirs
FILTER_DELAY_S = 0.25  # app.js's FILTER_DELAY_MS
WAIT_MS = 60_000


def median_ms(call: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def python_scan_ms(path: str, needle: str) -> float:
    """The route's old way: every schedule read in pages of 500, names matched in Python."""

    async def scan() -> float:
        store = SqliteStore(path, readonly=True)
        manager = ScheduleManager(store)
        t0 = time.perf_counter()
        hits, start = 0, 0
        while True:
            rows = await manager.list(limit=500, offset=start)
            hits += sum(needle.casefold() in s.name.casefold() for s in rows)
            if len(rows) < 500:
                break
            start += 500
        elapsed = (time.perf_counter() - t0) * 1000
        await store.close()
        return elapsed

    return min(asyncio.run(scan()) for _ in range(5))


def main(n: int) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("no chromium on PATH (Debian's apt package `chromium`)")
    from playwright.sync_api import expect, sync_playwright

    path = temp_db("dashboard.db")
    # Due an hour from now: nothing is overdue, so /status lists no schedule.
    bulk_schedules_sql(path, n, due_at=time.time() + 3600)
    app = AgentOS(db=path, token=TOKEN, scheduler=False).get_app()
    sock = listen("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=url, headers=auth, timeout=WAIT_MS / 1000) as http:
            assert http.get("/schedules").json()["meta"]["total_count"] == n  # up, and seeded
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium)
                expect.set_options(timeout=WAIT_MS)
                page = browser.new_page(viewport={"width": 1280, "height": 860})
                rows = page.locator("#schedule-table tbody tr")
                t0 = time.perf_counter()
                page.goto(url + "/")
                page.fill("#token", TOKEN)
                t1 = time.perf_counter()
                page.click("#login-form button[type=submit]")
                expect(rows).to_have_count(20)
                expect(page.locator("#schedule-pager .info")).to_contain_text(f"({n} in all)")
                t2 = time.perf_counter()
                page.fill("#filter", NEEDLE)
                expect(page.locator("#schedule-pager .info")).to_contain_text("(100 in all)")
                t3 = time.perf_counter()
                browser.close()
            plain = median_ms(lambda: http.get("/schedules"), 20)
            filtered = median_ms(lambda: http.get("/schedules", params={"q": NEEDLE}), 20)
            status = median_ms(lambda: http.get("/status"), 5)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
    scan = python_scan_ms(path, NEEDLE)

    print(f"# bench_dashboard: {n:,} schedules, {machine()}")
    print(f"page load + sign-in -> first page visible  {(t2 - t0) * 1000:8.1f} ms (target < 1000)")
    print(f"  sign-in click -> first page visible      {(t2 - t1) * 1000:8.1f} ms")
    print(
        f"filter typed -> filtered page visible      {(t3 - t2) * 1000:8.1f} ms "
        f"(of which the page's {FILTER_DELAY_S * 1000:.0f} ms pause after typing)"
    )
    print(f"GET /schedules, first page (loopback)      {plain:8.2f} ms")
    print(f"GET /schedules?q={NEEDLE} (loopback)  {filtered:8.2f} ms")
    print(f"  baseline: the old Python scan, in-process {scan:7.2f} ms (all {n:,} rows read)")
    print(f"GET /status (loopback)                     {status:8.2f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
