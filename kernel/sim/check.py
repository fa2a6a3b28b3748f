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

It streams: the target's log and the runs table are read from SQLite (`result.db`: tables
`requests` and `started`, a view `runs`) in pages of PAGE rows, each pass sorted so that what a
check compares arrives together: by idempotency key (duplicates, concurrency, retries, the log
against the rows, changes), by send order per schedule (overlap), by slot per schedule (lost,
DST) and by wall time per schedule (skips). What a check carries from one page to the next is
bounded (one key's rows, the requests in flight, a day of DST slots), so memory does not grow
with the length of the run.
"""

from __future__ import annotations

import re
from collections import defaultdict, namedtuple
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Any

from ..cron import CronExpr, load_timezone
from ..slots import first_slot, slot_after
from .target import REQUEST_COLUMNS

_SUMMARY = re.compile(r"more slot\(s\) up to ([0-9.]+) not listed")
_EPS = 1e-6
PAGE = 10_000  # rows per read (tests set it to 1: every violation then spans a page boundary)

# The run-row columns the checks read (the `runs` view has these and `ord`, ascending in
# creation order within a schedule).
RUN_COLUMNS = (
    "id", "schedule_id", "idempotency_key", "attempt", "status", "trigger", "scheduled_for",
    "created_at", "due_at", "replica", "error",
)  # fmt: skip
RunRow = namedtuple("RunRow", ("ord", *RUN_COLUMNS))
Sent = namedtuple("Sent", (*REQUEST_COLUMNS, "started"))  # a logged request, with its start
_SkipRow = namedtuple("_SkipRow", (*RunRow._fields, "batch_first", "wall"))

# The violation kinds, in the order they are reported.
KINDS = (
    "duplicate", "concurrent", "overlap", "lost", "skipped", "trigger_lost", "stuck", "retries",
    "log_mismatch", "lease_outlived", "orphaned", "after_change", "dst",
)  # fmt: skip


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
    """All violations of a SimResult, in a stable order: by kind (KINDS), then by schedule and
    time within a kind."""
    found: dict[str, list[Violation]] = {kind: [] for kind in KINDS}

    def add(violations: list[Violation]) -> None:
        for v in violations:
            found[v.kind].append(v)

    db = result.db
    for (_, key), runs, sent in _merge(
        _stream(db, RunRow, f"SELECT ord, {', '.join(RUN_COLUMNS)} FROM runs "
                "ORDER BY schedule_id, idempotency_key, ord"),
        _stream(db, Sent, f"SELECT {', '.join('q.' + c for c in REQUEST_COLUMNS)}, s.seq "
                "FROM requests AS q LEFT JOIN started AS s USING (run_row_id) "
                "ORDER BY q.schedule_id, q.key, q.seq"),
        lambda run: (run.schedule_id, run.idempotency_key),
        lambda req: (req.schedule_id, req.key),
    ):  # fmt: skip
        add(_duplicates_of(runs, sent))
        add(_concurrent_of(result, key, sent))
        add(_retries_of(result, key, sent))
        add(_log_mismatch_of(result, runs, sent))
        add(_after_change_of(result, sent))
    add(_overlaps(result, db))
    add(_by_slot(result, db))
    add(_skips(result, db))
    add(_triggers(result, db))
    add(_stuck(result))
    add(_leases(result))
    add(_orphans(result))
    return [v for kind in KINDS for v in found[kind]]


def _stream(db: Any, row: Any, sql: str, params: tuple = ()) -> Iterator[Any]:
    """The rows of a query, PAGE at a time."""
    cursor = db.execute(sql, params)
    make = row._make
    while page := cursor.fetchmany(PAGE):
        for values in page:
            yield make(values)


def _merge(
    left: Iterator[Any], right: Iterator[Any], lkey: Callable, rkey: Callable
) -> Iterator[tuple[Any, list[Any], list[Any]]]:
    """Group two streams sorted on the same key: (key, left rows, right rows) per key in either.
    (SQLite's BINARY order of text is Python's order of str, so both sides agree.)"""
    a, b = next(left, None), next(right, None)
    while a is not None or b is not None:
        key = min(k for k in (a and lkey(a), b and rkey(b)) if k is not None)
        lrows, rrows = [], []
        while a is not None and lkey(a) == key:
            lrows.append(a)
            a = next(left, None)
        while b is not None and rkey(b) == key:
            rrows.append(b)
            b = next(right, None)
        yield key, lrows, rrows


# -- per idempotency key: its run rows (creation order) and its requests (send order) ---------


def _duplicates_of(runs: list[Any], sent: list[Any]) -> list[Violation]:
    out = []
    replied = {r.run_row_id: r for r in sent if r.status == "success"}
    done = None  # the request whose success was recorded
    for run in runs:
        if run.status != "success":
            continue
        if done is not None:
            out.append(
                Violation(
                    "duplicate",
                    run.schedule_id,
                    f"two success rows for {run.idempotency_key}",
                    run.scheduled_for,
                )
            )
        elif run.id in replied:
            done = replied[run.id]
    if done is not None:
        for req in sent:
            if req is not done and req.seq > done.end_seq:
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


def _unhealthy(result: Any, req: Any, at: Any) -> bool:
    """Was req's sender dead or frozen when `at` was sent? Only then may another replica take
    its lease while its request is still in flight: a live holder renews it."""
    died = result.crash_seq.get(req.replica)
    if died is not None and died < at.seq:
        return True
    # A forward wall-clock step longer than the lease expires every lease at once (leases are
    # wall-clock times): the attempt may be re-delivered, under the same key.
    if any(
        req.seq < seq < at.seq and delta > result.config.lease_seconds
        for seq, delta in result.steps
    ):
        return True
    name = req.replica.split(".")[0]
    return any(n == name and a <= at.mono <= b for n, a, b in result.stalls)


def _in_flight_together(reqs: Any, open_reqs: list[Any] | None = None) -> Iterator[tuple]:
    """Pairs in flight together, by event order (wall times jump with clock steps). `open_reqs`
    carries what is still in flight from the requests before these."""
    open_reqs = [] if open_reqs is None else open_reqs
    for req in reqs:  # already in send order
        open_reqs[:] = [o for o in open_reqs if o.end_seq is None or o.end_seq > req.seq]
        for o in open_reqs:
            yield o, req
        open_reqs.append(req)


def _concurrent_of(result: Any, key: str, sent: list[Any]) -> list[Violation]:
    return [
        Violation(
            "concurrent",
            second.schedule_id,
            f"{key} attempt {second.attempt} sent by {second.replica} at "
            f"{second.at:.3f} while {first.replica}'s was in flight",
            second.slot,
        )
        for first, second in _in_flight_together(sent)
        if not _unhealthy(result, first, second)
    ]


def _retries(result: Any) -> list[Violation]:
    """The retry check over an in-memory list of requests (`result.requests`)."""
    by_key: dict[str, list[Any]] = defaultdict(list)
    for req in sorted(result.requests, key=lambda r: r.seq):
        by_key[req.key].append(req)
    return [v for key, sent in by_key.items() for v in _retries_of(result, key, sent)]


def _retries_of(result: Any, key: str, sent: list[Any]) -> list[Violation]:
    out = []
    if not sent:
        return out
    skew = _skew(result)
    by_attempt: dict[int, list[Any]] = defaultdict(list)
    for req in sent:
        by_attempt[req.attempt].append(req)
    sid = sent[0].schedule_id
    spec = result.specs.get(sid)
    if spec is None:
        return out
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


def _log_mismatch_of(result: Any, runs: list[Any], sent: list[Any]) -> list[Violation]:
    """The runs table against the target's log. A request's run row carries the request's key,
    so one key's rows are enough: a request whose row is not among them has no matching row."""
    out = []
    runs_by_id = {run.id: run for run in runs}
    for req in sent:
        run = runs_by_id.get(req.run_row_id)
        if run is None or run.attempt != req.attempt:
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
    sent_rows = {req.run_row_id for req in sent}
    for run in runs:
        dispatched = run.status in ("success", "timeout") or (
            run.status == "failed" and "cannot plan" not in (run.error or "")
        )
        if dispatched and run.id not in sent_rows:
            out.append(
                Violation(
                    "log_mismatch",
                    run.schedule_id,
                    f"run row {run.id} is {run.status} but the target never saw it",
                    run.scheduled_for,
                )
            )
    return out


def _after_change_of(result: Any, sent: list[Any]) -> list[Violation]:
    out = []
    if not sent:
        return out
    changes = [
        c
        for c in result.changes
        if c.schedule_id == sent[0].schedule_id and c.kind in ("disable", "delete", "enable")
    ]
    if not changes:
        return out
    for req in sent:
        last = None  # the last disable/delete/enable that committed before this attempt started
        started = req.seq if req.started is None else req.started
        for c in changes:
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


# -- per schedule, in send order: requests of one schedule in flight together -----------------


def _overlaps(result: Any, db: Any) -> list[Violation]:
    out = []
    sql = f"SELECT {', '.join(REQUEST_COLUMNS)}, NULL FROM requests ORDER BY schedule_id, seq"
    for sid, reqs in groupby(_stream(db, Sent, sql), key=lambda r: r.schedule_id):
        spec = result.specs.get(sid)
        if spec is None or spec.overlap == "allow":
            continue
        for first, second in _in_flight_together(reqs):
            if first.key != second.key and not _unhealthy(result, first, second):
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
        return slot is not None and slot < self.cursor - _EPS and slot <= self.end_faults_at

    def _judge(self) -> None:
        slot = self.slot
        if round(slot, 3) not in self.seen and not any(
            a - _EPS <= slot <= b + _EPS for a, b in self.ranges
        ):
            self.lost = Violation("lost", self.sid, "neither fired nor recorded skipped", slot)
            self.slot = None
            return
        self.slot = slot_after(self.s, slot)
        if len(self.seen) > 256 or len(self.ranges) > 64:  # forget what is behind the walk
            floor = round(self.slot, 3) if self.slot is not None else 0.0
            self.seen = {x for x in self.seen if x >= floor - 0.001}
            self.ranges = [(a, b) for a, b in self.ranges if b + _EPS >= self.slot]

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


def _by_slot(result: Any, db: Any) -> list[Violation]:
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
    for sid, rows in groupby(_stream(db, RunRow, sql), key=lambda r: r.schedule_id):
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


def _skips(result: Any, db: Any) -> list[Violation]:
    """Every skipped row names its policy: it must be the schedule's, and the slot must have been
    late (misfire) or come due under a run in flight (overlap) when it was skipped.

    Skipped rows arrive per schedule in the order of their slot's wall time (the slot less the
    writer's skew), the schedule's requests in the order they were sent: a slot was under a run
    in flight iff some request sent by then (plus the skew) ended after it (less the skew), i.e.
    the latest end among the requests sent so far is after it."""
    out = []
    tolerance = _skew(result) + _EPS
    db.execute("CREATE TEMP TABLE IF NOT EXISTS offsets (replica TEXT PRIMARY KEY, offset REAL)")
    db.execute("DELETE FROM offsets")
    db.executemany("INSERT INTO offsets VALUES (?, ?)", list(result.offsets.items()))
    # One claim skips a batch (same created_at): its first slot, the cursor, must have been past
    # the grace; later slots of the batch may be less late.
    skipped = _stream(
        db,
        _SkipRow,
        f"SELECT {', '.join('r.' + c for c in ('ord', *RUN_COLUMNS))}, "
        "min(r.scheduled_for) OVER (PARTITION BY r.schedule_id, r.created_at), "
        "r.scheduled_for - coalesce(o.offset, 0.0) AS wall "
        "FROM runs AS r LEFT JOIN offsets AS o ON o.replica = r.replica "
        "WHERE r.status = 'skipped' AND r.scheduled_for IS NOT NULL "
        "ORDER BY r.schedule_id, wall",
    )
    sent = _stream(
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


def _skew(result: Any) -> float:
    return result.config.lease_seconds / 3 if "skew" in result.config.faults else 0.0


def _triggers(result: Any, db: Any) -> list[Violation]:
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
