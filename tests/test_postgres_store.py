"""The store contract on PostgresStore: the SQLite contract tests of tests/test_sqlite.py replayed
against a real PostgreSQL server (never a mock), plus what only Postgres has: concurrent claimers
on separate connections, FOR UPDATE SKIP LOCKED, schemas, and a Scheduler on top.

Needs the server of tests/pgserver.py (skipped without one, failed in CI). It creates a fresh
database `leasecron_test_<random>` for the module, one schema per test in it, and drops the
database at the end.
"""

from __future__ import annotations

import asyncio
import functools
import random
import secrets
import time

import httpx
import pytest
from pgserver import ADMIN_DSN, fresh_database, require_server

require_server()

import psycopg  # noqa: E402

from leasecron.adapters import postgres_sql  # noqa: E402
from leasecron.adapters.postgres import PostgresStore  # noqa: E402
from leasecron.kernel import (  # noqa: E402
    FinishPlan,
    HttpDispatcher,
    Schedule,
    ScheduleExistsError,
    ScheduleManager,
    Scheduler,
    ScheduleRun,
    SimClock,
    StoreError,
    SystemClock,
)
from store_builders import (  # noqa: E402
    LEASE,
    claim_one,
    finish_plan,
    lease_state,
    pending,
    running,
    sched,
    start_plan,
)
from support import T0, Target  # noqa: E402

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_dsn():
    """A fresh database for this module, dropped at the end."""
    with fresh_database() as dsn:
        yield dsn


class Stores:
    """Opens PostgresStores on the module's database, in one schema per test unless told; a
    @pg_test closes them all inside the test's own event loop (a pool belongs to its loop)."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.schema = f"t_{secrets.token_hex(4)}"
        self.opened: list[PostgresStore] = []

    def __call__(self, **kwargs) -> PostgresStore:
        kwargs.setdefault("schema", self.schema)
        # These tests drive time with a SimClock; the database clock has its own tests.
        kwargs.setdefault("time_authority", "local")
        store = PostgresStore(self.dsn, **kwargs)
        self.opened.append(store)
        return store

    async def close_all(self) -> None:
        for store in self.opened:
            await store.close()


@pytest.fixture
def open_store(pg_dsn):
    return Stores(pg_dsn)


def pg_test(fn):
    """Close every store the test opened, on the test's loop, whatever the outcome."""

    @functools.wraps(fn)
    async def wrapper(open_store, *args, **kwargs):
        try:
            await fn(open_store, *args, **kwargs)
        finally:
            await open_store.close_all()

    return wrapper


def raw(store: PostgresStore, sql: str, *params) -> list:
    """A plain connection behind the store's back ('another process'); {S}, {R}, {M} name the
    store's tables."""
    sql = sql.format(S=store.schedules_table, R=store.runs_table, M=store.meta_table)
    with psycopg.connect(store.dsn, autocommit=True) as conn:
        cur = conn.execute(sql, params or None)
        return cur.fetchall() if cur.description else []


# -- claim -----------------------------------------------------------------------------------


@pg_test
async def test_claim_takes_only_due_enabled_rows_in_due_order_up_to_limit(open_store):
    store = open_store()
    for s in [
        sched("a", T0 - 20),
        sched("b", T0 - 10),
        sched("c", T0 - 30),
        sched("d", T0 + 10),  # not due yet
        sched("e", T0 - 40, enabled=False),
        sched("f", None, interval_seconds=None),  # on demand: never due
    ]:
        await store.create_schedule(s)
    # A disabled row with a due_at (a heartbeat can leave one) is still never claimed.
    raw(store, "UPDATE {S} SET due_at = %s WHERE id = 'e'", T0 - 40)

    first = await store.claim("r1", T0, LEASE, 2)
    # the two most overdue: neither id order nor insertion order would pick these two
    assert sorted(c.schedule.id for c in first) == ["a", "c"]
    second = await store.claim("r1", T0, LEASE, 10)
    assert [c.schedule.id for c in second] == ["b"]
    assert await store.claim("r1", T0, LEASE, 10) == []

    for claim in [*first, *second]:
        s = claim.schedule
        assert (s.locked_by, s.locked_at, s.lease_expires_at, s.due_at, s.lease_version) == (
            "r1",
            T0,
            T0 + LEASE,
            T0 + LEASE,
            1,
        )
        assert claim.timing_version == 1
        assert claim.pending == [] and claim.running == []
        # what the claim returned is what was committed
        assert await lease_state(store, s.id) == ("r1", T0, T0 + LEASE, T0 + LEASE, 1)
    # the cursor itself is not touched by a claim
    assert (await store.get_schedule("c")).next_run_at == T0 - 30
    for sid, due in [("d", T0 + 10), ("e", T0 - 40), ("f", None)]:
        assert await lease_state(store, sid) == (None, None, None, due, 0)


@pg_test
async def test_claim_returns_pending_and_running_rows_but_not_final_ones(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0 + 3600))
    await store.add_pending_run(pending("p-late", "a", T0 + 100, created=T0 - 2), T0 - 2)
    await store.add_pending_run(pending("p-due", "a", T0 - 5, created=T0 - 1), T0 - 1)
    assert (await store.get_schedule("a")).due_at == T0 - 5  # the trigger made it due

    c1 = await claim_one(store, "r1", T0)
    assert [r.id for r in c1.pending] == ["p-due", "p-late"]  # due order
    assert [r.status for r in c1.pending] == ["pending", "pending"]
    assert c1.running == []
    skipped = running("skip", c1, "r1", T0, status="skipped", completed_at=T0)
    plan = start_plan(
        c1, T0 + 3600, insert_runs=[running("x", c1, "r1", T0), skipped], start_pending=["p-due"]
    )
    assert await store.start("r1", T0, LEASE, [plan]) == [{"x", "p-due"}]

    # r1 dies; its lease expires and r2 reclaims: the two attempts are orphans, the trigger waits
    c2 = await claim_one(store, "r2", T0 + LEASE)
    assert c2.schedule.lease_version == 2
    assert [r.id for r in c2.pending] == ["p-late"]
    assert sorted((r.id, r.status, r.replica, r.lease_version) for r in c2.running) == [
        ("p-due", "running", "r1", 1),
        ("x", "running", "r1", 1),
    ]


@pg_test
async def test_two_connections_claim_disjoint_sets_covering_every_due_row(open_store):
    a = open_store()
    b = open_store()
    for i in range(8):
        await a.create_schedule(sched(f"s{i}", T0 - (i * 5) % 8))
    await a.create_schedule(sched("later", T0 + 1))
    got_a = {c.schedule.id for c in await a.claim("ra", T0, LEASE, 3)}
    got_b = {c.schedule.id for c in await b.claim("rb", T0, LEASE, 100)}
    assert got_a == {"s3", "s6", "s1"}  # the three most overdue (7, 6 and 5 s)
    assert got_b == {"s0", "s2", "s4", "s5", "s7"}
    assert await a.claim("ra", T0, LEASE, 100) == []
    assert (await b.get_schedule("s3")).locked_by == "ra"
    assert (await a.get_schedule("s0")).locked_by == "rb"


