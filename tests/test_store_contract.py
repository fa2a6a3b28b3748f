"""The store contract, once, run against every store: SqliteStore and PostgresStore take the same
lease statements, called directly with explicit `now` values, so each race the SQL closes is
replayed step by step on both.

`open_store` is parametrised over the stores ("sqlite", "postgres"); every call of it opens
another store object on the same database: one file under tmp_path for SQLite (inline unless told
otherwise), a fresh schema per test in a module-wide database for Postgres (tests/pgserver.py;
skipped without a server, failed in CI). What only one store has is tested in tests/test_sqlite.py
and tests/test_postgres_store.py.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from dataclasses import replace

import pytest

from leasecron.kernel import (
    FinishPlan,
    Schedule,
    ScheduleExistsError,
    ScheduleRun,
    SqliteStore,
    Store,
    StoreError,
)
from store_builders import (
    LEASE,
    claim_one,
    closes_stores,
    finish_plan,
    lease_state,
    pending,
    running,
    sched,
    start_each_running,
    start_plan,
)
from support import T0

store_test = closes_stores


def raw(store: Store, sql: str, *params) -> list[tuple]:
    """Run `sql` on a plain connection of its own, behind the store's back ('another process').
    {S} and {R} name the store's schedules and runs tables; %s marks a parameter on both."""
    sql = sql.format(S=store.schedules_table, R=store.runs_table)
    if isinstance(store, SqliteStore):
        conn = sqlite3.connect(store.path, isolation_level=None)
        try:
            return conn.execute(sql.replace("%s", "?"), params).fetchall()
        finally:
            conn.close()
    # psycopg only here and below: the SQLite half runs without the postgres extra installed.
    import psycopg

    with psycopg.connect(store.dsn, autocommit=True) as conn:
        cur = conn.execute(sql, params or None)
        return cur.fetchall() if cur.description else []


def driver_error(store: Store, sqlite_type: type[Exception], postgres_name: str) -> type:
    """The driver exception a StoreError should carry as its cause: `sqlite_type` for SQLite,
    psycopg.errors.<postgres_name> for Postgres."""
    if isinstance(store, SqliteStore):
        return sqlite_type
    import psycopg

    return getattr(psycopg.errors, postgres_name)


# -- claim -----------------------------------------------------------------------------------


@store_test
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


@store_test
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


@store_test
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


@store_test
async def test_concurrent_stores_racing_claims_never_share_a_row(open_store):
    """Four stores drain 200 due rows at once (SQLite: each on its own worker thread; Postgres:
    each its own pool, over real connections): every row is claimed by exactly one of them."""
    stores = [open_store(inline=False) for _ in range(4)]
    for i in range(200):
        await stores[0].create_schedule(sched(f"s{i:03d}", T0 - 200 + i))

    async def claim(store: Store, replica: str) -> list[str]:
        claims = await store.claim(replica, T0, LEASE, 7)
        assert {c.schedule.locked_by for c in claims} <= {replica}
        assert {c.schedule.lease_version for c in claims} <= {1}
        return [c.schedule.id for c in claims]

    # Rounds in which all four claim at once: within a round they really race (threads,
    # connections), and no one store can drain the table before the others have started.
    results: list[list[str]] = [[] for _ in stores]
    while True:
        got = await asyncio.gather(*(claim(s, f"r{i}") for i, s in enumerate(stores)))
        if not any(got):
            break
        for taken, more in zip(results, got, strict=True):
            taken += more
    everything = [sid for taken in results for sid in taken]
    assert sorted(everything) == [f"s{i:03d}" for i in range(200)]  # all of them, none twice
    assert sum(1 for taken in results if taken) >= 2  # the work was shared
    owners = {s.id: s.locked_by for s in await stores[1].list_schedules()}
    for i, taken in enumerate(results):
        assert {owners[sid] for sid in taken} <= {f"r{i}"}


