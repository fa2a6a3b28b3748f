"""The kernel's value types: what a schedule is, what a run row is, and what crosses the dispatch
boundary (a Fire going out, an Outcome coming back). Plain dataclasses; no I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OVERLAP_POLICIES = ("skip", "buffer_one", "allow")
MISFIRE_POLICIES = ("fire_once", "skip", "catch_up")
IF_EXISTS = ("raise", "update", "skip")

# Run row statuses. `pending` is durable work not yet started (a manual trigger, a retry, a slot
# buffered by overlap=buffer_one); `running` is in flight under the schedule's lease (a
# re-delivered attempt starts running at once); the rest are final.
RUN_STATUSES = (
    "pending",
    "running",
    "success",
    "failed",
    "timeout",
    "skipped",
    "cancelled",
    "paused",
    "lease_lost",
)
FINAL_STATUSES = frozenset(RUN_STATUSES) - {"pending", "running"}
RUN_TRIGGERS = ("schedule", "manual", "retry", "catch_up")


@dataclass(slots=True)
class Schedule:
    id: str
    name: str
    endpoint: str
    method: str = "POST"
    description: str | None = None
    user_id: str | None = None  # owner; None: no user's (only the operator view shows it)
    payload: dict[str, Any] | None = None
    cron_expr: str | None = None  # "" or None with no interval/run_at: on demand only
    interval_seconds: float | None = None
    run_at: float | None = None
    start_at: float | None = None
    timezone: str = "UTC"
    timeout_seconds: float = 3600.0
    max_retries: int = 0
    retry_delay_seconds: float = 60.0
    overlap: str = "skip"
    misfire: str = "fire_once"
    misfire_grace_seconds: float = 60.0
    max_catchup: int = 100
    catchup_window_seconds: float = 86_400.0
    jitter_seconds: float = 0.0
    enabled: bool = True
    disabled_reason: str | None = None  # why the kernel disabled it (a row it cannot use)
    next_run_at: float | None = None
    due_at: float | None = None
    locked_by: str | None = None
    locked_at: float | None = None
    lease_expires_at: float | None = None
    lease_version: int = 0
    last_run_at: float | None = None
    last_status: str | None = None
    consecutive_failures: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(slots=True)
class ScheduleRun:
    id: str
    schedule_id: str
    attempt: int
    scheduled_for: float | None
    trigger: str
    status: str
    idempotency_key: str
    due_at: float | None = None
    status_code: int | None = None
    run_id: str | None = None
    session_id: str | None = None
    error: str | None = None
    replica: str | None = None
    lease_version: int | None = None
    reclaim: int = (
        0  # how many times this attempt was re-delivered after its holder's lease expired
    )
    triggered_at: float | None = None
    completed_at: float | None = None
    duration_ms: float | None = None
    input: Any = None
    output: Any = None
    created_at: float = 0.0


@dataclass(slots=True)
class Fire:
    """One attempt to call a schedule's endpoint, as handed to a Dispatcher."""

    schedule_id: str
    schedule_name: str
    run_row_id: str  # the agno_schedule_runs row recording this attempt
    method: str
    endpoint: str
    payload: dict[str, Any] | None
    attempt: int  # 1 for the first attempt of a slot or trigger
    scheduled_for: float | None
    idempotency_key: str  # stable for one slot across attempts and reclaims
    timeout_seconds: float
    trigger: str = "schedule"
    # The AgentOS run an earlier delivery of this attempt (or the attempt it retries) started:
    # a run endpoint attaches to it before it would start another one.
    run_id: str | None = None
    session_id: str | None = None


@dataclass(slots=True)
class Outcome:
    """What a Dispatcher reports for one Fire.

    status: success | failed | timeout | cancelled | paused.
    retryable: the scheduler may try again (connection error, timeout, 5xx, 408, 429, run ERROR).
    retry_after: seconds the target asked us to wait (Retry-After), if any.
    """

    status: str
    status_code: int | None = None
    run_id: str | None = None
    session_id: str | None = None
    error: str | None = None
    retryable: bool = False
    retry_after: float | None = None
    output: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
