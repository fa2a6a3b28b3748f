"""Outcomes, batched: every attempt's FinishPlan is queued and a flusher writes all queued ones in
one fenced store transaction, retrying with backoff while the store fails (an outcome is never
dropped; the loop claims nothing new meanwhile). A mixin of Scheduler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import StoreError
from .lease import RENEW_EVERY
from .store import FinishPlan

if TYPE_CHECKING:
    from .clock import Clock
    from .store import Store

log = logging.getLogger("leasecron")

WARN_EVERY = 60.0  # seconds between warnings about failing store writes (outcomes, starts)


class Finishing:
    """The outcome queue and its flusher for Scheduler (see the module docstring)."""

    # what it uses of the Scheduler
    store: Store
    clock: Clock
    replica_id: str
    lease_seconds: float
    outcomes_failing: bool
    _finish_queue: list[tuple[FinishPlan, asyncio.Future[bool]]]
    _finishing: list[FinishPlan]
    _finish_ready: asyncio.Event
    _flush_last: bool
    _own_write: bool
    _wake: asyncio.Event
    _failed_writes: int
    _warned_at: float | None
    _emit: Callable[..., None]

    def _unwritten(self) -> list[FinishPlan]:
        """Outcomes decided but not yet committed: their attempts have left the held set, but
        their run rows are still `running` under our lease."""
        return self._finishing + [plan for plan, _ in self._finish_queue]

    async def _finish(self, plan: FinishPlan) -> bool:
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._finish_queue.append((plan, fut))
        self._finish_ready.set()
        return await fut

    async def _flush_loop(self) -> None:
        while True:
            await self._finish_ready.wait()
            self._finish_ready.clear()
            await self._drain_finishes()
            if self._flush_last and not self._finish_queue:
                return

    async def _drain_finishes(self) -> None:
        """Write every queued outcome in one transaction; on a store error retry the write: an
        outcome is never dropped (a write after a reclaim is rejected by the fence, harmlessly)."""
        backoff = 0.05
        while self._finish_queue:
            batch, self._finish_queue = self._finish_queue, []
            self._finishing = [plan for plan, _ in batch]
            while True:
                try:
                    self._own_write = True
                    try:
                        results = await self.store.finish(
                            self.replica_id, self.clock.now(), [plan for plan, _ in batch]
                        )
                    finally:
                        self._own_write = False
                    break
                except StoreError as exc:
                    self._emit("store_error", operation=exc.operation, error=str(exc))
                    self._outcome_write_failed(exc, len(batch) + len(self._finish_queue))
                    await self.clock.sleep(backoff)
                    backoff = min(backoff * 2, self.lease_seconds * RENEW_EVERY)
                except Exception as exc:
                    # A fault of ours: fail these attempts (each logs it and lets its lease
                    # expire, so another replica re-delivers) but keep the flusher alive.
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    results = None
                    break
            self._finishing = []
            if results is None:
                continue
            if self.outcomes_failing:
                self._outcome_writes_recovered()
                backoff = 0.05
            for (_, fut), recorded in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(recorded)

    def _outcome_write_failed(self, exc: StoreError, waiting: int) -> None:
        if not self.outcomes_failing:
            self.outcomes_failing = True
            self._wake.set()  # the loop stops claiming now, not at its next poll
        self._warn_write_failed(exc, waiting)

    def _warn_write_failed(self, exc: StoreError, waiting: int | None = None) -> None:
        """A write (an outcome, or a start) failed: warn at most once per WARN_EVERY seconds,
        counting the failures since the last warning."""
        self._failed_writes += 1
        now = self.clock.now()
        if self._warned_at is not None and now - self._warned_at < WARN_EVERY:
            return
        if waiting is None:
            waiting = len(self._unwritten())
        log.warning(
            "replica %s: %d store write(s) failed since the last warning; %d outcome(s) "
            "waiting, retried with backoff; no claims while outcomes cannot be written: %s",
            self.replica_id,
            self._failed_writes,
            waiting,
            exc,
        )
        self._warned_at = now
        self._failed_writes = 0

    def _outcome_writes_recovered(self) -> None:
        log.warning(
            "replica %s: outcome writes succeed again (%d more failed since the last warning); "
            "claiming resumes",
            self.replica_id,
            self._failed_writes,
        )
        self.outcomes_failing = False
        self._failed_writes = 0
        self._warned_at = None
        self._wake.set()
