"""Builders for the store tests (the contract suites tests/test_store_contract.py and
tests/test_workflow_store.py, and the SQLite-only and Postgres-only suites): rows, plans and the
lease state of a schedule, so every case is stated the same way; and the `Stores` factory behind
the contract suites' `open_store` fixture, parametrised over both stores."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from leasecron.kernel import (
    Claim,
    FinishPlan,
    Schedule,
    ScheduleRun,
    SqliteStore,
    StartPlan,
    Store,
)
from support import T0

LEASE = 30.0


def sched(sid: str, next_run_at: float | None, **kwargs) -> Schedule:
    kwargs.setdefault("interval_seconds", 60.0)
    return Schedule(
        id=sid,
        name=sid,
        endpoint=f"/hooks/{sid}",
        next_run_at=next_run_at,
        created_at=T0 - 3600,
        updated_at=T0 - 3600,
        **kwargs,
    )


def pending(rid: str, sid: str, due: float, created: float = T0) -> ScheduleRun:
    return ScheduleRun(
        id=rid,
        schedule_id=sid,
        attempt=1,
        scheduled_for=None,
        trigger="manual",
        status="pending",
        idempotency_key=f"{sid}@manual:{rid}",
        due_at=due,
        created_at=created,
    )


def running(rid: str, claim: Claim, replica: str, now: float, **kwargs) -> ScheduleRun:
    kwargs.setdefault("status", "running")
    return ScheduleRun(
        id=rid,
        schedule_id=claim.schedule.id,
        attempt=kwargs.pop("attempt", 1),
        scheduled_for=claim.schedule.next_run_at,
        trigger="schedule",
        idempotency_key=kwargs.pop("key", f"{claim.schedule.id}@{rid}"),
        replica=replica,
        lease_version=claim.schedule.lease_version,
        triggered_at=now,
        created_at=now,
        **kwargs,
    )


def start_plan(claim: Claim, next_run_at: float | None, **kwargs) -> StartPlan:
    return StartPlan(
        claim.schedule.id,
        claim.schedule.lease_version,
        claim.timing_version,
        next_run_at=next_run_at,
        **kwargs,
    )


def finish_plan(claim: Claim, run_row_id: str, now: float, status="success", **kwargs):
    return FinishPlan(
        schedule_id=claim.schedule.id,
        lease_version=claim.schedule.lease_version,
        timing_version=claim.timing_version,
        run_row_id=run_row_id,
        status=status,
        status_code=kwargs.pop("status_code", 200 if status == "success" else 500),
        run_id=kwargs.pop("run_id", None),
        session_id=kwargs.pop("session_id", None),
        error=kwargs.pop("error", None),
        completed_at=now,
        duration_ms=kwargs.pop("duration_ms", 1000.0),
        success=status == "success",
        **kwargs,
    )


async def claim_one(store: Store, replica: str, now: float, lease: float = LEASE) -> Claim:
    claims = await store.claim(replica, now, lease, 100)
    assert len(claims) == 1, [c.schedule.id for c in claims]
    return claims[0]


async def lease_state(store: Store, sid: str) -> tuple:
    s = await store.get_schedule(sid)
    assert s is not None
    return (s.locked_by, s.locked_at, s.lease_expires_at, s.due_at, s.lease_version)


async def start_each_running(store: Store, claims: dict[str, Claim], next_run_at: float | None):
    """Start one running attempt "<id>-1" under each claim (replica r1, at T0)."""
    for sid, claim in claims.items():
        run = running(f"{sid}-1", claim, "r1", T0)
        await store.start("r1", T0, LEASE, [start_plan(claim, next_run_at, insert_runs=[run])])


async def lease_rounds(
    store: Store,
    batched: bool,
    raw: Callable[[str], object],
    tables: Callable[[], tuple[list[dict], list[dict]]],
) -> tuple:
    """One batch through start, heartbeat and finish, with every branch of the flows in it: plain
    starts, a pending trigger started and one cancelled, a start fenced out on timing and one on
    a lease taken over, a heartbeat of a lost lease and of a deleted row, outcomes with a retry,
    with overlap rows, on a deleted row and on a lease taken over. `batched`: each call gets the
    whole batch (the set-based rounds); otherwise one plan or lease per call (the per-row
    statements). `raw` runs a statement behind the store's back ({S}, {R}: its tables); `tables`
    reads every schedule row and run row, each ordered by id, as dicts. Returns every answer and
    the tables as they end."""

    def each(items: list) -> list[list]:
        return [items] if batched else [[item] for item in items]

    sids = list("abcdefghijkl")
    for sid in sids:
        await store.create_schedule(sched(sid, T0 - 60))
    await store.add_pending_run(pending("p-b", "b", T0 - 5), T0 - 10)
    await store.add_pending_run(pending("p-e", "e", T0 - 5), T0 - 10)
    claims = {c.schedule.id: c for c in await store.claim("r1", T0, LEASE, 100)}
    assert sorted(claims) == sids
    await store.update_schedule("c", {"next_run_at": T0 + 5}, T0 + 1)  # timing changed
    raw("UPDATE {S} SET locked_by = 'r2', lease_version = lease_version + 1 WHERE id = 'd'")
    raw("UPDATE {R} SET status = 'cancelled' WHERE id = 'p-e'")
    skipped = running("f-skip", claims["f"], "r1", T0, status="skipped")
    plans = [
        start_plan(claims["a"], T0 + 60, insert_runs=[running("a-1", claims["a"], "r1", T0)]),
        start_plan(claims["b"], T0 + 600, start_pending=["p-b"]),
        start_plan(claims["c"], T0 + 60, insert_runs=[running("c-1", claims["c"], "r1", T0)]),
        start_plan(claims["d"], T0 + 60, insert_runs=[running("d-1", claims["d"], "r1", T0)]),
        start_plan(claims["e"], T0 + 60, start_pending=["p-e"]),
        start_plan(
            claims["f"],
            T0 + 60,
            insert_runs=[skipped, running("f-1", claims["f"], "r1", T0)],
        ),
        *(
            start_plan(
                claims[sid], T0 + 60, insert_runs=[running(f"{sid}-1", claims[sid], "r1", T0)]
            )
            for sid in "ghijkl"
        ),
    ]
    started = [r for part in each(plans) for r in await store.start("r1", T0, LEASE, part)]
    await store.delete_schedule("h", T0 + 2)
    leases = [(sid, claims[sid].schedule.lease_version) for sid in "abdfh"]
    lost = set()
    for part in each(leases):
        lost |= await store.heartbeat("r1", T0 + 10, LEASE, part)
    raw("UPDATE {S} SET locked_by = 'r2', lease_version = lease_version + 1 WHERE id = 'g'")
    # i: leased again, to the same replica under a new version; j: disabled during its run
    raw("UPDATE {S} SET lease_version = lease_version + 1 WHERE id = 'i'")
    # l: both: taken over by another replica, then disabled
    raw("UPDATE {S} SET locked_by = 'r2', lease_version = lease_version + 1 WHERE id = 'l'")
    for sid in "jl":
        await store.update_schedule(sid, {"enabled": False}, T0 + 15)
    retry_b = pending("b-retry", "b", T0 + 80, created=T0 + 20)
    retry_g = pending("g-retry", "g", T0 + 90, created=T0 + 20)
    retry_i = pending("i-retry", "i", T0 + 95, created=T0 + 20)
    outcomes = [
        finish_plan(claims["a"], "a-1", T0 + 20, output={"n": 1}),
        finish_plan(claims["b"], "p-b", T0 + 20, status="failed", retry=retry_b),
        finish_plan(
            claims["f"],
            "f-1",
            T0 + 20,
            next_run_at=T0 + 120,
            advance_slot=True,
            insert_runs=[running("f-over", claims["f"], "r1", T0 + 20, status="skipped")],
        ),
        finish_plan(claims["g"], "g-1", T0 + 20, status="failed", retry=retry_g),
        finish_plan(claims["h"], "h-1", T0 + 20),
        finish_plan(claims["i"], "i-1", T0 + 20, status="failed", retry=retry_i),
        finish_plan(
            claims["j"],
            "j-1",
            T0 + 20,
            status="failed",
            retry=pending("j-retry", "j", T0 + 95, created=T0 + 20),
            next_run_at=T0 + 120,
            advance_slot=True,
        ),
        finish_plan(
            claims["k"],
            "k-1",
            T0 + 20,
            next_run_at=T0 + 180,
            advance_slot=True,
            insert_runs=[running("k-over", claims["k"], "r1", T0 + 20, status="skipped")],
        ),
        finish_plan(
            claims["l"],
            "l-1",
            T0 + 20,
            status="failed",
            retry=pending("l-retry", "l", T0 + 95, created=T0 + 20),
        ),
    ]
    recorded = [r for part in each(outcomes) for r in await store.finish("r1", T0 + 20, part)]
    schedules, runs = tables()
    return started, lost, recorded, schedules, runs


def check_lease_rounds(result: tuple) -> None:
    """What lease_rounds must end with, on any store and either way."""
    started, lost, recorded, schedules, runs = result
    assert started[:5] == [{"a-1"}, {"p-b"}, None, None, set()]
    assert started[5:] == [{f"{sid}-1"} for sid in "fghijkl"]
    assert lost == {"d"}  # h was deleted, not lost
    assert recorded == [True] * 9
    by_id = {row["id"]: row for row in schedules}
    assert by_id["b"]["due_at"] == T0 + 80 and by_id["b"]["locked_by"] is None  # its retry
    assert by_id["f"]["next_run_at"] == T0 + 120  # advanced past the overlap
    assert by_id["g"]["locked_by"] == "r2"  # the new holder keeps it
    assert by_id["i"]["locked_by"] == "r1"  # under its new version, not released by the old
    assert by_id["i"]["due_at"] == by_id["i"]["lease_expires_at"]
    assert by_id["j"]["next_run_at"] != T0 + 120 and by_id["j"]["due_at"] is None  # disabled
    assert by_id["k"]["next_run_at"] == T0 + 180
    statuses = {row["id"]: row["status"] for row in runs}
    assert statuses["g-retry"] == statuses["i-retry"] == "pending"
    assert statuses["p-e"] == "cancelled"
    assert "j-retry" not in statuses and "l-retry" not in statuses  # disabled: no retry
    assert "c-1" not in statuses and "d-1" not in statuses


def closes_stores(fn):
    """For tests taking an `open_store` factory with close_all(): close every store the test
    opened on the test's own loop (a psycopg pool belongs to its loop), whatever the outcome."""

    @functools.wraps(fn)
    async def wrapper(open_store, *args, **kwargs):
        try:
            await fn(open_store, *args, **kwargs)
        finally:
            await open_store.close_all()

    return wrapper