@store_test
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


@store_test
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


@store_test
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


@store_test
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


@store_test
async def test_leases_of_lists_a_replicas_live_leases_for_handing_back(open_store):
    store = open_store()
    for sid in ("a", "b", "c"):
        await store.create_schedule(sched(sid, T0))
    assert {c.schedule.id for c in await store.claim("r1", T0, LEASE, 2)} == {"a", "b"}
    assert [c.schedule.id for c in await store.claim("r2", T0, LEASE, 5)] == ["c"]
    assert sorted(await store.leases_of("r1", T0 + 1)) == [("a", 1), ("b", 1)]
    await store.expire_leases("r1", T0 + 2, [("a", 1), ("b", 9)])  # b: wrong version, kept
    assert await store.leases_of("r1", T0 + 2) == [("b", 1)]
    assert await store.leases_of("r1", T0 + LEASE) == []  # expired: nothing left to hand back
    assert {c.schedule.id for c in await store.claim("r3", T0 + 3, LEASE, 5)} == {"a"}


# -- start -----------------------------------------------------------------------------------


@store_test
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


@store_test
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


@store_test
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


@store_test
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


@store_test
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


@store_test
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


@store_test
async def test_finish_queues_a_retry_only_while_the_schedule_is_enabled(open_store):
    store = open_store()
    await store.create_schedule(sched("on", T0))
    await store.create_schedule(sched("off", T0))
    c = {x.schedule.id: x for x in await store.claim("r1", T0, LEASE, 10)}
    await start_each_running(store, c, T0 + 3600)
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


@store_test
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


@store_test
async def test_finish_advance_applies_only_while_the_spec_is_unchanged(open_store):
    store = open_store()
    await store.create_schedule(sched("same", T0))
    await store.create_schedule(sched("edited", T0))
    c = {x.schedule.id: x for x in await store.claim("r1", T0, LEASE, 10)}
    await start_each_running(store, c, T0 + 60)
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


@store_test
async def test_finish_disables_a_one_off_unless_a_retry_is_queued(open_store):
    store = open_store()
    for sid in ("once", "again"):
        await store.create_schedule(sched(sid, T0, interval_seconds=None, run_at=T0))
    c = {x.schedule.id: x for x in await store.claim("r1", T0, LEASE, 10)}
    await start_each_running(store, c, None)
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


@store_test
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


@store_test
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


@store_test
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


@store_test
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


# -- errors ----------------------------------------------------------------------------------


@store_test
async def test_errors_are_wrapped_in_store_error_naming_the_operation(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0))
    raw(store, "DROP TABLE {S}")
    with pytest.raises(StoreError) as err:
        await store.claim("r1", T0, LEASE, 10)
    assert err.value.operation == "claim"
    assert isinstance(
        err.value.__cause__, driver_error(store, sqlite3.OperationalError, "UndefinedTable")
    )
    # the message carries the driver's own words, naming the table
    assert re.search(
        r'no such table: agno_schedules|relation "\w+\.agno_schedules" does not exist',
        str(err.value),
    ), str(err.value)
    assert str(err.value).startswith("store.claim failed: ")
    with pytest.raises(StoreError) as err:
        await store.next_due()
    assert err.value.operation == "next_due"
    with pytest.raises(StoreError) as err:
        await store.heartbeat("r1", T0, LEASE, [("a", 1)])
    assert err.value.operation == "heartbeat"


@store_test
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
    assert isinstance(
        err.value.__cause__, driver_error(store, sqlite3.IntegrityError, "UniqueViolation")
    )
    await store.create_schedule(sched("b", T0))
    with pytest.raises(ScheduleExistsError):
        await store.update_schedule("b", {"name": "a"}, T0)
    assert (await store.get_schedule("b")).name == "b"  # rolled back


# -- runs ------------------------------------------------------------------------------------


@store_test
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


