"""PostgresStore on a real PostgreSQL server, each figure next to raw psycopg in the same run.

Fires per second with 1, 2 and 4 replica processes and the idle poll at 10k / 100k / 1M
schedules, against the same statements run directly. Everything happens in a scratch database
created for the run and dropped at the end (admin DSN: $LEASECRON_PG_DSN, default
postgresql://postgres@127.0.0.1:5432/postgres, a role that may CREATE DATABASE).

Sections (--sections, default all five, run in this order):
  raw      The baseline. The statements one fire costs, from adapters/postgres/sql.py LEASE_SQL,
           run directly with psycopg (sync, autocommit, explicit transactions; no pool, no
           asyncio, no scheduler) in the store's three transactions per batch of up to
           --max-concurrent rows: claim + claim_runs | start_fence + insert_run per row |
           lock_schedules, then finish_run + finish_schedule + release per row, one notify.
           Each worker is an OS process (spawn) with one connection, looping until nothing is
           due; fires/s on N due schedules for each --procs count, from a common start barrier
           until the last worker is done.
  rawset   The same three transactions as the store sends them now, each round of a batch one
           set-based statement (ROUND_SQL, arrays over unnest): claim + claim_runs |
           lock_schedules, start_fence, insert_run | lock_schedules, finish_run, finish_schedule,
           release, notify; sync, one round trip per statement. The figure the kernel's is
           measured against (the target: >= 0.5x at 4 processes).
  kernel   --procs replica OS processes (spawn), each a Scheduler (max_concurrent
           --max-concurrent) on its own PostgresStore (pool min 2, max 4), firing into a no-op
           in-process target (HttpDispatcher on httpx.MockTransport), on the same N due
           schedules; wall time from a common start barrier until N recorded success finishes
           (a counter shared by the processes), then checked in the runs table: one success row
           per schedule, nothing else. Ratio to raw at the same process count.
           Each raw and kernel run gets fresh tables in a schema of its own (COPY, VACUUM
           ANALYZE, CHECKPOINT first); its line also gives the CPU per fire its worker processes
           used (user + system), statements/s (raw) and claim and finish batch sizes (kernel).
           Statements per fire: counted in each replica process around psycopg (each execute,
           each executemany parameter set, BEGIN and COMMIT), since pg_stat_statements needs
           shared_preload_libraries and so a restart of the (shared) server; beside it the
           server's own count of transactions (pg_stat_database) per fire.
  At the end: the targets from this run's figures, and last `ratio_4proc_vs_raw_batched=<x>`
  (leasecron at 4 processes over raw set-based SQL at 4 processes).
  idle     `await store.next_due()` in µs/call at --sizes schedules (none due; one table grown
           by COPY between sizes), against LEASE_SQL["next_due"] on one psycopg AsyncConnection;
           best of 3 (the store polls on a connection of its own, outside its pool). Also shown:
           the raw statement preceded by an empty query, the round trip a pool check on
           checkout would add.
           Target: store <= 1.5x raw, flat across sizes.
  pgbench  A reference for the server and this machine: `pgbench -N -M prepared` (scale 1) for
           --pgbench-seconds at 1 and 4 clients, if pgbench is on PATH. Each of its
           transactions is 5 statements (BEGIN, UPDATE, SELECT, INSERT, END).

Usage: python tests/bench/bench_pg.py [N] [--sections raw rawset kernel idle pgbench]
           [--procs 1 2 4] [--max-concurrent 100] [--sizes 10000 100000 1000000] [--calls 3000]
           [--pgbench-seconds 10]                                          (default N = 10000)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from common import (
    Timer,
    cpu_seconds,
    machine,
    noop_transport,
    pg_bulk_schedules,
    pg_scratch_database,
    pg_server_version,
    pg_settle,
)
from leasecron.adapters.postgres import PostgresStore
from leasecron.kernel import HttpDispatcher, Scheduler
from leasecron.kernel.model import ScheduleRun
from leasecron.kernel.rows import run_params
from leasecron.kernel.store import orphan_places

SECTIONS = ("raw", "rawset", "kernel", "idle", "pgbench")
FIRES_TARGET = 5_000  # fires/s with 4 replica processes
RATIO_TARGET = 0.5  # of the raw set-based figure, same run
STATEMENTS_TARGET = 1.5  # per fire
PREFIX = "agno_"
IDLE_TARGET = 1.5
BARRIER_TIMEOUT = 120.0
LEASE = 30.0


def unopened(schema: str) -> PostgresStore:
    """A PostgresStore for its names only (it connects to nothing until first use): its tables,
    its NOTIFY channel, and LEASE_SQL with the tables (and any other placeholder) filled in
    exactly as the store fills them."""
    return PostgresStore("", schema=schema, prefix=PREFIX)


def tables(schema: str) -> tuple[str, str]:
    store = unopened(schema)
    return store.schedules_table, store.runs_table


async def create_tables(dsn: str, schema: str) -> None:
    store = PostgresStore(dsn, schema=schema, prefix=PREFIX)
    await store.open()
    await store.close()


def prepare_due(dsn: str, schema: str, n: int) -> None:
    """Fresh tables in `schema` holding n interval schedules, all due now."""
    asyncio.run(create_tables(dsn, schema))
    schedules, runs = tables(schema)
    pg_bulk_schedules(dsn, schedules, n, due_at=time.time() - 1.0)
    pg_settle(dsn, schedules, runs)


def check_runs(dsn: str, schema: str, n: int) -> str:
    """One success row per schedule and nothing else, read back from the runs table."""
    _, runs = tables(schema)
    with psycopg.connect(dsn) as conn:
        success, slots, total = conn.execute(
            f"SELECT count(*) FILTER (WHERE status = 'success'), "
            f"count(DISTINCT schedule_id) FILTER (WHERE status = 'success'), count(*) FROM {runs}"
        ).fetchone()
    ok = success == slots == total == n
    verdict = "ok" if ok else "MISMATCH"
    return f"{success} success rows on {slots} schedules, {total} rows in all: {verdict}"


# -- raw SQL: the store's statements, run directly ------------------------------------------------


def raw_claim(conn: Any, names: Any, replica: str, batch: int, now: float) -> list | None:
    """One claim transaction (claim + claim_runs) as the store runs it: the claimed rows in the
    store's lock order; [] when every due row is being claimed by another worker; None when
    nothing is due anywhere (the run is over)."""
    claim = {
        "replica": replica,
        "now": now,
        "lease_until": now + LEASE,
        "limit": batch,
        "orphans": orphan_places(batch),
    }
    with conn.transaction():
        rows = conn.execute(names._sql["claim"], claim).fetchall()
        if rows:
            ids = [row["id"] for row in rows]
            conn.execute(names._sql["claim_runs"], {"ids": ids}).fetchall()
    if rows:
        return sorted(rows, key=lambda row: row["id"])
    any_due = f"SELECT 1 FROM {names.schedules_table} WHERE enabled AND due_at <= %(now)s LIMIT 1"
    return [] if conn.execute(any_due, {"now": now}).fetchone() is not None else None


def raw_loop(dsn: str, schema: str, batch: int, barrier, done, name: str, fire_batch) -> None:
    """One connection claiming every due schedule it can, a batch at a time, each batch fired by
    `fire_batch(conn, names, replica, rows, now)` (which answers the statements it sent);
    reports (fires, batches, statements, CPU) when a claim finds nothing due anywhere."""
    names = unopened(schema)
    replica = f"{name}-{os.getpid()}"
    fired = batches = statements = 0
    with (
        aborting(barrier),
        psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn,
    ):
        conn.execute("SELECT 1")
        barrier.wait(timeout=BARRIER_TIMEOUT)
        cpu0 = cpu_seconds()
        while True:
            now = time.time()
            rows = raw_claim(conn, names, replica, batch, now)
            if rows is None:
                break
            if not rows:
                time.sleep(0.001)  # every due row is being claimed by another worker
                continue
            statements += fire_batch(conn, names, replica, rows, now)
            fired += len(rows)
            batches += 1
        done.put((fired, batches, statements, cpu_seconds() - cpu0))


def raw_worker(dsn: str, schema: str, batch: int, barrier, done) -> None:
    """One connection firing every due schedule it can claim, statement by statement as the store
    runs them for a plain interval schedule (no pending work, no retry); reports (fires,
    batches, statements) when a claim finds nothing due anywhere."""
    raw_loop(dsn, schema, batch, barrier, done, "raw", per_row_batch)


def fence_of(row: dict, replica: str) -> dict[str, Any]:
    """The (holder, version) fence of a claimed row."""
    return {"id": row["id"], "replica": replica, "version": row["lease_version"]}


def cursor_of(row: dict, replica: str, now: float) -> dict[str, Any]:
    """start_fence's parameters: the slot cursor advanced one interval under the row's fence."""
    return {
        **fence_of(row, replica),
        "timing": row["timing_version"],
        "next_run_at": row["next_run_at"] + row["interval_seconds"],
        "last_run_at": now,
    }


def new_run_of(row: dict, replica: str, now: float) -> dict[str, Any]:
    """insert_run's parameters: the running attempt of the row's slot."""
    slot = row["next_run_at"]
    return run_params(
        ScheduleRun(
            id=f"{row['id']}-{row['lease_version']}",
            schedule_id=row["id"],
            attempt=1,
            scheduled_for=slot,
            trigger="schedule",
            status="running",
            idempotency_key=f"{row['id']}@{slot}",
            replica=replica,
            lease_version=row["lease_version"],
            triggered_at=now,
            created_at=now,
        )
    )


def success_of(row: dict, replica: str, done_at: float) -> dict[str, Any]:
    """finish_run's parameters: the attempt recorded a success."""
    return {
        **fence_of(row, replica),
        "id": f"{row['id']}-{row['lease_version']}",
        "status": "success",
        "status_code": 200,
        "run_id": None,
        "session_id": None,
        "error": None,
        "completed_at": done_at,
        "duration_ms": 0.1,
        "output": None,
    }


