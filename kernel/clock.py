"""Time as a parameter: every `now()` and every wait of the kernel goes through a Clock.

`SystemClock` is wall time. `SimClock` is virtual time for tests and the simulator: nothing moves
until `advance()` is awaited, and then timers fire strictly in time order, each woken task running
until it waits again before time moves on. The same test therefore gives the same result every run.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol

from .offload import offloads_in_flight


class Clock(Protocol):
    def now(self) -> float:
        """Epoch seconds."""

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait until `event` is set or `timeout` passes; True when the event was set."""


class SystemClock:
    """Wall-clock time and real asyncio waits."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await event.wait()
            return True
        except TimeoutError:
            return False


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
        self._timers: list[tuple[float, int, asyncio.Future]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now + self._offset

    def monotonic(self) -> float:
        """Time as the timers see it: unmoved by step()."""
        return self._now

    def _timer(self, deadline: float) -> asyncio.Future:
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
        timer = self._timer(self._now + timeout)
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({timer, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            waiter.cancel()
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