@store_test
async def test_list_runs_pages_from_an_offset_and_count_runs_counts_the_unpaged_list(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0 + 600))
    await store.create_schedule(sched("b", T0 + 600))
    for i in range(5):
        await store.add_pending_run(pending(f"a{i}", "a", T0 + i, created=T0 + i), T0 + i)
    await store.add_pending_run(pending("b0", "b", T0 + 2.5, created=T0 + 2.5), T0 + 2.5)
    pages = [[r.id for r in await store.list_runs("a", 2, offset)] for offset in (0, 2, 4, 6)]
    assert pages == [["a4", "a3"], ["a2", "a1"], ["a0"], []]
    assert [r.id for r in await store.list_runs(None, 2, 2)] == ["b0", "a2"]
    assert (await store.count_runs("a"), await store.count_runs("b")) == (5, 1)
    assert (await store.count_runs(None), await store.count_runs("zzz")) == (6, 0)


@store_test
async def test_store_round_trips_a_schedule(open_store):
    # SQLite: through the worker thread, the path a deployed store takes (Postgres has only one)
    store = open_store(inline=False)
    s = sched("a", T0, payload={"q": "hi", "n": [1, None]}, timezone="Europe/Paris")
    await store.create_schedule(s)
    got = await store.get_schedule("a")
    assert got == Schedule(**{**{f: getattr(s, f) for f in s.__slots__}, "due_at": T0})
    assert await store.get_schedule_by_name("a") == got
    assert await store.get_schedule_by_name("b") is None
    c = await claim_one(store, "r1", T0)
    assert c.schedule.payload == {"q": "hi", "n": [1, None]}


@store_test
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


# -- kernel bugs -----------------------------------------------------------------------------


@store_test
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


@store_test
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


@store_test
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


# -- rows the kernel cannot use, and orphans under a backlog -------------------------------------

UNDECODABLE_PAYLOADS = {
    "not JSON": "{'x': 1",
    "nested past Python's stack": "[" * 100_000 + "]" * 100_000,
    "a JSON list": "[1, 2]",
}


@store_test
@pytest.mark.parametrize("payload", list(UNDECODABLE_PAYLOADS), ids=list(UNDECODABLE_PAYLOADS))
async def test_an_undecodable_row_is_quarantined_and_the_claim_takes_the_others(
    open_store, payload
):
    """A payload another tool wrote into a row (unparseable, or nested far past the stack) used
    to make every claim raise: the replica fired nothing at all. The claim now takes the other
    rows and takes that one out of the pool, with the reason kept."""
    store = open_store()
    for sid in ("a", "bad", "c"):
        await store.create_schedule(sched(sid, T0 - 1))
    await store.add_pending_run(pending("p", "bad", T0 - 1), T0 - 2)
    raw(store, "UPDATE {S} SET payload = %s WHERE id = 'bad'", UNDECODABLE_PAYLOADS[payload])

    claims = {c.schedule.id: c for c in await store.claim("r1", T0, LEASE, 10)}
    assert set(claims) == {"a", "bad", "c"}
    assert claims["a"].quarantined is None and claims["c"].quarantined is None
    why = claims["bad"].quarantined
    assert why is not None and why.startswith("schedule disabled: cannot decode it: payload")

    bad = await store.get_schedule("bad")  # still readable, for a person to repair
    assert (bad.enabled, bad.disabled_reason, bad.due_at, bad.locked_by) == (False, why, None, None)
    runs = {r.id: r for r in await store.list_runs("bad", 10)}
    assert runs.pop("p").status == "cancelled"  # its waiting work does not fire later
    (failed,) = runs.values()
    assert (failed.status, failed.error) == ("failed", why)
    # the others are claimed as usual; nothing of the bad row comes due again
    assert await store.claim("r2", T0 + LEASE + 1, LEASE, 10) != []
    assert "bad" not in {c.schedule.id for c in await store.claim("r3", T0 + 9 * LEASE, LEASE, 10)}


