"""One attempt: its jitter, the HTTP call through the dispatcher, and the outcome planned
(policy.Planner.plan_finish) and queued for the batched finish. An attempt is sent only while its
lease is trusted (lease.Held.valid_until). A mixin of Scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .errors import StoreError
from .lease import CHECK_EVERY, Held
from .model import Outcome, ScheduleRun
from .policy import Planner, fire_for

if TYPE_CHECKING:
    from .clock import Clock
    from .http.dispatch import Dispatcher
    from .store import FinishPlan, Store

log = logging.getLogger("leasecron")


class Attempts:
    """Spawning and running attempts for Scheduler (see the module docstring)."""

    # what it uses of the Scheduler
    store: Store
    dispatcher: Dispatcher
    clock: Clock
    planner: Planner
    replica_id: str
    lease_seconds: float
    on_event: Callable[[str, dict[str, Any]], None] | None
    fired: int
    _held: dict[str, Held]
    _in_flight: int
    _attempts: set[asyncio.Task[None]]
    _wake: asyncio.Event
    _emit: Callable[..., None]
    _finish: Callable[[FinishPlan], Coroutine[Any, Any, bool]]

    def _spawn(self, held: Held, run: ScheduleRun, delay: float) -> None:
        self._in_flight += 1
        task = asyncio.create_task(self._attempt(held, run, delay))
        held.tasks[task] = run.id
        self._attempts.add(task)  # a strong reference until it ends (the loop keeps weak ones)
        task.add_done_callback(self._attempts.discard)

    async def _attempt(self, held: Held, run: ScheduleRun, delay: float) -> None:
        task = asyncio.current_task()
        assert task is not None  # _attempt always runs as the task it is registered under
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
                backoff = min(backoff * 2, self.lease_seconds * CHECK_EVERY)

    async def _end(
        self,
        held: Held,
        task: asyncio.Task[None],
        run: ScheduleRun,
        outcome: Outcome,
        started_at: float,
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
