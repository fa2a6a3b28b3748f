"""Starting what a claim brought: each claimed schedule planned (policy.Planner), the plans
applied in one fenced store transaction, and an attempt spawned for every run that transaction
started; and, for an overlap=allow holder, the same for rows it keeps leased (`_fire_held`).
A mixin of Scheduler (it uses the scheduler's store, planner, held leases and events).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import StoreError
from .lease import TRUSTED_FOR, Held
from .policy import Planned, Planner, StartDecision
from .store import Claim, FinishPlan, StartPlan

if TYPE_CHECKING:
    from .model import Schedule, ScheduleRun
    from .store import Store

log = logging.getLogger("leasecron")


class Starts:
    """Claim -> plan -> start for Scheduler (see the module docstring)."""

    # what it uses of the Scheduler
    store: Store
    planner: Planner
    replica_id: str
    lease_seconds: float
    poll_interval: float
    max_concurrent: int
    on_event: Callable[[str, dict[str, Any]], None] | None
    _held: dict[str, Held]
    _in_flight: int
    _strays_possible: bool
    _emit: Callable[..., None]
    _busy: Callable[[], set[str]]
    _unwritten: Callable[[], list[FinishPlan]]
    _warn_write_failed: Callable[..., None]
    _spawn: Callable[[Held, ScheduleRun, float], None]

    def _plan(self, claim: Claim, now: float, in_flight: frozenset[str] = frozenset()) -> Planned:
        try:
            decision = self.planner.plan_claim(claim, now, in_flight)
        except Exception as exc:
            decision = self.planner.plan_unplannable(claim, now, exc)
            quarantine = decision.plan.quarantine or ""
            self._quarantined(claim.schedule, quarantine.removeprefix("schedule disabled: "))
        return Planned(claim.schedule, claim.timing_version, decision)

    async def _start(self, claims: list[Claim], now: float) -> bool:
        for claim in claims:
            if claim.quarantined is not None:
                self._quarantined(claim.schedule, claim.quarantined)
        return await self._apply_start(
            [self._plan(c, now) for c in claims if c.quarantined is None], now
        )

    def _quarantined(self, schedule: Schedule, why: str) -> None:
        """A row the kernel could not use was disabled with its reason: a fault in the data,
        not in this replica, so it is said loudly once and every other schedule fires on."""
        log.warning("schedule %s (%s) quarantined: %s", schedule.name, schedule.id, why)
        self._emit(
            "store_error",
            operation="quarantine",
            schedule_id=schedule.id,
            name=schedule.name,
            error=why,
        )

    async def _apply_start(self, items: list[Planned], now: float) -> bool:
        """Start the planned runs; False if the store failed (nothing was sent)."""
        try:
            results = await self.store.start(
                self.replica_id, now, self.lease_seconds, [item.decision.plan for item in items]
            )
        except StoreError as exc:
            # Nothing may be sent: we cannot know what was written. Hand back the leases that
            # guard none of our in-flight attempts, so another replica (or we) takes the rows up
            # at once instead of after the lease (a backward clock step can make that an hour).
            # If that fails too, the loop tries again (and they expire on their own).
            self._emit("store_error", operation=exc.operation, error=str(exc))
            self._warn_write_failed(exc)
            busy = self._busy()
            idle = [
                (schedule.id, schedule.lease_version)
                for schedule, _, _ in items
                if schedule.id not in busy
            ]
            if idle:
                try:
                    await self.store.expire_leases(self.replica_id, now, idle)
                except StoreError:
                    self._strays_possible = True  # the loop tries again
            return False
        for (schedule, timing_version, decision), started in zip(items, results, strict=True):
            held = self._held.get(schedule.id)
            if started is not None and self.on_event is not None:
                self._emit_plan(schedule, decision.plan)
            if started is None:  # fenced out: lost, or re-timed since we read it
                if held is not None:
                    held.frozen = True
                    if not held.tasks:
                        del self._held[schedule.id]
                continue
            if held is None and not started:
                continue
            schedule.next_run_at = decision.plan.next_run_at
            if held is None:
                held = Held(schedule, timing_version, now + self.lease_seconds * TRUSTED_FOR)
                self._held[schedule.id] = held
            held.schedule, held.timing_version = schedule, timing_version
            held.check_at = self._next_check(decision, now)
            for run in decision.runs:
                if run.id in started:
                    self._spawn(held, run, decision.delays.get(run.id, 0.0))
        return True

    def _emit_plan(self, schedule: Schedule, plan: StartPlan) -> None:
        """Slots a start recorded skipped, and orphans it sent again, as counts (metrics)."""
        skipped = sum(1 for run in plan.insert_runs if run.status == "skipped")
        if skipped:
            self._emit("skip", replica=self.replica_id, schedule_id=schedule.id, count=skipped)
        again = sum(1 for lost in plan.lost_runs if lost.replacement is not None)
        if again:
            self._emit("redelivery", replica=self.replica_id, schedule_id=schedule.id, count=again)

    def _next_check(self, decision: StartDecision, now: float) -> float:
        """overlap=allow: when the holder should next re-read its row: the slot cursor, or the
        poll interval for pending work (triggers, retries) made elsewhere."""
        cursor = decision.plan.next_run_at
        return min(now + self.poll_interval, cursor if cursor is not None else float("inf"))

    async def _fire_held(self, now: float) -> float:
        """overlap=allow: the holder itself fires slots and pending work that come due while its
        runs are in flight (no other replica can: the row is leased). Returns when to look next."""
        next_at = float("inf")
        due: list[Held] = []
        for held in self._held.values():
            if held.schedule.overlap != "allow" or not held.tasks or held.frozen:
                continue
            if held.check_at <= now:
                due.append(held)
            else:
                next_at = min(next_at, held.check_at)
        if not due or self._in_flight >= self.max_concurrent:
            return next_at  # at capacity an attempt's end wakes the loop: never a past time
        leases = [(h.schedule.id, h.schedule.lease_version) for h in due]
        claims = {c.schedule.id: c for c in await self.store.reread_held(self.replica_id, leases)}
        unwritten = self._unwritten()
        items = []
        for held in due:
            if self._held.get(held.schedule.id) is not held:
                # Its last attempt ended while we read: the queued outcome releases the lease,
                # so nothing more may start under it (anyone takes the row up after).
                continue
            claim = claims.get(held.schedule.id)
            if claim is None:  # disabled, deleted or taken: fire nothing more under it
                held.frozen = True
                continue
            # In flight: attempts running, and those whose outcome is not yet written (their
            # rows still say `running`; they are not orphans).
            in_flight = frozenset(held.tasks.values()) | {
                plan.run_row_id for plan in unwritten if plan.schedule_id == held.schedule.id
            }
            items.append(self._plan(claim, now, in_flight))
        await self._apply_start(items, now)
        return min([next_at, *(h.check_at for h in due if not h.frozen)])