@store_test
async def test_a_quarantine_is_fenced_on_the_lease_and_the_timing(open_store):
    """A planning failure quarantines through start, fenced like every holder write: a plan
    made before the schedule was re-timed (repaired) must not disable it."""
    from leasecron.kernel.writes import quarantine_run

    store = open_store()
    await store.create_schedule(sched("s", T0 - 1))
    claim = await claim_one(store, "r1", T0)
    run = quarantine_run("s", T0 - 1, "r1", claim.schedule.lease_version, T0, "cannot plan", "q")
    plan = start_plan(claim, None, insert_runs=[run], quarantine=run.error)
    await store.update_schedule("s", {"next_run_at": T0 + 60}, T0)  # re-timed meanwhile
    assert await store.start("r1", T0, LEASE, [plan]) == [set()]
    fixed = await store.get_schedule("s")
    assert (fixed.enabled, fixed.disabled_reason) == (True, None)
    assert await store.get_run("q") is None

    claim = await claim_one(store, "r1", T0 + LEASE + 61)
    run = quarantine_run("s", T0, "r1", claim.schedule.lease_version, T0, "cannot plan", "q2")
    plan = start_plan(claim, None, insert_runs=[run], quarantine=run.error)
    assert await store.start("r1", T0 + LEASE + 61, LEASE, [plan]) == [set()]
    gone = await store.get_schedule("s")
    assert (gone.enabled, gone.disabled_reason, gone.locked_by) == (False, run.error, None)
    assert (await store.get_run("q2")).status == "failed"


@store_test
async def test_orphans_get_a_share_of_every_claim_under_a_backlog(open_store):
    """After a crash under sustained overload, orphaned leases sat unclaimed because live rows
    with older due times always sorted first. A quarter of every claim goes to orphans."""
    store = open_store()
    for i in range(6):
        await store.create_schedule(sched(f"orphan{i}", T0))
    crashed = await store.claim("dead", T0, LEASE, 100)  # then the replica dies
    assert len(crashed) == 6
    for i in range(40):  # a backlog of live work, due long before the orphans' leases ran out
        await store.create_schedule(sched(f"live{i:02d}", T0 - 1000 + i))
    now = T0 + LEASE + 1
    taken = [c.schedule.id for c in await store.claim("r2", now, LEASE, 8)]
    assert len(taken) == 8
    orphans = [sid for sid in taken if sid.startswith("orphan")]
    assert len(orphans) == 2  # 8 // 4 places, though every live row is more overdue
    # a small claim still gives orphans their one place
    taken = [c.schedule.id for c in await store.claim("r3", now, LEASE, 1)]
    assert taken[0].startswith("orphan")


# -- owners, filters and pages -----------------------------------------------------------------


async def _owned(store: Store) -> None:
    """Six schedules: ann's a1, a2 (disabled), a3; bob's b1; nobody's z1, z2 (names out of
    insertion order, so the listing's ORDER BY shows)."""
    for sid, owner, enabled in [
        ("a3", "ann", True),
        ("z1", None, True),
        ("b1", "bob", True),
        ("a1", "ann", True),
        ("z2", None, False),
        ("a2", "ann", False),
    ]:
        await store.create_schedule(sched(sid, T0, user_id=owner, enabled=enabled))


@store_test
async def test_a_schedules_owner_round_trips_and_none_is_nobodys(open_store):
    store = open_store(inline=False)
    await _owned(store)
    assert (await store.get_schedule("a1")).user_id == "ann"
    assert (await store.get_schedule_by_name("b1")).user_id == "bob"
    assert (await store.get_schedule("z1")).user_id is None
    # an update may set or clear it like any caller field; the claim carries it
    await store.update_schedule("z1", {"user_id": "cy"}, T0)
    assert (await store.get_schedule("z1")).user_id == "cy"
    await store.update_schedule("z1", {"user_id": None}, T0)
    assert (await store.get_schedule("z1")).user_id is None
    claims = {c.schedule.id: c.schedule.user_id for c in await store.claim("r1", T0, LEASE, 10)}
    assert claims == {"a1": "ann", "a3": "ann", "b1": "bob", "z1": None}


