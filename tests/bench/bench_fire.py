"""Fires per second on one SQLite file, no-op in-process target (httpx MockTransport).

Prints, from the same run: the raw cost of the statements a batch of fires costs, run directly on
sqlite3 (the store's set-based rounds, and one statement per row); httpx alone sending the same
number of no-op requests; the scheduler's fires/s with 1 and 4 replicas; and, last, leasecron's
1-replica figure (max_concurrent 100) over the set-based raw SQL and over httpx alone.
Usage: python tests/bench/bench_fire.py [N]
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


def raw_sql_fires(n: int, batch: int, set_based: bool) -> float:
    """The statements a batch of plain fires costs, executed directly on sqlite3 with no flow
    around them, in the three transactions the store uses: claim (claim, claim_runs); start
    (start_fence, insert_run); finish (finish_run, finish_schedule, release). `set_based`: each
    of the start and finish statements once per batch, the store's ROUND_SQL over the batch's
    rows; otherwise once per row (LEASE_SQL)."""
    path = temp_db("raw.db")
    due = time.time() - 1
    bulk_schedules(path, n, due_at=due)
    store = SqliteStore(path, inline=True)
    sql = store._sql
    conn = store._connect()

    def each(name: str, rows: list[dict]) -> None:
        if not set_based:
            for row in rows:
                conn.execute(sql[name], row)
            return
        columns, template = store._rounds.statements[name]
        text = store._rounds.text(name, template, len(columns), len(rows))
        conn.execute(text, [row[c] for row in rows for c in columns]).fetchall()

    now = time.time()
    k = 0
    with Timer() as t:
        left = n
        while left > 0:
            conn.execute("BEGIN IMMEDIATE")
            claim = {
                "replica": "raw",
                "now": now,
                "lease_until": now + 30,
                "limit": batch,
                "orphans": orphan_places(batch),
            }
            rows = conn.execute(sql["claim"], claim).fetchall()
            ids = json.dumps([row["id"] for row in rows])
            conn.execute(sql["claim_runs"], {"ids": ids}).fetchall()
            conn.execute("COMMIT")
            fences = [
                {"id": row["id"], "replica": "raw", "version": row["lease_version"]} for row in rows
            ]
            run_ids = [f"run{k + i}" for i in range(len(rows))]
            k += len(rows)
            conn.execute("BEGIN IMMEDIATE")
            each(
                "start_fence",
                [
                    {
                        **fence,
                        "timing": row["timing_version"],
                        "next_run_at": now + 3600,
                        "last_run_at": now,
                    }
                    for fence, row in zip(fences, rows, strict=True)
                ],
            )
            each(
                "insert_run",
                [
                    run_params(
                        ScheduleRun(
                            id=run_id,
                            schedule_id=row["id"],
                            attempt=1,
                            scheduled_for=now,
                            trigger="schedule",
                            status="running",
                            idempotency_key=f"{row['id']}@{now}",
                            replica="raw",
                            lease_version=row["lease_version"],
                            created_at=now,
                        )
                    )
                    for run_id, row in zip(run_ids, rows, strict=True)
                ],
            )
            conn.execute("COMMIT")
            conn.execute("BEGIN IMMEDIATE")
            outcome = {
                "status": "success",
                "status_code": 200,
                "run_id": None,
                "session_id": None,
                "error": None,
                "completed_at": now,
                "duration_ms": 1.0,
                "output": None,
            }
            each(
                "finish_run",
                [
                    {**outcome, "id": run_id, "replica": "raw", "version": fence["version"]}
                    for run_id, fence in zip(run_ids, fences, strict=True)
                ],
            )
            each(
                "finish_schedule",
                [{**fence, "status": "success", "success": True} for fence in fences],
            )
            each("release", fences)
            conn.execute("COMMIT")
            left -= len(rows)
    done = conn.execute(
        f"SELECT count(*) FROM {store.runs_table} WHERE status = 'success'"
    ).fetchone()[0]
    assert done == n, (done, n)  # every fire recorded: the fences matched
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
    raw_set = raw_sql_fires(n, 100, set_based=True)
    print(f"raw SQL, set-based rounds, batches of 100   : {raw_set:9.0f} fires/s")
    raw_rows = raw_sql_fires(n, 100, set_based=False)
    print(f"raw SQL, one statement per row, batch 100   : {raw_rows:9.0f} fires/s")
    alone = asyncio.run(httpx_alone(n, 100))
    print(f"httpx MockTransport alone, 100 concurrent    : {alone:9.0f} requests/s")
    rates = {}
    for replicas, conc in ((1, 10), (1, 100), (1, 500), (4, 100)):
        rates[replicas, conc] = rate = asyncio.run(scheduler_fires(n, replicas, conc))
        print(f"leasecron {replicas} replica(s), max_concurrent={conc:<4}  : {rate:9.0f} fires/s")
    one = rates[1, 100]
    print(f"ratio_1replica_vs_raw_batched={one / raw_set:.2f}")
    print(f"ratio_1replica_vs_httpx_alone={one / alone:.2f}")


if __name__ == "__main__":
    main()
