"""ScheduleManager: the CRUD side. Creates, updates, enables, disables, deletes and triggers
schedules, validating input and keeping the slot cursor right; never fires anything itself.
Every change goes through the store in one transaction and wakes the schedulers of this process.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from .clock import Clock, SystemClock
from .errors import ScheduleExistsError, ScheduleNotFoundError, ValidationError
from .model import Schedule, ScheduleRun
from .policy import manual_key
from .retention import prune_history
from .slots import first_slot
from .spec import (
    MAX_PAYLOAD_BYTES,
    TIMING_FIELDS,
    check_timing,
    validate_fields,
    validate_page,
    validate_user_id,
)
from .store import SPEC_FIELDS, ScheduleStore

_DEFAULTS = {
    f: getattr(Schedule("", "", "/"), f) for f in SPEC_FIELDS if f not in ("name", "endpoint")
}


def _caller_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Accept `cron` as the caller's name for the cron_expr column."""
    fields = dict(fields)
    if "cron" in fields:
        if "cron_expr" in fields:
            raise ValidationError("cron", "give cron or cron_expr, not both")
        fields["cron_expr"] = fields.pop("cron")
    return fields


def _resume_at(schedule: Schedule, now: float, retimed: bool) -> float | None:
    """The slot cursor of a schedule enabled or re-timed at `now`: its first slot after now."""
    nxt = first_slot(schedule, now) if schedule.enabled else None
    if nxt is not None and not retimed and schedule.run_at is not None and nxt <= now:
        nxt = None  # re-enabling a one-off whose time has passed does not fire it again
    return nxt


def _found(schedule_id: str, schedule: Schedule | None) -> Schedule:
    if schedule is None:
        raise ScheduleNotFoundError(schedule_id)
    return schedule


def _validate_needle(name_contains: Any) -> None:
    if name_contains is not None and not isinstance(name_contains, str):
        raise ValidationError(
            "name_contains", f"{name_contains!r}: must be a string (a part of a name) or None"
        )


