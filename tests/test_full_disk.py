"""A replica on a full disk: a real SQLITE_FULL ("database or disk is full"), made by capping the
replica's own connection at the file's current size (PRAGMA max_page_count) with no free page
left. While outcomes cannot be written the replica claims nothing, retries the outcome writes
with a capped backoff and warns once a minute; once space returns (the cap raised, or old
history pruned) the outcomes land, each once, and claiming resumes. Simulated time."""

from __future__ import annotations

import itertools
import logging

import httpx

from leasecron.kernel import HttpDispatcher, ScheduleRun, StoreError
from leasecron.kernel.rows import run_params
from support import T0, Cluster

LEASE = 30.0


def fill_disk(store) -> None:
    """No page left for the store's connection: free pages handed back, the file capped."""
    conn = store._connect()
    conn.executescript("PRAGMA incremental_vacuum")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages}")


def free_disk(store) -> None:
    store._connect().execute("PRAGMA max_page_count=1073741823")


class Calls:
    """The real store; records each claim and finish as (operation, time, ok)."""

    def __init__(self, store, clock):
        self._store = store
        self._clock = clock
        self.log: list[tuple[str, float, bool]] = []

    def __getattr__(self, name):
        attr = getattr(self._store, name)
        if name not in ("claim", "finish"):
            return attr

        async def call(*args, **kwargs):
            try:
                result = await attr(*args, **kwargs)
            except StoreError:
                self.log.append((name, self._clock.now(), False))
                raise
            self.log.append((name, self._clock.now(), True))
            return result

        return call


def full_disk_cluster(tmp_path, name):
    """One replica whose target answers with a 6 KB report (each outcome needs new pages) and
    fills the disk when the first request of the slot at T0+60 arrives: after the attempts were
    started, before their outcomes are written."""
    c = Cluster(tmp_path / name, n=1, lease_seconds=LEASE)
    (replica,) = c.replicas
    calls = Calls(c.stores[0], c.clock)
    replica.store = calls
    filled = []

    def target(request: httpx.Request) -> httpx.Response:
        answer = c.target.handler(request)
        if not filled:
            fill_disk(c.stores[0])
            filled.append(c.clock.now())
        return httpx.Response(answer.status_code, json={"ok": True, "report": "r" * 6000})

    replica.dispatcher = HttpDispatcher(
        "http://target", transport=httpx.MockTransport(target), clock=c.clock
    )
    return c, replica, calls, filled


def recorded_once(c, runs: list[ScheduleRun]) -> None:
    sent = c.target.keys()
    assert all(n == 1 for n in sent.values()), "a slot was sent twice"
    done = [(r.idempotency_key, r.attempt) for r in runs if r.status == "success"]
    assert sorted(done) == sorted(sent), "every request sent has exactly one success row"
    assert all(r.output["report"] == "r" * 6000 for r in runs if r.status == "success")


async def test_a_full_disk_stops_claims_retries_outcomes_and_recovers_when_space_returns(
    tmp_path, caplog
):
    caplog.set_level(logging.WARNING, logger="leasecron")
    c, replica, calls, filled = full_disk_cluster(tmp_path, "full.db")
    ids = [
        (await c.manager.create(f"s{i}", interval_seconds=60, endpoint=f"/hooks/{i}")).id
        for i in range(5)
    ]
    await c.start()
    await c.clock.advance(60)  # the five attempts of T0+60 are sent; the disk fills meanwhile
    assert filled == [T0 + 60] and len(c.target.requests) == 5
    await c.clock.advance(540)  # nine minutes with no space
    first_failure = min(t for op, t, ok in calls.log if op == "finish" and not ok)
    assert first_failure == T0 + 60
    assert replica.outcomes_failing
    # no claim once outcome writes fail; the outcome writes are retried, backoff capped
    assert [t for op, t, _ in calls.log if op == "claim" and t > first_failure] == []
    retries = [t for op, t, ok in calls.log if op == "finish"]
    assert all(not ok for op, _, ok in calls.log if op == "finish")
    gaps = [b - a for a, b in itertools.pairwise(retries)]
    assert len(retries) > 60 and max(gaps) <= LEASE / 4 + 1e-6
    assert len(c.target.requests) == 5  # nothing more was sent
    runs = [r for sid in ids for r in await c.runs(sid)]
    assert [r.status for r in runs] == ["running"] * 5
    # one warning a minute, each with the count of failed writes since the last
    warnings = [r for r in caplog.records if r.name == "leasecron" and r.levelno == logging.WARNING]
    assert len(warnings) == 9
    assert "database or disk is full" in warnings[0].getMessage()
    assert all("store write(s) failed" in w.getMessage() for w in warnings)
    assert sum(int(w.getMessage().split(": ")[1].split()[0]) for w in warnings[1:]) > 40

    free_disk(c.stores[0])  # space is back
    await c.clock.advance(120)
    await c.stop()
    await replica.dispatcher.aclose()
    assert not replica.outcomes_failing
    assert "claiming resumes" in caplog.records[-1].getMessage()
    runs = [r for sid in ids for r in await c.runs(sid)]
    assert {r.status for r in runs} <= {"success", "skipped"}
    # claiming resumed: slots after the recovery were sent and recorded
    assert len(c.target.requests) > 5
    assert all(float(r.scheduled_for) >= T0 + 600 for r in c.target.requests[5:])
    recorded_once(c, runs)


async def test_space_freed_by_the_replicas_own_prune_lets_its_outcomes_land(tmp_path):
    c, replica, _, filled = full_disk_cluster(tmp_path, "prune-frees.db")
    replica.housekeeping_interval = 300.0
    # old history, past the retention: its pages are what the prune hands back
    store = c.stores[0]
    old = T0 - 40 * 86_400
    conn = store._connect()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        store._sql["insert_run"],
        [
            run_params(
                ScheduleRun(
                    id=f"old{i}",
                    schedule_id="gone",
                    attempt=1,
                    scheduled_for=old,
                    trigger="schedule",
                    status="success",
                    idempotency_key=f"gone@{i}",
                    error="e" * 500,
                    created_at=old,
                )
            )
            for i in range(2000)
        ],
    )
    conn.execute("COMMIT")
    s = await c.manager.create("s", interval_seconds=60, endpoint="/hooks/s")
    replica.retention_seconds = 50 * 86_400  # keeps the old rows at the start-up pass...
    await c.start()
    await c.clock.advance(60)
    assert filled == [T0 + 60]
    await c.clock.advance(100)
    assert replica.outcomes_failing and [r.status for r in await c.runs(s.id)] == ["running"]
    replica.retention_seconds = 30 * 86_400  # ...and prunes them at its next pass, T0+300
    await c.clock.advance(200)
    assert not replica.outcomes_failing  # the cap never moved: the freed pages were enough
    await c.clock.advance(120)
    await c.stop()
    await replica.dispatcher.aclose()
    assert await c.manager.store.list_runs("gone") == []
    runs = await c.runs(s.id)
    assert runs[0].status == "success" and runs[0].scheduled_for == T0 + 60
    assert len(c.target.requests) > 1
    recorded_once(c, runs)
