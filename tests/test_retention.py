"""Run history that does not grow forever: the replica's own retention (pruned in batches, off
the hot path, harmless when several replicas prune at once), run rows that do not copy the
schedule's payload, the space a prune gives back to the filesystem, and a WAL kept bounded.
Simulated time, real SQLite files; the prune statement also on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from leasecron.kernel import ScheduleManager, ScheduleRun, SimClock, SqliteStore
from leasecron.kernel.cli import main
from leasecron.kernel.retention import PRUNE_BATCH, prune_history
from leasecron.kernel.rows import run_params
from leasecron.kernel.scheduler import DEFAULT_RETENTION_SECONDS
from store_builders import LEASE, claim_one, closes_stores, pending, running, sched, start_plan
from support import T0, Cluster

DAY = 86_400.0


def final_row(rid: str, sid: str, created: float, status: str = "success", **kw) -> ScheduleRun:
    return ScheduleRun(
        id=rid,
        schedule_id=sid,
        attempt=1,
        scheduled_for=created,
        trigger="schedule",
        status=status,
        idempotency_key=f"{sid}@{rid}",
        triggered_at=created,
        completed_at=created + 1,
        created_at=created,
        **kw,
    )


def seed_history(store: SqliteStore, rows: list[ScheduleRun]) -> None:
    """Write run rows straight into the file: history left by earlier days of running."""
    conn = store._connect()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(store._sql["insert_run"], [run_params(r) for r in rows])
    conn.execute("COMMIT")


def file_bytes(path: str) -> int:
    wal = path + "-wal"
    return os.path.getsize(path) + (os.path.getsize(wal) if os.path.exists(wal) else 0)


def used_bytes(store: SqliteStore) -> int:
    """Bytes of the file's pages in use (free pages excluded)."""
    conn = store._connect()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return (pages - free) * conn.execute("PRAGMA page_size").fetchone()[0]


class CountingStore:
    """The real store; records each prune_runs call as (limit, rows deleted)."""

    def __init__(self, store):
        self._store = store
        self.prunes: list[tuple[int | None, int]] = []

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def prune_runs(self, before, limit=None):
        deleted = await self._store.prune_runs(before, limit)
        self.prunes.append((limit, deleted))
        return deleted


# -- retention -------------------------------------------------------------------------------


async def test_a_replica_prunes_history_past_its_default_30_day_retention(tmp_path):
    # a month of simulated time: long polls and leases keep the idle wake-ups few
    c = Cluster(tmp_path / "keep30.db", n=1, poll_interval=600, lease_seconds=600)
    (replica,) = c.replicas
    assert replica.retention_seconds == DEFAULT_RETENTION_SECONDS == 30 * DAY
    replica.housekeeping_interval = 3600.0  # fewer passes (each ends with an fsync) in a month
    s = await c.manager.create("hourly", interval_seconds=3600, endpoint="/hooks/h")
    await c.start()
    await c.clock.advance(33 * DAY)
    await c.stop()
    runs = await c.runs(s.id)
    assert len(c.target.requests) == 33 * 24  # every slot fired...
    oldest = min(r.created_at for r in runs)
    # ...and only the last 30 days are kept (give or take one housekeeping interval)
    assert c.clock.now() - 30 * DAY - replica.housekeeping_interval <= oldest
    assert oldest <= c.clock.now() - 30 * DAY + 3600
    assert {r.status for r in runs} == {"success"}


async def test_pending_and_running_rows_are_never_pruned(tmp_path):
    c = Cluster(tmp_path / "open.db", n=1)
    (replica,) = c.replicas
    replica.retention_seconds = 600.0
    replica.housekeeping_interval = 60.0
    c.target.durations["slow"] = 3000.0  # runs far past the retention
    c.target.codes["/hooks/flaky"] = [500, 200]
    slow = await c.manager.create("slow", run_at=T0 + 10, endpoint="/agents/slow/runs")
    flaky = await c.manager.create(
        "flaky",
        run_at=T0 + 10,
        endpoint="/hooks/flaky",
        max_retries=1,
        retry_delay_seconds=2000,  # the retry waits, pending, far past the retention
    )
    await c.start()
    await c.clock.advance(1500)
    assert [r.status for r in await c.runs(slow.id)] == ["running"]
    # the failed first attempt is history now and goes; its pending retry stays
    assert [r.status for r in await c.runs(flaky.id)] == ["pending"]
    await c.clock.advance(2300)  # both end (slow at about T0+3010, the retry at T0+2010)...
    await c.stop()
    finished = [
        (d["schedule_id"], d["status"], d["recorded"]) for e, d in c.events if e == "finish"
    ]
    assert finished == [
        (flaky.id, "failed", True),
        (flaky.id, "success", True),
        (slow.id, "success", True),
    ]
    # ...and, final and older than the retention, are pruned in their turn
    assert await c.runs(slow.id) == [] and await c.runs(flaky.id) == []
    assert [r.attempt for r in c.target.requests if r.path == "/hooks/flaky"] == [1, 2]


