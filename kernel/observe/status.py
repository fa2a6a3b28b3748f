"""The state of a cluster as its store shows it, for a person to read in seconds (`leasecron
status`) or a page to draw: which replicas hold leases and fired lately, which schedules are
overdue, what failed in the last hour, how much history is kept, the schema version. Built from
the manager's public reads only, so it works on every store; it never writes.

A replica is "seen" when it holds a lease now or recorded an attempt in the window. Overdue: an
enabled schedule whose due time is more than `grace` seconds past and that no live lease holds
(a held one is being worked on). Lag: start of an attempt minus its slot, over the window's
scheduled attempts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..fmt import fmt_duration, iso_utc, table
from ..manager import ScheduleManager
from ..model import Schedule, ScheduleRun

WINDOW = 3600.0  # seconds of history the view summarises
RUN_LIMIT = 10_000  # the most recent run rows read for it
OVERDUE_GRACE = 60.0


@dataclass(slots=True)
class ReplicaState:
    replica: str
    leases: int = 0  # schedules it holds a live lease on now
    in_flight: int = 0  # its attempts still running
    last_fire: float | None = None  # its latest attempt start in the window
    fires: int = 0  # attempts it started in the window


@dataclass(slots=True)
class ClusterStatus:
    now: float
    window: float
    schema_version: int
    schedules: int
    enabled: int
    quarantined: list[Schedule]
    replicas: list[ReplicaState]
    overdue: list[Schedule]
    failures: list[ScheduleRun]  # failed or timed out in the window, newest first
    runs_in_window: int
    runs_total: int
    oldest_run_at: float | None
    lag_p50: float | None
    lag_p99: float | None
    truncated: bool  # the window held more than RUN_LIMIT rows: counts are lower bounds
    names: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for an API."""
        return {
            "now": self.now,
            "window_seconds": self.window,
            "schema_version": self.schema_version,
            "schedules": {
                "total": self.schedules,
                "enabled": self.enabled,
                "quarantined": [
                    {"id": s.id, "name": s.name, "reason": s.disabled_reason}
                    for s in self.quarantined
                ],
            },
            "replicas": [
                {
                    "replica": r.replica,
                    "leases": r.leases,
                    "in_flight": r.in_flight,
                    "last_fire": r.last_fire,
                    "fires": r.fires,
                }
                for r in self.replicas
            ],
            "overdue": [
                {"id": s.id, "name": s.name, "due_at": s.due_at, "late": self.now - s.due_at}
                for s in self.overdue
                if s.due_at is not None
            ],
            "failures": [
                {
                    "schedule": self.names.get(r.schedule_id, r.schedule_id),
                    "schedule_id": r.schedule_id,
                    "status": r.status,
                    "status_code": r.status_code,
                    "error": r.error,
                    "at": r.completed_at or r.created_at,
                }
                for r in self.failures
            ],
            "runs": {
                "in_window": self.runs_in_window,
                "total": self.runs_total,
                "oldest_at": self.oldest_run_at,
                "truncated": self.truncated,
            },
            "fire_lag_seconds": {"p50": self.lag_p50, "p99": self.lag_p99},
        }


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def cluster_status(
    manager: ScheduleManager,
    now: float,
    *,
    window: float = WINDOW,
    run_limit: int = RUN_LIMIT,
    schema_version: int | None = None,
) -> ClusterStatus:
    if schema_version is None:
        schema_version = await manager.store.schema_version()
    schedules = await manager.list()
    names = {s.id: s.name for s in schedules}
    recent = await manager.store.list_runs(None, run_limit)  # newest first
    total = await manager.store.count_runs(None)
    since = now - window
    in_window = [r for r in recent if (r.triggered_at or r.created_at) >= since]
    replicas: dict[str, ReplicaState] = {}

    def replica(name: str) -> ReplicaState:
        return replicas.setdefault(name, ReplicaState(name))

    def leased(s: Schedule) -> bool:
        return bool(s.locked_by and s.lease_expires_at is not None and s.lease_expires_at > now)

    for s in schedules:
        if s.locked_by is not None and leased(s):
            replica(s.locked_by).leases += 1
    lags: list[float] = []
    for r in in_window:
        if r.replica is None or r.triggered_at is None:
            continue
        state = replica(r.replica)
        state.fires += 1
        state.last_fire = max(state.last_fire or r.triggered_at, r.triggered_at)
        if r.status == "running":
            state.in_flight += 1
        if r.scheduled_for is not None and r.trigger in ("schedule", "catch_up"):
            lags.append(max(0.0, r.triggered_at - r.scheduled_for))
    overdue = sorted(
        (
            s
            for s in schedules
            if s.enabled
            and not leased(s)
            and s.due_at is not None
            and s.due_at < now - OVERDUE_GRACE
        ),
        key=lambda s: s.due_at or 0.0,
    )
    oldest = recent[-1].created_at if recent and len(recent) >= total else None
    return ClusterStatus(
        now=now,
        window=window,
        schema_version=schema_version,
        schedules=len(schedules),
        enabled=sum(1 for s in schedules if s.enabled),
        quarantined=[s for s in schedules if s.disabled_reason],
        replicas=sorted(replicas.values(), key=lambda r: r.replica),
        overdue=overdue,
        failures=[r for r in in_window if r.status in ("failed", "timeout", "lease_lost")],
        runs_in_window=len(in_window),
        runs_total=total,
        oldest_run_at=oldest,
        lag_p50=_quantile(lags, 0.50),
        lag_p99=_quantile(lags, 0.99),
        truncated=len(recent) >= run_limit and len(in_window) == len(recent),
        names=names,
    )


