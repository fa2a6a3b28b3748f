"""Fault injection for the simulator: a replica's clock (skewed, and frozen while stalled), a
store that fails before or after committing, and crashes at the steps of an attempt. The
decisions (when, how often) belong to the Simulation that owns these parts."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..clock import SimClock
from ..errors import StoreError

if TYPE_CHECKING:  # the owner, imported for names only (it imports this module)
    from .simulation import Simulation

# Where a replica may die, keyed by the hook that fires there.
CRASH_POINTS = {
    "after_claim": "after_claim",  # leases taken, nothing started
    "after_start": "after_start",  # run rows written, request not sent
    "after_request": "after_request",  # the target got the request
    "after_reply": "after_reply",  # the reply is in, not yet recorded
    "before_finish": "before_release",  # about to record the outcome and release
}


class ReplicaClock:
    """A replica's view of the shared SimClock: skewed by a fixed offset, and frozen while the
    replica is stalled (its timers fire only when the stall ends, as in a paused process)."""

    def __init__(self, base: SimClock, offset: float = 0.0):
        self.base = base
        self.offset = offset
        self.stalled_until = 0.0

    def now(self) -> float:
        return self.base.now() + self.offset

    async def _unstall(self) -> None:
        # stalled_until is monotonic: a wall-clock step must not lengthen or end a stall
        while self.base.monotonic() < self.stalled_until:
            await self.base.sleep(self.stalled_until - self.base.monotonic())

    async def sleep(self, seconds: float) -> None:
        await self.base.sleep(seconds)
        await self._unstall()

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        result = await self.base.wait(event, timeout)
        await self._unstall()
        return result


class FaultyStore:
    """The real store with injected failures: an error either before the call (nothing
    happened) or after it committed (the caller never hears); and crash hooks."""

    OPS = (
        "claim",
        "start",
        "heartbeat",
        "finish",
        "reread_held",
        "holds",
        "next_due",
        "expire_leases",
        "leases_of",
        "set_run_ids",
    )

    def __init__(self, store: Any, sim: Simulation, replica: str):
        self._store = store
        self._sim = sim
        self._replica = replica

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name not in self.OPS:
            return attr

        before, after = f"before_{name}", f"after_{name}"

        async def call(*args: Any, **kwargs: Any) -> Any:
            sim = self._sim
            sim.maybe_crash(self._replica, before)
            if sim.store_error(name, "before"):
                raise StoreError(name, RuntimeError("injected: failed before the call"))
            result = await attr(*args, **kwargs)
            if name == "start":
                tick = sim.tick()
                for started in result:
                    for run_row_id in started or ():
                        sim.trace.started(run_row_id, tick)
            if sim.store_error(name, "after"):
                raise StoreError(name, RuntimeError("injected: reply lost after commit"))
            sim.maybe_crash(self._replica, after)
            return result

        # Kept on the instance: the next look-up finds it without coming back here.
        setattr(self, name, call)
        return call


class _Crash(BaseException):
    """Raised inside a replica's own call when it is killed there (ends that call)."""
