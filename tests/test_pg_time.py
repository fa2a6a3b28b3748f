"""The database's clock as the time authority: replicas whose own clocks are a minute apart
neither fire early nor take a live lease, because each runs on an AlignedClock kept to the
server's. Real time (the server's clock is real), a few seconds per test; waits are for events
with deadlines, never fixed sleeps for an outcome."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from pgserver import fresh_database, require_server

require_server()

from leasecron.adapters.postgres import PostgresStore  # noqa: E402
from leasecron.kernel import (  # noqa: E402
    AlignedClock,
    HttpDispatcher,
    ScheduleManager,
    Scheduler,
    SystemClock,
)
from support import Target, wind_down  # noqa: E402

pytestmark = pytest.mark.postgres


class SkewedClock(SystemClock):
    """A host whose clock is `offset` seconds off."""

    def __init__(self, offset: float):
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset


@pytest.fixture(scope="module")
def pg_dsn():
    with fresh_database() as dsn:
        yield dsn


async def test_aligned_clock_reads_the_server_and_follows_a_stepped_host(pg_dsn):
    store = PostgresStore(pg_dsn, schema="t_align")
    try:
        host = SkewedClock(+60.0)
        clock = store.aligned_clock(host)
        assert isinstance(clock, AlignedClock) and store.aligned_clock(clock) is clock
        await clock.sync()
        assert abs(clock.now() - time.time()) < 0.05  # server and test share this host
        host.offset = -45.0  # the host's clock steps: the aligned clock runs on monotonic time
        assert abs(clock.now() - time.time()) < 0.05
        await store.next_due()  # and the poll's reading agrees
        assert abs(clock.now() - time.time()) < 0.05
        local = PostgresStore(pg_dsn, schema="t_align", time_authority="local")
        assert local.aligned_clock(host) is host
    finally:
        await store.close()


def test_time_authority_is_checked_by_name():
    with pytest.raises(ValueError, match=r"^time_authority: "):
        PostgresStore("postgresql://nowhere/x", time_authority="ntp")


async def _skewed_cluster(dsn: str, schema: str, authority: str):
    """Three replicas on hosts at -60, 0 and +60 s, each with its own store (pool), firing ten
    one-offs due 1-2 s from now and a triggered agent run that lasts 2.5 s under a 1.5 s lease,
    held by the -60 s host."""
    real = SystemClock()
    target = Target(real)
    target.durations["slow"] = 2.5
    stores = [PostgresStore(dsn, schema=schema, time_authority=authority) for _ in range(4)]
    manager = ScheduleManager(stores[3], clock=SkewedClock(0.0))
    dispatcher = HttpDispatcher(
        "http://target", transport=target.transport(), clock=real, poll_initial=0.2, poll_max=0.2
    )
    replicas = [
        Scheduler(
            stores[i],
            dispatcher,
            clock=SkewedClock(offset),
            replica_id=f"host{offset:+.0f}",
            poll_interval=0.1,
            lease_seconds=1.5,
        )
        for i, offset in enumerate((-60.0, 0.0, +60.0))
    ]
    t0 = time.time()
    for i in range(10):
        await manager.create(f"once{i}", run_at=t0 + 1.0 + i * 0.1, endpoint=f"/hooks/{i}")
    slow = await manager.create("slow", endpoint="/agents/slow/runs")
    # Triggered from the slow host and taken by it alone: the others start once its attempt is
    # in flight under its lease.
    await ScheduleManager(stores[3], clock=SkewedClock(-60.0)).trigger(slow.id)
    try:
        await replicas[0].start()
        deadline = time.monotonic() + 20
        while not target.requests and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert [r.path for r in target.requests] == ["/agents/slow/runs"]
        for replica in replicas[1:]:
            await replica.start()
        while time.monotonic() < deadline:
            runs = await stores[3].list_runs(slow.id)
            if len({r.key for r in target.requests}) == 11 and any(
                r.status == "success" for r in runs
            ):
                break
            await asyncio.sleep(0.05)
    finally:
        runs = await wind_down(replicas, dispatcher, stores, runs_from=stores[3])
    return target.requests, runs


def _early(requests) -> list:
    # X-Scheduled-For is the slot (empty for a trigger); the target stamps arrival with the real
    # clock (this host's, which is also the server's). Half a round trip plus the clock's
    # tolerance is the slack.
    return [r for r in requests if r.scheduled_for and r.at < float(r.scheduled_for) - 0.02]


async def test_replicas_a_minute_apart_fire_nothing_early_and_nothing_twice(pg_dsn):
    requests, runs = await _skewed_cluster(pg_dsn, "t_skew_db", "database")
    assert len({r.key for r in requests}) == 11
    assert not _early(requests)
    assert [k for k, n in Counter(r.key for r in requests).items() if n > 1] == []
    assert {r.status for r in runs} == {"success"}  # no lease taken from a live holder


async def test_without_the_database_clock_the_same_cluster_misfires(pg_dsn):
    # The control: on their own clocks, the +60 s host fires early and takes live leases (the
    # taker attaches to the agent run in flight rather than start it again, but the holder's
    # attempt is marked lost).
    requests, runs = await _skewed_cluster(pg_dsn, "t_skew_local", "local")
    assert _early(requests) and "lease_lost" in {r.status for r in runs}


async def test_host_clock_steps_mid_run_change_nothing(pg_dsn):
    # A holder at capacity (it does not poll) renews its lease while its host clock steps back a
    # minute, and an idle replica's host steps forward a minute: the aligned clocks run on
    # monotonic time, so neither a stale renewal nor an early claim happens.
    real = SystemClock()
    target = Target(real)
    target.durations["slow"] = 3.0
    stores = [PostgresStore(pg_dsn, schema="t_step") for _ in range(3)]
    dispatcher = HttpDispatcher(
        "http://target", transport=target.transport(), clock=real, poll_initial=0.2, poll_max=0.2
    )
    hosts = [SkewedClock(0.0), SkewedClock(0.0)]
    lost: list[str] = []
    replicas = [
        Scheduler(
            stores[i],
            dispatcher,
            clock=hosts[i],
            replica_id=name,
            poll_interval=0.1,
            lease_seconds=1.5,
            max_concurrent=1 if name == "holder" else 10,
            on_event=lambda event, data: (
                lost.append(data["replica"]) if event == "lease_lost" else None
            ),
        )
        for i, name in enumerate(("holder", "other"))
    ]
    manager = ScheduleManager(stores[2])
    slow = await manager.create("slow", endpoint="/agents/slow/runs")
    soon = await manager.create("soon", run_at=time.time() + 30, endpoint="/hooks/soon")
    await manager.trigger(slow.id)
    try:
        await replicas[0].start()
        deadline = time.monotonic() + 10
        while not target.requests and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await replicas[1].start()
        hosts[0].offset, hosts[1].offset = -60.0, +60.0
        while time.monotonic() < deadline:
            runs = await stores[2].list_runs(slow.id)
            if any(r.status == "success" for r in runs):
                break
            await asyncio.sleep(0.05)
    finally:
        runs = await wind_down(replicas, dispatcher, stores, runs_from=stores[2])
    assert [r.path for r in target.requests] == ["/agents/slow/runs"]  # "soon" not fired early
    assert lost == [] and [(r.schedule_id, r.status) for r in runs] == [(slow.id, "success")]
    assert soon.id not in {r.schedule_id for r in runs}


async def test_an_explicit_simulated_clock_wins_over_the_database_clock(pg_dsn):
    """Three replicas under a SimClock on stores left at the default time authority: the store
    used to replace the SimClock with the server's clock, and ten simulated minutes fired
    nothing. A clock passed explicitly (that is not a wall clock) is the clock."""
    from leasecron.kernel import SimClock
    from support import T0

    clock = SimClock(start=T0)
    target = Target(clock)
    stores = [PostgresStore(pg_dsn, schema="t_sim_clock", max_size=2) for _ in range(4)]
    assert {s.time_authority for s in stores} == {"database"}
    manager = ScheduleManager(stores[-1], clock=clock)
    dispatcher = HttpDispatcher("http://target", transport=target.transport(), clock=clock)
    replicas = [
        Scheduler(stores[i], dispatcher, clock=clock, replica_id=f"r{i}", poll_interval=1.0)
        for i in range(3)
    ]
    try:
        await manager.create("every60", interval_seconds=60, endpoint="/hooks/a")
        for replica in replicas:
            await replica.start()
            assert replica.clock is clock
        assert manager.clock is clock
        await clock.advance(600)
    finally:
        for replica in replicas:
            await replica.stop(timeout=0)
        await dispatcher.aclose()
        for store in stores:
            await store.close()
    assert target.slots("/hooks/a") == [T0 + 60 * k for k in range(1, 11)]
    # a wall clock is still kept to the server's
    wall = SystemClock()
    store = PostgresStore(pg_dsn, schema="t_sim_clock")
    try:
        assert isinstance(store.aligned_clock(wall), AlignedClock)
        assert store.aligned_clock(clock) is clock
    finally:
        await store.close()
