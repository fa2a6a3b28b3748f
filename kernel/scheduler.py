"""The replica loop: peek, claim, start, dispatch, finish; plus the heartbeat that keeps leases and
the watchdog that stops work whose lease can no longer be trusted.

    loop:  due = store.next_due()                 # one index probe; the whole idle cost
           if due <= now: claim -> plan -> start -> spawn one task per attempt
           sleep until min(due, now + poll_interval), or until a store change wakes us
    task:  [jitter] -> dispatch (HTTP) -> plan_finish -> finish (batched, fenced) -> release
    heart: every lease/4 extend every held lease; a lease not confirmed within lease/2 is treated
           as lost (checked every lease/8): its attempts are cancelled, nothing more is sent.

A lease is local knowledge with an expiry: the store's fencing makes a stale holder's writes
harmless, the watchdog makes sure a stale holder also stops *sending*. With replica clocks apart by
up to lease/3, a holder stops (at most 5·lease/8 after its last confirmed renewal) before any
other replica can see the lease expire (lease − lease/3 = 2·lease/3 after it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .clock import Clock, SystemClock
from .errors import StoreError
from .heartbeat import Heartbeat
from .http.dispatch import Dispatcher
from .model import Outcome, Schedule, ScheduleRun
from .policy import Planner, StartDecision, fire_for
from .retention import checkpoint, prune_history
from .store import Claim, FinishPlan, StartPlan, Store

log = logging.getLogger("leasecron")

DEFAULT_RETENTION_SECONDS = 30 * 86_400.0
WARN_EVERY = 60.0  # seconds between warnings about failing store writes (outcomes, starts)

EventHook = Callable[[str, dict[str, Any]], None]


def new_run_id() -> str:
    """128 random bits as hex, like uuid4().hex at a tenth of the cost (one per attempt)."""
    return os.urandom(16).hex()


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(slots=True, eq=False)
class Held:
    """A lease this replica holds: its view of the schedule and the attempts running under it."""

    schedule: Schedule
    timing_version: int
    valid_until: float  # local deadline after which nothing more is sent under this lease
    tasks: dict[asyncio.Task, str] = field(default_factory=dict)  # attempt task -> run row id
    # overlap=allow: when to re-read the row for slots and pending work that came due meanwhile;
    # `frozen` once a re-read or start was refused (disabled, re-timed, lost): the last attempt
    # in flight then releases the lease and the row goes back to the common pool.
    check_at: float = 0.0
    frozen: bool = False


class Scheduler(Heartbeat):
    """One replica. Several may share a store, in one process or many; the lease coordinates them.

    poll_interval: the longest the loop sleeps without looking (it wakes earlier at the next due
        time, and at once on changes made through this process).
    lease_seconds: lease length; renewed every lease/4 while work is in flight.
    max_concurrent: attempts in flight at once on this replica.
    on_event: optional hook called as on_event(name, data) for "fire", "finish", "lease_lost",
        "store_error", "skip" / "redelivery" (counts of slots a start recorded skipped and
        of orphans it sent again), and "poll" (what one look at the store cost, and claimed).
    retention_seconds: final run rows older than this are pruned by the replica's housekeeping
        (0 keeps every row).
    housekeeping_interval: how often that housekeeping runs: prune, give the space back, and
        checkpoint the store's write-ahead log so it stays bounded.
    """

    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        *,
        clock: Clock | None = None,
        replica_id: str | None = None,
        poll_interval: float = 1.0,
        lease_seconds: float = 30.0,
        max_concurrent: int = 10,
        rng: random.Random | None = None,
        new_id: Callable[[], str] | None = None,
        on_event: EventHook | None = None,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        housekeeping_interval: float = 300.0,
    ):
        if poll_interval <= 0:
            raise ValueError("poll_interval: must be > 0")
        if lease_seconds <= 0:
            raise ValueError("lease_seconds: must be > 0")
        if max_concurrent < 1:
            raise ValueError("max_concurrent: must be >= 1")
        if not retention_seconds >= 0:
            raise ValueError("retention_seconds: must be >= 0 (0 keeps every run row)")
        if not housekeeping_interval > 0:
            raise ValueError("housekeeping_interval: must be > 0")
        self.store = store
        self.dispatcher = dispatcher
        self.clock: Clock = clock or SystemClock()
        self.replica_id = replica_id or default_replica_id()
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.max_concurrent = max_concurrent
        self.rng = rng or random.Random()
        self.planner = Planner(self.replica_id, new_id or new_run_id, self.rng)
        self.on_event = on_event
        self.retention_seconds = retention_seconds
        self.housekeeping_interval = housekeeping_interval
        self._held: dict[str, Held] = {}
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._finish_queue: list[tuple[FinishPlan, asyncio.Future]] = []
        self._finishing: list[FinishPlan] = []  # the outcome batch being written
        self._finish_ready = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._attempts: set[asyncio.Task] = set()
        self._own_write = False
        self._strays_possible = False  # a claim or start failed: we may hold leases unknowingly
        self._flush_last = False  # stop(): the flusher writes what is queued, then ends
        self._stopping = False
        # Outcome writes failing (a full disk): no new claims until one lands; warnings at most
        # once a minute, counting the failed writes since the last.
        self.outcomes_failing = False
        self._failed_writes = 0
        self._warned_at: float | None = None
        self.fired = 0  # attempts sent by this replica

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._tasks:
            return
        self._stopping = False
        self._flush_last = False
        # A store that is a time authority (Postgres, by default) keeps a wall clock to its own;
        # any other clock (a SimClock) was chosen explicitly and is the clock, on every store.
        aligned_clock = getattr(self.store, "aligned_clock", None)
        if aligned_clock is not None and isinstance(self.clock, SystemClock):
            self.clock = aligned_clock(self.clock)
        self.store.add_listener(self.wake)
        self._tasks = [
            asyncio.create_task(self._loop(), name=f"leasecron-loop-{self.replica_id}"),
            asyncio.create_task(self._heartbeat_loop(), name=f"leasecron-heart-{self.replica_id}"),
            asyncio.create_task(self._flush_loop(), name=f"leasecron-flush-{self.replica_id}"),
        ]

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming, let attempts in flight finish for up to `timeout` real seconds, then
        cancel the rest and expire their leases at once so another replica re-delivers them."""
        if not self._tasks:
            return
        self._stopping = True
        self._wake.set()
        loop_task, heart_task, flush_task = self._tasks
        # Let the loop leave at its next check rather than cancel it mid-claim: a claim or start
        # that committed must still spawn its attempts, or they would wait out the lease.
        done, _ = await asyncio.wait({loop_task}, timeout=max(timeout, 1.0))
        if not done:
            loop_task.cancel()
        # Every attempt, including those whose outcome is being written (they have left their
        # lease's in-flight set already).
        if self._attempts and timeout > 0:
            await asyncio.wait(set(self._attempts), timeout=timeout)
        leftover = {sid: held for sid, held in self._held.items() if held.tasks}
        cancelled = list(self._attempts)
        for task in cancelled:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*cancelled, return_exceptions=True)
        # The heartbeat stops (its renewal included) before any lease is handed back: a renewal
        # landing after the hand-back would undo it.
        heart_task.cancel()
        await asyncio.gather(heart_task, return_exceptions=True)
        if leftover:
            leases = [(sid, h.schedule.lease_version) for sid, h in leftover.items()]
            with contextlib.suppress(StoreError):  # else they expire on their own
                await self.store.expire_leases(self.replica_id, self.clock.now(), leases)
        self._held.clear()
        # Outcomes already decided are written by the flusher, the batch it may be writing
        # included (cancelling it mid-write would lose a delivered outcome); a store that stays
        # down past the wait leaves them to the lease, and the attempts are re-delivered.
        self._flush_last = True
        self._finish_ready.set()
        done, _ = await asyncio.wait({flush_task}, timeout=max(timeout, 1.0))
        if not done:
            flush_task.cancel()
        await asyncio.gather(loop_task, flush_task, return_exceptions=True)
        self._tasks = []
        if hasattr(self.store, "remove_listener"):
            self.store.remove_listener(self.wake)

    def kill(self) -> None:
        """Stop as if the process died this instant: every task is cancelled and nothing more is
        written (no release, no finish). For crash tests and the simulator; use stop() otherwise."""
        self._stopping = True
        for task in [*self._tasks, *self._attempts]:
            task.cancel()
        for _, fut in self._finish_queue:
            fut.cancel()
        self._finish_queue.clear()
        self._held.clear()
        self._tasks = []
        if hasattr(self.store, "remove_listener"):
            self.store.remove_listener(self.wake)

    async def __aenter__(self) -> Scheduler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def wake(self) -> None:
        """Look at the store now: a change was made (through this process, or another host
        notified us). An overlap=allow holder also re-reads the rows it keeps."""
        if not self._own_write:  # our own finish says nothing new about rows we keep
            for held in self._held.values():
                held.check_at = 0.0
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _emit(self, event: str, /, **data: Any) -> None:
        if self.on_event is not None:
            self.on_event(event, data)

    # -- the loop --------------------------------------------------------------------------------

    async def _align(self) -> None:
        """A clock kept to a time authority is read once before the first claim: until then our
        own clock could see slots due early or a live lease expired."""
        sync = getattr(self.clock, "sync", None)
        backoff = 0.05
        while sync is not None and not self._stopping:
            try:
                await sync()
                return
            except StoreError as exc:
                self._emit("store_error", operation=exc.operation, error=str(exc))
                await self.clock.wait(self._wake, backoff)
                backoff = min(backoff * 2, self.poll_interval)

    async def _loop(self) -> None:
        # Housekeeping lives and dies with the loop, off the hot path: its own task, on its own
        # timer, never inside a claim or finish transaction.
        housekeeping = asyncio.create_task(
            self._housekeeping_loop(), name=f"leasecron-housekeeping-{self.replica_id}"
        )
        try:
            await self._claim_loop()
        finally:
            housekeeping.cancel()
            await asyncio.gather(housekeeping, return_exceptions=True)

    async def _claim_loop(self) -> None:
        await self._align()
        store_backoff = 0.0
        while not self._stopping:
            self._wake.clear()  # before looking, so a change made while we look is not missed
            now = self.clock.now()
            wake_at = now + self.poll_interval
            try:
                if self._strays_possible:
                    await self._hand_back_strays()
                if self.outcomes_failing:
                    # Nothing new starts while outcomes cannot be written: its outcome could not
                    # be either. The flusher wakes us when a write lands again.
                    await self.clock.wait(self._wake, self.poll_interval)
                    continue
                wake_at = min(wake_at, await self._fire_held(now))
                capacity = self.max_concurrent - self._in_flight
                if capacity > 0:
                    # What a poll costs (wall time of the store calls: a cost, not a schedule,
                    # so not the injected clock's), for the metrics hook only.
                    polled = time.perf_counter() if self.on_event is not None else 0.0
                    due = await self.store.next_due()
                    now = self.clock.now()  # the poll may have corrected an aligned clock
                    claims = []
                    if due is not None and due <= now:
                        claims = await self.store.claim(
                            self.replica_id, now, self.lease_seconds, capacity
                        )
                    if self.on_event is not None:
                        self._emit(
                            "poll",
                            replica=self.replica_id,
                            seconds=time.perf_counter() - polled,
                            claimed=len(claims),
                        )
                    if due is not None and due <= now:
                        if claims:
                            if await self._start(claims, now):
                                # Yield before looking again: other tasks (and, in one process,
                                # other replicas) get the loop between batches.
                                await asyncio.sleep(0)
                                continue
                            # The start failed (reported, its leases handed back, so the rows
                            # are due again at once): back off, or a store that cannot write
                            # (a full disk) would be claimed from in a tight loop.
                            store_backoff = min(self.poll_interval, max(0.01, store_backoff * 2))
                            await self.clock.wait(self._wake, store_backoff)
                            continue
                        wake_at = now + min(self.poll_interval, 0.005)  # lost a race; re-peek
                    elif due is not None:
                        wake_at = min(wake_at, due)
                store_backoff = 0.0
            except Exception as exc:
                # "Not claimed": nothing was started; back off and look again. A fault of ours
                # (not the store's) is logged loudly, but the loop never dies of it.
                store_backoff = min(self.poll_interval, max(0.01, store_backoff * 2))
                wake_at = self.clock.now() + store_backoff
                if isinstance(exc, StoreError):
                    self._emit("store_error", operation=exc.operation, error=str(exc))
                    if exc.operation == "claim":
                        self._strays_possible = True
                else:
                    log.exception("replica %s: loop iteration failed", self.replica_id)
            await self.clock.wait(self._wake, wake_at - self.clock.now())

    async def _housekeeping_loop(self) -> None:
        # A first pass at start: a replica that restarts often must still prune.
        while not self._stopping:
            try:
                await self.housekeeping()
            except StoreError as exc:
                self._emit("store_error", operation=exc.operation, error=str(exc))
            except Exception:
                log.exception("replica %s: housekeeping failed", self.replica_id)
            await self.clock.sleep(self.housekeeping_interval)

    async def housekeeping(self) -> int:
        """One housekeeping pass: prune run rows past retention (in batches; see
        kernel/retention.py), give their space back, checkpoint. Returns the rows pruned."""
        pruned = 0
        if self.retention_seconds:
            before = self.clock.now() - self.retention_seconds
            pruned = await prune_history(self.store, before)
        if not pruned:  # a prune that deleted rows has checkpointed already
            await checkpoint(self.store)
        return pruned

    def _unwritten(self) -> list[FinishPlan]:
        """Outcomes decided but not yet committed: their attempts have left the held set, but
        their run rows are still `running` under our lease."""
        return self._finishing + [plan for plan, _ in self._finish_queue]

    def _busy(self) -> set[str]:
        """Schedules whose lease guards an attempt in flight or an outcome not yet written:
        never to be handed back, or the attempt would be taken for an orphan and re-sent."""
        return self._held.keys() | {plan.schedule_id for plan in self._unwritten()}

    async def _hand_back_strays(self) -> None:
        """A failed claim may have committed (the reply lost with the connection), and a failed
        start leaves its claim's leases: rows leased to us that we do not track would wait out
        their lease unfired. Hand them back; a store error here is the loop's, which backs off
        and tries again next time round (the leases also expire on their own)."""
        now = self.clock.now()
        leases = await self.store.leases_of(self.replica_id, now)
        busy = self._busy()
        strays = [(sid, version) for sid, version in leases if sid not in busy]
        if strays:
            await self.store.expire_leases(self.replica_id, now, strays)
        self._strays_possible = False

    def _plan(self, claim: Claim, now: float, in_flight: frozenset[str] = frozenset()):
        try:
            decision = self.planner.plan_claim(claim, now, in_flight)
        except Exception as exc:
            decision = self.planner.plan_unplannable(claim, now, exc)
            quarantine = decision.plan.quarantine or ""
            self._quarantined(claim.schedule, quarantine.removeprefix("schedule disabled: "))
        return claim.schedule, claim.timing_version, decision

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

    async def _apply_start(
        self, items: list[tuple[Schedule, int, StartDecision]], now: float
    ) -> bool:
        """Start the planned runs; False if the store failed (nothing was sent)."""
        try:
            results = await self.store.start(
                self.replica_id, now, self.lease_seconds, [d.plan for _, _, d in items]
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
                held = Held(schedule, timing_version, now + self.lease_seconds / 2)
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
        again = sum(1 for lost in plan.lost_runs if lost[1] is not None)
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
        claims = {c.schedule.id: c for c in await self.store.claim_held(self.replica_id, leases)}
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

    # -- one attempt -----------------------------------------------------------------------------

    def _spawn(self, held: Held, run: ScheduleRun, delay: float) -> None:
        self._in_flight += 1
        task = asyncio.create_task(self._attempt(held, run, delay))
        held.tasks[task] = run.id
        self._attempts.add(task)  # a strong reference until it ends (the loop keeps weak ones)
        task.add_done_callback(self._attempts.discard)

    async def _attempt(self, held: Held, run: ScheduleRun, delay: float) -> None:
        task = asyncio.current_task()
        try:
            schedule = held.schedule
            if delay > 0:
                await self.clock.sleep(delay)
                # A disable or delete may have committed while we waited: send nothing then.
                still = await self._still_held(held)
                if still is None:
                    return  # could not ask: send nothing, the row is reclaimed after its lease
                if not still:
                    await self._end(
                        held,
                        task,
                        run,
                        Outcome(
                            status="cancelled",
                            error="schedule disabled, deleted or taken before its jittered send",
                        ),
                        self.clock.now(),
                    )
                    return
            if self.clock.now() > held.valid_until:
                return  # lease can no longer be trusted: send nothing; the row is reclaimed
            fire = fire_for(schedule, run)
            started_at = self.clock.now()
            self.fired += 1
            if self.on_event is not None:
                self._emit(
                    "fire",
                    replica=self.replica_id,
                    schedule_id=schedule.id,
                    name=schedule.name,
                    run_row_id=run.id,
                    attempt=run.attempt,
                    scheduled_for=run.scheduled_for,
                    trigger=run.trigger,
                    idempotency_key=run.idempotency_key,
                    at=started_at,
                )

            async def on_started(run_id: str | None, session_id: str | None) -> None:
                with contextlib.suppress(StoreError):
                    await self.store.set_run_ids(self.replica_id, run.id, run_id, session_id)

            outcome = await self.dispatcher.dispatch(fire, on_started)
            await self._end(held, task, run, outcome, started_at)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A fault of ours, not of the target: say so loudly and leave the attempt's row
            # running. Once nothing else runs under the lease we stop renewing it, so it expires
            # and the attempt is re-delivered; dropping it sooner would let the row be reclaimed
            # (and its other attempts re-sent) while they are still in flight here.
            log.exception(
                "attempt %s of schedule %s failed inside the scheduler", run.id, held.schedule.id
            )
            held.tasks.pop(task, None)
            if not held.tasks and self._held.get(held.schedule.id) is held:
                del self._held[held.schedule.id]
        finally:
            held.tasks.pop(task, None)
            self._in_flight -= 1
            self._wake.set()

    async def _still_held(self, held: Held) -> bool | None:
        """Ask the store whether the lease still stands; a store error is asked again, until the
        lease's local deadline passes (then None: unknown)."""
        backoff = 0.05
        while True:
            try:
                s = held.schedule
                return await self.store.holds(self.replica_id, s.id, s.lease_version)
            except StoreError as exc:
                self._emit("store_error", operation=exc.operation, error=str(exc))
                if self.clock.now() + backoff > held.valid_until:
                    return None
                await self.clock.sleep(backoff)
                backoff = min(backoff * 2, self.lease_seconds / 8)

    async def _end(
        self, held: Held, task: asyncio.Task, run: ScheduleRun, outcome: Outcome, started_at: float
    ) -> None:
        now = self.clock.now()
        # The attempt leaves the lease's in-flight set before its outcome is written, so of two
        # attempts ending together exactly one sees itself last and releases.
        held.tasks.pop(task, None)
        release = not held.tasks
        if release and self._held.get(held.schedule.id) is held:
            del self._held[held.schedule.id]
        plan = self.planner.plan_finish(
            held.schedule, held.timing_version, run, outcome, started_at, now, release
        )
        recorded = await self._finish(plan)
        self._emit(
            "finish",
            replica=self.replica_id,
            schedule_id=held.schedule.id,
            run_row_id=run.id,
            name=held.schedule.name,
            attempt=run.attempt,
            status=outcome.status,
            status_code=outcome.status_code,
            error=outcome.error,
            recorded=recorded,
            retry_at=plan.retry.due_at if plan.retry else None,
            skipped=sum(1 for r in plan.insert_runs if r.status == "skipped"),
            at=now,
        )

    # -- finishing, batched --------------------------------------------------------------------

    async def _finish(self, plan: FinishPlan) -> bool:
        fut = asyncio.get_running_loop().create_future()
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
                    backoff = min(backoff * 2, self.lease_seconds / 4)
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
