"""The checks that what must happen did: every trigger became a run, no enabled schedule was
left due, a dead replica's leases ended on time and its attempts were taken over."""

from __future__ import annotations

from typing import Any

from .check_rows import (
    EPS,
    RUN_COLUMNS,
    RunRow,
    Violation,
    max_skew,
)


def triggers(result: Any, db: Any) -> list[Violation]:
    out = []
    for run_id, sid in result.triggers:
        row = db.execute(
            f"SELECT ord, {', '.join(RUN_COLUMNS)} FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
        run = None if row is None else RunRow._make(row)
        snapshot = result.snapshot.get(sid)
        if run is None:
            out.append(Violation("trigger_lost", sid, f"trigger {run_id} has no run row"))
        elif (
            run.status == "pending"
            and snapshot is not None
            and snapshot.enabled
            and (run.due_at is not None and run.due_at < result.snapshot_at - 600)
        ):
            out.append(Violation("trigger_lost", sid, f"trigger {run_id} still pending"))
    return out


def stuck(result: Any) -> list[Violation]:
    out = []
    limit = result.config.poll_interval + result.config.lease_seconds + 60
    for sid, s in result.snapshot.items():
        if s.enabled and s.due_at is not None and s.due_at < result.snapshot_at - limit:
            out.append(
                Violation(
                    "stuck",
                    sid,
                    f"due at {s.due_at:.3f}, still not taken up at "
                    f"{result.snapshot_at:.3f} (locked_by={s.locked_by})",
                )
            )
    return out


def leases(result: Any) -> list[Violation]:
    """Read at every death: each lease the dead replica holds must be one it could have written
    while alive, i.e. expiry = its clock at some instant before the death + lease_seconds.

    Leases are wall times, so a backward clock step after the write legitimately pushes the
    expiry past death + lease_seconds (documented semantics); what no live holder can produce is
    an expiry that matches no instant of its own clock (stretched, or written after death)."""
    out = []
    lease = result.config.lease_seconds
    for replica, died, leases, died_mono in result.deaths:
        segments = _clock_segments(result.step_times, died, died_mono)
        skew = result.offsets.get(replica, 0.0)
        for sid, expires in leases:
            if expires is None or expires <= died + lease + max_skew(result) + EPS:
                continue  # ends within a lease of the death, on any clock
            # The shared wall time of the write: a claim or renewal writes now + lease, a hand-back
            # (expire_leases) writes now.
            written = (expires - lease - skew, expires - skew)
            if not any(
                lo - _LEASE_EPS <= w - off <= hi + _LEASE_EPS
                for lo, hi, off in segments
                for w in written
            ):
                out.append(
                    Violation(
                        "lease_outlived",
                        sid,
                        f"{replica} died at {died:.3f}, its lease runs to {expires:.3f}, "
                        "which no instant of its clock before the death plus the lease gives",
                    )
                )
    return out


_LEASE_EPS = 1e-3  # run-row times are rounded to the millisecond; lease times are not


def _clock_segments(
    steps: list[tuple[float, float]], died: float, died_mono: float
) -> list[tuple[float, float, float]]:
    """(from, to, wall - monotonic) for the stretches of monotonic time up to a death, between
    the wall-clock steps."""
    segments = []
    hi, offset = died_mono, died - died_mono
    for at, delta in sorted((s for s in steps if s[0] <= died_mono), reverse=True):
        segments.append((at, hi, offset))
        hi, offset = at, offset - delta
    segments.append((float("-inf"), hi, offset))
    return segments


def orphans(result: Any) -> list[Violation]:
    alive = set(result.alive)
    limit = result.config.poll_interval + result.config.lease_seconds
    return [
        Violation(
            "orphaned",
            run.schedule_id,
            f"attempt {run.id} of {run.replica}, which died, was never taken over",
            run.scheduled_for,
        )
        for run in result.open_runs
        if run.replica not in alive
        and run.schedule_id in result.snapshot
        and result.snapshot[run.schedule_id].enabled  # a disabled row is claimed by nobody
        and _reclaimable_since(result, result.snapshot[run.schedule_id]) > limit
    ]


def _reclaimable_since(result: Any, s: Any) -> float:
    """How long the row has been free to claim at the snapshot (a lease still running on the
    wall clock, stretched by a backward clock step, is not reclaimable yet)."""
    if s.locked_by is None:
        return float("inf")
    return result.snapshot_at - s.lease_expires_at
