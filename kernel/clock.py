"""Time as a parameter: every `now()` and every wait of the kernel goes through a Clock.

`SystemClock` is wall time. `AlignedClock` is a local clock kept to a time authority (a database
server's clock). `SimClock` is virtual time for tests and the simulator: nothing moves
until `advance()` is awaited, and then timers fire strictly in time order, each woken task running
until it waits again before time moves on. The same test therefore gives the same result every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .offload import offloads_in_flight


class Clock(Protocol):
    def now(self) -> float:
        """Epoch seconds."""

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait until `event` is set or `timeout` passes; True when the event was set."""


def _event_future(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> asyncio.Future[Any]:
    """A future that event.set() resolves, like the one Event.wait() awaits, but without the
    task and the asyncio.wait() a race of two awaitables would cost on every wait of a loop.
    Registered where Event.set() looks (CPython's `_waiters`); elsewhere a task relays it."""
    fut: asyncio.Future[Any] = loop.create_future()
    waiters = getattr(event, "_waiters", None)
    if waiters is not None:
        waiters.append(fut)
    else:
        relay = asyncio.ensure_future(event.wait())
        relay.add_done_callback(lambda _: _resolve(fut))
        fut.add_done_callback(lambda _: relay.cancel())
    return fut


def _resolve(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_result(None)


def _forget(event: asyncio.Event, fut: asyncio.Future[Any]) -> None:
    waiters = getattr(event, "_waiters", None)
    if waiters is not None:
        with contextlib.suppress(ValueError):
            waiters.remove(fut)


class SystemClock:
    """Wall-clock time and real asyncio waits."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        loop = asyncio.get_running_loop()
        fut = _event_future(loop, event)
        timer = loop.call_later(max(0.0, timeout), _resolve, fut)
        try:
            await fut
        finally:
            timer.cancel()
            _forget(event, fut)
        return event.is_set()


class SimClock:
    """Virtual epoch seconds. Time moves only through `advance()` / `advance_to()`.

    `advance` takes timers in deadline order, sets the time to each deadline, wakes every sleeper
    of that instant (in creation order) and lets every runnable task run to its next wait before
    looking at the next timer. A store call on a worker thread (offload.py) is waited for; other
    work that leaves the loop (a socket) is not, so simulated tests use in-process transports.
    For runs that must replay bit for bit, use inline stores (`SqliteStore(path, inline=True)`):
    a worker thread's timing is not part of the seed.
    """

    def __init__(self, start: float = 1_780_000_000.0):
        self._now = float(start)  # the monotonic side: what timers are measured against
        self._offset = 0.0  # wall clock minus monotonic: moved by step()
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now + self._offset

    def monotonic(self) -> float:
        """Time as the timers see it: unmoved by step()."""
        return self._now

    def _timer(self, deadline: float) -> asyncio.Future[None]:
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (deadline, next(self._seq), fut))
        return fut

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut = self._timer(self._now + seconds)
        try:
            await fut
        finally:
            fut.cancel()  # a cancelled sleeper leaves a dead timer that advance() skips

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        if timeout <= 0:
            await asyncio.sleep(0)
            return event.is_set()
        # One future, both the timer's and the event's: whichever comes first resolves it.
        fut = _event_future(asyncio.get_running_loop(), event)
        heapq.heappush(self._timers, (self._now + timeout, next(self._seq), fut))
        try:
            await fut
        finally:
            fut.cancel()  # a dead timer that advance() skips
            _forget(event, fut)
        return event.is_set()

    def next_deadline(self) -> float | None:
        """The earliest live timer, or None."""
        while self._timers and self._timers[0][2].done():
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    async def settle(self) -> None:
        """Run every task that can run, until all of them wait on a timer or an event."""
        loop = asyncio.get_running_loop()
        while offloads_in_flight():  # a store call on its worker thread: real work, wait for it
            await asyncio.sleep(0.0002)
        # `_ready` is the loop's queue of runnable callbacks (CPython's BaseEventLoop). Yield until
        # it drains twice in a row: a callback may schedule another in the same iteration.
        quiet = 0
        for _ in range(100_000):
            await asyncio.sleep(0)
            ready = getattr(loop, "_ready", None)
            if ready is None:  # another loop implementation: fall back to a fixed number of yields
                quiet += 1
                if quiet > 50:
                    return
                continue
            quiet = quiet + 1 if not ready and not offloads_in_flight() else 0
            if quiet >= 2:
                return
            if offloads_in_flight():
                await asyncio.sleep(0.0002)

    async def advance_to(self, target: float) -> None:
        await self.settle()
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > target:
                break
            # Every timer of this instant fires together (in creation order) before settling,
            # so replicas due at the same moment race as they would on real hardware.
            self._now = max(self._now, deadline)
            while self._timers and self._timers[0][0] <= deadline:
                _, _, fut = heapq.heappop(self._timers)
                if not fut.done():
                    fut.set_result(None)
            await self.settle()
        self._now = max(self._now, target)
        await self.settle()

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, firing every timer on the way in order."""
        await self.advance_to(self._now + seconds)

    def set(self, now: float) -> None:
        """Set the time (forward or backward) without firing timers, before a test starts."""
        self._now = float(now) - self._offset

    def step(self, delta: float) -> None:
        """A wall-clock step (NTP, an operator): now() jumps by `delta`, while waits already
        under way keep their length, as asyncio's monotonic timers do."""
        self._offset += delta


class AlignedClock:
    """A clock kept to a time authority (a database server's clock), so replicas whose own clocks
    disagree still judge due-ness and leases alike. now() is the authority's time at the last
    reading plus the local *monotonic* time elapsed since: a step of the host's wall clock (NTP,
    an operator) changes nothing, and readings only correct drift. Waits are the local clock's
    (they are lengths).

    A store that is a time authority makes these (`store.aligned_clock(local)`) and feeds them a
    reading with every idle poll (`observe`); `sync()` takes one on demand. A reading's error is
    at most half its round trip; the offset moves only for a more precise reading or one that
    disagrees by more than its error plus `tolerance`, so now() does not jitter with network
    noise. Before the first reading now() is the local clock's.
    """

    def __init__(
        self,
        local: Clock,
        read: Callable[[], Awaitable[float]],
        *,
        tolerance: float = 0.002,
        max_age: float = 10.0,
    ):
        self.local = local
        self._read = read
        self.tolerance = tolerance
        self.max_age = max_age  # fresh(): a reading older than this (seconds) is re-taken
        self.offset = 0.0  # authority time minus local monotonic time
        self.error = float("inf")  # half the round trip of the reading the offset came from
        self.synced = False
        self._read_at = 0.0  # monotonic
        # now() is on every hot path: look the local monotonic clock up once
        self._monotonic: Callable[[], float] = getattr(local, "monotonic", time.monotonic)

    def now(self) -> float:
        if not self.synced:
            return self.local.now()
        return self.monotonic() + self.offset

    def monotonic(self) -> float:
        return self._monotonic()

    async def sleep(self, seconds: float) -> None:
        await self.local.sleep(seconds)

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        return await self.local.wait(event, timeout)

    def observe(self, authority_now: float, sent: float, received: float) -> None:
        """A reading of the authority's clock taken between monotonic times `sent` and
        `received` (this clock's monotonic())."""
        error = max(0.0, received - sent) / 2
        estimate = authority_now - (sent + received) / 2
        # Adopt a first reading, a more precise one, or one that shows the clocks really moved.
        if (
            not self.synced
            or error < self.error
            or abs(estimate - self.offset) > error + self.tolerance
        ):
            self.offset, self.error = estimate, error
        self.synced = True
        self._read_at = received

    async def sync(self) -> None:
        """Take a reading now (raises what the authority's read raises); a slow one (the first
        often pays for connecting) is taken again, up to three times."""
        self.error = float("inf")  # the first reading replaces the last, however precise
        for _ in range(3):
            sent = self.monotonic()
            authority_now = await self._read()
            self.observe(authority_now, sent, self.monotonic())
            if self.error <= self.tolerance:
                return

    async def fresh(self) -> AlignedClock:
        """This clock, after a reading if it never had one or its last is older than max_age."""
        if not self.synced or self.monotonic() - self._read_at > self.max_age:
            await self.sync()
        return self