async def test_a_backlog_is_pruned_500_rows_per_transaction_on_the_replicas_own_timer(tmp_path):
    c = Cluster(tmp_path / "backlog.db", n=1)
    (replica,) = c.replicas
    counting = CountingStore(c.stores[0])
    replica.store = counting
    old = T0 - 40 * DAY
    seed_history(c.stores[0], [final_row(f"old{i:05d}", "gone", old + i) for i in range(1234)])
    seed_history(c.stores[0], [final_row("recent", "gone", T0 - DAY)])
    await c.start()
    await c.clock.advance(1)  # the first pass runs at start
    assert counting.prunes == [(PRUNE_BATCH, 500), (PRUNE_BATCH, 500), (PRUNE_BATCH, 234)]
    await c.clock.advance(replica.housekeeping_interval)
    assert counting.prunes[3:] == [(PRUNE_BATCH, 0)]  # every interval after, on the clock
    await c.stop()
    assert [r.id for r in await c.manager.store.list_runs(None, 10_000)] == ["recent"]


async def test_retention_zero_keeps_every_row(tmp_path):
    c = Cluster(tmp_path / "all.db", n=1)
    c.replicas[0].retention_seconds = 0
    seed_history(c.stores[0], [final_row("ancient", "gone", T0 - 400 * DAY)])
    await c.start()
    await c.clock.advance(3600)
    await c.stop()
    assert [r.id for r in await c.manager.store.list_runs(None)] == ["ancient"]


async def test_replicas_pruning_at_once_delete_each_row_once(tmp_path):
    # Threaded stores, one connection each: the three prunes really run at the same time.
    c = Cluster(tmp_path / "together.db", n=3, inline=False)
    old = T0 - 40 * DAY
    seed_history(c.stores[-1], [final_row(f"o{i:05d}", "x", old + i) for i in range(3000)])
    seed_history(c.stores[-1], [final_row("new", "x", T0 - DAY)])
    x = await c.manager.create("x", interval_seconds=DAY, endpoint="/hooks/x")
    await c.stores[-1].add_pending_run(pending("waiting", x.id, T0 + 10, created=old), T0)
    errors = []
    for replica in c.replicas:
        replica.on_event = lambda name, data: errors.append(data) if name == "store_error" else 0
    counts = await asyncio.gather(*(replica.housekeeping() for replica in c.replicas))
    assert sum(counts) == 3000 and errors == []
    left = sorted(r.id for r in await c.manager.store.list_runs(None, 10_000))
    assert left == ["new", "waiting"]
    await c.stop()


# -- the prune statement on every store -------------------------------------------------------


@closes_stores
async def test_prune_runs_takes_a_batch_and_concurrent_pruners_share_the_rows(open_store):
    a, b = open_store(), open_store()
    await a.create_schedule(sched("a", T0))
    claim = await claim_one(a, "r1", T0)
    history = [final_row(f"s{i:04d}", "a", T0 - 10_000 + i, status="skipped") for i in range(1300)]
    live = running("live", claim, "r1", T0 - 9_000)  # created long ago, still in flight
    await a.start("r1", T0, LEASE, [start_plan(claim, T0 + 60, insert_runs=[*history, live])])
    await a.add_pending_run(pending("p", "a", T0 + 5, created=T0 - 9_000), T0)
    assert await a.prune_runs(T0, 500) == 500
    # two stores (two replicas' connections) pruning the rest at the same time
    seen: list[int] = []
    counts = await asyncio.gather(
        prune_history(a, T0, batch=100, on_progress=seen.append),
        prune_history(b, T0, batch=100),
    )
    assert sum(counts) == 800
    assert seen == sorted(seen) and seen[-1] == counts[0]  # after each batch, the running total
    assert sorted(r.id for r in await a.list_runs("a", 10_000)) == ["live", "p"]
    assert await b.prune_runs(T0) == 0


# -- run rows do not copy the payload -----------------------------------------------------------


