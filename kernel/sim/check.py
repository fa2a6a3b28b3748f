"""The invariant checker of a simulated run: what the lease algorithm promises, checked against
the target's own request log, the runs table and the schedule rows. Used by `sim.py` and by
tests; each check can fail (the tests break the kernel on purpose to prove it).

  duplicate        a slot (idempotency key) has two success rows, or is sent after its success
  concurrent       two requests for one slot in flight at once while the first held its lease
  overlap          two requests of one schedule in flight at once, overlap policy not `allow`
  lost             a slot before the schedule's cursor neither fired nor recorded skipped
  skipped          a slot skipped against its policy (wrong policy, or not late / not overlapped)
  trigger_lost     a trigger that never became a run
  stuck            an enabled schedule due long ago that no replica took up
  retries          more attempts than 1 + max_retries, or a retry sooner than its delay
  log_mismatch     the runs table and the target's log disagree
  lease_outlived   a dead replica's lease not ending lease_seconds after a write it made alive
  orphaned         an attempt of a dead replica never taken over (still running at the end)
  after_change     a request sent for an attempt started after a disable or delete committed
  dst              a wall-clock cron slot fired twice in one local day, or a slot off the series
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..cron import CronExpr, load_timezone
from ..slots import first_slot, slot_after

_SUMMARY = re.compile(r"more slot\(s\) up to ([0-9.]+) not listed")
_EPS = 1e-6


@dataclass(frozen=True)
class Violation:
    kind: str
    schedule_id: str
    detail: str
    slot: float | None = None

    def __str__(self) -> str:
        slot = f" slot={self.slot:.3f}" if self.slot is not None else ""
        return f"{self.kind}: schedule={self.schedule_id}{slot}: {self.detail}"


def check_run(result: Any, behaviours: dict[str, Any] | None = None) -> list[Violation]:
    """All violations of a SimResult, in a stable order (first by kind, then by time)."""
    out: list[Violation] = []
    runs_by_id = {r.id: r for r in result.runs}
    out += _duplicates(result)
    out += _concurrency(result, runs_by_id)
    out += _lost(result)
    out += _skips(result)
    out += _triggers(result)
    out += _stuck(result)
    out += _retries(result)
    out += _log_mismatch(result, runs_by_id)
    out += _leases(result)
    out += _orphans(result)
    out += _after_change(result, runs_by_id)
    out += _dst(result)
    return out


def _duplicates(result: Any) -> list[Violation]:
    out = []
    replied = {r.run_row_id: r for r in result.requests if r.status == "success"}
    success: dict[str, Any] = {}  # key -> the request whose success was recorded
    for run in result.runs:
        if run.status != "success":
            continue
        if run.idempotency_key in success:
            out.append(
                Violation(
                    "duplicate",
                    run.schedule_id,
                    f"two success rows for {run.idempotency_key}",
                    run.scheduled_for,
                )
            )
        elif run.id in replied:
            success[run.idempotency_key] = replied[run.id]
    for req in result.requests:
        done = success.get(req.key)
        if done is not None and req is not done and req.seq > done.end_seq:
            out.append(
                Violation(
                    "duplicate",
                    req.schedule_id,
                    f"{req.key} sent again (event {req.seq}) after its success "
                    f"(event {done.end_seq})",
                    req.slot,
                )
            )
    return out


def _concurrency(result: Any, runs_by_id: dict[str, Any]) -> list[Violation]:
    out = []
    by_key: dict[str, list[Any]] = defaultdict(list)
    by_schedule: dict[str, list[Any]] = defaultdict(list)
    for req in result.requests:
        by_key[req.key].append(req)
        by_schedule[req.schedule_id].append(req)

    def unhealthy(req: Any, at: Any) -> bool:
        """Was req's sender dead or frozen when `at` was sent? Only then may another replica
        take its lease while its request is still in flight: a live holder renews it."""
        died = result.crash_seq.get(req.replica)
        if died is not None and died < at.seq:
            return True
        # A forward wall-clock step longer than the lease expires every lease at once (leases
        # are wall-clock times): the attempt may be re-delivered, under the same key.
        if any(
            req.seq < seq < at.seq and delta > result.config.lease_seconds
            for seq, delta in result.steps
        ):
            return True
        name = req.replica.split(".")[0]
        return any(n == name and a <= at.mono <= b for n, a, b in result.stalls)

    def overlapping(reqs: list[Any]) -> list[tuple[Any, Any]]:
        """Pairs in flight together, by event order (wall times jump with clock steps)."""
        pairs = []
        open_reqs: list[Any] = []
        for req in reqs:  # already in send order
            open_reqs = [o for o in open_reqs if o.end_seq is None or o.end_seq > req.seq]
            pairs += [(o, req) for o in open_reqs]
            open_reqs.append(req)
        return pairs

    for key, reqs in by_key.items():
        for first, second in overlapping(reqs):
            if not unhealthy(first, second):
                out.append(
                    Violation(
                        "concurrent",
                        second.schedule_id,
                        f"{key} attempt {second.attempt} sent by {second.replica} at "
                        f"{second.at:.3f} while {first.replica}'s was in flight",
                        second.slot,
                    )
                )
    for sid, reqs in by_schedule.items():
        spec = result.specs.get(sid)
        if spec is None or spec.overlap == "allow":
            continue
        for first, second in overlapping(reqs):
            if first.key != second.key and not unhealthy(first, second):
                out.append(
                    Violation(
                        "overlap",
                        sid,
                        f"{second.key} sent at {second.at:.3f} while {first.key} ran "
                        f"(overlap={spec.overlap})",
                        second.slot,
                    )
                )
    return out


def _accounted(runs: list[Any]) -> tuple[set[float], list[tuple[float, float]]]:
    slots: set[float] = set()
    ranges: list[tuple[float, float]] = []
    for run in runs:
        if run.scheduled_for is None or run.trigger == "manual":
            continue
        slots.add(round(run.scheduled_for, 3))
        m = _SUMMARY.search(run.error or "") if run.status == "skipped" else None
        if m:
            ranges.append((run.scheduled_for, float(m.group(1))))
    return slots, ranges


def _lost(result: Any) -> list[Violation]:
    out = []
    runs_of: dict[str, list[Any]] = defaultdict(list)
    for run in result.runs:
        runs_of[run.schedule_id].append(run)
    changed = {c.schedule_id for c in result.changes if c.kind != "trigger"}
    for sid, s in result.schedules.items():
        if sid in changed or not (s.cron_expr or s.interval_seconds) or not s.enabled:
            continue
        cursor = s.next_run_at if s.next_run_at is not None else result.end_at
        slots, ranges = _accounted(runs_of[sid])
        slot = first_slot(result.specs[sid], result.specs[sid].created_at)
        while slot is not None and slot < cursor - _EPS and slot <= result.end_faults_at:
            if round(slot, 3) not in slots and not any(
                a - _EPS <= slot <= b + _EPS for a, b in ranges
            ):
                out.append(Violation("lost", sid, "neither fired nor recorded skipped", slot))
                break  # one per schedule: the first lost slot is the one to replay
            slot = slot_after(s, slot)
    return out


_SKIP_POLICY = {
    "misfire: skipped (policy skip)": ("misfire", "skip"),
    "misfire: skipped (policy fire_once)": ("misfire", "fire_once"),
    "misfire: outside catch-up window or beyond max_catchup": ("misfire", "catch_up"),
    "overlap: skipped (previous run still in flight)": ("overlap", "skip"),
    "overlap: skipped (buffer_one keeps the latest)": ("overlap", "buffer_one"),
}


def _skips(result: Any) -> list[Violation]:
    """Every skipped row names its policy: it must be the schedule's, and the slot must have been
    late (misfire) or come due under a run in flight (overlap) when it was skipped."""
    out = []
    tolerance = _skew(result) + _EPS
    by_schedule: dict[str, list[Any]] = defaultdict(list)
    for req in result.requests:
        by_schedule[req.schedule_id].append(req)
    batches: dict[tuple[str, float], float] = {}
    for run in result.runs:
        if run.status == "skipped" and run.scheduled_for is not None:
            key = (run.schedule_id, run.created_at)
            batches[key] = min(batches.get(key, run.scheduled_for), run.scheduled_for)
    for run in result.runs:
        if run.status != "skipped" or run.scheduled_for is None:
            continue
        spec = result.specs.get(run.schedule_id)
        reason = (run.error or "").split(";")[0]
        policy = _SKIP_POLICY.get(reason)
        if spec is None:
            continue
        if policy is None or getattr(spec, policy[0]) != policy[1]:
            out.append(
                Violation(
                    "skipped",
                    run.schedule_id,
                    f"skipped for {reason!r}, but the schedule has "
                    f"misfire={spec.misfire} overlap={spec.overlap}",
                    run.scheduled_for,
                )
            )
            continue
        if policy[0] == "misfire":
            # One claim skips a batch (same created_at): its first slot, the cursor, must have
            # been past the grace; later slots of the batch may be less late.
            first = batches[(run.schedule_id, run.created_at)]
            late = run.created_at - first  # both on the writer's clock
            if late <= spec.misfire_grace_seconds and not _stepped(result):
                out.append(
                    Violation(
                        "skipped",
                        run.schedule_id,
                        f"misfire-skipped when the first missed slot was {late:.3f}s "
                        f"late, within the {spec.misfire_grace_seconds:g}s grace",
                        run.scheduled_for,
                    )
                )
        else:
            wall = run.scheduled_for - result.offsets.get(run.replica, 0.0)
            busy = any(
                r.at <= wall + tolerance and (r.end_at is None or r.end_at >= wall - tolerance)
                for r in by_schedule[run.schedule_id]
            )
            if not busy and not _stepped(result):
                out.append(
                    Violation(
                        "skipped",
                        run.schedule_id,
                        "overlap-skipped while no run of the schedule was in flight",
                        run.scheduled_for,
                    )
                )
    return out


def _stepped(result: Any) -> bool:
    return bool(result.steps)  # wall-clock steps make lateness on the wall clock meaningless


def _skew(result: Any) -> float:
    return result.config.lease_seconds / 3 if "skew" in result.config.faults else 0.0


def _triggers(result: Any) -> list[Violation]:
    out = []
    runs_by_id = {r.id: r for r in result.runs}
    for run_id, sid in result.triggers:
        run = runs_by_id.get(run_id)
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


def _stuck(result: Any) -> list[Violation]:
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


def _retries(result: Any) -> list[Violation]:
    out = []
    skew = _skew(result)
    by_key: dict[str, dict[int, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for req in result.requests:
        by_key[req.key][req.attempt].append(req)
    for key, by_attempt in by_key.items():
        sid = next(iter(by_attempt.values()))[0].schedule_id
        spec = result.specs.get(sid)
        if spec is None:
            continue
        allowed = 1 + result.max_retries.get(sid, spec.max_retries)
        if max(by_attempt) > allowed:
            out.append(Violation("retries", sid, f"{key}: attempt {max(by_attempt)} > {allowed}"))
        for n, reqs in sorted(by_attempt.items()):
            prev = by_attempt.get(n - 1)
            if not prev or prev[-1].end_seq is None:
                continue
            before, first = prev[-1], reqs[0]
            # A retry is due at a wall time the holder computes from its own now when it records
            # the outcome. A wall-clock step between the reply and that moment moves the due time
            # but not the reply's stamp: a forward step shows as a long wall wait (short on the
            # monotonic clock), a backward one as a negative wall wait (the real wait is the
            # monotonic one). A retry sent too soon is too soon on both clocks.
            waited = max(first.at - before.end_at, first.mono - before.end_mono)
            base = min(3600.0, spec.retry_delay_seconds * 2 ** (n - 2)) * 0.9
            if before.retry_after is not None:  # the target asked for at least this long
                base = max(base, before.retry_after)
            if waited < base - skew - _EPS:
                out.append(
                    Violation(
                        "retries",
                        sid,
                        f"{key}: attempt {n} sent {waited:.3f}s "
                        f"after attempt {n - 1} ended, sooner than {base:.1f}s",
                    )
                )
    return out


def _log_mismatch(result: Any, runs_by_id: dict[str, Any]) -> list[Violation]:
    out = []
    sent: dict[str, list[Any]] = defaultdict(list)
    for req in result.requests:
        sent[req.run_row_id].append(req)
        run = runs_by_id.get(req.run_row_id)
        if run is None or (run.idempotency_key, run.attempt) != (req.key, req.attempt):
            out.append(
                Violation(
                    "log_mismatch",
                    req.schedule_id,
                    f"request {req.key} attempt {req.attempt} has no matching run row",
                    req.slot,
                )
            )
        elif (
            req.status is not None
            and not req.cancelled
            and run.status not in (req.status, "lease_lost")
            # the holder died with the reply in hand: the row waits for its re-delivery
            and not (run.status == "running" and req.replica in result.crash_seq)
        ):
            out.append(
                Violation(
                    "log_mismatch",
                    req.schedule_id,
                    f"target answered {req.status}, run row says {run.status}",
                    req.slot,
                )
            )
    for run in result.runs:
        dispatched = run.status in ("success", "timeout") or (
            run.status == "failed" and "cannot plan" not in (run.error or "")
        )
        if dispatched and not sent.get(run.id):
            out.append(
                Violation(
                    "log_mismatch",
                    run.schedule_id,
                    f"run row {run.id} is {run.status} but the target never saw it",
                    run.scheduled_for,
                )
            )
    return out


def _leases(result: Any) -> list[Violation]:
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
            if expires is None or expires <= died + lease + _skew(result) + _EPS:
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


def _orphans(result: Any) -> list[Violation]:
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


def _after_change(result: Any, runs_by_id: dict[str, Any]) -> list[Violation]:
    out = []
    changes: dict[str, list[Any]] = defaultdict(list)
    for c in result.changes:
        if c.kind in ("disable", "delete", "enable"):
            changes[c.schedule_id].append(c)
    for req in result.requests:
        last = None  # the last disable/delete/enable that committed before this attempt started
        started = result.started.get(req.run_row_id, req.seq)
        for c in changes.get(req.schedule_id, ()):
            if c.seq < started:
                last = c
        if last is not None and last.kind != "enable":
            out.append(
                Violation(
                    "after_change",
                    req.schedule_id,
                    f"{req.key} started (event {started}) after the {last.kind} (event {last.seq})",
                    req.slot,
                )
            )
    return out


def _dst(result: Any) -> list[Violation]:
    out = []
    changed = {c.schedule_id for c in result.changes if c.kind == "retime"}
    for sid, spec in result.specs.items():
        if not spec.cron_expr or sid in changed:
            continue
        expr = CronExpr.parse(spec.cron_expr)
        tz = load_timezone(spec.timezone)
        seen: dict[tuple[str, str], str] = {}  # (local date, HH:MM) -> the slot's key
        for run in result.runs:
            if run.schedule_id != sid or run.scheduled_for is None or run.trigger == "manual":
                continue
            slot = run.scheduled_for
            if expr.next_after(slot - 1.0, tz) != slot:
                out.append(
                    Violation("dst", sid, f"{slot:.3f} is not a slot of {spec.cron_expr}", slot)
                )
                continue
            if expr.mode != "wall-clock":
                continue
            local = datetime.fromtimestamp(slot, tz)
            day_time = (local.date().isoformat(), local.strftime("%H:%M"))
            if seen.setdefault(day_time, run.idempotency_key) != run.idempotency_key:
                out.append(Violation("dst", sid, f"wall-clock job twice at {day_time}", slot))
    return out
