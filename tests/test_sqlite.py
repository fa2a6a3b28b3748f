"""What only SqliteStore has, at the store level: its worker thread, a file another process holds
locked, the partial due index and the workflow reads' indexes in EXPLAIN QUERY PLAN, file
migrations and table prefixes. The store contract it shares with PostgresStore (claim, fencing,
start, finish, manager writes, the idle poll, runs; workflow persistence) is
tests/test_store_contract.py and tests/test_workflow_store.py, run against both stores."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from leasecron.kernel import (
    Span,
    SqliteStore,
    StoreError,
    writes,
)
from leasecron.kernel.sqlite import rounds as sqlite_rounds
from leasecron.kernel.sqlite import sql as sqlite_sql
from leasecron.kernel.sqlite import store as sqlite_mod
from store_builders import (
    LEASE,
    check_lease_rounds,
    lease_rounds,
    pending,
    sched,
)
from support import T0


@pytest.fixture
def open_store(tmp_path):
    """Open SqliteStores on files under tmp_path (inline unless told); all closed at teardown."""
    opened: list[SqliteStore] = []

    def factory(name: str = "s.db", **kwargs) -> SqliteStore:
        kwargs.setdefault("inline", True)
        store = SqliteStore(str(tmp_path / name), **kwargs)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        asyncio.run(store.close())


def raw(store: SqliteStore) -> sqlite3.Connection:
    """A second, plain connection on the store's file: 'another process' behind its back."""
    conn = sqlite3.connect(store.path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


# -- the worker thread -----------------------------------------------------------------------


# -- the idle poll ---------------------------------------------------------------------------


def _plan(store: SqliteStore, name: str) -> list[str]:
    params = {"now": T0, "replica": "r", "lease_until": T0 + LEASE, "limit": 10, "orphans": 2}
    rows = store._connect().execute("EXPLAIN QUERY PLAN " + store._sql[name], params).fetchall()
    return [row["detail"] for row in rows]


@pytest.mark.parametrize("prefix", ["agno_", "myapp_"])
async def test_idle_poll_and_claim_use_the_partial_due_index(open_store, prefix):
    store = open_store(prefix=prefix)
    for i in range(50):
        await store.create_schedule(sched(f"s{i}", T0 + i))
    raw(store).execute("ANALYZE")
    for name in ("next_due", "claim"):
        plan = _plan(store, name)
        assert any(f"USING INDEX {prefix}schedules_due" in d for d in plan), (name, plan)
        assert not any(d.startswith(f"SCAN {prefix}schedules") for d in plan), (name, plan)
    # orphans are found from their own index, not by walking every due row
    plan = _plan(store, "claim")
    assert any(f"USING INDEX {prefix}schedules_orphaned" in d for d in plan), plan


async def test_workflow_reads_are_index_lookups_with_no_sort(open_store):
    store = open_store()
    conn = store._connect()
    plans = {}
    for name, args in [
        ("get_run", {"run_id": "r"}),
        ("get_session", {"session_id": "s"}),
        ("session_runs", {"session_id": "s"}),
        ("trace", {"trace_id": "r"}),
    ]:
        sql = "EXPLAIN QUERY PLAN " + store._sessions_sql[name]
        plans[name] = [row["detail"] for row in conn.execute(sql, args)]
    for name, plan in plans.items():
        assert len(plan) == 1 and plan[0].startswith("SEARCH "), (name, plan)
    # a session's runs come in index order: no temporary sort of a long session's runs
    assert "USING INDEX agno_workflow_runs_by_session" in plans["session_runs"][0]
    assert "USING PRIMARY KEY (trace_id=?)" in plans["trace"][0]


# -- schema ----------------------------------------------------------------------------------


def _objects(path: str) -> set[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        ).fetchall()
    finally:
        conn.close()
    return set(rows)


async def test_fresh_file_gets_schema_version_4(open_store):
    store = open_store()
    assert await store.schema_version() == 4
    assert sqlite_mod.SCHEMA_VERSION == 4
    assert _objects(store.path) >= {
        ("table", "agno_schedules"),
        ("table", "agno_schedule_runs"),
        ("table", "agno_leasecron_meta"),
        ("index", "agno_schedules_due"),
        ("table", "agno_sessions"),
        ("table", "agno_workflow_runs"),
        ("index", "agno_workflow_runs_by_session"),
        ("table", "agno_traces"),
    }
    mode = store._connect().execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


async def test_reopen_keeps_rows_and_only_applies_new_migrations(open_store, monkeypatch):
    first = open_store("m.db")
    await first.create_schedule(sched("a", T0))
    await first.add_pending_run(pending("p", "a", T0), T0)
    await first.close()
    # Were migrations 1 to 4 re-run on reopen, these scripts would fail.
    monkeypatch.setattr(sqlite_mod, "MIGRATIONS", ["THIS IS NOT SQL"] * 4)
    again = open_store("m.db")
    assert await again.schema_version() == 4
    assert [s.id for s in await again.list_schedules()] == ["a"]
    await again.close()
    # A newer leasecron with a fifth migration applies just that one.
    monkeypatch.setattr(
        sqlite_mod, "MIGRATIONS", [*["THIS IS NOT SQL"] * 4, "ALTER TABLE {S} ADD COLUMN note TEXT"]
    )
    upgraded = open_store("m.db")
    assert await upgraded.schema_version() == 5
    cols = [r["name"] for r in upgraded._connect().execute("PRAGMA table_info(agno_schedules)")]
    assert cols[-1] == "note"
    assert [r.id for r in await upgraded.list_runs("a")] == ["p"]
    assert (await upgraded.get_schedule("a")).due_at == T0


async def test_a_version_3_file_gains_owners_and_keeps_its_rows(open_store, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(sqlite_mod, "MIGRATIONS", sqlite_mod.MIGRATIONS[:3])
        old = open_store("v3.db")
        assert await old.schema_version() == 3
        await old.create_schedule(sched("a", T0))
        await old.close()
    # read-only, nothing is migrated: the old rows read as nobody's
    readonly = open_store("v3.db", readonly=True)
    schedule = await readonly.get_schedule("a")
    assert (await readonly.schema_version(), schedule.user_id) == (3, None)
    assert [s.id for s in await readonly.list_schedules()] == ["a"]
    await readonly.close()
    new = open_store("v3.db")
    assert await new.schema_version() == 4
    cols = [r["name"] for r in new._connect().execute("PRAGMA table_info(agno_schedules)")]
    assert cols[-1] == "user_id"
    assert ("index", "agno_schedules_by_user") in _objects(new.path)
    assert (await new.get_schedule("a")).user_id is None
    await new.create_schedule(sched("b", T0, user_id="ann"))
    assert [s.id for s in await new.list_schedules(user_id="ann")] == ["b"]
    assert await new.count_schedules() == 2


def test_one_users_list_reads_the_owner_index():
    """The WHERE user_id = ? ORDER BY name of a user's page is a search of the partial index,
    with no sort: a user's page costs the same however many schedules others have."""
    conn = sqlite3.connect(":memory:")
    sqlite_mod.migrate(conn, "agno_", ":memory:", sqlite_mod.MIGRATIONS)
    plan = [
        row[3]
        for row in conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM agno_schedules WHERE user_id = ? ORDER BY name"
            " LIMIT 10 OFFSET 0",
            ("ann",),
        )
    ]
    conn.close()
    assert plan == ["SEARCH agno_schedules USING INDEX agno_schedules_by_user (user_id=?)"]


async def test_custom_prefix_creates_its_own_tables(open_store):
    mine = open_store("p.db", prefix="myapp_")
    theirs = open_store("p.db")
    assert (mine.schedules_table, mine.runs_table) == ("myapp_schedules", "myapp_schedule_runs")
    assert _objects(mine.path) >= {
        ("table", "myapp_schedules"),
        ("table", "myapp_schedule_runs"),
        ("table", "myapp_leasecron_meta"),
        ("index", "myapp_schedules_due"),
        ("table", "myapp_sessions"),
        ("table", "myapp_workflow_runs"),
        ("table", "myapp_traces"),
        ("table", "agno_schedules"),
    }
    await mine.create_schedule(sched("a", T0))
    assert [s.id for s in await mine.list_schedules()] == ["a"]
    assert await theirs.list_schedules() == []
    assert await theirs.next_due() is None
    assert await mine.schema_version() == await theirs.schema_version() == 4


async def test_file_from_a_newer_version_is_refused(open_store, tmp_path):
    store = open_store("new.db")
    await store.create_schedule(sched("a", T0))
    raw(store).execute("UPDATE agno_leasecron_meta SET value = '7' WHERE key = 'schema_version'")
    with pytest.raises(RuntimeError, match=r"schema version 7 is newer than this leasecron \(4\)"):
        SqliteStore(str(tmp_path / "new.db"), inline=True)
    # the refused open changed nothing
    assert raw(store).execute("SELECT value FROM agno_leasecron_meta").fetchone()[0] == "7"
    assert [s.id for s in await store.list_schedules()] == ["a"]


@pytest.mark.parametrize("prefix", ["my-app_", "x; DROP TABLE y;", "a b_", ""])
def test_bad_prefix_is_refused_naming_prefix(tmp_path, prefix):
    with pytest.raises(ValueError, match=r"^prefix: "):
        SqliteStore(str(tmp_path / "bad.db"), prefix=prefix, inline=True)
    assert not (tmp_path / "bad.db").exists()


def test_prefix_starting_with_a_digit_is_refused_naming_prefix(tmp_path):
    with pytest.raises(ValueError, match=r"^prefix: "):
        SqliteStore(str(tmp_path / "digit.db"), prefix="1app_", inline=True)


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("inline", [True, False])
async def test_a_locked_file_fails_the_write_and_rolls_it_back(open_store, inline):
    store = open_store("busy.db", inline=inline, busy_timeout=0.05)
    await store.create_schedule(sched("a", T0))
    await store.add_pending_run(pending("p", "a", T0 + 9), T0)
    blocker = raw(store)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(StoreError) as err:
            await store.update_schedule("a", {"enabled": False}, T0 + 1)
        assert err.value.operation == "update_schedule"
        assert "database is locked" in str(err.value)
        with pytest.raises(StoreError) as err:
            await store.claim("r1", T0, LEASE, 10)
        assert err.value.operation == "claim"
        with pytest.raises(StoreError) as err:
            await store.finish("r1", T0, [])
        assert err.value.operation == "finish"
    finally:
        blocker.execute("ROLLBACK")
    # nothing half-applied, and the store works again once the lock is gone
    s = await store.get_schedule("a")
    assert (s.enabled, s.due_at, s.locked_by) == (True, T0, None)
    assert (await store.get_run("p")).status == "pending"
    assert [c.schedule.id for c in await store.claim("r1", T0, LEASE, 10)] == ["a"]


async def test_concurrent_span_saves_and_run_id_writes_all_land(tmp_path):
    # A write that handed its cursor back to the event loop had it freed there, resetting the
    # cached statement while the worker thread bound it for the next call: under concurrent
    # calls some failed with "bad parameter or other API misuse".
    store = SqliteStore(str(tmp_path / "spans.db"))
    try:

        async def save(i: int) -> None:
            await store.save_spans(
                [Span(f"t{i}", f"{j:016x}", None, "n", "step", 1.0, 2.0, "ok") for j in range(3)]
            )
            await store.set_run_ids("r", f"run{i}", f"agentos-{i}", None)

        results = await asyncio.gather(*(save(i) for i in range(1500)), return_exceptions=True)
        assert [r for r in results if r is not None] == []
        assert len(await store.get_trace("t1499")) == 3
    finally:
        await store.close()


# -- set-based rounds --------------------------------------------------------------------------


async def sqlite_lease_rounds(store: SqliteStore, batched: bool) -> tuple:
    """store_builders.lease_rounds on this store's file."""

    def run_raw(sql: str) -> None:
        raw(store).execute(sql.format(S=store.schedules_table, R=store.runs_table))

    def tables() -> tuple[list[dict], list[dict]]:
        conn = raw(store)
        schedules = conn.execute(f"SELECT * FROM {store.schedules_table} ORDER BY id")
        runs = conn.execute(f"SELECT * FROM {store.runs_table} ORDER BY id")
        return [dict(row) for row in schedules], [dict(row) for row in runs]

    return await lease_rounds(store, batched, run_raw, tables)


@pytest.mark.parametrize("inline", [True, False])
async def test_set_based_rounds_end_exactly_as_the_per_row_statements(open_store, inline):
    """The same batch, whole (one statement per round and kind) and one row per call (the per-row
    statements), on two files: the same answers and the same rows, column for column."""
    whole, one_by_one = open_store("whole.db", inline=inline), open_store("rows.db", inline=inline)
    batched = await sqlite_lease_rounds(whole, batched=True)
    per_row = await sqlite_lease_rounds(one_by_one, batched=False)
    check_lease_rounds(batched)
    assert batched == per_row
    # Every set-based statement ran on the whole batch (the scenario has two or more rows at each
    # kind); one row per call, only a plan's own two new run rows make a set.
    assert {name for name, _ in whole._rounds.texts} == set(sqlite_sql.ROUND_SQL)
    assert set(one_by_one._rounds.texts) == {("insert_run", 2)}


async def test_a_round_larger_than_one_statement_is_split(open_store, monkeypatch):
    """A round past the rows one statement may bind goes as several statements, each fenced."""
    monkeypatch.setattr(sqlite_rounds, "ROUND_ROWS_MAX", 3)
    store = open_store()
    for i in range(8):
        await store.create_schedule(sched(f"s{i}", T0 - 60))
    claims = {c.schedule.id: c for c in await store.claim("r1", T0, LEASE, 100)}
    raw(store).execute(
        f"UPDATE {store.schedules_table} SET lease_version = lease_version + 1 WHERE id = 's6'"
    )
    leases = [(sid, c.schedule.lease_version) for sid, c in claims.items()]
    assert await store.heartbeat("r1", T0 + 5, LEASE, leases) == {"s6"}
    assert {rows for name, rows in store._rounds.texts} == {3, 2}
    for sid in claims:
        due = (await store.get_schedule(sid)).due_at
        assert due == (T0 + LEASE if sid == "s6" else T0 + 5 + LEASE), sid


async def test_a_round_naming_one_row_twice_runs_the_per_row_statements(open_store):
    """UPDATE … FROM applies one of two source rows for one target row: such a round is left to
    the per-row statements, which apply both in order."""
    store = open_store()
    await store.create_schedule(sched("a", T0 - 60))
    claim = (await store.claim("r1", T0, LEASE, 100))[0]
    fence = {"id": "a", "replica": "r1", "version": claim.schedule.lease_version}
    steps = [
        writes.Count("heartbeat", {**fence, "lease_until": T0 + 40}),
        writes.Count("heartbeat", {**fence, "lease_until": T0 + 50}),
    ]
    conn = store._connect()

    def round_of(c):
        return store._rounds.run(c, steps, lambda step: store._answer(c, step))

    assert store._tx(round_of) == [1, 1]
    assert store._rounds.texts == {}
    assert conn.execute(f"SELECT due_at FROM {store.schedules_table}").fetchone()[0] == T0 + 50


def test_each_set_based_statement_is_a_per_row_one_and_binds_its_declared_columns():
    """A round's statement stands for the per-row statement of its name, and its VALUES rows
    are bound in the order its `v(...)` (or INSERT column list) names them."""
    for name, (columns, sql) in sqlite_sql.ROUND_SQL.items():
        assert name in sqlite_sql.LEASE_SQL, name
        names = sql.split("(", 1)[1].split(")", 1)[0]
        assert names.replace(",", " ").split() == columns.split(), name
