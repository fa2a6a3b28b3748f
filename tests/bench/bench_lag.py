"""Event-loop lag while firing 1,000 schedules per second.

What it measures: one Scheduler (SystemClock, threaded SqliteStore, no-op httpx.MockTransport
target, max_concurrent=100) fires interval schedules whose first slots are spread evenly over one
interval (default 1,000 schedules every 1 s, i.e. a smooth 1,000 fires/s) for ~15 s. A probe task
on the same event loop does `await asyncio.sleep(0.005)` in a loop and records how late each wake
is (actual - expected, loop.time()); printed as p50 / p99 / max lag with the fires/s achieved.
Baseline from the same run: the same probe on an idle loop.

Target: lag p99 <= 5 ms at 1,000 fires/s.

Usage: python tests/bench/bench_lag.py [SCHEDULES] [INTERVAL_SECONDS] [SECONDS]
       (default 1000 1 15; e.g. 10000 10 15 is the same rate over ten times the rows)
"""

from __future__ import annotations

import asyncio
import sys
import time

from common import bulk_schedules_sql, machine, noop_transport, percentiles, temp_db
from leasecron.kernel import HttpDispatcher, Scheduler, SqliteStore

TARGET_P99_MS = 5.0
PROBE = 0.005


async def probe(until: float, lags: list[float]) -> None:
    """Sleep PROBE seconds at a time until loop.time() >= until; record each wake's lateness."""
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        expected = loop.time() + PROBE
        await asyncio.sleep(PROBE)
        lags.append((loop.time() - expected) * 1000)


async def idle_lags(seconds: float) -> list[float]:
    lags: list[float] = []
    await probe(asyncio.get_running_loop().time() + seconds, lags)
    return lags


async def firing_lags(n: int, interval: float, seconds: float) -> tuple[list[float], float, int]:
    """Lags while firing; returns (lags, fires/s in the window, finish events that failed)."""
    path = temp_db("lag.db")
    start = time.time() + 2.0
    bulk_schedules_sql(path, n, due_at=start, spread=interval, interval=interval)
    fires: list[float] = []
    failed = 0

    def on_event(name: str, data: dict) -> None:
        nonlocal failed
        if name == "fire":
            fires.append(data["at"])
        elif name == "finish" and data["status"] != "success":
            failed += 1

    store = SqliteStore(path)
    dispatcher = HttpDispatcher("http://bench", transport=noop_transport(), max_connections=100)
    scheduler = Scheduler(
        store, dispatcher, replica_id="lag", max_concurrent=100, on_event=on_event
    )
    await scheduler.start()
    await asyncio.sleep(max(0.0, start - time.time()))
    lags: list[float] = []
    loop = asyncio.get_running_loop()
    await probe(loop.time() + seconds, lags)
    end = time.time()
    await scheduler.stop()
    await dispatcher.aclose()
    await store.close()
    in_window = sum(start <= at < end for at in fires)
    return lags, in_window / (end - start), failed


def report(label: str, lags: list[float], extra: str = "") -> float:
    p50, p99, worst = percentiles(lags, (50, 99, 100))
    print(
        f"{label:<34}: lag p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  max {worst:6.2f} ms  "
        f"({len(lags)} probes){extra}"
    )
    return p99


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 15.0
    print(
        f"# event-loop lag, probe sleep({PROBE}) on the scheduler's loop, {n} interval schedules "
        f"every {interval:g} s, {seconds:g} s; {machine()}"
    )
    report("idle loop (baseline)", asyncio.run(idle_lags(min(5.0, seconds))))
    lags, rate, failed = asyncio.run(firing_lags(n, interval, seconds))
    p99 = report(
        f"firing ({n / interval:.0f}/s planned)",
        lags,
        f"; achieved {rate:.0f} fires/s, {failed} failed",
    )
    verdict = "meets" if p99 <= TARGET_P99_MS else "MISSES"
    print(f"=> p99 {p99:.2f} ms: {verdict} the target p99 <= {TARGET_P99_MS:.0f} ms")


if __name__ == "__main__":
    main()
