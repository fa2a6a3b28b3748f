"""SimClock: virtual time that moves only through advance(), timers fired in (deadline, creation)
order with every woken task run to its next wait before time moves on; and SystemClock basics."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest

from leasecron.kernel import AlignedClock, Schedule, SimClock, SqliteStore, SystemClock
from leasecron.kernel.offload import offloads_in_flight
from support import T0


def spawn(*coros) -> list[asyncio.Task]:
    return [asyncio.create_task(c) for c in coros]


async def stop(tasks: list[asyncio.Task]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_timers_fire_in_deadline_order_ties_in_creation_order():
    clock = SimClock(start=T0)
    trace: list[tuple[float, str]] = []

    async def sleeper(name: str, *delays: float) -> None:
        for d in delays:
            await clock.sleep(d)
            trace.append((clock.now() - T0, name))

    tasks = spawn(
        sleeper("a", 10),
        sleeper("b", 5),
        sleeper("c", 10),
        sleeper("d", 5, 3),
        sleeper("e", 2.5, 2.5, 5),
    )
    await clock.advance(20)
    assert trace == [
        (2.5, "e"),
        (5, "b"),  # b, d and e all wake at 5: in the order their timers were made
        (5, "d"),
        (5, "e"),
        (8, "d"),
        (10, "a"),
        (10, "c"),
        (10, "e"),  # its third timer was made at 5, after a's and c's
    ]
    assert clock.now() == T0 + 20
    assert all(t.done() for t in tasks)
    assert clock.next_deadline() is None


async def test_a_woken_task_and_everything_it_starts_run_before_time_moves_on():
    clock = SimClock(start=T0)
    trace: list[tuple[float, str]] = []

    async def child(name: str) -> None:
        for _ in range(20):  # a long chain of plain yields: still "the same instant"
            await asyncio.sleep(0)
        trace.append((clock.now() - T0, name))

    async def parent() -> None:
        await clock.sleep(4)
        trace.append((clock.now() - T0, "parent"))
        ready = asyncio.Event()
        task = asyncio.create_task(child("child"))
        asyncio.get_running_loop().call_soon(ready.set)
        await ready.wait()
        await task
        trace.append((clock.now() - T0, "parent-after-child"))

    async def later() -> None:
        await clock.sleep(4.001)
        trace.append((clock.now() - T0, "later"))

    spawn(parent(), later())
    await clock.advance(5)
    assert trace == [
        (4, "parent"),
        (4, "child"),
        (4, "parent-after-child"),
        (pytest.approx(4.001), "later"),
    ]


async def test_a_task_sleeping_again_inside_the_window_is_woken_again_in_the_same_advance():
    clock = SimClock(start=T0)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            await clock.sleep(1)
            ticks.append(clock.now() - T0)

    tasks = spawn(ticker())
    await clock.advance(9.5)
    assert ticks == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert clock.now() == T0 + 9.5
    assert clock.next_deadline() == T0 + 10
    await clock.advance(0.5)
    assert ticks[-1] == 10
    await clock.advance(0)  # nothing due: nothing happens
    assert len(ticks) == 10
    await stop(tasks)


async def test_sleep_of_zero_or_less_does_not_need_time_to_move():
    clock = SimClock(start=T0)
    await clock.sleep(0)
    await clock.sleep(-3)
    assert clock.now() == T0
    assert clock.next_deadline() is None


async def test_wait_returns_true_when_set_in_time_and_false_at_the_timeout():
    clock = SimClock(start=T0)
    event = asyncio.Event()
    results: list[tuple[float, str, bool]] = []

    async def waiter(name: str, timeout: float) -> None:
        ok = await clock.wait(event, timeout)
        results.append((clock.now() - T0, name, ok))

    async def setter() -> None:
        await clock.sleep(4)
        event.set()

    spawn(waiter("w10", 10), waiter("w3", 3), setter())
    await clock.settle()
    assert clock.next_deadline() == T0 + 3
    await clock.advance(20)
    assert results == [(3, "w3", False), (4, "w10", True)]
    # the 10-second timer of the satisfied wait is dead: nothing left to fire
    assert clock.next_deadline() is None

    # already set: True at once; zero timeout: the current state, no time passes
    assert await clock.wait(event, 100) is True
    assert await clock.wait(event, 0) is True
    assert await clock.wait(asyncio.Event(), 0) is False
    assert await clock.wait(asyncio.Event(), -1) is False
    assert clock.now() == T0 + 20
    assert clock.next_deadline() is None


async def test_wait_sees_an_event_set_by_another_task_in_the_same_instant():
    clock = SimClock(start=T0)
    event = asyncio.Event()
    asyncio.get_running_loop().call_soon(event.set)
    assert await clock.wait(event, 60) is True
    assert clock.now() == T0
    assert clock.next_deadline() is None


async def test_cancelled_sleepers_do_not_break_advance():
    clock = SimClock(start=T0)
    trace: list[tuple[float, str]] = []

    async def sleeper(name: str, delay: float) -> None:
        await clock.sleep(delay)
        trace.append((clock.now() - T0, name))

    x, y, z = spawn(sleeper("x", 5), sleeper("y", 7), sleeper("z", 6))
    await clock.settle()
    x.cancel()
    await asyncio.gather(x, return_exceptions=True)
    assert x.cancelled()
    assert clock.next_deadline() == T0 + 6

    async def canceller() -> None:
        await clock.sleep(3)
        z.cancel()  # cancelled mid-advance, before its timer is reached

    spawn(canceller())
    await clock.advance(10)
    assert trace == [(7, "y")]
    assert y.done() and not y.cancelled()
    assert z.cancelled()
    assert clock.now() == T0 + 10
    assert clock.next_deadline() is None


async def test_set_steps_time_without_firing_timers():
    clock = SimClock(start=T0)
    trace: list[float] = []

    async def sleeper(delay: float) -> None:
        await clock.sleep(delay)
        trace.append(clock.now() - T0)

    spawn(sleeper(5))
    await clock.settle()
    clock.set(T0 + 100)
    await clock.settle()
    assert (clock.now(), trace, clock.next_deadline()) == (T0 + 100, [], T0 + 5)
    await clock.advance(0)  # the overdue timer fires now, and time does not go back to it
    assert trace == [100]
    assert clock.now() == T0 + 100

    clock.set(T0 - 50)  # a backward step
    assert clock.now() == T0 - 50
    spawn(sleeper(10))
    await clock.advance(15)
    assert trace == [100, -40]
    assert clock.now() == T0 - 35


async def _day_of_sleepers(n: int) -> list[tuple[float, int]]:
    clock = SimClock(start=T0)
    trace: list[tuple[float, int]] = []

    async def sleeper(i: int) -> None:
        step = 600 + (i % 17) * 60
        await clock.sleep(i % 13)  # stagger the phases
        while True:
            await clock.sleep(step)
            trace.append((clock.now() - T0, i))

    tasks = spawn(*(sleeper(i) for i in range(n)))
    await clock.advance(86_400)
    assert clock.now() == T0 + 86_400
    await stop(tasks)
    return trace


async def test_a_simulated_day_of_1000_sleepers_is_quick_and_replays_identically():
    started = time.perf_counter()
    first = await _day_of_sleepers(1000)
    second = await _day_of_sleepers(1000)
    elapsed = time.perf_counter() - started
    expected = sum((86_400 - i % 13) // (600 + (i % 17) * 60) for i in range(1000))
    assert len(first) == expected
    assert first == second
    assert [t for t, _ in first] == sorted(t for t, _ in first)
    for i in (0, 1, 16, 999):
        step = 600 + (i % 17) * 60
        times = [t for t, j in first if j == i]
        assert times == [i % 13 + step * k for k in range(1, len(times) + 1)]
    assert elapsed < 8, f"two simulated days took {elapsed:.2f} s"


async def test_settle_waits_for_a_threaded_store_call(tmp_path):
    path = str(tmp_path / "offload.db")
    store = SqliteStore(path, inline=False)
    clock = SimClock(start=T0)
    try:
        await store.create_schedule(
            Schedule(
                id="a", name="a", endpoint="/a", interval_seconds=60, next_run_at=T0, created_at=T0
            )
        )
        # Another process holds the write lock for a real 0.15 s: the claim waits on its thread.
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.15, lambda: blocker.execute("ROLLBACK"))
        trace: list[tuple[float, str, object]] = []

        async def worker() -> None:
            claims = await store.claim("r1", clock.now(), 30, 10)
            trace.append((clock.now() - T0, "claimed", [c.schedule.id for c in claims]))
            await clock.sleep(5)
            trace.append((clock.now() - T0, "due", await store.next_due()))

        began = time.perf_counter()
        release.start()
        task = asyncio.create_task(worker())
        await clock.settle()
        waited = time.perf_counter() - began
        assert trace == [(0, "claimed", ["a"])]
        assert waited >= 0.1
        assert offloads_in_flight() == 0
        assert clock.next_deadline() == T0 + 5
        await clock.advance(5)
        assert trace[-1] == (5, "due", T0 + 30)
        assert task.done()
        release.join()
        blocker.close()
    finally:
        await store.close()


async def test_system_clock_now_and_waits_without_real_waiting():
    clock = SystemClock()
    before = time.time()
    now = clock.now()
    assert before <= now <= time.time()

    began = time.perf_counter()
    event = asyncio.Event()
    event.set()
    assert await clock.wait(event, 3600) is True
    assert await clock.wait(event, 0) is True
    assert await clock.wait(asyncio.Event(), 0) is False
    assert await clock.wait(asyncio.Event(), -5) is False
    pending = asyncio.Event()
    asyncio.get_running_loop().call_soon(pending.set)
    assert await clock.wait(pending, 3600) is True
    await clock.sleep(-1)
    await clock.sleep(0)
    assert time.perf_counter() - began < 0.5


async def test_aligned_clock_keeps_to_its_authority_without_jitter():
    local = SimClock(start=1000.0)
    trips = [0.5, 0.001]  # the first reading pays for connecting: slow, and lopsided

    async def read() -> float:
        trip = trips.pop(0)
        local.set(local.now() + trip)
        # the server reads its clock (60 s ahead) at the end of a slow trip, mid-way otherwise
        return local.now() + 60.0 - (0 if trip > 0.1 else trip / 2)

    clock = AlignedClock(local, read, tolerance=0.002)
    assert not clock.synced
    await clock.sync()
    assert trips == []  # the slow reading was taken again
    assert clock.offset == pytest.approx(60.0) and clock.error == pytest.approx(0.0005)
    assert clock.now() == pytest.approx(local.now() + 60.0)
    # a less precise reading, off by less than its error plus the tolerance: noise, ignored
    clock.observe(local.now() + 60.0015, local.now() - 0.001, local.now() + 0.001)
    assert clock.offset == pytest.approx(60.0)
    clock.observe(local.now() + 60.0003, local.now(), local.now())  # a more precise reading
    assert clock.offset == pytest.approx(60.0003) and clock.error == 0.0
    # the authority's clock moved (an operator set it): followed at once
    clock.observe(local.now() - 5.0, local.now() - 0.01, local.now() + 0.01)
    assert clock.now() == pytest.approx(local.now() - 5.0)
    assert clock.monotonic() == local.monotonic()  # waits are the local clock's
    # the host's wall clock steps: nothing changes (the aligned clock runs on monotonic time)
    before = clock.now()
    local.step(-60.0)
    assert clock.now() == pytest.approx(before)
    await local.advance(2.0)
    assert clock.now() == pytest.approx(before + 2.0)


async def test_aligned_clock_fresh_rereads_only_when_stale():
    local = SimClock(start=1000.0)
    reads = []

    async def read() -> float:
        reads.append(local.now())
        return local.now() + 30.0

    clock = AlignedClock(local, read, max_age=10.0)
    assert await clock.fresh() is clock and len(reads) == 1
    local.set(1005.0)
    await clock.fresh()
    assert len(reads) == 1
    local.set(1011.0)
    await clock.fresh()
    assert reads == [1000.0, 1011.0] and clock.now() == pytest.approx(1041.0)