class ScheduleManager:
    """allowed_hosts: hosts (or host:port) an absolute endpoint URL may name; a schedule for any
    other is refused when written. Give the dispatcher the same list.
    max_payload_bytes: the largest payload accepted, as encoded JSON (default 1 MiB)."""

    def __init__(
        self,
        store: ScheduleStore,
        *,
        clock: Clock | None = None,
        new_id: Callable[[], str] | None = None,
        allowed_hosts: Iterable[str] = (),
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ):
        if isinstance(max_payload_bytes, bool) or not isinstance(max_payload_bytes, int):
            raise ValidationError("max_payload_bytes", f"{max_payload_bytes!r} must be an integer")
        if max_payload_bytes < 2:
            raise ValidationError("max_payload_bytes", f"{max_payload_bytes!r} must be >= 2")
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.new_id = new_id or (lambda: uuid.uuid4().hex)
        self.allowed_hosts = tuple(h.lower() for h in allowed_hosts)
        self.max_payload_bytes = max_payload_bytes

    def _validate(self, fields: dict[str, Any]) -> dict[str, Any]:
        return validate_fields(
            fields, allowed_hosts=self.allowed_hosts, max_payload_bytes=self.max_payload_bytes
        )

    async def _now(self) -> float:
        """The time to write with: the store's authority's time when it has one (Postgres, by
        default), re-read at most every few seconds, else our own clock's."""
        self.clock = self.store.aligned_clock(self.clock)  # as Scheduler
        fresh = getattr(self.clock, "fresh", None)
        if fresh is not None:
            await fresh()
        return self.clock.now()

    async def now(self) -> float:
        """The time this manager writes with (the store's authority's, when it has one)."""
        return await self._now()

    async def create(
        self, name: str, *, endpoint: str, if_exists: str = "raise", **fields: Any
    ) -> Schedule:
        """Create a schedule. if_exists: "raise" (ScheduleExistsError), "update" (apply the
        fields that differ; the slot cursor moves only if timing changed), "skip" (return it)."""
        self._validate({"if_exists": if_exists})
        spec = {
            **_DEFAULTS,
            **self._validate({"name": name, "endpoint": endpoint, **_caller_fields(fields)}),
        }
        now = await self._now()
        existing = await self.store.get_schedule_by_name(name)
        if existing is not None:
            # Start-up declarations repeat: an unchanged one (even a one-off now past) is fine.
            if if_exists == "raise":
                raise ScheduleExistsError(name)
            if if_exists == "skip":
                return existing
            changed = {k: v for k, v in spec.items() if getattr(existing, k) != v}
            if "user_id" not in fields:  # a declaration that names no owner keeps the one it has
                changed.pop("user_id", None)
            return await self.update(existing.id, **changed) if changed else existing
        check_timing(spec, now)
        schedule = Schedule(id=self.new_id(), created_at=now, updated_at=now, **spec)
        schedule.next_run_at = first_slot(schedule, now) if schedule.enabled else None
        schedule.due_at = schedule.next_run_at
        try:
            await self.store.create_schedule(schedule)
        except ScheduleExistsError:
            # Another replica created it between our look-up and insert (startup races).
            if if_exists == "raise":
                raise
            return await self.create(name, endpoint=endpoint, if_exists=if_exists, **fields)
        return schedule

    async def get(self, schedule_id: str) -> Schedule | None:
        return await self.store.get_schedule(schedule_id)

    async def get_by_name(self, name: str) -> Schedule | None:
        return await self.store.get_schedule_by_name(name)

    async def list(
        self,
        enabled: bool | None = None,
        *,
        user_id: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        name_contains: str | None = None,
    ) -> list[Schedule]:
        """Schedules by name: all owners' with user_id=None (the operator view), else only that
        user's; only names containing `name_contains` (any case) when given; a page of `limit`
        from `offset` when given. The name filter runs in the store's query."""
        validate_user_id(user_id)
        validate_page(limit, offset)
        _validate_needle(name_contains)
        return await self.store.list_schedules(
            enabled, user_id=user_id, limit=limit, offset=offset, name_contains=name_contains
        )

    async def count(
        self,
        enabled: bool | None = None,
        *,
        user_id: str | None = None,
        name_contains: str | None = None,
    ) -> int:
        """How many list(enabled, user_id=..., name_contains=...) returns without a limit."""
        validate_user_id(user_id)
        _validate_needle(name_contains)
        return await self.store.count_schedules(
            enabled, user_id=user_id, name_contains=name_contains
        )

    async def _require(self, schedule_id: str) -> Schedule:
        schedule = await self.store.get_schedule(schedule_id)
        if schedule is None:
            raise ScheduleNotFoundError(schedule_id)
        return schedule

    async def update(self, schedule_id: str, **fields: Any) -> Schedule:
        """Change fields. A timing change (cron, interval, run_at, start_at, timezone) restarts
        the slot series from now; a run in flight finishes under the old spec and its release
        cannot write the old cursor back (the timing fence: kernel/sqlite/sql.py)."""
        current = await self._require(schedule_id)
        changes = self._validate(_caller_fields(fields))
        if not changes:
            return current
        now = await self._now()
        merged = replace(current, **changes)
        retimed = any(k in changes for k in TIMING_FIELDS)
        if retimed:  # a finished one-off may still have its description edited
            timing = {k: getattr(merged, k) for k in TIMING_FIELDS}
            check_timing({**timing, "misfire_grace_seconds": merged.misfire_grace_seconds}, now)
        if changes.get("enabled") is True:
            changes["disabled_reason"] = None  # a quarantined row, repaired and enabled again
        if retimed or changes.get("enabled") is True:
            changes["next_run_at"] = _resume_at(merged, now, retimed)
        return _found(schedule_id, await self.store.update_schedule(schedule_id, changes, now))

    async def enable(self, schedule_id: str) -> Schedule:
        """Resume from the next slot after now; slots missed while disabled are not fired."""
        current = await self._require(schedule_id)
        if current.enabled:
            return current
        now = await self._now()
        resume_at = _resume_at(replace(current, enabled=True), now, retimed=False)
        return _found(schedule_id, await self.store.enable_schedule(schedule_id, resume_at, now))

    async def disable(self, schedule_id: str) -> Schedule:
        """Nothing of the schedule fires after this commits: pending triggers and retries are
        cancelled; an attempt already in flight finishes and is recorded."""
        current = await self._require(schedule_id)
        if not current.enabled:
            return current
        now = await self._now()
        return _found(schedule_id, await self.store.disable_schedule(schedule_id, now))

    async def delete(self, schedule_id: str) -> bool:
        return await self.store.delete_schedule(schedule_id, await self._now())

    async def trigger(self, schedule_id: str) -> str:
        """Durable "run now": queues a pending run and returns its id. It is never lost: if a
        run is in flight it fires right after it (as overlap=buffer_one would)."""
        now = await self._now()
        run_row_id = self.new_id()
        run = ScheduleRun(
            id=run_row_id,
            schedule_id=schedule_id,
            attempt=1,
            scheduled_for=None,
            trigger="manual",
            status="pending",
            idempotency_key=manual_key(schedule_id, run_row_id),
            due_at=now,
            created_at=now,
        )
        try:
            await self.store.add_pending_run(run, now)
        except LookupError:
            raise ScheduleNotFoundError(schedule_id) from None
        except PermissionError:
            raise ValidationError(
                "enabled", f"schedule {schedule_id!r} is disabled; enable it before triggering"
            ) from None
        return run_row_id

    async def runs(
        self, schedule_id: str, limit: int = 20, offset: int = 0
    ) -> builtins.list[ScheduleRun]:  # `list` here is the method above
        """The schedule's runs, newest first: `limit` of them from `offset`."""
        for field, value in (("limit", limit), ("offset", offset)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValidationError(field, f"{value!r} must be a whole number >= 0")
        return await self.store.list_runs(schedule_id, limit, offset)

    async def count_runs(self, schedule_id: str) -> int:
        """How many runs the schedule has (what runs() pages through)."""
        return await self.store.count_runs(schedule_id)

    async def get_run(self, run_row_id: str) -> ScheduleRun | None:
        return await self.store.get_run(run_row_id)

    async def prune_runs(
        self, older_than_seconds: float, *, on_progress: Callable[[int], None] | None = None
    ) -> int:
        """Retention: delete finished run rows created more than `older_than_seconds` ago
        (pending and running rows are kept), in batches of 500 rows per transaction, then give
        the space back where the store can (kernel/retention.py). Returns how many were deleted."""
        if isinstance(older_than_seconds, bool) or not isinstance(older_than_seconds, int | float):
            raise ValidationError("older_than_seconds", f"{older_than_seconds!r} must be a number")
        if older_than_seconds < 0:
            raise ValidationError("older_than_seconds", f"{older_than_seconds!r} must be >= 0")
        return await prune_history(
            self.store, await self._now() - older_than_seconds, on_progress=on_progress
        )
