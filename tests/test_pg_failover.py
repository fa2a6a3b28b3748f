"""Connection loss and server restart mid-run, on a real PostgreSQL server: every slot still fires
exactly once. Two replicas (each its own pool) fire 300 one-offs due over three seconds while the
server's connections are cut, or while the server itself restarts. Real time; waits are for
events with deadlines."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections import Counter

import pytest
from pgserver import ADMIN_DSN, fresh_database, require_server

require_server()

import psycopg  # noqa: E402

from leasecron.adapters.postgres import PostgresStore  # noqa: E402
from leasecron.kernel import HttpDispatcher, ScheduleManager, Scheduler, SystemClock  # noqa: E402
from support import Target, wind_down  # noqa: E402

pytestmark = pytest.mark.postgres

SLOTS = 300


@pytest.fixture
def pg_dsn():
    with fresh_database("leasecron_failover") as dsn:
        yield dsn


def _cut_connections(dsn: str) -> int:
    """Terminate every server process of the test's database: what a network cut or a failover
    does to the clients' connections."""
    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        ).fetchall()
    return len(rows)


def _restart_command() -> list[str] | None:
    """How to restart the local server, where this machine can (Debian's pg_ctlcluster, run as
    root, the server on localhost): None elsewhere."""
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        return None
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_DSN)
    if info.get("host", "localhost") not in ("localhost", "127.0.0.1", "::1"):
        return None
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        version = admin.execute("SHOW server_version_num").fetchone()[0]
        port = admin.execute("SHOW port").fetchone()[0]
    clusters = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout
    for line in clusters.splitlines():
        ver, name, cport = line.split()[:3]
        if ver == str(int(version) // 10000) and cport == str(port):
            return ["pg_ctlcluster", "--skip-systemctl-redirect", ver, name, "restart"]
    return None


async def _run_through(dsn: str, fault) -> tuple[list, list]:
    real = SystemClock()
    target = Target(real)
    stores = [PostgresStore(dsn, max_size=3, connect_timeout=5) for _ in range(3)]
    manager = ScheduleManager(stores[2])
    dispatcher = HttpDispatcher("http://target", transport=target.transport(), clock=real)
    errors: list[str] = []  # store errors the replicas saw: proof the fault reached them
    replicas = [
        Scheduler(
            stores[i],
            dispatcher,
            replica_id=f"r{i}",
            poll_interval=0.2,
            lease_seconds=15,
            on_event=lambda name, data: (
                errors.append(data["operation"]) if name == "store_error" else None
            ),
        )
        for i in range(2)
    ]
    t0 = time.time()
    ids = [
        (await manager.create(f"once{i}", run_at=t0 + 1.0 + 3.0 * i / SLOTS, endpoint="/h")).id
        for i in range(SLOTS)
    ]
    try:
        for replica in replicas:
            await replica.start()
        deadline = time.monotonic() + 30
        while len(target.requests) < SLOTS // 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert 0 < len(target.requests) < SLOTS, "the fault must strike mid-run"
        await fault()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                runs = await stores[2].list_runs(None, 10 * SLOTS)
            except Exception:  # the server may still be coming back
                runs = []
            if sum(r.status == "success" for r in runs) >= SLOTS:
                break
            await asyncio.sleep(0.1)
    finally:
        runs = await wind_down(replicas, dispatcher, stores, runs_from=stores[2])
    assert {r.schedule_id for r in runs} == set(ids)
    assert errors, "the replicas never noticed the fault"
    return target.requests, runs


def _exactly_once(requests, runs) -> None:
    received = Counter(r.key for r in requests)
    assert len(received) == SLOTS  # none lost
    assert [k for k, n in received.items() if n > 1] == []  # none sent twice
    successes = Counter(r.idempotency_key for r in runs if r.status == "success")
    assert set(successes) == set(received) and set(successes.values()) == {1}
    assert {r.status for r in runs} == {"success"}


async def test_cut_connections_mid_run_lose_nothing_and_double_nothing(pg_dsn):
    async def cut_three_times():
        cut = 0
        for _ in range(3):
            cut += await asyncio.to_thread(_cut_connections, pg_dsn)
            await asyncio.sleep(0.3)
        assert cut >= 3  # the replicas' pools and LISTEN connections were really cut

    requests, runs = await _run_through(pg_dsn, cut_three_times)
    _exactly_once(requests, runs)


RESTART = _restart_command() if not os.environ.get("LEASECRON_PG_NO_RESTART") else None


@pytest.mark.skipif(RESTART is None, reason="cannot restart the server from here")
async def test_server_restart_mid_run_loses_nothing_and_doubles_nothing(pg_dsn):
    async def restart():
        done = await asyncio.to_thread(subprocess.run, RESTART, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    requests, runs = await _run_through(pg_dsn, restart)
    _exactly_once(requests, runs)