# -- the stores a contract suite runs against ---------------------------------------------------

STORES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


class Stores:
    """Opens stores of one kind on one database. Every store it opened must be closed inside the
    test's own event loop (a psycopg pool belongs to the loop it was opened on): decorate the
    test with `closes_stores`."""

    def __init__(self, kind: str, *, path: Path | None = None, dsn: str | None = None):
        self.kind = kind
        self.path = path
        self.dsn = dsn
        self.schema = f"t_{secrets.token_hex(4)}"
        self.opened: list[Store] = []

    def __call__(self, **kwargs) -> Store:
        if self.kind == "sqlite":
            kwargs.setdefault("inline", True)
            store = SqliteStore(str(self.path), **kwargs)
        else:
            from leasecron.adapters.postgres import PostgresStore

            # Postgres statements always run on the pool: there is no inline mode to choose.
            kwargs.pop("inline", None)
            kwargs.setdefault("schema", self.schema)
            # The tests pass explicit `now` values; the database clock has its own tests.
            kwargs.setdefault("time_authority", "local")
            store = PostgresStore(self.dsn, **kwargs)
        self.opened.append(store)
        return store

    async def close_all(self) -> None:
        while self.opened:
            await self.opened.pop().close()


@contextlib.contextmanager
def stores_for(request, path: Path) -> Iterator[Stores]:
    """The body of an `open_store` fixture parametrised over STORES: a Stores factory for the
    param's kind (SQLite: the file `path`; Postgres: the module's `pg_dsn` fixture, a fresh
    schema per test), and a failure if the test left a store open."""
    if request.param == "postgres":
        import pgserver  # only here: the SQLite suites run without a server to probe

        # Per param rather than pgserver.require_server() at module level, so that the SQLite
        # half runs whether or not there is a server.
        if pgserver.UNAVAILABLE:
            if pgserver.REQUIRED:
                pytest.fail(f"LEASECRON_PG_REQUIRED=1 but {pgserver.UNAVAILABLE}", pytrace=False)
            pytest.skip(pgserver.UNAVAILABLE)
        stores = Stores("postgres", dsn=request.getfixturevalue("pg_dsn"))
    else:
        stores = Stores("sqlite", path=path)
    yield stores
    # Only the test's own loop can close a Postgres pool cleanly; by now that loop is gone.
    if stores.opened:
        left = len(stores.opened)
        if stores.kind == "sqlite":
            asyncio.run(stores.close_all())
        pytest.fail(f"{left} store(s) left open: decorate the test with @store_test", pytrace=False)