def per_row_batch(conn: Any, names: Any, replica: str, rows: list, now: float) -> int:
    """One claimed batch fired; the statements it sent."""
    sql, channel = names._sql, names.channel
    with conn.transaction():
        for row in rows:
            conn.execute(sql["start_fence"], cursor_of(row, replica, now))
            conn.execute(sql["insert_run"], new_run_of(row, replica, now))
    done_at = time.time()
    with conn.transaction():
        conn.execute(sql["lock_schedules"], {"ids": [row["id"] for row in rows]})
        for row in rows:
            fence = fence_of(row, replica)
            conn.execute(sql["finish_run"], success_of(row, replica, done_at))
            conn.execute(
                sql["finish_schedule"], {**fence, "status": "success", "success": True}
            ).fetchone()
            conn.execute(sql["release"], fence)
        conn.execute(sql["notify"], {"channel": channel})
    # BEGIN + COMMIT x3, claim, claim_runs, lock_schedules, notify; 5 per row.
    return 10 + 5 * len(rows)


def raw_fires(
    dsn: str, n: int, procs: int, batch: int, worker: Callable | None = None, name: str = "raw"
) -> tuple[float, str]:
    worker = worker or raw_worker
    schema = f"{name}{procs}"
    with Timer() as setup:
        prepare_due(dsn, schema, n)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(procs + 1)
    done = ctx.Queue()
    workers = [
        ctx.Process(target=worker, args=(dsn, schema, batch, barrier, done), daemon=True)
        for _ in range(procs)
    ]
    try:
        for w in workers:
            w.start()
        start(barrier)
        t0 = time.perf_counter()
        results = collect(done, workers)
        seconds = time.perf_counter() - t0
    finally:
        reap(workers)
    fired = sum(r[0] for r in results)
    batches = sum(r[1] for r in results)
    statements = sum(r[2] for r in results)
    cpu = sum(r[3] for r in results)
    detail = (
        f"set-up {setup.seconds:.1f} s; {batches} batches of {fired / max(1, batches):.0f}; "
        f"{statements / seconds:,.0f} statements/s ({statements / n:.2f} per fire); "
        f"client CPU {cpu / n * 1e6:.0f} µs/fire; split "
        f"{'/'.join(str(r[0]) for r in results)}; {check_runs(dsn, schema, n)}"
    )
    return n / seconds, detail


