"""What only PostgresStore has, against a real PostgreSQL server (never a mock): concurrent
claimers on separate connections, FOR UPDATE SKIP LOCKED, row-lock ordering under READ COMMITTED,
schemas and migrations, an unreachable server, a transaction failing halfway, LISTEN/NOTIFY
wake-ups, and a Scheduler on top. The store contract it shares with SqliteStore is
tests/test_store_contract.py, run against both.

Needs the server of tests/pgserver.py (skipped without one, failed in CI). It creates a fresh
database `leasecron_test_<random>` for the module, one schema per test in it, and drops the
database at the end.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time

import httpx
import pytest
from pgserver import ADMIN_DSN, fresh_database, require_server

require_server()

import psycopg  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

from leasecron.adapters.postgres import PostgresStore  # noqa: E402
from leasecron.adapters.postgres import sql as postgres_sql  # noqa: E402
from leasecron.kernel import (  # noqa: E402
    HttpDispatcher,
    ScheduleExistsError,
    ScheduleManager,
    Scheduler,
    SimClock,
    StoreError,
    SystemClock,
)
from store_builders import (  # noqa: E402
    LEASE,
    check_lease_rounds,
    claim_one,
    closes_stores,
    finish_plan,
    lease_state,
    pending,
    running,
    sched,
    start_plan,
)
from store_builders import lease_rounds as shared_lease_rounds  # noqa: E402
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


pg_test = closes_stores


def raw(store: PostgresStore, sql: str, *params) -> list:
    """A plain connection behind the store's back ('another process'); {S}, {R}, {M} name the
    store's tables."""
    sql = sql.format(S=store.schedules_table, R=store.runs_table, M=store.meta_table)
    with psycopg.connect(store.dsn, autocommit=True) as conn:
        cur = conn.execute(sql, params or None)
        return cur.fetchall() if cur.description else []


# -- Postgres only: concurrent claimers ----------------------------------------------------------


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


# -- Postgres only: set-based rounds -------------------------------------------------------------


async def lease_rounds(store: PostgresStore, batched: bool) -> tuple:
    """store_builders.lease_rounds on this store's schema."""

    def tables() -> tuple[list[dict], list[dict]]:
        with psycopg.connect(store.dsn, row_factory=dict_row) as conn:
            schedules = conn.execute(
                f"SELECT * FROM {store.schedules_table} ORDER BY id"
            ).fetchall()
            runs = conn.execute(f"SELECT * FROM {store.runs_table} ORDER BY id").fetchall()
        for row in runs:
            row.pop("seq")  # the identity's order of insertion, not state
        return schedules, runs

    return await shared_lease_rounds(store, batched, lambda sql: raw(store, sql), tables)


@pg_test
async def test_set_based_rounds_end_exactly_as_the_per_row_statements(open_store):
    """The same batch, whole (one statement per round and kind) and one row per call (the per-row
    statements), on two schemas: the same answers and the same rows, column for column."""
    batched = await lease_rounds(open_store(), batched=True)
    per_row = await lease_rounds(open_store(schema=f"t_{secrets.token_hex(4)}"), batched=False)
    check_lease_rounds(batched)
    assert batched == per_row


# -- Postgres only: schema, names, errors --------------------------------------------------------


@pg_test
async def test_fresh_schema_gets_version_4_and_its_tables(open_store):
    store = open_store()
    assert await store.schema_version() == 4
    assert postgres_sql.SCHEMA_VERSION == 4
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
        "agno_sessions",
        "agno_workflow_runs",
        "agno_workflow_runs_by_session",
        "agno_traces",
    }


@pg_test
async def test_reopen_keeps_rows_and_only_applies_new_migrations(open_store, monkeypatch):
    first = open_store()
    await first.create_schedule(sched("a", T0))
    await first.add_pending_run(pending("p", "a", T0), T0)
    await first.close()
    # Were migrations 1 to 4 re-run on reopen, these scripts would fail.
    monkeypatch.setattr(postgres_sql, "MIGRATIONS", ["THIS IS NOT SQL"] * 4)
    again = open_store()
    assert await again.schema_version() == 4
    assert [s.id for s in await again.list_schedules()] == ["a"]
    await again.close()
    monkeypatch.setattr(
        postgres_sql,
        "MIGRATIONS",
        [*["THIS IS NOT SQL"] * 4, "ALTER TABLE {S} ADD COLUMN note TEXT"],
    )
    upgraded = open_store()
    assert await upgraded.schema_version() == 5
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
async def test_a_version_3_schema_gains_owners_and_keeps_its_rows(open_store, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(postgres_sql, "MIGRATIONS", postgres_sql.MIGRATIONS[:3])
        old = open_store()
        await old.create_schedule(sched("a", T0))
        assert await old.schema_version() == 3
        await old.close()
    new = open_store()
    assert await new.schema_version() == 4
    cols = raw(
        new,
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s"
        " AND table_name = 'agno_schedules' ORDER BY ordinal_position",
        new.schema,
    )
    assert cols[-1][0] == "user_id"
    (index,) = raw(
        new,
        "SELECT indexdef FROM pg_indexes WHERE schemaname = %s"
        " AND indexname = 'agno_schedules_by_user'",
        new.schema,
    )
    assert 'name COLLATE "C"' in index[0]
    assert (await new.get_schedule("a")).user_id is None
    await new.create_schedule(sched("b", T0, user_id="ann"))
    assert [s.id for s in await new.list_schedules(user_id="ann")] == ["b"]
    assert await new.count_schedules() == 2


@pg_test
async def test_schema_from_a_newer_version_is_refused(open_store):
    store = open_store()
    await store.create_schedule(sched("a", T0))
    raw(store, "UPDATE {M} SET value = '7' WHERE key = 'schema_version'")
    with pytest.raises(RuntimeError, match=r"schema version 7 is newer than this leasecron \(4\)"):
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
    assert await mine.schema_version() == await theirs.schema_version() == 4
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
    params = {"now": T0, "replica": "r", "lease_until": T0 + LEASE, "limit": 10, "orphans": 2}
    with psycopg.connect(store.dsn, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")  # 50 rows: the planner would rather scan
        for name in ("next_due", "claim"):
            conn.execute("BEGIN")
            plan = conn.execute("EXPLAIN " + store._sql[name], params).fetchall()
            conn.execute("ROLLBACK")
            text = "\n".join(r[0] for r in plan)
            assert "agno_schedules_due" in text, (name, text)
            if name == "claim":  # orphans are found from their own index
                assert "agno_schedules_orphaned" in text, text


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