@pg_test
async def test_live_lease_is_not_claimable_an_expired_one_is_reclaimed(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0))
    await claim_one(store, "r1", T0)
    assert await store.next_due() == T0 + LEASE  # a held row is due at its lease expiry
    assert await store.claim("r2", T0 + LEASE - 0.001, LEASE, 10) == []
    assert await store.claim("r1", T0 + 1, LEASE, 10) == []  # not even by its own holder
    # the lease, not due_at alone, decides: a held row made to look due is still not taken
    raw(store, "UPDATE {S} SET due_at = %s WHERE id = 'a'", T0 - 1)
    assert await store.claim("r2", T0 + 1, LEASE, 10) == []
    c2 = await claim_one(store, "r2", T0 + LEASE)
    assert (c2.schedule.locked_by, c2.schedule.lease_version) == ("r2", 2)
    assert await lease_state(store, "a") == (
        "r2",
        T0 + LEASE,
        T0 + 2 * LEASE,
        T0 + 2 * LEASE,
        2,
    )


# -- fencing ---------------------------------------------------------------------------------


@pg_test
async def test_stale_holder_is_fenced_out_of_every_write(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0))
    a1 = await claim_one(store, "A", T0)
    assert await store.start(
        "A", T0, LEASE, [start_plan(a1, T0 + 60, insert_runs=[running("ra", a1, "A", T0)])]
    ) == [{"ra"}]
    # A stalls past its lease; B reclaims (v2) and re-delivers A's attempt
    b2 = await claim_one(store, "B", T0 + 40)
    assert b2.schedule.lease_version == 2
    assert [r.id for r in b2.running] == ["ra"]
    replacement = running("rb", b2, "B", T0 + 40, key="a@ra", reclaim=1)
    assert await store.start(
        "B",
        T0 + 40,
        LEASE,
        [
            start_plan(
                b2,
                T0 + 60,
                lost_runs=[("ra", replacement, "lease expired while in flight; reclaimed by B")],
            )
        ],
    ) == [{"rb"}]

    # every write of A, presenting v1, is rejected
    stale_start = start_plan(a1, T0 + 999, insert_runs=[running("ra2", a1, "A", T0 + 41)])
    assert await store.start("A", T0 + 41, LEASE, [stale_start]) == [None]
    assert await store.get_run("ra2") is None
    assert await store.heartbeat("A", T0 + 41, LEASE, [("a", 1)]) == {"a"}
    stale_finish = finish_plan(
        a1, "ra", T0 + 42, output={"late": True}, next_run_at=T0 + 999, advance_slot=True
    )
    assert await store.finish("A", T0 + 42, [stale_finish]) == [False]
    lost = await store.get_run("ra")
    assert (lost.status, lost.completed_at, lost.status_code, lost.output, lost.duration_ms) == (
        "lease_lost",
        T0 + 40,
        None,
        None,
        None,
    )
    assert lost.error == "lease expired while in flight; reclaimed by B"
    s = await store.get_schedule("a")
    assert (s.locked_by, s.lease_version, s.next_run_at, s.due_at, s.last_status) == (
        "B",
        2,
        T0 + 60,
        T0 + 40 + LEASE,
        None,
    )

    # B's writes land
    assert await store.heartbeat("B", T0 + 50, LEASE, [("a", 2)]) == set()
    assert await lease_state(store, "a") == ("B", T0 + 40, T0 + 50 + LEASE, T0 + 50 + LEASE, 2)
    assert await store.finish("B", T0 + 55, [finish_plan(b2, "rb", T0 + 55)]) == [True]
    done = await store.get_run("rb")
    assert (done.status, done.replica, done.lease_version, done.reclaim) == ("success", "B", 2, 1)
    assert await lease_state(store, "a") == (None, None, None, T0 + 60, 2)


@pg_test
async def test_an_attempt_is_recorded_only_under_the_lease_it_started_with(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0))
    v1 = await claim_one(store, "r1", T0)
    await store.start(
        "r1", T0, LEASE, [start_plan(v1, T0 + 600, insert_runs=[running("x", v1, "r1", T0)])]
    )
    v2 = await claim_one(store, "r1", T0 + LEASE)  # the same replica reclaims its own row
    assert [r.id for r in v2.running] == ["x"]
    # a finish presenting the new lease for the old attempt is refused ...
    assert await store.finish("r1", T0 + 31, [finish_plan(v2, "x", T0 + 31)]) == [False]
    assert (await store.get_run("x")).status == "running"
    # ... the old attempt's own lease version records it, but only the run row: the schedule row
    # belongs to the v2 lease and stays held
    assert await store.finish("r1", T0 + 32, [finish_plan(v1, "x", T0 + 32)]) == [True]
    x = await store.get_run("x")
    assert (x.status, x.completed_at) == ("success", T0 + 32)
    s = await store.get_schedule("a")
    assert (s.locked_by, s.lease_version, s.due_at, s.last_status) == (
        "r1",
        2,
        T0 + 2 * LEASE,
        None,
    )


@pg_test
async def test_heartbeat_extends_only_leases_held_and_ignores_deleted_rows(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0))
    await store.create_schedule(sched("b", T0))
    await store.create_schedule(sched("c", T0))
    claims = {c.schedule.id: c for c in await store.claim("r1", T0, LEASE, 10)}
    assert set(claims) == {"a", "b", "c"}
    await store.delete_schedule("c", T0 + 5)
    # a: ours; b: presented with a wrong version; c: deleted mid-run, not "lost"
    lost = await store.heartbeat("r1", T0 + 10, LEASE, [("a", 1), ("b", 7), ("c", 1)])
    assert lost == {"b"}
    assert await lease_state(store, "a") == ("r1", T0, T0 + 10 + LEASE, T0 + 10 + LEASE, 1)
    assert await lease_state(store, "b") == ("r1", T0, T0 + LEASE, T0 + LEASE, 1)
    assert await store.heartbeat("r2", T0 + 10, LEASE, [("a", 1)]) == {"a"}
    assert await store.heartbeat("r1", T0 + 10, LEASE, []) == set()


# -- start -----------------------------------------------------------------------------------