def raw_section(dsn: str, args: argparse.Namespace, raw: dict[int, float]) -> None:
    print(
        f"\n## raw SQL: LEASE_SQL statements on psycopg (sync), 1 connection per OS process, "
        f"batches of {args.max_concurrent}, n={args.n:,} due",
        flush=True,
    )
    for procs in args.procs:
        raw[procs], detail = raw_fires(dsn, args.n, procs, args.max_concurrent)
        print(f"raw SQL, {procs} process(es): {raw[procs]:7,.0f} fires/s   [{detail}]", flush=True)


# -- raw set-based SQL: the store's round statements, run directly --------------------------------


def set_arrays(names: PostgresStore, kind: str, rows: list[dict]) -> dict[str, list]:
    """The arrays of ROUND_SQL[kind] for these rows (one dict of per-row parameters each)."""
    return {
        column: [None if row[column] is None else convert(row[column]) for row in rows]
        for column, convert in names._round_columns[kind]
    }


def raw_set_worker(dsn: str, schema: str, batch: int, barrier, done) -> None:
    """As raw_worker, but each round of a batch is one set-based statement (ROUND_SQL), as the
    store sends it: claim + claim_runs | lock_schedules, start_fence, insert_run |
    lock_schedules, finish_run, finish_schedule, release, notify. No pipelining: one round trip
    per statement."""
    raw_loop(dsn, schema, batch, barrier, done, "rawset", set_based_batch)


