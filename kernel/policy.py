"""Decisions a lease holder makes: what to fire when it claims a schedule (orphans, pending work,
the slot under the misfire policy) and what follows an attempt (retry, overlap, one-off end).
Pure functions over the claimed state; the store applies the result atomically and fenced.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from .model import Fire, Outcome, Schedule, ScheduleRun
from .slots import count_slots, last_slots, latest_at_or_before, slot_after
from .store import Claim, FinishPlan, LostRun, StartPlan
from .writes import quarantine_run

MAX_RECLAIMS = 3  # re-deliveries of one attempt after lost leases, so a target that kills
# replicas cannot loop forever
MAX_RETRY_DELAY = 3600.0  # cap of the exponential backoff
MAX_RETRY_AFTER = 86_400.0  # the longest Retry-After we honour
SKIPPED_ROWS = 100  # skipped slots recorded one row each; beyond this one summary row
SKIPPED_COUNT_CAP = 1000  # the summary counts at most this many more (counting costs time)
NON_RETRYABLE = ("cancelled", "paused")


def slot_key(schedule_id: str, slot: float, timing_version: int = 1) -> str:
    """Idempotency key of a slot: stable across attempts, reclaims and replicas. After a change
    of timing the series is a new one; its version keeps a slot of it from sharing a key with a
    slot of the old series at the same instant (possible once the wall clock stepped back)."""
    key = f"{schedule_id}@{slot:.3f}"
    return key if timing_version <= 1 else f"{key}~t{timing_version}"


def manual_key(schedule_id: str, run_row_id: str) -> str:
    return f"{schedule_id}@manual:{run_row_id}"


@dataclass(slots=True)
class StartDecision:
    plan: StartPlan
    runs: list[ScheduleRun] = field(default_factory=list)  # rows to dispatch if the plan lands
    delays: dict[str, float] = field(default_factory=dict)  # run row id -> jitter before sending


class Planned(NamedTuple):
    """A claimed schedule with the decision made for it, and the timing it was judged by."""

    schedule: Schedule
    timing_version: int
    decision: StartDecision


def fire_for(s: Schedule, run: ScheduleRun) -> Fire:
    return Fire(
        schedule_id=s.id,
        schedule_name=s.name,
        run_row_id=run.id,
        method=s.method,
        endpoint=s.endpoint,
        payload=s.payload,
        attempt=run.attempt,
        scheduled_for=run.scheduled_for,
        idempotency_key=run.idempotency_key,
        timeout_seconds=s.timeout_seconds,
        trigger=run.trigger,
        run_id=run.run_id,
        session_id=run.session_id,
    )


class Planner:
    """Builds start and finish plans for one replica. `new_id` and `rng` are injected so a
    simulation replays bit for bit."""

    def __init__(self, replica: str, new_id: Callable[[], str], rng: random.Random):
        self.replica = replica
        self.new_id = new_id
        self.rng = rng

    def _run(self, s: Schedule, now: float, **values: Any) -> ScheduleRun:
        values.setdefault("status", "running")
        values.setdefault("attempt", 1)
        values.setdefault("trigger", "schedule")
        run = ScheduleRun(
            id=self.new_id(),
            schedule_id=s.id,
            created_at=now,
            replica=self.replica,
            lease_version=s.lease_version,
            # input stays NULL: the attempt sends the schedule's payload, and a copy per run row
            # would grow the history by the payload's size at every fire.
            **values,
        )
        if run.status == "running":
            run.triggered_at = now
        return run

    def _skipped(
        self, s: Schedule, now: float, first: float, last: float, why: str, timing: int
    ) -> list[ScheduleRun]:
        """One skipped row per slot in [first, last], up to SKIPPED_ROWS, then one summary."""

        def skipped(slot: float, error: str) -> ScheduleRun:
            return self._run(
                s,
                now,
                status="skipped",
                scheduled_for=slot,
                idempotency_key=slot_key(s.id, slot, timing),
                completed_at=now,
                error=error,
            )

        rows: list[ScheduleRun] = []
        slot: float | None = first
        while slot is not None and slot <= last and len(rows) < SKIPPED_ROWS:
            rows.append(skipped(slot, why))
            slot = slot_after(s, slot)
        if slot is not None and slot <= last:
            more = count_slots(s, slot, last, SKIPPED_COUNT_CAP)
            more_text = f"{more}" if more < SKIPPED_COUNT_CAP else f"at least {more}"
            rows.append(
                skipped(slot, f"{why}; {more_text} more slot(s) up to {last:.3f} not listed")
            )
        return rows

    # -- claim ---------------------------------------------------------------------------------

    def plan_claim(
        self, claim: Claim, now: float, in_flight: frozenset[str] = frozenset()
    ) -> StartDecision:
        """`in_flight`: run rows this replica itself has running under the lease (an overlap=allow
        holder re-reading its row); every other running row is an orphan."""
        s = claim.schedule
        plan = StartPlan(
            s.id,
            s.lease_version,
            claim.timing_version,
            next_run_at=s.next_run_at,
            keep_lease=bool(in_flight),
        )
        d = StartDecision(plan)
        allow = s.overlap == "allow"

        # 1. Orphans: attempts in flight under a holder whose lease expired. Re-deliver each with
        # the same attempt number and idempotency key (the target may have seen it already), and
        # with the run it started, if any: the re-delivery attaches to that run instead of
        # starting a second one (an AgentOS ignores Idempotency-Key).
        for orphan in claim.running:
            if orphan.id in in_flight:
                continue
            replacement = None
            error = f"lease expired while in flight; re-delivered by {self.replica}"
            if orphan.reclaim >= MAX_RECLAIMS:
                error = f"lease expired while in flight; gave up after {MAX_RECLAIMS} re-deliveries"
            elif s.enabled:
                replacement = self._run(
                    s,
                    now,
                    attempt=orphan.attempt,
                    trigger=orphan.trigger,
                    scheduled_for=orphan.scheduled_for,
                    idempotency_key=orphan.idempotency_key,
                    reclaim=orphan.reclaim + 1,
                    run_id=orphan.run_id,
                    session_id=orphan.session_id,
                )
                d.runs.append(replacement)
            plan.lost_runs.append(LostRun(orphan.id, replacement, error))

        busy = bool(d.runs or in_flight)
        # 2. Durable work that is due: triggers, retries, buffered slots; earliest first.
        for pending in claim.pending:
            if pending.due_at is not None and pending.due_at <= now and (allow or not busy):
                plan.start_pending.append(pending.id)
                d.runs.append(
                    replace(
                        pending,
                        status="running",
                        replica=self.replica,
                        lease_version=s.lease_version,
                        triggered_at=now,
                    )
                )
                busy = True
        # 3. The slot cursor, under the misfire policy.
        if s.next_run_at is not None and s.next_run_at <= now and (allow or not busy):
            self._plan_slot(s, now, d)
        # A one-off with nothing left to fire (its attempt given up after lost leases) is done.
        if not d.runs and not in_flight and _is_one_off(s) and plan.next_run_at is None:
            plan.disable = not any(p.due_at is not None for p in claim.pending)
        return d

    def plan_unplannable(self, claim: Claim, now: float, error: BaseException) -> StartDecision:
        """A row the kernel cannot plan (say, a cron expression edited by hand into nonsense):
        quarantine it (disabled, the reason kept, a failed run row saying why) rather than let it
        take the loop down on every replica that claims it."""
        s = claim.schedule
        plan = StartPlan(s.id, s.lease_version, claim.timing_version, next_run_at=None)
        plan.insert_runs.append(
            quarantine_run(
                s.id,
                s.next_run_at,
                self.replica,
                s.lease_version,
                now,
                f"cannot plan it: {type(error).__name__}: {error}",
                self.new_id(),
            )
        )
        plan.quarantine = plan.insert_runs[0].error
        return StartDecision(plan)

    def _plan_slot(self, s: Schedule, now: float, d: StartDecision) -> None:
        cursor = s.next_run_at
        assert cursor is not None
        plan = d.plan
        if now - cursor <= s.misfire_grace_seconds:
            fire_slot, trigger = cursor, "schedule"
        elif s.misfire == "skip":
            last = latest_at_or_before(s, cursor, now)
            plan.insert_runs += self._skipped(
                s, now, cursor, last, "misfire: skipped (policy skip)", plan.timing_version
            )
            plan.next_run_at = slot_after(s, now)
            plan.disable = plan.next_run_at is None
            return
        elif s.misfire == "catch_up":
            lo = cursor
            if cursor < now - s.catchup_window_seconds:
                lo = slot_after(s, now - s.catchup_window_seconds) or now
            kept, dropped = last_slots(s, lo, now, max(1, s.max_catchup)) if lo <= now else ([], 0)
            if lo > cursor or dropped:
                first_kept = kept[0] if kept else now
                last_dropped = latest_at_or_before(s, cursor, first_kept - 1e-6)
                plan.insert_runs += self._skipped(
                    s,
                    now,
                    cursor,
                    last_dropped,
                    "misfire: outside catch-up window or beyond max_catchup",
                    plan.timing_version,
                )
            if not kept:
                plan.next_run_at = slot_after(s, now)
                return
            fire_slot, trigger = kept[0], "catch_up"
        else:  # fire_once: the latest missed slot, once
            fire_slot = latest_at_or_before(s, cursor, now)
            trigger = "schedule" if now - fire_slot <= s.misfire_grace_seconds else "catch_up"
            if fire_slot > cursor:
                before = latest_at_or_before(s, cursor, fire_slot - 1e-6)
                plan.insert_runs += self._skipped(
                    s,
                    now,
                    cursor,
                    before,
                    "misfire: skipped (policy fire_once)",
                    plan.timing_version,
                )
        run = self._run(
            s,
            now,
            scheduled_for=fire_slot,
            trigger=trigger,
            idempotency_key=slot_key(s.id, fire_slot, d.plan.timing_version),
        )
        plan.insert_runs.append(run)
        d.runs.append(run)
        if trigger == "catch_up" and s.jitter_seconds > 0:
            d.delays[run.id] = self.rng.uniform(0, s.jitter_seconds)
        plan.next_run_at = slot_after(s, fire_slot)

    # -- finish --------------------------------------------------------------------------------

    def retry_delay(self, s: Schedule, attempt: int, retry_after: float | None) -> float:
        doubling: int = 2 ** (attempt - 1)  # attempt >= 1: an int (typeshed says Any)
        base = min(MAX_RETRY_DELAY, s.retry_delay_seconds * doubling)
        delay = base * self.rng.uniform(0.9, 1.1)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return delay

    def plan_finish(
        self,
        s: Schedule,
        timing_version: int,
        run: ScheduleRun,
        outcome: Outcome,
        started_at: float,
        now: float,
        release: bool,
    ) -> FinishPlan:
        """`s` is the holder's view of the schedule (its cursor after start); `release` is False
        while other attempts of this schedule are still in flight here (overlap=allow)."""
        plan = FinishPlan(
            schedule_id=s.id,
            lease_version=s.lease_version,
            timing_version=timing_version,
            run_row_id=run.id,
            status=outcome.status,
            status_code=outcome.status_code,
            run_id=outcome.run_id,
            session_id=outcome.session_id,
            error=outcome.error,
            completed_at=now,
            duration_ms=round((now - started_at) * 1000, 3),
            output=outcome.output,
            release=release,
            success=outcome.status == "success",
        )
        retries_used = run.attempt - 1
        if (
            outcome.status != "success"
            and outcome.retryable
            and outcome.status not in NON_RETRYABLE
            and retries_used < s.max_retries
        ):
            plan.retry = self._run(
                s,
                now,
                status="pending",
                attempt=run.attempt + 1,
                trigger="retry",
                scheduled_for=run.scheduled_for,
                idempotency_key=run.idempotency_key,
                due_at=now + self.retry_delay(s, run.attempt, outcome.retry_after),
                # A run that timed out (a cancel is cooperative) or whose polling broke off may
                # still be going: the retry attaches to it first and starts a new one only once
                # it is over (one poll, for a run that ended ERROR).
                run_id=outcome.run_id,
                session_id=outcome.session_id,
            )
            plan.retry.triggered_at = None
        # A one-off is done once its slot's last attempt ends.
        plan.disable = s.next_run_at is None and _is_one_off(s)
        if release and s.overlap != "allow":
            self._plan_overlap(s, started_at, now, plan)
        return plan

    def _plan_overlap(self, s: Schedule, started_at: float, now: float, plan: FinishPlan) -> None:
        """Slots that came due while this run was in flight: skip them, or buffer the latest.
        A backlog already due when the run started is the misfire policy's, not overlap's."""
        cursor = s.next_run_at
        if cursor is None or cursor > now or cursor <= started_at:
            return
        last = latest_at_or_before(s, cursor, now)
        plan.advance_slot = True
        plan.next_run_at = slot_after(s, last)
        if s.overlap == "buffer_one":
            if last > cursor:
                before = latest_at_or_before(s, cursor, last - 1e-6)
                plan.insert_runs += self._skipped(
                    s,
                    now,
                    cursor,
                    before,
                    "overlap: skipped (buffer_one keeps the latest)",
                    plan.timing_version,
                )
            plan.insert_runs.append(
                self._run(
                    s,
                    now,
                    status="pending",
                    scheduled_for=last,
                    due_at=now,
                    idempotency_key=slot_key(s.id, last, plan.timing_version),
                )
            )
            plan.insert_runs[-1].triggered_at = None
        else:
            plan.insert_runs += self._skipped(
                s,
                now,
                cursor,
                last,
                "overlap: skipped (previous run still in flight)",
                plan.timing_version,
            )


def _is_one_off(s: Schedule) -> bool:
    return s.run_at is not None and not (s.cron_expr or s.interval_seconds)
