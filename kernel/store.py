"""The storage protocol: scheduler-level operations a store must provide, and the plans that cross
it. The scheduler never sees SQL; a store never decides policy (misfire, overlap, retry delays).

Lease lifecycle, the same for every store:
  next_due   peek: the earliest `due_at` of an enabled schedule (an idle poll is only this)
  claim      take up to N due schedules under a fresh lease (version bumped: the fencing token)
  start      fenced on (locked_by, lease_version): write the run rows and the advanced slot
  reread_held an overlap=allow holder re-reads a row it keeps, to fire what comes due meanwhile
  heartbeat  fenced: extend the leases still held; answers the ids whose lease was taken over
  finish     fenced: record the outcome, queue a retry, apply overlap, release the lease
`due_at` folds "work is due" and "the holder's lease expired" into one indexed column: a locked
row's due_at is its lease expiry, so a replica that crashed mid-run is reclaimed by the same query.

Workflow persistence is a separate, optional part (`WorkflowStore`, in workflow/store.py): what
`Workflow(db=store)` needs to keep its runs, sessions and traces, and to read them back. The
scheduler never calls it, so a store for schedules alone leaves it out; SqliteStore and
PostgresStore have both parts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from .model import Schedule, ScheduleRun

# Columns a caller may set on create/update; everything else belongs to the lease machinery.
SPEC_FIELDS = (
    "name",
    "description",
    "user_id",
    "method",
    "endpoint",
    "payload",
    "cron_expr",
    "interval_seconds",
    "run_at",
    "start_at",
    "timezone",
    "timeout_seconds",
    "max_retries",
    "retry_delay_seconds",
    "overlap",
    "misfire",
    "misfire_grace_seconds",
    "max_catchup",
    "catchup_window_seconds",
    "jitter_seconds",
)


def check_updatable(fields: dict[str, Any]) -> None:
    """Raise ValueError unless every field is one update_schedule may set: the caller's columns
    and the three the manager sets itself (enabled, next_run_at, disabled_reason)."""
    unknown = set(fields) - {*SPEC_FIELDS, "enabled", "next_run_at", "disabled_reason"}
    if unknown:
        raise ValueError(f"update_schedule: not updatable: {sorted(unknown)}")


def orphan_places(limit: int) -> int:
    """How many places of a claim of `limit` rows go to orphans first (leased rows whose lease
    ran out): a quarter, at least one. Under a backlog a crashed replica's attempts are then
    re-delivered within about a lease of its death, however far behind the cluster is."""
    return max(1, limit // 4)


@dataclass(slots=True)
class Claim:
    """A schedule this replica now holds, with the run rows a decision needs."""

    schedule: Schedule
    timing_version: int
    pending: list[ScheduleRun]  # durable work waiting: triggers, retries, buffered slots
    # Attempts marked running: orphans of a previous holder whose lease expired or, when a holder
    # re-reads a row it keeps (overlap=allow), its own attempts still in flight.
    running: list[ScheduleRun]
    # Set when the row could not be decoded: the claim quarantined it (disabled, reason kept,
    # lease dropped) in its own transaction; `schedule` then carries only id and name.
    quarantined: str | None = None


class LostRun(NamedTuple):
    """An orphaned running row ended lease_lost by a start. The replacement is inserted only if
    the orphan was still running (the old holder's result did not land first)."""

    orphan_id: str
    replacement: ScheduleRun | None  # the row that re-delivers it; None: re-deliveries used up
    error: str  # recorded on the orphan


@dataclass(slots=True)
class StartPlan:
    """What the holder decided to do with a claimed schedule; applied atomically and fenced."""

    schedule_id: str
    lease_version: int
    timing_version: int
    next_run_at: float | None  # the slot cursor after this decision
    insert_runs: list[ScheduleRun] = field(default_factory=list)  # new rows (running or final)
    start_pending: list[str] = field(default_factory=list)  # pending row ids now running
    lost_runs: list[LostRun] = field(default_factory=list)  # orphans -> lease_lost
    # Keep the lease even if nothing starts (an overlap=allow holder with other runs in flight);
    # otherwise a plan that starts nothing releases the lease in the same transaction.
    keep_lease: bool = False
    disable: bool = False  # a one-off with nothing left to fire
    # A row the kernel cannot plan: quarantine it with this reason (disabled, reason kept, an
    # error run row) instead of starting anything.
    quarantine: str | None = None


@dataclass(slots=True)
class FinishPlan:
    """The end of one attempt: its result, what follows it, and whether the lease is released."""

    schedule_id: str
    lease_version: int
    timing_version: int
    run_row_id: str
    status: str
    status_code: int | None
    run_id: str | None
    session_id: str | None
    error: str | None
    completed_at: float
    duration_ms: float
    output: Any = None
    retry: ScheduleRun | None = None  # pending row for the next attempt (only if still enabled)
    # Overlap handling at release, valid only while the timing is unchanged (timing_version):
    next_run_at: float | None = None
    advance_slot: bool = False
    insert_runs: list[ScheduleRun] = field(default_factory=list)  # skipped / buffered rows
    release: bool = True
    disable: bool = False
    success: bool = False


class Store(Protocol):
    # -- schedules (the manager's side) --
    async def create_schedule(self, schedule: Schedule) -> None: ...
    async def get_schedule(self, schedule_id: str) -> Schedule | None: ...
    async def get_schedule_by_name(self, name: str) -> Schedule | None: ...
    async def list_schedules(
        self,
        enabled: bool | None = None,
        *,
        user_id: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        name_contains: str | None = None,
    ) -> list[Schedule]:
        """By name; only `enabled` (or disabled) ones, only `user_id`'s when given (None: all
        owners) and only names containing `name_contains` in any case (None or "": all); the
        page `offset`, `limit` of that order, cut in the query."""

    async def count_schedules(
        self,
        enabled: bool | None = None,
        *,
        user_id: str | None = None,
        name_contains: str | None = None,
    ) -> int:
        """How many list_schedules(enabled, user_id=..., name_contains=...) returns unpaged."""

    async def update_schedule(
        self, schedule_id: str, fields: dict[str, Any], now: float
    ) -> Schedule | None: ...
    async def delete_schedule(self, schedule_id: str, now: float) -> bool: ...
    async def add_pending_run(self, run: ScheduleRun, now: float) -> None: ...
    async def list_runs(
        self, schedule_id: str | None, limit: int = 20, offset: int = 0
    ) -> list[ScheduleRun]:
        """Newest first (all schedules' with None): `limit` rows from `offset`, cut in the query."""

    async def count_runs(self, schedule_id: str | None) -> int:
        """How many list_runs(schedule_id) would return unpaged."""

    async def get_run(self, run_row_id: str) -> ScheduleRun | None: ...

    # -- the lease algorithm (the scheduler's side) --
    async def next_due(self) -> float | None: ...
    async def claim(
        self, replica: str, now: float, lease_seconds: float, limit: int
    ) -> list[Claim]: ...
    async def start(
        self, replica: str, now: float, lease_seconds: float, plans: list[StartPlan]
    ) -> list[set[str] | None]: ...
    async def reread_held(self, replica: str, leases: list[tuple[str, int]]) -> list[Claim]: ...
    async def holds(self, replica: str, schedule_id: str, version: int) -> bool: ...
    async def heartbeat(
        self, replica: str, now: float, lease_seconds: float, leases: list[tuple[str, int]]
    ) -> set[str]: ...
    async def leases_of(self, replica: str, now: float) -> list[tuple[str, int]]: ...
    async def expire_leases(
        self, replica: str, now: float, leases: list[tuple[str, int]]
    ) -> None: ...
    async def finish(self, replica: str, now: float, plans: list[FinishPlan]) -> list[bool]: ...
    async def set_run_ids(
        self, replica: str, run_row_id: str, run_id: str | None, session_id: str | None
    ) -> None: ...
    async def prune_runs(self, before: float, limit: int | None = None) -> int: ...

    # -- wake-ups --
    def add_listener(self, callback: Callable[[], None]) -> None: ...
    def notify(self) -> None: ...
    async def close(self) -> None: ...