def set_based_batch(conn: Any, names: Any, replica: str, rows: list, now: float) -> int:
    """One claimed batch fired; the statements it sent."""
    sql, sets, channel = names._sql, names._round_sql, names.channel
    ids = [row["id"] for row in rows]
    fences = [fence_of(row, replica) for row in rows]
    with conn.transaction():
        conn.execute(sql["lock_schedules"], {"ids": ids}).fetchall()
        cursors = [cursor_of(row, replica, now) for row in rows]
        conn.execute(sets["start_fence"], set_arrays(names, "start_fence", cursors))
        runs = [new_run_of(row, replica, now) for row in rows]
        conn.execute(sets["insert_run"], set_arrays(names, "insert_run", runs))
    done_at = time.time()
    with conn.transaction():
        conn.execute(sql["lock_schedules"], {"ids": ids}).fetchall()
        outcomes = [success_of(row, replica, done_at) for row in rows]
        conn.execute(sets["finish_run"], set_arrays(names, "finish_run", outcomes))
        books = [{**fence, "status": "success", "success": True} for fence in fences]
        conn.execute(
            sets["finish_schedule"], set_arrays(names, "finish_schedule", books)
        ).fetchall()
        conn.execute(sets["release"], set_arrays(names, "release", fences))
        conn.execute(sql["notify"], {"channel": channel})
    # BEGIN + COMMIT x3, claim, claim_runs, 2 x lock_schedules, start_fence, insert_run,
    # finish_run, finish_schedule, release, notify.
    return 16


def raw_set_section(dsn: str, args: argparse.Namespace, raw_set: dict[int, float]) -> None:
    print(
        f"\n## raw set-based SQL: ROUND_SQL statements on psycopg (sync), 1 connection per OS "
        f"process, batches of {args.max_concurrent}, n={args.n:,} due",
        flush=True,
    )
    for procs in args.procs:
        raw_set[procs], detail = raw_fires(
            dsn, args.n, procs, args.max_concurrent, raw_set_worker, "rawset"
        )
        print(
            f"raw set-based SQL, {procs} process(es): {raw_set[procs]:7,.0f} fires/s   [{detail}]",
            flush=True,
        )