@pg_test
async def test_start_inserts_running_rows_and_advances_the_cursor_keeping_the_lease(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0))
    c = await claim_one(store, "r1", T0 + 2)
    run = running("x", c, "r1", T0 + 2, input={"k": [1, 2]})
    assert await store.start("r1", T0 + 2, LEASE, [start_plan(c, T0 + 60, insert_runs=[run])]) == [
        {"x"}
    ]
    s = await store.get_schedule("a")
    assert (s.next_run_at, s.last_run_at) == (T0 + 60, T0 + 2)
    assert await lease_state(store, "a") == ("r1", T0 + 2, T0 + 2 + LEASE, T0 + 2 + LEASE, 1)
    row = await store.get_run("x")
    assert (row.status, row.replica, row.lease_version, row.triggered_at, row.input) == (
        "running",
        "r1",
        1,
        T0 + 2,
        {"k": [1, 2]},
    )


@pg_test
async def test_start_that_starts_nothing_releases_unless_keep_lease(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0))
    await store.create_schedule(sched("b", T0))
    claims = {c.schedule.id: c for c in await store.claim("r1", T0, LEASE, 10)}
    result = await store.start(
        "r1",
        T0,
        LEASE,
        [
            start_plan(claims["a"], T0 + 120),
            start_plan(claims["b"], T0 + 120, keep_lease=True),
        ],
    )
    assert result == [set(), set()]
    # a: released in the same transaction, due at its new cursor
    assert await lease_state(store, "a") == (None, None, None, T0 + 120, 1)
    # b: still held, due at its lease expiry
    assert await lease_state(store, "b") == ("r1", T0, T0 + LEASE, T0 + LEASE, 1)
    assert (await store.get_schedule("b")).next_run_at == T0 + 120
    # nothing fired: last_run_at stays unset
    assert (await store.get_schedule("a")).last_run_at is None
    assert await store.next_due() == T0 + LEASE


@pg_test
async def test_pending_row_cancelled_between_claim_and_start_is_not_started(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0 + 3600))
    await store.add_pending_run(pending("p", "a", T0), T0)
    c = await claim_one(store, "r1", T0)
    assert [r.id for r in c.pending] == ["p"]
    # The manager disables the schedule before the holder's start commits: that cancels the
    # trigger, and the spec change fences the whole start out.
    await store.update_schedule("a", {"enabled": False}, T0 + 1)
    assert await store.start(
        "r1", T0 + 2, LEASE, [start_plan(c, T0 + 3600, start_pending=["p"])]
    ) == [None]
    p = await store.get_run("p")
    assert (p.status, p.completed_at, p.error, p.replica) == (
        "cancelled",
        T0 + 1,
        "schedule disabled",
        None,
    )


@pg_test
async def test_start_pending_only_moves_rows_that_are_still_pending(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0 + 3600))
    await store.add_pending_run(pending("p1", "a", T0), T0)
    await store.add_pending_run(pending("p2", "a", T0), T0)
    c = await claim_one(store, "r1", T0)
    # p1 is cancelled behind the holder's back without a spec change, so the start itself lands
    raw(store, "UPDATE {R} SET status = 'cancelled', error = 'gone' WHERE id = 'p1'")
    plan = start_plan(c, T0 + 3600, start_pending=["p1", "p2"])
    assert await store.start("r1", T0 + 1, LEASE, [plan]) == [{"p2"}]
    p1, p2 = await store.get_run("p1"), await store.get_run("p2")
    assert (p1.status, p1.replica, p1.triggered_at) == ("cancelled", None, None)
    assert (p2.status, p2.replica, p2.lease_version, p2.triggered_at) == (
        "running",
        "r1",
        1,
        T0 + 1,
    )


@pg_test
async def test_orphan_is_replaced_only_while_it_is_still_running(open_store):
    store = open_store()
    await store.create_schedule(sched("live", T0))
    await store.create_schedule(sched("landed", T0))
    a = {c.schedule.id: c for c in await store.claim("A", T0, LEASE, 10)}
    await store.start(
        "A",
        T0,
        LEASE,
        [
            start_plan(a["live"], T0 + 600, insert_runs=[running("live-1", a["live"], "A", T0)]),
            start_plan(
                a["landed"], T0 + 600, insert_runs=[running("landed-1", a["landed"], "A", T0)]
            ),
        ],
    )
    b = {c.schedule.id: c for c in await store.claim("B", T0 + LEASE, LEASE, 10)}
    assert {sid: [r.id for r in c.running] for sid, c in b.items()} == {
        "live": ["live-1"],
        "landed": ["landed-1"],
    }
    # A's result for "landed" reaches the store after B's claim but before B's start: it is
    # recorded (A still owns the attempt), while the schedule row stays B's.
    assert await store.finish("A", T0 + 31, [finish_plan(a["landed"], "landed-1", T0 + 31)]) == [
        True
    ]
    assert await lease_state(store, "landed") == ("B", T0 + LEASE, T0 + 2 * LEASE, T0 + 60, 2)

    now = T0 + 32
    plans = [
        start_plan(
            b["live"],
            T0 + 600,
            lost_runs=[("live-1", running("live-2", b["live"], "B", now, reclaim=1), "lost")],
        ),
        start_plan(
            b["landed"],
            T0 + 600,
            lost_runs=[("landed-1", running("landed-2", b["landed"], "B", now, reclaim=1), "lost")],
        ),
    ]
    assert await store.start("B", now, LEASE, plans) == [{"live-2"}, set()]
    assert (await store.get_run("live-1")).status == "lease_lost"
    assert (await store.get_run("live-2")).status == "running"
    assert (await store.get_run("landed-1")).status == "success"
    assert await store.get_run("landed-2") is None
    # nothing started for "landed": B released it at once
    assert await lease_state(store, "landed") == (None, None, None, T0 + 600, 2)


# -- finish ----------------------------------------------------------------------------------


