"""The replica loop: peek, claim, start, dispatch, finish. Each concern has its own file, mixed
into Scheduler: starting.py (claim -> plan -> start), attempts.py (one attempt's HTTP call),
finishing.py (outcomes, batched), heartbeat.py (renewal and watchdog), lease.py (the timing that
makes a holder stop before anyone else can take its lease).

    loop:  due = store.next_due()                 # one index probe; the whole idle cost
           if due <= now: claim -> plan -> start -> spawn one task per attempt
           sleep until min(due, now + poll_interval), or until a store change wakes us
    task:  [jitter] -> dispatch (HTTP) -> plan_finish -> finish (batched, fenced) -> release
    heart: renew every held lease; give up on one not confirmed in time (lease.py)
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
from typing import Any

from .attempts import Attempts
from .clock import Clock, SystemClock
from .errors import StoreError
from .finishing import Finishing
from .heartbeat import Heartbeat
from .http.dispatch import Dispatcher
from .lease import Held
from .policy import Planner
from .retention import checkpoint, prune_history
from .starting import Starts
from .store import FinishPlan, Store

log = logging.getLogger("leasecron")

DEFAULT_RETENTION_SECONDS = 30 * 86_400.0

EventHook = Callable[[str, dict[str, Any]], None]


def new_run_id() -> str:
    """128 random bits as hex, like uuid4().hex at a tenth of the cost (one per attempt)."""
    return os.urandom(16).hex()


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Scheduler(Starts, Attempts, Finishing, Heartbeat):
    """One replica. Several may share a store, in one process or many; the lease coordinates them.

    poll_interval: the longest the loop sleeps without looking (it wakes earlier at the next due
        time, and at once on changes made through this process).
    lease_seconds: lease length; renewed every lease/4 while work is in flight (lease.py).
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
        self._finish_queue: list[tuple[FinishPlan, asyncio.Future[bool]]] = []
        self._finishing: list[FinishPlan] = []  # the outcome batch being written
        self._finish_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._attempts: set[asyncio.Task[None]] = set()
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
        self.clock = self.store.aligned_clock(self.clock)
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

    # -- one attempt -----------------------------------------------------------------------------

    # -- finishing, batched --------------------------------------------------------------------