# -- the kernel: Scheduler replicas, one per process -----------------------------------------------


def kernel_worker(
    dsn: str, schema: str, max_concurrent: int, index: int, barrier, stop, counter, done
) -> None:
    with aborting(barrier):
        stats = asyncio.run(
            kernel_replica(dsn, schema, max_concurrent, index, barrier, stop, counter)
        )
    done.put(stats)


def count_statements(stats: Counter[str]) -> None:
    """Count, in this process, every statement psycopg sends: each execute, each parameter set
    of an executemany, and BEGIN and COMMIT (or ROLLBACK) of each explicit transaction.
    (pg_stat_statements needs shared_preload_libraries, i.e. a restart of the shared server.)"""
    execute, executemany = psycopg.AsyncCursor.execute, psycopg.AsyncCursor.executemany
    transaction = psycopg.AsyncConnection.transaction

    async def counted_execute(self, query, params=None, **kwargs):
        stats["statements"] += 1
        return await execute(self, query, params, **kwargs)

    async def counted_executemany(self, query, params_seq, **kwargs):
        params_seq = list(params_seq)
        stats["statements"] += len(params_seq)
        return await executemany(self, query, params_seq, **kwargs)

    def counted_transaction(self, *args, **kwargs):
        stats["statements"] += 2
        return transaction(self, *args, **kwargs)

    psycopg.AsyncCursor.execute = counted_execute
    psycopg.AsyncCursor.executemany = counted_executemany
    psycopg.AsyncConnection.transaction = counted_transaction


async def kernel_replica(
    dsn: str, schema: str, max_concurrent: int, index: int, barrier, stop, counter
) -> dict[str, int]:
    stats: Counter[str] = Counter()
    store = PostgresStore(dsn, schema=schema, prefix=PREFIX, min_size=2, max_size=4)
    await store.open()
    count_statements(stats)  # from the start barrier on: set-up statements are not counted

    def counted(name: str, sized: bool) -> None:
        call = getattr(store, name)

        async def wrapper(*args):
            stats[name] += 1
            result = await call(*args)
            if sized:
                stats[f"{name} rows"] += len(result)
            return result

        setattr(store, name, wrapper)

    counted("next_due", sized=False)
    counted("claim", sized=True)
    counted("finish", sized=True)

    def on_event(name: str, data: dict) -> None:
        if name == "finish" and data["recorded"] and data["status"] == "success":
            with counter.get_lock():
                counter.value += 1
        elif name in ("store_error", "lease_lost"):
            stats[name] += 1

    dispatcher = HttpDispatcher(
        "http://bench", transport=noop_transport(), max_connections=max_concurrent
    )
    scheduler = Scheduler(
        store,
        dispatcher,
        replica_id=f"r{index}",
        max_concurrent=max_concurrent,
        on_event=on_event,
    )
    barrier.wait(timeout=BARRIER_TIMEOUT)
    cpu0 = cpu_seconds()
    await scheduler.start()
    while not stop.is_set():
        await asyncio.sleep(0.01)
    cpu = cpu_seconds() - cpu0
    await scheduler.stop()
    await dispatcher.aclose()
    await store.close()
    return {"fired": scheduler.fired, "cpu µs": round(cpu * 1e6), **stats}