@pg_test
async def test_finish_records_the_outcome_on_the_run_and_the_schedule(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0))
    c = await claim_one(store, "r1", T0)
    await store.start(
        "r1", T0, LEASE, [start_plan(c, T0 + 60, insert_runs=[running("x", c, "r1", T0)])]
    )
    await store.set_run_ids("r1", "x", "run-7", "sess-7")
    await store.set_run_ids("r2", "x", "run-X", "sess-X")  # not the holder: ignored
    plan = finish_plan(
        c,
        "x",
        T0 + 12.5,
        status="failed",
        status_code=503,
        error="upstream down",
        duration_ms=12_500.0,
        output={"answer": [4, 2]},
    )
    assert await store.finish("r1", T0 + 12.5, [plan]) == [True]
    row = await store.get_run("x")
    assert (
        row.status,
        row.status_code,
        row.run_id,
        row.session_id,
        row.error,
        row.completed_at,
        row.duration_ms,
        row.output,
    ) == (
        "failed",
        503,
        "run-7",
        "sess-7",
        "upstream down",
        T0 + 12.5,
        12_500.0,
        {"answer": [4, 2]},
    )
    s = await store.get_schedule("a")
    assert (s.last_status, s.consecutive_failures, s.locked_by, s.due_at) == (
        "failed",
        1,
        None,
        T0 + 60,
    )

    # the next attempt succeeds with its own ids: failures reset, ids overwritten
    c = await claim_one(store, "r1", T0 + 60)
    await store.start(
        "r1",
        T0 + 60,
        LEASE,
        [start_plan(c, T0 + 120, insert_runs=[running("y", c, "r1", T0 + 60)])],
    )
    done = finish_plan(c, "y", T0 + 61, run_id="run-8", session_id="sess-8")
    assert await store.finish("r1", T0 + 61, [done]) == [True]
    y = await store.get_run("y")
    assert (y.status, y.status_code, y.run_id, y.session_id, y.output) == (
        "success",
        200,
        "run-8",
        "sess-8",
        None,
    )
    s = await store.get_schedule("a")
    assert (s.last_status, s.consecutive_failures) == ("success", 0)
    # a second finish of the same attempt is a no-op
    assert await store.finish("r1", T0 + 62, [finish_plan(c, "y", T0 + 62, status="failed")]) == [
        False
    ]
    assert (await store.get_run("y")).status == "success"


@pg_test
async def test_finish_queues_a_retry_only_while_the_schedule_is_enabled(open_store):
    store = open_store()
    await store.create_schedule(sched("on", T0))
    await store.create_schedule(sched("off", T0))
    c = {x.schedule.id: x for x in await store.claim("r1", T0, LEASE, 10)}
    for sid in ("on", "off"):
        await store.start(
            "r1",
            T0,
            LEASE,
            [start_plan(c[sid], T0 + 3600, insert_runs=[running(f"{sid}-1", c[sid], "r1", T0)])],
        )
    await store.update_schedule("off", {"enabled": False}, T0 + 5)  # disabled mid-run

    def retry(sid: str) -> ScheduleRun:
        r = running(f"{sid}-2", c[sid], "r1", T0 + 10, status="pending", attempt=2)
        r.trigger, r.due_at, r.triggered_at = "retry", T0 + 70, None
        return r

    plans = [
        finish_plan(c[sid], f"{sid}-1", T0 + 10, status="failed", retry=retry(sid))
        for sid in ("on", "off")
    ]
    assert await store.finish("r1", T0 + 10, plans) == [True, True]
    queued = await store.get_run("on-2")
    assert (queued.status, queued.attempt, queued.trigger, queued.due_at) == (
        "pending",
        2,
        "retry",
        T0 + 70,
    )
    assert await store.get_run("off-2") is None
    # release made "on" due at its retry; "off" is released but never due
    assert await lease_state(store, "on") == (None, None, None, T0 + 70, 1)
    assert await lease_state(store, "off") == (None, None, None, None, 1)
    assert await store.next_due() == T0 + 70
    c2 = await claim_one(store, "r1", T0 + 70)
    assert [r.id for r in c2.pending] == ["on-2"]


@pg_test
async def test_release_honours_a_trigger_added_while_the_row_was_locked(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0))
    c = await claim_one(store, "r1", T0)
    await store.start(
        "r1", T0, LEASE, [start_plan(c, T0 + 600, insert_runs=[running("x", c, "r1", T0)])]
    )
    await store.add_pending_run(pending("t", "a", T0 + 5, created=T0 + 5), T0 + 5)
    # while held, due_at stays the lease expiry: no one else can take the trigger meanwhile
    assert await lease_state(store, "a") == ("r1", T0, T0 + LEASE, T0 + LEASE, 1)
    assert await store.claim("r2", T0 + 6, LEASE, 10) == []
    assert await store.finish("r1", T0 + 10, [finish_plan(c, "x", T0 + 10)]) == [True]
    assert await lease_state(store, "a") == (None, None, None, T0 + 5, 1)
    c2 = await claim_one(store, "r2", T0 + 10)
    assert [r.id for r in c2.pending] == ["t"]


@pg_test
async def test_finish_advance_applies_only_while_the_spec_is_unchanged(open_store):
    store = open_store()
    await store.create_schedule(sched("same", T0))
    await store.create_schedule(sched("edited", T0))
    c = {x.schedule.id: x for x in await store.claim("r1", T0, LEASE, 10)}
    for sid in ("same", "edited"):
        await store.start(
            "r1",
            T0,
            LEASE,
            [start_plan(c[sid], T0 + 60, insert_runs=[running(f"{sid}-1", c[sid], "r1", T0)])],
        )
    # mid-run, the manager moves "edited" to a 10-minute interval (its own new cursor)
    await store.update_schedule(
        "edited", {"interval_seconds": 600.0, "next_run_at": T0 + 610}, T0 + 10
    )
    assert await lease_state(store, "edited") == ("r1", T0, T0 + LEASE, T0 + LEASE, 1)

    def overlap_plan(sid: str) -> FinishPlan:
        skip = running(f"{sid}-skip", c[sid], "r1", T0 + 25, status="skipped", completed_at=T0 + 25)
        return finish_plan(
            c[sid],
            f"{sid}-1",
            T0 + 25,
            advance_slot=True,
            next_run_at=T0 + 120,
            insert_runs=[skip],
        )

    assert await store.finish("r1", T0 + 25, [overlap_plan("same"), overlap_plan("edited")]) == [
        True,
        True,
    ]
    same, edited = await store.get_schedule("same"), await store.get_schedule("edited")
    assert (same.next_run_at, same.due_at, same.locked_by) == (T0 + 120, T0 + 120, None)
    assert (await store.get_run("same-skip")).status == "skipped"
    # the old cursor is not resurrected by the release, and no overlap rows are written
    assert (edited.next_run_at, edited.due_at, edited.locked_by) == (T0 + 610, T0 + 610, None)
    assert edited.interval_seconds == 600.0
    assert await store.get_run("edited-skip") is None
    assert (await store.get_run("edited-1")).status == "success"


@pg_test
async def test_finish_disables_a_one_off_unless_a_retry_is_queued(open_store):
    store = open_store()
    for sid in ("once", "again"):
        await store.create_schedule(sched(sid, T0, interval_seconds=None, run_at=T0))
    c = {x.schedule.id: x for x in await store.claim("r1", T0, LEASE, 10)}
    for sid in ("once", "again"):
        await store.start(
            "r1",
            T0,
            LEASE,
            [start_plan(c[sid], None, insert_runs=[running(f"{sid}-1", c[sid], "r1", T0)])],
        )
    retry = running("again-2", c["again"], "r1", T0 + 3, status="pending", attempt=2)
    retry.due_at = T0 + 63
    plans = [
        finish_plan(c["once"], "once-1", T0 + 3, disable=True),
        finish_plan(c["again"], "again-1", T0 + 3, status="failed", disable=True, retry=retry),
    ]
    assert await store.finish("r1", T0 + 3, plans) == [True, True]
    once, again = await store.get_schedule("once"), await store.get_schedule("again")
    assert (once.enabled, once.next_run_at, once.due_at, once.locked_by) == (
        False,
        None,
        None,
        None,
    )
    assert (again.enabled, again.next_run_at, again.due_at, again.locked_by) == (
        True,
        None,
        T0 + 63,
        None,
    )
    assert [s.id for s in await store.list_schedules(enabled=False)] == ["once"]


