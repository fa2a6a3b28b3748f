"""The JSON shapes of the schedule routes: the create and update bodies (pydantic, so the OpenAPI
document describes them and a wrong type or an unknown field is a 422 naming it) and the schedule,
run and page objects sent back.

The bodies check types only; the rules (cron syntax, bounds, endpoints, payload size) are the
kernel's, applied by ScheduleManager, so the REST routes, the CLI and the Python API accept the
same schedules. Field names follow the reference AgentOS where it has them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from leasecron.kernel import Schedule, ScheduleRun

# A time in a body: epoch seconds, or ISO 8601 text with an offset ("2026-01-02T09:00:00+01:00",
# "...Z"). Without an offset the instant would depend on the server's zone, so it is refused.
TimeIn = float | str | None


def parse_time(value: float | str | None) -> float | None:
    if value is None or isinstance(value, int | float):
        return value
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{value!r} must be epoch seconds or ISO 8601 like 2026-01-02T09:00:00+01:00"
        ) from None
    if when.tzinfo is None:
        raise ValueError(f"{value!r} needs a UTC offset (e.g. +01:00 or Z)")
    return when.timestamp()


class _Body(BaseModel):
    # strict: "5" is not 5 and 1 is not true; an unknown field is refused, not dropped.
    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("run_at", "start_at", mode="after", check_fields=False)
    @classmethod
    def _time(cls, value: float | str | None) -> float | None:
        return parse_time(value)


class ScheduleCreate(_Body):
    """Only the fields given are passed on; the others take the kernel's defaults."""

    name: str
    endpoint: str = Field(description="A run endpoint of this app, or an allowed endpoint")
    method: str = "POST"
    cron_expr: str | None = Field(
        None, description="5-field cron or @hourly...; empty or omitted: on demand only"
    )
    interval_seconds: float | None = None
    run_at: TimeIn = Field(None, description="Once, at this time (epoch seconds or ISO 8601)")
    start_at: TimeIn = Field(None, description="First slot of an interval schedule")
    payload: dict[str, Any] | None = None
    timezone: str = "UTC"
    description: str | None = None
    timeout_seconds: float = 3600.0
    max_retries: int = 0
    retry_delay_seconds: float = 60.0
    overlap: Literal["skip", "buffer_one", "allow"] = "skip"
    misfire: Literal["fire_once", "skip", "catch_up"] = "fire_once"
    misfire_grace_seconds: float = 60.0
    max_catchup: int = 100
    catchup_window_seconds: float = 86_400.0
    jitter_seconds: float = 0.0
    enabled: bool = True


class ScheduleUpdate(_Body):
    """Any field of a create; those absent are kept. `user_id` cannot be changed."""

    name: str | None = None
    endpoint: str | None = None
    method: str | None = None
    cron_expr: str | None = None
    interval_seconds: float | None = None
    run_at: TimeIn = None
    start_at: TimeIn = None
    payload: dict[str, Any] | None = None
    timezone: str | None = None
    description: str | None = None
    timeout_seconds: float | None = None
    max_retries: int | None = None
    retry_delay_seconds: float | None = None
    overlap: Literal["skip", "buffer_one", "allow"] | None = None
    misfire: Literal["fire_once", "skip", "catch_up"] | None = None
    misfire_grace_seconds: float | None = None
    max_catchup: int | None = None
    catchup_window_seconds: float | None = None
    jitter_seconds: float | None = None
    enabled: bool | None = None


def given(body: _Body) -> dict[str, Any]:
    """The fields the caller sent (an explicit null included: the kernel says if it may be)."""
    return {k: getattr(body, k) for k in body.model_fields_set}


# -- responses ---------------------------------------------------------------------------------


def iso(ts: float | None) -> str | None:
    """ISO 8601 UTC; None for a time no calendar can show (a row another tool wrote)."""
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return None


class ScheduleOut(BaseModel):
    id: str
    name: str
    description: str | None
    user_id: str | None
    endpoint: str
    method: str
    payload: dict[str, Any] | None
    cron_expr: str | None
    interval_seconds: float | None
    run_at: float | None
    start_at: float | None
    timezone: str
    timeout_seconds: float
    max_retries: int
    retry_delay_seconds: float
    overlap: str
    misfire: str
    misfire_grace_seconds: float
    max_catchup: int
    catchup_window_seconds: float
    jitter_seconds: float
    enabled: bool
    disabled_reason: str | None
    next_run_at: float | None
    next_run_at_iso: str | None
    last_run_at: float | None
    last_status: str | None
    consecutive_failures: int
    locked_by: str | None
    lease_expires_at: float | None
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, s: Schedule) -> ScheduleOut:
        fields = {k: getattr(s, k, None) for k in cls.model_fields if k != "next_run_at_iso"}
        return cls(**fields, next_run_at_iso=iso(s.next_run_at))


class RunOut(BaseModel):
    id: str
    schedule_id: str
    attempt: int
    trigger: str
    status: str
    scheduled_for: float | None
    due_at: float | None
    triggered_at: float | None = Field(description="When this attempt started")
    completed_at: float | None
    duration_ms: float | None
    status_code: int | None
    run_id: str | None
    session_id: str | None
    error: str | None
    reclaim: int
    input: Any = Field(description="What was sent; null: the schedule's payload at the time")
    output: Any
    created_at: float

    @classmethod
    def of(cls, r: ScheduleRun) -> RunOut:
        return cls(**{k: getattr(r, k) for k in cls.model_fields})


class ErrorOut(BaseModel):
    detail: str


_ERRORS = {
    401: "No token, or a wrong one",
    404: "No such schedule (or another user's), or no such run of it",
    409: "The name is taken, or the schedule is disabled (trigger)",
    503: "The store is unavailable; retry after Retry-After seconds",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of a route, for the OpenAPI document (FastAPI adds the 422 itself)."""
    return {c: {"model": ErrorOut, "description": _ERRORS[c]} for c in codes}


class PageMeta(BaseModel):
    page: int
    limit: int
    total_pages: int
    total_count: int


class SchedulePage(BaseModel):
    data: list[ScheduleOut]
    meta: PageMeta


class RunPage(BaseModel):
    data: list[RunOut]
    meta: PageMeta