def kernel_fires(
    dsn: str, n: int, procs: int, max_concurrent: int, statements: dict[int, float]
) -> tuple[float, str]:
    schema = f"kernel{procs}"
    with Timer() as setup:
        prepare_due(dsn, schema, n)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(procs + 1)
    stop = ctx.Event()
    counter = ctx.Value("q", 0)
    done = ctx.Queue()
    workers = [
        ctx.Process(
            target=kernel_worker,
            args=(dsn, schema, max_concurrent, i, barrier, stop, counter, done),
            daemon=True,
        )
        for i in range(procs)
    ]
    timeout = max(300.0, n / 20)
    try:
        for w in workers:
            w.start()
        xacts0 = server_transactions(dsn)
        start(barrier)
        t0 = time.perf_counter()
        while counter.value < n and time.perf_counter() - t0 < timeout:
            if not all(w.is_alive() for w in workers):
                raise RuntimeError("a replica process died")
            time.sleep(0.002)
        seconds = time.perf_counter() - t0
        reached = counter.value
        stop.set()
        results = collect(done, workers)
    finally:
        stop.set()
        reap(workers)
    # A backend flushes its counters as it exits, just after its client closed: give it a moment.
    time.sleep(0.5)
    xacts = server_transactions(dsn) - xacts0 - 1  # less the first probe's own
    total = Counter()
    for r in results:
        total.update(r)
    statements[procs] = total["statements"] / n
    detail = (
        f"set-up {setup.seconds:.1f} s; statements {total['statements'] / n:.2f} per fire "
        f"(counted in the replicas), server transactions {xacts / n:.2f} per fire "
        f"(pg_stat_database xact_commit + xact_rollback); {total['claim']} claims of "
        f"{total['claim rows'] / max(1, total['claim']):.0f}, {total['finish']} finishes of "
        f"{total['finish rows'] / max(1, total['finish']):.0f}, {total['next_due']} polls; "
        f"replica CPU {total['cpu µs'] / n:.0f} µs/fire; "
        f"split {'/'.join(str(r['fired']) for r in results)}; "
        f"store errors {total['store_error']}, leases lost {total['lease_lost']}; "
        f"{check_runs(dsn, schema, n)}"
    )
    if reached < n:
        detail = f"TIMED OUT after {seconds:.0f} s at {reached}/{n}; " + detail
    return reached / seconds, detail