# -- manager writes against the lease --------------------------------------------------------


@pg_test
async def test_update_of_a_locked_row_keeps_due_at_at_the_lease_expiry(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0))
    await claim_one(store, "r1", T0)
    updated = await store.update_schedule(
        "a", {"description": "new", "next_run_at": T0 + 5}, T0 + 1
    )
    assert (updated.description, updated.next_run_at, updated.due_at, updated.updated_at) == (
        "new",
        T0 + 5,
        T0 + LEASE,
        T0 + 1,
    )
    assert await store.claim("r2", T0 + 6, LEASE, 10) == []
    # unlocked, the same write recomputes due_at from the cursor
    await store.create_schedule(sched("b", T0 + 100))
    b = await store.update_schedule("b", {"next_run_at": T0 + 50}, T0 + 1)
    assert b.due_at == T0 + 50
    assert await store.update_schedule("nope", {"description": "x"}, T0) is None
    with pytest.raises(ValueError, match="lease_version"):
        await store.update_schedule("b", {"lease_version": 9}, T0)


@pg_test
async def test_disable_cancels_pending_rows_in_the_same_transaction(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0 + 600))
    await store.add_pending_run(pending("p1", "a", T0 + 1), T0)
    await store.add_pending_run(pending("p2", "a", T0 + 2), T0)
    assert (await store.get_schedule("a")).due_at == T0 + 1
    s = await store.update_schedule("a", {"enabled": False}, T0 + 3)
    assert (s.enabled, s.due_at, s.next_run_at) == (False, None, T0 + 600)
    runs = {r.id: (r.status, r.completed_at, r.error) for r in await store.list_runs("a")}
    assert runs == {
        "p1": ("cancelled", T0 + 3, "schedule disabled"),
        "p2": ("cancelled", T0 + 3, "schedule disabled"),
    }
    assert await store.next_due() is None
    assert await store.claim("r1", T0 + 700, LEASE, 10) == []
    with pytest.raises(PermissionError):
        await store.add_pending_run(pending("p3", "a", T0 + 4), T0 + 4)
    # re-enabling does not revive cancelled work
    s = await store.update_schedule("a", {"enabled": True}, T0 + 5)
    assert s.due_at == T0 + 600
    assert {r.status for r in await store.list_runs("a")} == {"cancelled"}


@pg_test
async def test_delete_cancels_pending_rows_and_keeps_history(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0))
    c = await claim_one(store, "r1", T0)
    await store.start(
        "r1", T0, LEASE, [start_plan(c, T0 + 60, insert_runs=[running("x", c, "r1", T0)])]
    )
    await store.add_pending_run(pending("p", "a", T0 + 1, created=T0 + 1), T0 + 1)
    assert await store.delete_schedule("a", T0 + 2) is True
    assert await store.get_schedule("a") is None
    assert await store.delete_schedule("a", T0 + 3) is False
    runs = {r.id: (r.status, r.error) for r in await store.list_runs("a")}
    assert runs == {"x": ("running", None), "p": ("cancelled", "schedule deleted")}
    # the attempt in flight still finishes and is recorded
    assert await store.finish("r1", T0 + 4, [finish_plan(c, "x", T0 + 4)]) == [True]
    assert (await store.get_run("x")).status == "success"
    assert await store.get_schedule("a") is None
    with pytest.raises(LookupError):
        await store.add_pending_run(pending("q", "a", T0 + 5), T0 + 5)


# -- the idle poll ---------------------------------------------------------------------------


@pg_test
async def test_next_due_is_the_min_due_at_of_enabled_rows(open_store):
    store = open_store()
    assert await store.next_due() is None
    await store.create_schedule(sched("a", T0 + 50))
    await store.create_schedule(sched("b", T0 + 20))
    await store.create_schedule(sched("off", T0 - 100, enabled=False))
    await store.create_schedule(sched("idle", None, interval_seconds=None))
    raw(store, "UPDATE {S} SET due_at = %s WHERE id = 'off'", T0 - 100)
    assert await store.next_due() == T0 + 20
    await store.update_schedule("b", {"enabled": False}, T0)
    assert await store.next_due() == T0 + 50
    await store.add_pending_run(pending("t", "idle", T0 + 7), T0)
    assert await store.next_due() == T0 + 7


# -- runs ------------------------------------------------------------------------------------


@pg_test
async def test_list_runs_newest_first_with_limit_and_get_run(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0 + 600))
    await store.create_schedule(sched("b", T0 + 600))
    for i in range(5):
        await store.add_pending_run(pending(f"a{i}", "a", T0 + i, created=T0 + i), T0 + i)
    await store.add_pending_run(pending("b0", "b", T0 + 2.5, created=T0 + 2.5), T0 + 2.5)
    # two rows created in the same instant: the later insert counts as newer
    await store.add_pending_run(pending("a5", "a", T0 + 4, created=T0 + 4), T0 + 4)
    assert [r.id for r in await store.list_runs("a")] == ["a5", "a4", "a3", "a2", "a1", "a0"]
    assert [r.id for r in await store.list_runs("a", limit=2)] == ["a5", "a4"]
    assert [r.id for r in await store.list_runs(None, limit=4)] == ["a5", "a4", "a3", "b0"]
    assert await store.list_runs("zzz") == []
    r = await store.get_run("a3")
    assert (r.schedule_id, r.status, r.trigger, r.due_at, r.created_at, r.idempotency_key) == (
        "a",
        "pending",
        "manual",
        T0 + 3,
        T0 + 3,
        "a@manual:a3",
    )
    assert await store.get_run("missing") is None


# -- kernel bugs -----------------------------------------------------------------------------


@pg_test
async def test_disable_then_enable_under_a_live_lease_stays_reclaimable(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0))
    c = await claim_one(store, "r1", T0)
    await store.update_schedule("a", {"enabled": False}, T0 + 1)
    await store.update_schedule("a", {"enabled": True, "next_run_at": T0 + 60}, T0 + 2)
    # The holder's start was planned with the old spec: it is fenced out and gives the lease
    # back at once, so the row is due at its new cursor, not stuck (a disable cleared due_at).
    assert await store.start("r1", T0 + 3, LEASE, [start_plan(c, T0 + 60)]) == [None]
    assert await store.next_due() == T0 + 60
    assert (await store.get_schedule("a")).locked_by is None
    assert [x.schedule.id for x in await store.claim("r2", T0 + 100, LEASE, 10)] == ["a"]


