"""What every invariant check reads and reports: the row shapes of the trace and the runs
table, the paged stream they come in (PAGE rows at a time), the `Violation` a check finds, and
the judgements several checks share (was a sender unhealthy, which requests overlapped)."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .target import REQUEST_COLUMNS

EPS = 1e-6
PAGE = 10_000  # rows per read (tests set it to 1: every violation then spans a page boundary)

# The run-row columns the checks read (the `runs` view has these and `ord`, ascending in
# creation order within a schedule).
RUN_COLUMNS = (
    "id", "schedule_id", "idempotency_key", "attempt", "status", "trigger", "scheduled_for",
    "created_at", "due_at", "replica", "error",
)  # fmt: skip
RunRow = namedtuple("RunRow", ("ord", *RUN_COLUMNS))
Sent = namedtuple("Sent", (*REQUEST_COLUMNS, "started"))  # a logged request, with its start
SkipRow = namedtuple("SkipRow", (*RunRow._fields, "batch_first", "wall"))

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


def stream(db: Any, row: Any, sql: str, params: tuple = ()) -> Iterator[Any]:
    """The rows of a query, PAGE at a time."""
    cursor = db.execute(sql, params)
    make = row._make
    while page := cursor.fetchmany(PAGE):
        yield from map(make, page)


def merge(
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


def unhealthy(result: Any, req: Any, at: Any) -> bool:
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


def in_flight_together(reqs: Any, open_reqs: list[Any] | None = None) -> Iterator[tuple]:
    """Pairs in flight together, by event order (wall times jump with clock steps). `open_reqs`
    carries what is still in flight from the requests before these."""
    open_reqs = [] if open_reqs is None else open_reqs
    for req in reqs:  # already in send order
        open_reqs[:] = [o for o in open_reqs if o.end_seq is None or o.end_seq > req.seq]
        for o in open_reqs:
            yield o, req
        open_reqs.append(req)


def max_skew(result: Any) -> float:
    return result.config.lease_seconds / 3 if "skew" in result.config.faults else 0.0