def server_transactions(dsn: str) -> int:
    """Transactions the server has counted in this database (every autocommit statement is one)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        return conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()"
        ).fetchone()[0]


def kernel_section(
    dsn: str,
    args: argparse.Namespace,
    raw: dict[int, float],
    raw_set: dict[int, float],
    rates: dict[int, float],
    statements: dict[int, float],
) -> None:
    print(
        f"\n## leasecron: one Scheduler + PostgresStore per OS process, no-op MockTransport "
        f"target, max_concurrent={args.max_concurrent}, n={args.n:,} due",
        flush=True,
    )
    for procs in args.procs:
        rates[procs], detail = kernel_fires(dsn, args.n, procs, args.max_concurrent, statements)
        ratios = [
            f"{rates[procs] / base[procs]:4.2f}x {label}"
            for label, base in (("raw", raw), ("raw set-based", raw_set))
            if procs in base
        ]
        print(
            f"leasecron, {procs} replica process(es): {rates[procs]:7,.0f} fires/s = "
            f"{', '.join(ratios) or 'raw not run'}   [{detail}]",
            flush=True,
        )


# -- processes -------------------------------------------------------------------------------------


@contextlib.contextmanager
def aborting(barrier) -> Iterator[None]:
    """In a worker: a failure breaks the start barrier, so nobody waits out its timeout."""
    try:
        yield
    except BaseException:
        barrier.abort()
        raise


def start(barrier) -> None:
    """In the parent: wait until every worker is ready, then let them all go."""
    try:
        barrier.wait(timeout=BARRIER_TIMEOUT)
    except threading.BrokenBarrierError:
        raise RuntimeError("a worker failed before the start (its traceback is above)") from None


def collect(done, workers: list, timeout: float = 600.0) -> list:
    """One result per worker; fails fast if a worker died without reporting."""
    results: list = []
    deadline = time.perf_counter() + timeout
    while len(results) < len(workers):
        try:
            results.append(done.get(timeout=0.05))
        except queue.Empty:
            if time.perf_counter() > deadline:
                raise RuntimeError("workers did not report in time") from None
            if sum(w.is_alive() for w in workers) < len(workers) - len(results):
                with contextlib.suppress(queue.Empty):  # reported just before exiting
                    results.append(done.get(timeout=1.0))
                    continue
                raise RuntimeError("a worker died (its traceback is above)") from None
    return results


def reap(workers: list) -> None:
    for w in workers:
        w.join(timeout=30)
    for w in workers:
        if w.is_alive():
            w.terminate()
            w.join(timeout=5)


# -- idle poll -------------------------------------------------------------------------------------


async def idle_costs(dsn: str, schema: str, calls: int, repeats: int = 3) -> dict[str, float]:
    """µs per call, best of `repeats` interleaved runs of `calls` calls each."""
    store = PostgresStore(dsn, schema=schema, prefix=PREFIX)
    await store.open()
    sql = unopened(schema)._sql["next_due"]
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)

    async def raw(k: int) -> None:
        for _ in range(k):
            cur = await conn.execute(sql)
            await cur.fetchone()

    async def raw_checked(k: int) -> None:
        for _ in range(k):
            await conn.execute("")
            cur = await conn.execute(sql)
            await cur.fetchone()

    async def store_poll(k: int) -> None:
        for _ in range(k):
            await store.next_due()

    runs: dict[str, Callable] = {"raw": raw, "raw+check": raw_checked, "store": store_poll}
    try:
        cur = await conn.execute(sql)
        expected = (await cur.fetchone())[0]
        if await store.next_due() != expected:
            raise AssertionError("store.next_due() and the raw statement disagree")
        for run in runs.values():
            await run(200)  # past psycopg's prepare threshold, caches warm
        best = dict.fromkeys(runs, float("inf"))
        for _ in range(repeats):
            for name, run in runs.items():
                t0 = time.perf_counter()
                await run(calls)
                best[name] = min(best[name], (time.perf_counter() - t0) / calls * 1e6)
        return best
    finally:
        await conn.close()
        await store.close()


def idle_section(dsn: str, sizes: list[int], calls: int) -> None:
    print(
        f"\n## idle poll, nothing due, µs/call, best of 3 x {calls} calls; raw = "
        f'LEASE_SQL["next_due"] on one psycopg AsyncConnection (autocommit)'
    )
    schema = "idle"
    asyncio.run(create_tables(dsn, schema))
    schedules, runs = tables(schema)
    far = time.time() + 1e6
    loaded = 0
    results: dict[int, dict[str, float]] = {}
    for size in sorted(sizes):
        with Timer() as setup:
            pg_bulk_schedules(dsn, schedules, size - loaded, due_at=far, step=1.0, first=loaded)
            pg_settle(dsn, schedules, runs)
        loaded = size
        results[size] = costs = asyncio.run(idle_costs(dsn, schema, calls))
        print(
            f"N={size:>9,}  raw {costs['raw']:6.1f}  store.next_due {costs['store']:6.1f}"
            f"  = {costs['store'] / costs['raw']:4.2f}x raw ({meets(costs)})"
            f"   raw + empty query (the pool's check) {costs['raw+check']:6.1f}"
            f"   [COPY to {size:,} rows + VACUUM ANALYZE {setup.seconds:.1f} s]",
            flush=True,
        )
    lo, hi = min(results), max(results)
    if lo != hi:
        for key in ("raw", "store"):
            print(
                f"flatness N={hi:,}/N={lo:,} {key:<5}: {results[hi][key] / results[lo][key]:5.2f}x"
            )
    worst = max(r["store"] / r["raw"] for r in results.values())
    print(
        f"store/raw worst {worst:.2f}x ({'meets' if worst <= IDLE_TARGET else 'MISSES'} "
        f"<= {IDLE_TARGET}x)"
    )


def meets(costs: dict[str, float]) -> str:
    return "meets" if costs["store"] <= IDLE_TARGET * costs["raw"] else "MISSES"


# -- pgbench ---------------------------------------------------------------------------------------


def pgbench_section(dsn: str, seconds: float, clients: list[int]) -> None:
    print(f"\n## pgbench -N -M prepared, scale 1, {seconds:.0f} s per run (5 statements a tx)")
    exe = shutil.which("pgbench")
    if exe is None:
        print("pgbench: absent from PATH, skipped")
        return
    # pgbench takes a libpq connection string where a database name goes.
    subprocess.run([exe, "-i", "-s", "1", "-q", dsn], check=True, capture_output=True)
    for c in clients:
        out = subprocess.run(
            [exe, "-N", "-M", "prepared", "-c", str(c), "-j", str(c), "-T", str(int(seconds)), dsn],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        found = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
        tps = float(found.group(1)) if found else float("nan")
        print(f"pgbench -N, {c} client(s): {tps:9,.0f} tps = {5 * tps:9,.0f} statements/s")


def server_settings(dsn: str) -> str:
    """The server settings that move these figures most."""
    names = ("synchronous_commit", "fsync", "shared_buffers", "max_connections")
    with psycopg.connect(dsn) as conn:
        return ", ".join(f"{name}={conn.execute(f'SHOW {name}').fetchone()[0]}" for name in names)


# -- main ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("n", type=int, nargs="?", default=10_000, help="due schedules per run")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--procs", type=int, nargs="+", default=[1, 2, 4], help="raw and kernel process counts"
    )
    parser.add_argument(
        "--max-concurrent", type=int, default=100, help="a replica's max_concurrent = raw batch"
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="idle sizes"
    )
    parser.add_argument("--calls", type=int, default=3_000, help="idle polls per timed run")
    parser.add_argument("--pgbench-seconds", type=float, default=10.0)
    args = parser.parse_args()
    sections = [s for s in SECTIONS if s in args.sections]
    started = time.perf_counter()
    with pg_scratch_database() as dsn:
        print(f"# PostgresStore benchmarks; {machine()}; load average {os.getloadavg()[0]:.2f}")
        print(f"# {pg_server_version(dsn)}")
        print(
            f"# {server_settings(dsn)}; psycopg {psycopg.__version__} ({psycopg.pq.__impl__}, "
            f"libpq {psycopg.pq.version()}), psycopg_pool {psycopg_pool.__version__}; "
            f"scratch database {conninfo_to_dict(dsn)['dbname']}",
            flush=True,
        )
        raw: dict[int, float] = {}
        raw_set: dict[int, float] = {}
        rates: dict[int, float] = {}
        statements: dict[int, float] = {}
        for section in sections:
            with Timer() as took:
                if section == "raw":
                    raw_section(dsn, args, raw)
                elif section == "rawset":
                    raw_set_section(dsn, args, raw_set)
                elif section == "kernel":
                    kernel_section(dsn, args, raw, raw_set, rates, statements)
                elif section == "idle":
                    idle_section(dsn, args.sizes, args.calls)
                else:
                    pgbench_section(dsn, args.pgbench_seconds, [1, 4])
            print(f"({section}: {took.seconds:.0f} s)", flush=True)
    print(
        f"\n# {time.perf_counter() - started:.0f} s in all; load average "
        f"{os.getloadavg()[0]:.2f} at the end"
    )
    summary(raw_set, rates, statements)


def summary(
    raw_set: dict[int, float], rates: dict[int, float], statements: dict[int, float]
) -> None:
    """The targets, from this run's figures; the ratio line last (4 processes, or the most run)."""
    if not rates:
        return
    procs = 4 if 4 in rates else max(rates)
    print(
        f"leasecron {procs} replica process(es): {rates[procs]:,.0f} fires/s "
        f"({'meets' if rates[procs] >= FIRES_TARGET else 'MISSES'} >= {FIRES_TARGET:,})"
    )
    worst = max(statements.values())
    print(
        f"statements per fire, worst of {sorted(statements)} process(es): {worst:.2f} "
        f"({'meets' if worst <= STATEMENTS_TARGET else 'MISSES'} <= {STATEMENTS_TARGET})"
    )
    if procs in raw_set:
        ratio = rates[procs] / raw_set[procs]
        print(
            f"raw set-based SQL, {procs} process(es): {raw_set[procs]:,.0f} fires/s; leasecron "
            f"{ratio:.2f}x ({'meets' if ratio >= RATIO_TARGET else 'MISSES'} >= {RATIO_TARGET}x)"
        )
        print(f"ratio_{procs}proc_vs_raw_batched={ratio:.3f}")


if __name__ == "__main__":
    main()
