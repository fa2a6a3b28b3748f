"""A simulated day in milliseconds: three replicas on one SQLite file under a SimClock, firing
into an in-process target, and a check that every slot fired exactly once.

    python examples/simulated_day.py
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections import Counter

import httpx

from leasecron.kernel import HttpDispatcher, ScheduleManager, Scheduler, SimClock, SqliteStore


async def main() -> None:
    path = os.path.join(tempfile.mkdtemp(), "sim.db")
    clock = SimClock(start=1_780_000_000.0)
    received: list[tuple[float, str]] = []

    def target(request: httpx.Request) -> httpx.Response:
        received.append((clock.now(), request.headers["idempotency-key"]))
        return httpx.Response(200, json={"ok": True})

    dispatcher = HttpDispatcher("http://svc", transport=httpx.MockTransport(target), clock=clock)
    manager = ScheduleManager(SqliteStore(path, inline=True), clock=clock)
    await manager.create("every-5-min", cron="*/5 * * * *", endpoint="/hooks/a")
    await manager.create(
        "hourly-paris", cron="0 * * * *", timezone="Europe/Paris", endpoint="/hooks/b"
    )
    await manager.create("every-90s", interval_seconds=90, endpoint="/hooks/c")
    replicas = [
        Scheduler(
            SqliteStore(path, inline=True),
            dispatcher,
            clock=clock,
            replica_id=f"r{i}",
            poll_interval=60,
        )
        for i in range(3)
    ]
    for replica in replicas:
        await replica.start()
    await clock.advance(86_400)
    for replica in replicas:
        await replica.stop(timeout=0)
    twice = [key for key, n in Counter(key for _, key in received).items() if n > 1]
    print(f"{len(received)} fires in one simulated day; delivered twice: {len(twice)}")
    print({r.replica_id: r.fired for r in replicas})


if __name__ == "__main__":
    asyncio.run(main())
