"""The checks per schedule: requests of one schedule in flight together (send order), lost
slots and DST (slot order), and skipped rows against their policy (wall-time order)."""

from __future__ import annotations

import re
from datetime import datetime
from itertools import groupby
from typing import Any

from ..cron import CronExpr, load_timezone
from ..slots import first_slot, slot_after
from .check_rows import (
    EPS,
    RUN_COLUMNS,
    RunRow,
    Sent,
    SkipRow,
    Violation,
    in_flight_together,
    max_skew,
    stream,
    unhealthy,
)
from .target import REQUEST_COLUMNS

_SUMMARY = re.compile(r"more slot\(s\) up to ([0-9.]+) not listed")


# -- per schedule, in send order: requests of one schedule in flight together -----------------


def overlaps(result: Any, db: Any) -> list[Violation]:
    out = []
    sql = f"SELECT {', '.join(REQUEST_COLUMNS)}, NULL FROM requests ORDER BY schedule_id, seq"
    for sid, reqs in groupby(stream(db, Sent, sql), key=lambda r: r.schedule_id):
        spec = result.specs.get(sid)
        if spec is None or spec.overlap == "allow":
            continue
        for first, second in in_flight_together(reqs):
            if first.key != second.key and not unhealthy(result, first, second):
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


# -- per schedule, in slot order: lost slots and DST ------------------------------------------


class _LostWalk:
    """Walks a schedule's slot series against its rows arriving in slot order: a slot before
    the cursor is accounted for by a row of that slot (to the millisecond) or a skipped row's
    summary range ("... more slot(s) up to T not listed") around it. Reports the first lost
    slot (the one to replay) and stops."""

    def __init__(self, result: Any, sid: str, s: Any):
        self.sid, self.s = sid, s
        self.cursor = s.next_run_at if s.next_run_at is not None else result.end_at
        self.end_faults_at = result.end_faults_at
        spec = result.specs[sid]
        self.slot = first_slot(spec, spec.created_at)
        self.seen: set[float] = set()  # rounded slots of rows near the walk
        self.ranges: list[tuple[float, float]] = []  # summary ranges that may still cover it
        self.lost: Violation | None = None

    def _due(self) -> bool:
        slot = self.slot
        return slot is not None and slot < self.cursor - EPS and slot <= self.end_faults_at

    def _judge(self) -> None:
        slot = self.slot
        if round(slot, 3) not in self.seen and not any(
            a - EPS <= slot <= b + EPS for a, b in self.ranges
        ):
            self.lost = Violation("lost", self.sid, "neither fired nor recorded skipped", slot)
            self.slot = None
            return
        self.slot = slot_after(self.s, slot)
        if len(self.seen) > 256 or len(self.ranges) > 64:  # forget what is behind the walk
            floor = round(self.slot, 3) if self.slot is not None else 0.0
            self.seen = {x for x in self.seen if x >= floor - 0.001}
            self.ranges = [(a, b) for a, b in self.ranges if b + EPS >= self.slot]

    def feed(self, run: Any) -> None:
        # every row that can account for a slot is within a millisecond of it (or its range
        # begins by then): slots well before this row are decided
        while self._due() and self.slot + 0.002 < run.scheduled_for:
            self._judge()
        if self.slot is None:
            return
        self.seen.add(round(run.scheduled_for, 3))
        m = _SUMMARY.search(run.error or "") if run.status == "skipped" else None
        if m:
            self.ranges.append((run.scheduled_for, float(m.group(1))))

    def finish(self) -> Violation | None:
        while self._due():
            self._judge()
        return self.lost


class _DstWatch:
    """A cron schedule's rows in slot order: each must be a slot of its series, and a
    wall-clock one must not fire twice at one local time of one day."""

    def __init__(self, sid: str, spec: Any):
        self.sid, self.spec = sid, spec
        self.expr = CronExpr.parse(spec.cron_expr)
        self.tz = load_timezone(spec.timezone)
        self.seen: dict[tuple[str, str], str] = {}  # (local date, HH:MM) -> the slot's key
        self.out: list[Violation] = []

    def feed(self, run: Any) -> None:
        slot = run.scheduled_for
        if self.expr.next_after(slot - 1.0, self.tz) != slot:
            self.out.append(
                Violation(
                    "dst", self.sid, f"{slot:.3f} is not a slot of {self.spec.cron_expr}", slot
                )
            )
            return
        if self.expr.mode != "wall-clock":
            return
        local = datetime.fromtimestamp(slot, self.tz)
        day_time = (local.date().isoformat(), local.strftime("%H:%M"))
        if len(self.seen) > 2000:  # slots come in order: days before yesterday are done
            yesterday = datetime.fromtimestamp(slot - 86_400, self.tz).date().isoformat()
            self.seen = {k: v for k, v in self.seen.items() if k[0] >= yesterday}
        if self.seen.setdefault(day_time, run.idempotency_key) != run.idempotency_key:
            self.out.append(Violation("dst", self.sid, f"wall-clock job twice at {day_time}", slot))