@pg_test
async def test_update_after_lease_expiry_keeps_the_orphan_reclaimable(open_store):
    store = open_store()
    await store.create_schedule(sched("once", T0, interval_seconds=None, run_at=T0))
    c = await claim_one(store, "r1", T0)
    assert await store.start(
        "r1", T0, LEASE, [start_plan(c, None, insert_runs=[running("x", c, "r1", T0)])]
    ) == [{"x"}]
    # r1 crashes mid-run. Its lease expires at T0+30; before any replica looks, an operator
    # edits the description.
    await store.update_schedule("once", {"description": "edited"}, T0 + 40)
    claims = await store.claim("r2", T0 + 50, LEASE, 10)
    assert [(x.schedule.id, [r.id for r in x.running]) for x in claims] == [("once", ["x"])]


# -- Postgres only: concurrent claimers ----------------------------------------------------------


@pg_test
async def test_concurrent_stores_racing_claims_never_share_a_row(open_store):
    """Four stores, each its own pool, drain 200 due rows at once over real connections: every
    row is claimed by exactly one of them."""
    stores = [open_store(max_size=2) for _ in range(4)]
    await stores[0].open()
    for i in range(200):
        await stores[0].create_schedule(sched(f"s{i:03d}", T0 - 200 + i))

    async def drain(store: PostgresStore, replica: str) -> list[str]:
        taken: list[str] = []
        while True:
            claims = await store.claim(replica, T0, LEASE, 7)
            if not claims:
                return taken
            assert {c.schedule.locked_by for c in claims} == {replica}
            assert {c.schedule.lease_version for c in claims} == {1}
            taken += [c.schedule.id for c in claims]

    results = await asyncio.gather(*(drain(s, f"r{i}") for i, s in enumerate(stores)))
    everything = [sid for taken in results for sid in taken]
    assert sorted(everything) == [f"s{i:03d}" for i in range(200)]  # all of them, none twice
    assert sum(1 for taken in results if taken) >= 2  # they really raced
    owners = {s.id: s.locked_by for s in await stores[1].list_schedules()}
    for i, taken in enumerate(results):
        assert {owners[sid] for sid in taken} <= {f"r{i}"}


@pg_test
async def test_claim_skips_a_row_another_transaction_holds_instead_of_waiting(open_store):
    store = open_store()
    for sid, due in [("a", T0 - 30), ("b", T0 - 20), ("c", T0 - 10)]:
        await store.create_schedule(sched(sid, due))
    blocker = psycopg.connect(store.dsn)  # not autocommit: the lock lasts until rollback
    try:
        blocker.execute(f"SELECT 1 FROM {store.schedules_table} WHERE id = 'a' FOR UPDATE")
        got = await asyncio.wait_for(store.claim("r1", T0, LEASE, 2), timeout=5)
        assert sorted(c.schedule.id for c in got) == ["b", "c"]  # the next two, not a wait on a
    finally:
        blocker.rollback()
        blocker.close()
    assert [c.schedule.id for c in await store.claim("r2", T0, LEASE, 10)] == ["a"]


@pg_test
async def test_a_trigger_racing_a_finish_is_never_hidden_from_due_at(open_store):
    """add_pending_run and finish(release) on the same row from two connections at once, many
    times: whichever commits last, due_at ends at the trigger's time, never at the cursor. (A
    smoke test: the interleaving is up to the server; the next test forces the bad one.)"""
    holder, manager = open_store(), open_store()
    for i in range(20):
        sid = f"s{i:02d}"
        await holder.create_schedule(sched(sid, T0, interval_seconds=3600))
        c = await claim_one(holder, "r1", T0)
        await holder.start(
            "r1", T0, LEASE, [start_plan(c, T0 + 3600, insert_runs=[running(f"x{i}", c, "r1", T0)])]
        )
        await asyncio.gather(
            holder.finish("r1", T0 + 5, [finish_plan(c, f"x{i}", T0 + 5)]),
            manager.add_pending_run(pending(f"t{i}", sid, T0 + 7, created=T0 + 5), T0 + 5),
        )
        assert await lease_state(holder, sid) == (None, None, None, T0 + 7, 1), sid
        await holder.update_schedule(sid, {"enabled": False}, T0 + 6)  # out of the next claims


@pg_test
async def test_a_trigger_waiting_on_a_release_sees_the_retry_that_release_queued(open_store):
    """READ COMMITTED: an UPDATE that waits for a row lock re-reads the row but not its
    subqueries. A holder's finish (here by hand, on another connection) queues a retry and
    releases; a trigger arriving meanwhile waits for the row and must then see that retry, or
    due_at would skip past it. add_pending_run locks the row before it reads anything."""
    store = open_store()
    await store.create_schedule(sched("a", T0 + 3600))
    blocker = psycopg.connect(store.dsn)  # one open transaction, like a finish in progress
    try:
        blocker.execute(f"SELECT 1 FROM {store.schedules_table} WHERE id = 'a' FOR UPDATE")
        blocker.execute(
            f"INSERT INTO {store.runs_table} (id, schedule_id, attempt, trigger, status,"
            " idempotency_key, due_at, created_at) VALUES"
            " ('retry', 'a', 2, 'retry', 'pending', 'k', %s, %s)",
            (T0 + 3, T0),
        )
        blocker.execute(f"UPDATE {store.schedules_table} SET due_at = %s WHERE id = 'a'", (T0 + 3,))
        trigger = asyncio.ensure_future(
            store.add_pending_run(pending("t", "a", T0 + 7, created=T0 + 1), T0 + 1)
        )
        await asyncio.sleep(0.5)
        assert not trigger.done()  # waiting for the row
        blocker.commit()
        await asyncio.wait_for(trigger, timeout=5)
    finally:
        blocker.rollback()
        blocker.close()
    assert (await store.get_schedule("a")).due_at == T0 + 3


# -- Postgres only: schema, names, errors --------------------------------------------------------


@pg_test
async def test_fresh_schema_gets_version_1_and_its_tables(open_store):
    store = open_store()
    assert await store.schema_version() == 1
    assert postgres_sql.SCHEMA_VERSION == 1
    rows = raw(
        store,
        "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s",
        store.schema,
    )
    assert {r[0] for r in rows} >= {
        "agno_schedules",
        "agno_schedule_runs",
        "agno_leasecron_meta",
        "agno_schedules_due",
        "agno_schedules_name_key",
    }


