"""Builders for the store tests (the contract suites tests/test_store_contract.py and
tests/test_workflow_store.py, and the SQLite-only and Postgres-only suites): rows, plans and the
lease state of a schedule, so every case is stated the same way; and the `Stores` factory behind
the contract suites' `open_store` fixture, parametrised over both stores."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
from collections.abc import Iterator
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