def by_slot(result: Any, db: Any) -> list[Violation]:
    lost, dst = [], []
    changed = {c.schedule_id for c in result.changes if c.kind != "trigger"}
    retimed = {c.schedule_id for c in result.changes if c.kind == "retime"}
    walks: dict[str, _LostWalk] = {}
    for sid, s in result.schedules.items():
        if sid not in changed and (s.cron_expr or s.interval_seconds) and s.enabled:
            walks[sid] = _LostWalk(result, sid, s)
    sql = (
        f"SELECT ord, {', '.join(RUN_COLUMNS)} FROM runs "
        "WHERE scheduled_for IS NOT NULL AND trigger != 'manual' "
        "ORDER BY schedule_id, scheduled_for"
    )
    for sid, rows in groupby(stream(db, RunRow, sql), key=lambda r: r.schedule_id):
        walk = walks.pop(sid, None)
        spec = result.specs.get(sid)
        watch = None
        if spec is not None and spec.cron_expr and sid not in retimed:
            watch = _DstWatch(sid, spec)
        for run in rows:
            if walk is not None:
                walk.feed(run)
            if watch is not None:
                watch.feed(run)
        if walk is not None and (v := walk.finish()) is not None:
            lost.append(v)
        if watch is not None:
            dst += watch.out
    for walk in walks.values():  # schedules without a single row
        if (v := walk.finish()) is not None:
            lost.append(v)
    return lost + dst


# -- per schedule, in wall-time order: skipped rows --------------------------------------------

_SKIP_POLICY = {
    "misfire: skipped (policy skip)": ("misfire", "skip"),
    "misfire: skipped (policy fire_once)": ("misfire", "fire_once"),
    "misfire: outside catch-up window or beyond max_catchup": ("misfire", "catch_up"),
    "overlap: skipped (previous run still in flight)": ("overlap", "skip"),
    "overlap: skipped (buffer_one keeps the latest)": ("overlap", "buffer_one"),
}


def skips(result: Any, db: Any) -> list[Violation]:
    """Every skipped row names its policy: it must be the schedule's, and the slot must have been
    late (misfire) or come due under a run in flight (overlap) when it was skipped.

    Skipped rows arrive per schedule in the order of their slot's wall time (the slot less the
    writer's skew), the schedule's requests in the order they were sent: a slot was under a run
    in flight iff some request sent by then (plus the skew) ended after it (less the skew), i.e.
    the latest end among the requests sent so far is after it."""
    out = []
    tolerance = max_skew(result) + EPS
    db.execute("CREATE TEMP TABLE IF NOT EXISTS offsets (replica TEXT PRIMARY KEY, offset REAL)")
    db.execute("DELETE FROM offsets")
    db.executemany("INSERT INTO offsets VALUES (?, ?)", list(result.offsets.items()))
    # One claim skips a batch (same created_at): its first slot, the cursor, must have been past
    # the grace; later slots of the batch may be less late.
    skipped = stream(
        db,
        SkipRow,
        f"SELECT {', '.join('r.' + c for c in ('ord', *RUN_COLUMNS))}, "
        "min(r.scheduled_for) OVER (PARTITION BY r.schedule_id, r.created_at), "
        "r.scheduled_for - coalesce(o.offset, 0.0) AS wall "
        "FROM runs AS r LEFT JOIN offsets AS o ON o.replica = r.replica "
        "WHERE r.status = 'skipped' AND r.scheduled_for IS NOT NULL "
        "ORDER BY r.schedule_id, wall",
    )
    sent = stream(
        db,
        Sent,
        f"SELECT {', '.join(REQUEST_COLUMNS)}, NULL FROM requests ORDER BY schedule_id, at",
    )
    req = next(sent, None)
    sid, latest_end = None, float("-inf")
    for run in skipped:
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
        if _stepped(result):
            continue  # wall-clock steps make lateness on the wall clock meaningless
        if policy[0] == "misfire":
            late = run.created_at - run.batch_first  # both on the writer's clock
            if late <= spec.misfire_grace_seconds:
                out.append(
                    Violation(
                        "skipped",
                        run.schedule_id,
                        f"misfire-skipped when the first missed slot was {late:.3f}s "
                        f"late, within the {spec.misfire_grace_seconds:g}s grace",
                        run.scheduled_for,
                    )
                )
            continue
        if run.schedule_id != sid:
            sid, latest_end = run.schedule_id, float("-inf")
        while req is not None and (
            req.schedule_id < sid or (req.schedule_id == sid and req.at <= run.wall + tolerance)
        ):
            if req.schedule_id == sid:
                end = float("inf") if req.end_at is None else req.end_at
                latest_end = max(latest_end, end)
            req = next(sent, None)
        if latest_end < run.wall - tolerance:
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