@pg_test
async def test_reopen_keeps_rows_and_only_applies_new_migrations(open_store, monkeypatch):
    first = open_store()
    await first.create_schedule(sched("a", T0))
    await first.add_pending_run(pending("p", "a", T0), T0)
    await first.close()
    # Were migration 1 re-run on reopen, this script would fail.
    monkeypatch.setattr(postgres_sql, "MIGRATIONS", ["THIS IS NOT SQL"])
    again = open_store()
    assert await again.schema_version() == 1
    assert [s.id for s in await again.list_schedules()] == ["a"]
    await again.close()
    monkeypatch.setattr(
        postgres_sql, "MIGRATIONS", ["THIS IS NOT SQL", "ALTER TABLE {S} ADD COLUMN note TEXT"]
    )
    upgraded = open_store()
    assert await upgraded.schema_version() == 2
    cols = raw(
        upgraded,
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s"
        " AND table_name = 'agno_schedules' ORDER BY ordinal_position",
        upgraded.schema,
    )
    assert cols[-1][0] == "note"
    assert [r.id for r in await upgraded.list_runs("a")] == ["p"]
    assert (await upgraded.get_schedule("a")).due_at == T0


@pg_test
async def test_schema_from_a_newer_version_is_refused(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0))
    raw(store, "UPDATE {M} SET value = '7' WHERE key = 'schema_version'")
    with pytest.raises(RuntimeError, match=r"schema version 7 is newer than this leasecron \(1\)"):
        await open_store().get_schedule("a")
    assert raw(store, "SELECT value FROM {M}") == [("7",)]
    assert [s.id for s in await store.list_schedules()] == ["a"]


@pg_test
async def test_custom_prefix_and_schema_keep_their_own_tables(open_store):
    mine = open_store(prefix="myapp_")
    theirs = open_store()
    other_schema = open_store(schema=open_store.schema + "_b")
    assert mine.schedules_table == f'"{open_store.schema}"."myapp_schedules"'
    await mine.create_schedule(sched("a", T0))
    assert [s.id for s in await mine.list_schedules()] == ["a"]
    assert await theirs.list_schedules() == []
    assert await theirs.next_due() is None
    assert await other_schema.list_schedules() == []
    # the same name in another prefix or schema is not a duplicate
    await theirs.create_schedule(sched("a", T0))
    await other_schema.create_schedule(sched("a", T0))
    assert await mine.schema_version() == await theirs.schema_version() == 1
    raw(other_schema, f'DROP SCHEMA "{other_schema.schema}" CASCADE')


@pytest.mark.parametrize("prefix", ["my-app_", "x; DROP TABLE y;", "a b_", "", "1app_"])
def test_bad_prefix_is_refused_naming_prefix(prefix):
    with pytest.raises(ValueError, match=r"^prefix: "):
        PostgresStore(ADMIN_DSN, prefix=prefix)


@pytest.mark.parametrize("schema", ['a"b', "x; DROP", "", "9s"])
def test_bad_schema_is_refused_naming_schema(schema):
    with pytest.raises(ValueError, match=r"^schema: "):
        PostgresStore(ADMIN_DSN, schema=schema)


@pg_test
async def test_duplicate_name_is_schedule_exists_and_other_violations_store_error(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0))
    dup = sched("a2", T0)
    dup.name = "a"
    with pytest.raises(ScheduleExistsError):
        await store.create_schedule(dup)
    with pytest.raises(StoreError) as err:  # the same id under another name
        await store.create_schedule(Schedule(id="a", name="other", endpoint="/x"))
    assert err.value.operation == "create_schedule"
    assert isinstance(err.value.__cause__, psycopg.errors.UniqueViolation)
    await store.create_schedule(sched("b", T0))
    with pytest.raises(ScheduleExistsError):
        await store.update_schedule("b", {"name": "a"}, T0)
    assert (await store.get_schedule("b")).name == "b"  # rolled back


@pg_test
async def test_errors_are_wrapped_in_store_error_naming_the_operation(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0))
    raw(store, "DROP TABLE {S}")
    with pytest.raises(StoreError) as err:
        await store.claim("r1", T0, LEASE, 10)
    assert err.value.operation == "claim"
    assert isinstance(err.value.__cause__, psycopg.errors.UndefinedTable)
    assert str(err.value).startswith("store.claim failed: ")
    with pytest.raises(StoreError) as err:
        await store.next_due()
    assert err.value.operation == "next_due"
    with pytest.raises(StoreError) as err:
        await store.heartbeat("r1", T0, LEASE, [("a", 1)])
    assert err.value.operation == "heartbeat"


@pg_test
async def test_unreachable_server_is_a_store_error(open_store):
    dead = open_store()
    dead.dsn = psycopg.conninfo.make_conninfo(open_store.dsn, port=1)
    dead.connect_timeout = 1.0
    with pytest.raises(StoreError) as err:
        await dead.next_due()
    assert err.value.operation == "next_due"
    with pytest.raises(StoreError) as err:
        await dead.open()
    assert err.value.operation == "open"


@pg_test
async def test_a_failed_transaction_is_rolled_back_whole(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0 + 600))
    await store.add_pending_run(pending("p", "a", T0 + 9), T0)
    raw(store, "ALTER TABLE {R} ADD CONSTRAINT no_cancel CHECK (status <> 'cancelled')")
    with pytest.raises(StoreError) as err:  # disable = update the row + cancel its pending runs
        await store.update_schedule("a", {"enabled": False}, T0 + 1)
    assert err.value.operation == "update_schedule"
    s = await store.get_schedule("a")
    assert (s.enabled, s.due_at, s.locked_by) == (True, T0 + 9, None)
    assert (await store.get_run("p")).status == "pending"


@pg_test
async def test_idle_poll_and_claim_can_use_the_partial_due_index(open_store):
    store = open_store()
    for i in range(50):
        await store.create_schedule(sched(f"s{i}", T0 + i))
    params = {"now": T0, "replica": "r", "lease_until": T0 + LEASE, "limit": 10}
    with psycopg.connect(store.dsn, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")  # 50 rows: the planner would rather scan
        for name in ("next_due", "claim"):
            conn.execute("BEGIN")
            plan = conn.execute("EXPLAIN " + store._sql[name], params).fetchall()
            conn.execute("ROLLBACK")
            text = "\n".join(r[0] for r in plan)
            assert "agno_schedules_due" in text, (name, text)


@pg_test
async def test_prune_runs_deletes_only_old_final_rows(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0))
    c = await claim_one(store, "r1", T0)
    await store.start(
        "r1", T0, LEASE, [start_plan(c, T0 + 60, insert_runs=[running("x", c, "r1", T0)])]
    )
    await store.finish("r1", T0 + 1, [finish_plan(c, "x", T0 + 1)])
    await store.add_pending_run(pending("p", "a", T0 + 5, created=T0 - 10), T0)
    assert await store.prune_runs(T0 + 100) == 1
    assert [r.id for r in await store.list_runs("a")] == ["p"]


