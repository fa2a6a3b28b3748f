"""The storage protocols: what a store must provide, and the plans that cross it. The scheduler
never sees SQL; a store never decides policy (misfire, overlap, retry delays). `LeaseStore` is
the scheduler's side, `ScheduleStore` the manager's, `Store` both.

Lease lifecycle, the same for every store:
  next_due     peek: the earliest `due_at` of an enabled schedule (an idle poll is only this)
  claim        take up to N due schedules under a fresh lease (version bumped: the fencing token)
  start        fenced on (locked_by, lease_version): write the run rows and the advanced slot
  reread_held  an overlap=allow holder re-reads a row it keeps, to fire what comes due meanwhile
  heartbeat    fenced: extend the leases still held; answers the ids whose lease was taken over
  finish       fenced: record the outcome, queue a retry, apply overlap, release the lease
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

from .clock import Clock
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
    # Overlap handling at release, applied only under the timing planned with (the timing fence,
    # kernel/sqlite/sql.py):
    next_run_at: float | None = None
    advance_slot: bool = False
    insert_runs: list[ScheduleRun] = field(default_factory=list)  # skipped / buffered rows
    release: bool = True
    disable: bool = False
    success: bool = False


class LeaseStore(Protocol):
    """What a Scheduler needs: the lease algorithm (see the module docstring), wake-ups, time and
    housekeeping. Every member is required; a store without a notion answers trivially."""

    async def next_due(self) -> float | None:
        """The earliest due_at of an enabled schedule (None: nothing due, ever): the idle poll."""

    async def claim(
        self, replica: str, now: float, lease_seconds: float, limit: int
    ) -> list[Claim]:
        """Lease up to `limit` due rows to `replica` until now + lease_seconds (orphans first)."""

    async def start(
        self, replica: str, now: float, lease_seconds: float, plans: list[StartPlan]
    ) -> list[set[str] | None]:
        """Apply each plan fenced; per plan the run row ids now running, or None if fenced out."""

    async def reread_held(self, replica: str, leases: list[tuple[str, int]]) -> list[Claim]:
        """The rows `replica` still holds under these (id, version) leases, enabled, as Claims."""

    async def holds(self, replica: str, schedule_id: str, version: int) -> bool:
        """Whether the row exists, is enabled and is leased to (replica, version)."""

    async def heartbeat(
        self, replica: str, now: float, lease_seconds: float, leases: list[tuple[str, int]]
    ) -> set[str]:
        """Extend these leases to now + lease_seconds; the ids whose lease was taken over."""

    async def leases_of(self, replica: str, now: float) -> list[tuple[str, int]]:
        """(schedule id, lease version) of every live lease `replica` holds."""

    async def expire_leases(self, replica: str, now: float, leases: list[tuple[str, int]]) -> None:
        """Hand these leases back at once (expired at `now`), fenced: claimable by anyone."""

    async def finish(self, replica: str, now: float, plans: list[FinishPlan]) -> list[bool]:
        """Record each outcome fenced; per plan whether this holder still owned the attempt."""

    async def set_run_ids(
        self, replica: str, run_row_id: str, run_id: str | None, session_id: str | None
    ) -> None:
        """Link a running attempt to the run the target started, while it is `replica`'s."""

    async def prune_runs(self, before: float, limit: int | None = None) -> int:
        """Delete up to `limit` (None: all) final run rows created before `before`; how many."""

    async def reclaim_space(self, max_pages: int = 1000) -> int:
        """Give up to `max_pages` free pages back to the filesystem; how many (0: no notion)."""

    async def checkpoint(self) -> bool:
        """Bound the write-ahead log; True if done (or the store keeps no log of its own)."""

    def aligned_clock(self, local: Clock) -> Clock:
        """The clock to run on instead of `local`: one kept to the store's time authority, or
        `local` itself (a store without one, or a clock the caller chose explicitly)."""

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever a write may have made work due sooner."""

    def remove_listener(self, callback: Callable[[], None]) -> None:
        """Stop calling `callback` (no error if it was not listening)."""

    def notify(self) -> None:
        """Call every listener of this store in this process now."""

    async def close(self) -> None:
        """Release connections and threads; the store is unusable after."""


class ScheduleStore(Protocol):
    """What a ScheduleManager needs: schedule CRUD, triggers and the run history, each write in
    one transaction that wakes the schedulers listening on the store."""

    async def create_schedule(self, schedule: Schedule) -> None:
        """Insert a new row; ScheduleExistsError if its name is taken."""

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        """The row by id, or None."""

    async def get_schedule_by_name(self, name: str) -> Schedule | None:
        """The row by name, or None."""

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
    ) -> Schedule | None:
        """Set these columns (check_updatable) under the row's lock; the row after, or None."""

    async def enable_schedule(
        self, schedule_id: str, next_run_at: float | None, now: float
    ) -> Schedule | None:
        """Enable the row from `next_run_at`, reason cleared, timing bumped; the row, or None."""

    async def disable_schedule(self, schedule_id: str, now: float) -> Schedule | None:
        """Disable the row (timing bumped) and cancel its waiting work; the row, or None."""

    async def delete_schedule(self, schedule_id: str, now: float) -> bool:
        """Delete the row and cancel its waiting work (history stays); whether it existed."""

    async def add_pending_run(self, run: ScheduleRun, now: float) -> None:
        """Queue a trigger; LookupError if the schedule is gone, PermissionError if disabled."""

    async def list_runs(
        self, schedule_id: str | None, limit: int = 20, offset: int = 0
    ) -> list[ScheduleRun]:
        """Newest first (all schedules' with None): `limit` rows from `offset`, cut in the query."""

    async def count_runs(self, schedule_id: str | None) -> int:
        """How many list_runs(schedule_id) would return unpaged."""

    async def get_run(self, run_row_id: str) -> ScheduleRun | None:
        """One run row by id, or None."""

    async def prune_runs(self, before: float, limit: int | None = None) -> int:
        """Delete up to `limit` (None: all) final run rows created before `before`; how many."""

    async def reclaim_space(self, max_pages: int = 1000) -> int:
        """Give up to `max_pages` free pages back to the filesystem; how many (0: no notion)."""

    async def checkpoint(self) -> bool:
        """Bound the write-ahead log; True if done (or the store keeps no log of its own)."""

    async def schema_version(self) -> int:
        """The version of the tables' layout recorded in the store (kernel/tables.py)."""

    def aligned_clock(self, local: Clock) -> Clock:
        """The clock to write with instead of `local` (see LeaseStore.aligned_clock)."""

    def notify(self) -> None:
        """Call every listener of this store in this process now."""


class Store(LeaseStore, ScheduleStore, Protocol):
    """Both sides, as SqliteStore and PostgresStore provide them (a Scheduler and a
    ScheduleManager may share one store object)."""