def render_status(status: ClusterStatus, *, failures_shown: int = 10) -> str:
    """The terminal view: a few short blocks, most urgent first."""
    now = status.now
    more = "+" if status.truncated else ""
    lines = [
        f"leasecron status at {iso_utc(now)}  (schema v{status.schema_version})",
        f"schedules: {status.schedules} ({status.enabled} enabled, "
        f"{len(status.quarantined)} quarantined)   overdue: {len(status.overdue)}   "
        f"failures in the last {status.window / 60:g} min: "
        f"{len(status.failures)}{more}",
        "",
    ]
    if status.replicas:
        rows = [
            (
                r.replica,
                r.leases,
                r.in_flight,
                r.fires,
                f"{fmt_duration((now - r.last_fire) * 1000)} ago" if r.last_fire else "-",
            )
            for r in status.replicas
        ]
        lines.append(table(("REPLICA", "LEASES", "IN FLIGHT", "FIRES", "LAST FIRE"), rows))
    else:
        lines.append(f"replicas: none seen in the last {status.window / 60:g} min")
    lag = (
        f"fire lag: p50 {fmt_duration(status.lag_p50 * 1000)}, "
        f"p99 {fmt_duration(status.lag_p99 * 1000)}"
        if status.lag_p50 is not None and status.lag_p99 is not None
        else "fire lag: no scheduled fires in the window"
    )
    lines += ["", lag]
    if status.overdue:
        lines += ["", "overdue (enabled, due, no live lease):"]
        lines += [
            f"  {s.name}: due {iso_utc(s.due_at)}, "
            f"{fmt_duration((now - (s.due_at or now)) * 1000)} late"
            for s in status.overdue[:10]
        ]
    if status.failures:
        lines += ["", f"latest failures (of {len(status.failures)}{more}):"]
        for r in status.failures[:failures_shown]:
            what = f"HTTP {r.status_code}" if r.status_code is not None else r.status
            error = (r.error or "").splitlines()[0][:120] if r.error else ""
            at = iso_utc(r.completed_at or r.created_at)
            name = status.names.get(r.schedule_id, r.schedule_id)
            lines.append(f"  {at}  {name}: {what} {error}")
    for s in status.quarantined:
        lines += ["", f"quarantined: {s.name}: {s.disabled_reason}"]
    oldest = f", oldest {iso_utc(status.oldest_run_at)}" if status.oldest_run_at else ""
    lines += ["", f"history: {status.runs_total} run rows{oldest}"]
    return "\n".join(lines)