@store_test
async def test_lists_filter_by_owner_and_enabled_in_name_order(open_store):
    store = open_store()
    await _owned(store)

    async def names(*args, **kwargs) -> list[str]:
        return [s.id for s in await store.list_schedules(*args, **kwargs)]

    assert await names() == ["a1", "a2", "a3", "b1", "z1", "z2"]  # the operator view: all
    assert await names(user_id="ann") == ["a1", "a2", "a3"]
    assert await names(True, user_id="ann") == ["a1", "a3"]
    assert await names(False, user_id="ann") == ["a2"]
    assert await names(False) == ["a2", "z2"]
    assert await names(user_id="bob") == ["b1"]
    assert await names(user_id="nobody") == []
    assert await names(user_id="Ann") == []  # owners are compared exactly
    counts = [
        await store.count_schedules(),
        await store.count_schedules(True),
        await store.count_schedules(user_id="ann"),
        await store.count_schedules(True, user_id="ann"),
        await store.count_schedules(user_id="nobody"),
    ]
    assert counts == [6, 4, 3, 2, 0]


@store_test
async def test_lists_and_counts_filter_by_a_part_of_the_name_in_any_case(open_store):
    store = open_store()
    for sid, name, enabled in (
        ("s1", "Backup db", True),
        ("s2", "nightly BACKUP", True),
        ("s3", "backup-logs", False),
        ("s4", "report", True),
        ("s5", "100%_done", True),
        ("s6", "100 done", True),
    ):
        await store.create_schedule(replace(sched(sid, T0, enabled=enabled), name=name))

    async def names(**kwargs) -> list[str]:
        return [s.name for s in await store.list_schedules(**kwargs)]

    assert await names(name_contains="backup") == ["Backup db", "backup-logs", "nightly BACKUP"]
    assert await names(name_contains="BACKUP", enabled=True) == ["Backup db", "nightly BACKUP"]
    assert await names(name_contains="Backup", limit=1, offset=1) == ["backup-logs"]
    # LIKE's wildcards are plain characters here.
    assert await names(name_contains="%_") == ["100%_done"]
    assert await names(name_contains="_") == ["100%_done"]
    assert await names(name_contains="nothing") == []
    assert len(await names(name_contains="")) == len(await names(name_contains=None)) == 6
    assert await store.count_schedules(name_contains="backup") == 3
    assert await store.count_schedules(True, name_contains="BACKUP") == 2
    assert await store.count_schedules(name_contains="%") == 1
    assert await store.count_schedules(user_id="ann", name_contains="backup") == 0


@store_test
async def test_lists_page_with_limit_and_offset_in_the_query(open_store):
    store = open_store()
    await _owned(store)

    async def page(**kwargs) -> list[str]:
        return [s.id for s in await store.list_schedules(**kwargs)]

    assert await page(limit=2) == ["a1", "a2"]
    assert await page(limit=2, offset=2) == ["a3", "b1"]
    assert await page(limit=2, offset=4) == ["z1", "z2"]
    assert await page(limit=2, offset=6) == []
    assert await page(offset=3) == ["b1", "z1", "z2"]  # no limit: the rest
    assert await page(limit=0) == []
    assert await page(user_id="ann", limit=1, offset=1) == ["a2"]
    assert await page(enabled=True, user_id="ann", limit=5, offset=1) == ["a3"]
    # the pages cover the whole list once, whatever the page size
    for size in (1, 4, 5):
        pages = [await page(limit=size, offset=o) for o in range(0, 6, size)]
        assert [sid for p in pages for sid in p] == await page()
