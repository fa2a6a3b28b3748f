"""Firing latency: (time the request reaches the target) - (the slot's scheduled time).

What it measures, in real time (SystemClock), on one SQLite file with a threaded SqliteStore and
an HttpDispatcher whose in-process target (httpx.MockTransport) records time.time() and the
X-Scheduled-For header of every request; p50 / p99 / max per case, at poll_interval 1 s and 15 s:

  same store    one-off schedules created through the scheduler's own store (the in-process
                wake-up), each at its own random instant over the next ~20 s, so the loop has to
                sleep to each due time and wake on it.
  other store   one-off schedules created through a second SqliteStore object (as another process
                would: no wake-up reaches the scheduler) after the scheduler went to sleep, each
                due >= poll_interval after it was created: the next poll sees it in time.
  other, soon   as "other store" but due 0.05-0.3 s after creation, i.e. sooner than the
                scheduler's next wake: nothing can see it before the next poll, so its latency
                is bounded by poll_interval, not by the scheduler's speed. Reported apart,
                against that bound.

Target: p99 <= 10 ms for "same store" and "other store" at both poll intervals.
Reference: the reference scheduler (Agno AgentOS) measured median 7 s, max 13 s at poll 15 s.

Usage: python tests/bench/bench_latency.py [N] [SPREAD_SECONDS]   (default 200 schedules over 20 s;
       the "other store" cases use N/2 schedules over SPREAD/4 s)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time

import httpx

from common import machine, percentiles, temp_db
from leasecron.kernel import HttpDispatcher, ScheduleManager, Scheduler, SqliteStore

TARGET_P99_MS = 10.0
JSON = {"content-type": "application/json"}


class Target:
    """The in-process HTTP target: records (arrival time, X-Scheduled-For) of every request."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, float]] = []
        self.changed = asyncio.Event()

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((time.time(), float(request.headers["X-Scheduled-For"])))
        self.changed.set()
        return httpx.Response(200, content=b'{"ok":true}', headers=JSON)

    async def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"only {len(self.seen)} of {count} fires arrived")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    def latencies_ms(self) -> list[float]:
        return [(arrived - slot) * 1000 for arrived, slot in self.seen]


async def run_case(
    case: str, poll: float, count: int, spread: float, rng: random.Random
) -> list[float]:
    path = temp_db("latency.db")
    store = SqliteStore(path)
    target = Target()
    dispatcher = HttpDispatcher("http://target", transport=httpx.MockTransport(target.handler))
    scheduler = Scheduler(store, dispatcher, replica_id="bench", poll_interval=poll)
    other = SqliteStore(path) if case != "same store" else None
    manager = ScheduleManager(other or store)
    await scheduler.start()
    try:
        if case == "same store":
            base = time.time() + 1.0  # creating them takes a fraction of that
            for i in range(count):
                await manager.create(
                    f"lat-{i}", endpoint="/hooks/noop", run_at=base + rng.uniform(0, spread)
                )
            last_due = base + spread
        elif case == "other store":
            await asyncio.sleep(0.3)  # the scheduler has looked (nothing due) and sleeps for `poll`
            for i in range(count):
                due = time.time() + poll + 0.2 + rng.uniform(0, spread)
                await manager.create(f"lat-{i}", endpoint="/hooks/noop", run_at=due)
            last_due = time.time() + poll + 0.2 + spread
        else:  # "other, soon": created at random instants, each due before the next poll
            await asyncio.sleep(0.3)
            instants = sorted(rng.uniform(0, spread) for _ in range(count))
            t0 = time.time()
            for i, at in enumerate(instants):
                await asyncio.sleep(max(0.0, t0 + at - time.time()))
                due = time.time() + rng.uniform(0.05, 0.3)
                await manager.create(f"lat-{i}", endpoint="/hooks/noop", run_at=due)
            last_due = time.time() + 0.3
        await target.wait_for(count, timeout=last_due - time.time() + poll + 10)
    finally:
        await scheduler.stop()
        await dispatcher.aclose()
        await store.close()
        if other is not None:
            await other.close()
    return target.latencies_ms()


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    spread = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
    rng = random.Random(7)
    print(
        f"# firing latency (target arrival - slot), SystemClock, threaded SqliteStore, "
        f"MockTransport target; {machine()}"
    )
    print(
        "reference scheduler (Agno AgentOS), poll 15 s: median 7000 ms, max 13000 ms "
        "(a new schedule waits for the next poll)"
    )
    cases = [
        ("same store", count, spread),
        ("other store", max(1, count // 2), spread / 4),
        ("other, soon", None, None),
    ]
    for poll in (1.0, 15.0):
        for case, n, window in cases:
            if case == "other, soon":
                # samples spread over one poll period (at least 5 s) so wakes fall anywhere in it
                n, window = (20, 5.0) if poll < 5 else (15, poll)
            lat = asyncio.run(run_case(case, poll, n, window, rng))
            p50, p99, worst = percentiles(lat, (50, 99, 100))
            line = (
                f"poll {poll:4.0f} s  {case:<12} n={n:<4} p50 {p50:8.2f} ms  p99 {p99:8.2f} ms  "
                f"max {worst:8.2f} ms  min {min(lat):6.2f} ms"
            )
            if case == "other, soon":
                bound = poll * 1000 + TARGET_P99_MS
                verdict = "within" if worst <= bound else "OVER"
                line += f"  ({verdict} the poll bound {poll * 1000:.0f} ms + {TARGET_P99_MS:.0f})"
            else:
                verdict = "meets" if p99 <= TARGET_P99_MS else "MISSES"
                line += f"  ({verdict} p99 <= {TARGET_P99_MS:.0f} ms)"
            print(line, flush=True)
    print(
        "note: 'other, soon' is the polling bound, not the scheduler's speed: a schedule written "
        "by another process that is due before the next poll is seen at that poll; calling "
        "Scheduler.wake() on a cross-process notification removes it"
    )


if __name__ == "__main__":
    main()
