"""A replica's heartbeat and watchdog: keeping the leases it holds alive while their attempts
run, and giving up on a lease in time when it cannot be renewed, before any other replica may
take it (the timing, and why it is safe: lease.py). A mixin of Scheduler (it uses the
scheduler's clock, store, held leases and events)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .errors import StoreError
from .lease import CHECK_EVERY, TRUSTED_FOR

if TYPE_CHECKING:
    from collections.abc import Callable

    from .clock import Clock
    from .lease import Held
    from .store import Store


class Heartbeat:
    """Renewal and watchdog for Scheduler (see the module docstring)."""

    # what it uses of the Scheduler
    clock: Clock
    store: Store
    replica_id: str
    lease_seconds: float
    _held: dict[str, Held]
    _emit: Callable[..., None]

    async def _heartbeat_loop(self) -> None:
        """Tick every CHECK_EVERY of waiting (a wait keeps its length when the wall clock steps; a
        deadline computed from wall time would not): renew every other tick (RENEW_EVERY), and
        give up on a lease whose local deadline (wall time, as other replicas judge it) has
        passed."""
        tick = self.lease_seconds * CHECK_EVERY
        ticks = 0
        # A renewal runs beside the ticks, never in their way: a store call that hangs (a server
        # gone mid-query) must not stop the watchdog from giving up on the leases it guards.
        # One stuck for two ticks (RENEW_EVERY) is abandoned for a fresh one on a new connection.
        renewal: asyncio.Task[None] | None = None
        renewal_tick = 0
        try:
            while True:
                await self.clock.sleep(tick)
                ticks += 1
                if renewal is not None and not renewal.done() and ticks - renewal_tick >= 2:
                    renewal.cancel()
                    renewal = None
                if ticks % 2 == 0 and (renewal is None or renewal.done()):
                    renewal = asyncio.create_task(self._renew(self.clock.now()))
                    renewal_tick = ticks
                self._expire_untrusted(self.clock.now())
        finally:
            if renewal is not None:
                renewal.cancel()
                await asyncio.gather(renewal, return_exceptions=True)

    async def _renew(self, now: float) -> None:
        held = dict(self._held)
        if not held:
            return
        leases = [(sid, h.schedule.lease_version) for sid, h in held.items()]
        try:
            lost = await self.store.heartbeat(self.replica_id, now, self.lease_seconds, leases)
        except StoreError as exc:
            self._emit("store_error", operation=exc.operation, error=str(exc))
            return  # the watchdog gives up on these leases if renewals keep failing
        for sid, h in held.items():
            if sid in lost:
                self._lose(sid, h, "lease taken over")
            else:
                h.valid_until = max(h.valid_until, now + self.lease_seconds * TRUSTED_FOR)

    def _expire_untrusted(self, now: float) -> None:
        for sid, h in list(self._held.items()):
            if now >= h.valid_until:
                self._lose(sid, h, "lease not renewed in time")

    def _lose(self, sid: str, held: Held, why: str) -> None:
        if self._held.get(sid) is held:
            del self._held[sid]
        for task in held.tasks:
            task.cancel()
        self._emit("lease_lost", replica=self.replica_id, schedule_id=sid, reason=why)
