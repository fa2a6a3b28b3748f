"""Fires per second on one SQLite file, no-op in-process target (httpx MockTransport).

Prints, from the same run: the scheduler's fires/s with 1 and 4 replicas; the raw cost of the
same lease statements run directly on sqlite3 (batched, no Python around them); and httpx alone
sending the same number of no-op requests. Usage: python tests/bench/bench_fire.py [N]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httpx

from common import Timer, bulk_schedules, machine, noop_transport, temp_db
from leasecron.kernel import HttpDispatcher, Scheduler, SqliteStore
from leasecron.kernel.model import ScheduleRun
from leasecron.kernel.rows import run_params
from leasecron.kernel.store import orphan_places


async def scheduler_fires(n: int, replicas: int, max_concurrent: int) -> float:
    path = temp_db("fire.db")
    due = time.time() + 1.0
    bulk_schedules(path, n, due_at=due)
    done = asyncio.Event()
    finished = 0

    def on_event(name, data):
        nonlocal finished
        if name == "finish":
            finished += 1
            if finished == n:
                done.set()

    stores = [SqliteStore(path) for _ in range(replicas)]
    dispatcher = HttpDispatcher(
        "http://bench", transport=noop_transport(), max_connections=max_concurrent
    )
    scheds = [
        Scheduler(
            stores[i],
            dispatcher,
            replica_id=f"r{i}",
            max_concurrent=max_concurrent,
            on_event=on_event,
        )
        for i in range(replicas)
    ]
    for s in scheds:
        await s.start()
    await asyncio.sleep(max(0.0, due - time.time()))
    t0 = time.perf_counter()
    await asyncio.wait_for(done.wait(), timeout=600)
    seconds = time.perf_counter() - t0
    for s in scheds:
        await s.stop()
    await dispatcher.aclose()
    for st in stores:
        await st.close()
    return n / seconds


def raw_sql_fires(n: int, batch: int) -> float:
    """The same statements a fire costs (claim, claim_runs, start_fence, insert_run,
    finish_run, finish_schedule, release), executed directly, batched."""
    path = temp_db("raw.db")
    due = time.time() - 1
    bulk_schedules(path, n, due_at=due)
    store = SqliteStore(path, inline=True)
    sql = store._sql
    conn = store._connect()
    now = time.time()
    with Timer() as t:
        left = n
        k = 0
        while left > 0:
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(
                sql["claim"],
                {
                    "replica": "raw",
                    "now": now,
                    "lease_until": now + 30,
                    "limit": batch,
                    "orphans": orphan_places(batch),
                },
            ).fetchall()
            ids = [row["id"] for row in rows]
            conn.execute(sql["claim_runs"], {"ids": json.dumps(ids)}).fetchall()
            conn.execute("COMMIT")
            conn.execute("BEGIN IMMEDIATE")
            for row in rows:
                fence = {"id": row["id"], "replica": "raw", "version": row["lease_version"]}
                conn.execute(
                    sql["start_fence"],
                    {
                        **fence,
                        "timing": row["timing_version"],
                        "next_run_at": now + 3600,
                        "last_run_at": now,
                    },
                )
                k += 1
                run = ScheduleRun(
                    id=f"run{k}",
                    schedule_id=row["id"],
                    attempt=1,
                    scheduled_for=now,
                    trigger="schedule",
                    status="running",
                    idempotency_key="k",
                    replica="raw",
                    lease_version=1,
                    created_at=now,
                )
                conn.execute(sql["insert_run"], run_params(run))
            conn.execute("COMMIT")
            conn.execute("BEGIN IMMEDIATE")
            for i, row in enumerate(rows):
                fence = {"id": row["id"], "replica": "raw", "version": row["lease_version"]}
                conn.execute(
                    sql["finish_run"],
                    {
                        "id": f"run{k - len(rows) + i + 1}",
                        "replica": "raw",
                        "version": 1,
                        "status": "success",
                        "status_code": 200,
                        "run_id": None,
                        "session_id": None,
                        "error": None,
                        "completed_at": now,
                        "duration_ms": 1.0,
                        "output": None,
                    },
                )
                conn.execute(
                    sql["finish_schedule"], {**fence, "status": "success", "success": True}
                )
                conn.execute(sql["release"], fence)
            conn.execute("COMMIT")
            left -= len(rows)
    conn.close()
    return n / t.seconds


async def httpx_alone(n: int, concurrency: int) -> float:
    async with httpx.AsyncClient(base_url="http://bench", transport=noop_transport()) as client:
        sem = asyncio.Semaphore(concurrency)

        async def one(i):
            async with sem:
                await client.post("/hooks/noop", json=None, headers={"Idempotency-Key": str(i)})

        with Timer() as t:
            await asyncio.gather(*(one(i) for i in range(n)))
    return n / t.seconds


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    print(f"# fires/s on one SQLite file, no-op MockTransport target, n={n}; {machine()}")
    print(f"raw SQL of the lease statements, batched 100 : {raw_sql_fires(n, 100):9.0f} fires/s")
    print(
        f"httpx MockTransport alone, 100 concurrent    : "
        f"{asyncio.run(httpx_alone(n, 100)):9.0f} requests/s"
    )
    for replicas, conc in ((1, 10), (1, 100), (1, 500), (4, 100)):
        rate = asyncio.run(scheduler_fires(n, replicas, conc))
        print(f"leasecron {replicas} replica(s), max_concurrent={conc:<4}  : {rate:9.0f} fires/s")


if __name__ == "__main__":
    main()