async def test_run_rows_do_not_copy_a_large_payload(tmp_path):
    c = Cluster(tmp_path / "payload.db", n=1)
    c.manager.max_payload_bytes = 4 << 20  # above the default 1 MiB bound, as a user may set it
    payload = {"document": "p" * 2_000_000}  # 2 MB, sent with every fire
    s = await c.manager.create("big", interval_seconds=60, endpoint="/hooks/big", payload=payload)
    store = c.stores[0]
    used_before = used_bytes(store)
    await c.start()
    await c.clock.advance(5 * 60)
    runs = await c.runs(s.id)
    assert len(runs) == 5 and all(r.input is None for r in runs)
    assert [json.loads(r.body) for r in c.target.requests] == [payload] * 5
    conn = sqlite3.connect(store.path)
    assert conn.execute(
        "SELECT COUNT(*) FROM agno_schedule_runs WHERE input IS NOT NULL"
    ).fetchone() == (0,)
    conn.close()
    grown = used_bytes(store) - used_before
    await c.stop()
    # five fires of a 2 MB payload grew the history by a few pages, not by five copies of it
    assert grown < 100_000, grown


# -- the space goes back --------------------------------------------------------------------------


async def test_a_prune_of_many_rows_shrinks_the_file(tmp_path):
    path = str(tmp_path / "shrink.db")
    store = SqliteStore(path, inline=True)
    old = T0 - 40 * DAY
    rows = [final_row(f"r{i:06d}", "x", old + i, error="e" * 400) for i in range(20_000)]
    seed_history(store, rows)
    seed_history(store, [final_row("kept", "x", T0)])
    await store.checkpoint()
    full = file_bytes(path)
    assert full > 8_000_000
    manager = ScheduleManager(store, clock=SimClock(start=T0))
    assert await manager.prune_runs(30 * DAY) == 20_000
    assert file_bytes(path) < full / 10
    assert [r.id for r in await store.list_runs(None)] == ["kept"]
    await store.close()


async def test_a_file_made_without_incremental_vacuum_still_prunes_and_vacuum_converts_it(
    tmp_path,
):
    path = str(tmp_path / "legacy.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE unrelated (x)")  # a table exists: auto_vacuum can no longer change
    conn.close()
    store = SqliteStore(path, inline=True)
    seed_history(
        store, [final_row(f"r{i}", "x", T0 - 40 * DAY, error="e" * 400) for i in range(2000)]
    )
    assert await store.prune_runs(T0) == 2000
    assert await store.reclaim_space() == 0  # the pages stay in the file, free for new rows
    await store.close()
    # the one-time conversion the README documents, with no replica running
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("VACUUM")
    assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)
    conn.close()


# -- a bounded WAL --------------------------------------------------------------------------------


async def test_housekeeping_truncates_a_wal_that_a_long_reader_let_grow(tmp_path):
    c = Cluster(tmp_path / "wal.db", n=1)
    (replica,) = c.replicas
    store = c.stores[0]
    reader = sqlite3.connect(store.path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM agno_schedules").fetchone()  # holds its snapshot
    rows = [final_row(f"w{i:05d}", "x", T0, error="w" * 1000) for i in range(20_000)]
    seed_history(store, rows)  # 20+ MB of WAL: no checkpoint can pass the reader
    wal = store.path + "-wal"
    assert os.path.getsize(wal) > 20_000_000
    reader.execute("COMMIT")
    reader.close()
    await c.start()
    await c.clock.advance(replica.housekeeping_interval)
    assert os.path.getsize(wal) == 0
    await c.stop()
    assert len(await c.manager.store.list_runs(None, 30_000)) == 20_000


# -- leasecron run --retention-days ---------------------------------------------------------------


def test_run_rejects_a_negative_retention_naming_the_field(tmp_path, capsys):
    db = str(tmp_path / "cli.db")
    argv = ["run", "--db", db, "--base-url", "http://127.0.0.1:9", "--retention-days", "-1"]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("leasecron: error: --retention-days: ")


def test_a_leasecron_run_process_prunes_with_its_retention_days(tmp_path):
    db = str(tmp_path / "proc.db")
    store = SqliteStore(db, inline=True)
    now = time.time()
    seed_history(store, [final_row("two-days", "x", now - 2 * DAY)])
    seed_history(store, [final_row("today", "x", now - 60)])
    asyncio.run(store.close())
    argv = ["run", "--db", db, "--base-url", "http://127.0.0.1:9", "--retention-days", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "leasecron.kernel.cli", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        left = None
        while time.monotonic() < deadline and proc.poll() is None:
            conn = sqlite3.connect(db, timeout=5)
            left = [row[0] for row in conn.execute("SELECT id FROM agno_schedule_runs")]
            conn.close()
            if left == ["today"]:
                break
            time.sleep(0.05)  # polling for the replica's first housekeeping pass, with a deadline
        assert left == ["today"], proc.stderr.read().decode() if proc.poll() is not None else left
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