# -- a Scheduler on PostgresStore ----------------------------------------------------------------


@pg_test
async def test_scheduler_replicas_fire_every_slot_once_on_postgres(open_store):
    """Three Schedulers, each on its own PostgresStore, under one SimClock. The store counts its
    queries as in flight for SimClock.settle (as SqliteStore's worker thread does), so virtual
    time does not move while a query is on the wire."""
    clock = SimClock(start=T0)
    target = Target(clock)
    ids = iter(range(1_000_000))

    def new_id() -> str:
        return f"id{next(ids):08d}"

    stores = [open_store(max_size=2) for _ in range(4)]
    manager = ScheduleManager(stores[-1], clock=clock, new_id=new_id)
    dispatcher = HttpDispatcher(
        "http://target", transport=target.transport(), clock=clock, poll_initial=1.0, poll_max=1.0
    )
    replicas = [
        Scheduler(
            stores[i],
            dispatcher,
            clock=clock,
            replica_id=f"r{i}",
            lease_seconds=30.0,
            poll_interval=1.0,
            max_concurrent=10,
            rng=random.Random(100 + i),
            new_id=new_id,
        )
        for i in range(3)
    ]
    for replica in replicas:
        stores[-1].add_listener(replica.wake)
    a = await manager.create("every30", interval_seconds=30, endpoint="/hooks/a")
    await manager.create("five-min", cron="*/5 * * * *", endpoint="/hooks/b")
    try:
        for replica in replicas:
            await replica.start()
        await clock.advance(1800)
    finally:
        for replica in replicas:
            await replica.stop(timeout=0)
        await dispatcher.aclose()
    assert target.slots("/hooks/a") == [T0 + 30 * k for k in range(1, 61)]
    first_b = (int(T0) // 300 + 1) * 300
    assert target.slots("/hooks/b") == [first_b + 300 * k for k in range(6)]
    assert [k for k, n in target.keys().items() if n > 1] == []
    assert all(float(r.scheduled_for) == r.at for r in target.requests)
    runs = list(reversed(await manager.runs(a.id, limit=1000)))
    assert [r.status for r in runs] == ["success"] * 60
    assert len({r.replica for r in runs}) >= 2  # the replicas shared the work


async def test_delete_after_the_holders_lease_ran_out_ends_its_orphans(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0))
    c = await claim_one(store, "r1", T0)
    await store.start(
        "r1", T0, LEASE, [start_plan(c, T0 + 60, insert_runs=[running("x", c, "r1", T0)])]
    )
    # r1 died; nobody reclaimed the row before it was deleted: nobody would record "x" either
    assert await store.delete_schedule("a", T0 + LEASE + 1) is True
    run = await store.get_run("x")
    assert run.status == "lease_lost" and "lease ran out" in run.error
    assert await store.finish("r1", T0 + 99, [finish_plan(c, "x", T0 + 99)]) == [False]


# -- cross-host wake-ups (LISTEN/NOTIFY) -----------------------------------------------------------


class Wakes:
    """A listener that counts its calls and lets a test wait for the next one."""

    def __init__(self):
        self.calls = 0
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.calls += 1
        self.event.set()

    async def next(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()


async def listening(store: PostgresStore) -> Wakes:
    """Add a listener and wait until the store's LISTEN is up (it calls listeners once then)."""
    wakes = Wakes()
    store.add_listener(wakes)
    await wakes.next()
    return wakes


async def listen_pids(store: PostgresStore) -> list[int]:
    async with await psycopg.AsyncConnection.connect(store.dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = %(q)s",
            {"q": postgres_sql.LISTEN_SQL.format(channel=store.channel)},
        )
        return [row[0] for row in await cur.fetchall()]


@pg_test
async def test_a_trigger_on_one_store_wakes_a_scheduler_on_another_at_once(open_store):
    """Replica B polls every 15 s; a trigger committed through store A reaches it by NOTIFY."""
    a, b = open_store(), open_store()
    clock = SystemClock()
    fired = asyncio.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        fired.set()
        return httpx.Response(200, json={})

    manager = ScheduleManager(a, clock=clock)
    dispatcher = HttpDispatcher(
        "http://target", transport=httpx.MockTransport(handler), clock=clock
    )
    replica = Scheduler(b, dispatcher, clock=clock, replica_id="b", poll_interval=15.0)
    s = await manager.create("hourly", interval_seconds=3600, endpoint="/hooks/h")
    wakes = Wakes()
    b.add_listener(wakes)  # before start: the first (LISTEN is up) call must not be missed
    try:
        await replica.start()
        await wakes.next()
        await asyncio.sleep(0.3)  # B has looked, found nothing due, and sleeps up to 15 s
        assert not fired.is_set()
        started = time.monotonic()
        await manager.trigger(s.id)
        await asyncio.wait_for(fired.wait(), 1.0)
        latency = time.monotonic() - started
    finally:
        await replica.stop(timeout=0)
        await dispatcher.aclose()
    print(f"trigger -> fire latency across stores: {latency * 1000:.1f} ms")
    assert latency < 1.0


@pg_test
async def test_a_rolled_back_write_notifies_nobody(open_store):
    a, b = open_store(), open_store()
    wakes = await listening(b)
    await a.create_schedule(sched("a", T0))
    await wakes.next()  # a committed write reaches the other store
    calls = wakes.calls
    dup = sched("b", T0)
    dup.name = "a"
    with pytest.raises(ScheduleExistsError):
        await a.create_schedule(dup)
    await asyncio.sleep(0.3)
    assert wakes.calls == calls


@pg_test
async def test_the_listener_reconnects_after_its_backend_is_terminated(open_store):
    a, b = open_store(), open_store()
    await a.open()
    wakes = await listening(b)
    [pid] = await listen_pids(b)
    async with await psycopg.AsyncConnection.connect(b.dsn, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%(pid)s)", {"pid": pid})
    await wakes.next()  # re-established: listeners called once for what may have been missed
    [new_pid] = await listen_pids(b)
    assert new_pid != pid
    await a.create_schedule(sched("a", T0))
    await wakes.next()  # and a later NOTIFY is delivered on the new connection


@pg_test
async def test_close_stops_the_listener_task_and_its_connection(open_store):
    b = open_store()
    await listening(b)
    task = b._listen_task
    assert task is not None and not task.done()
    await b.close()
    assert task.done() and b._listen_task is None
    b.add_listener(lambda: None)  # a closed store starts nothing again
    assert b._listen_task is None
    assert asyncio.all_tasks() == {asyncio.current_task()}
    for _ in range(50):  # the server notices the closed socket asynchronously
        if not await listen_pids(b):
            break
        await asyncio.sleep(0.02)
    assert await listen_pids(b) == []
