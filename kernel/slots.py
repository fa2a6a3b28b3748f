"""Slot arithmetic: when a schedule's slots fall, whatever kind it is (cron in a time zone, a fixed
interval, a one-off `run_at`, or on demand with no slots). Pure functions, no I/O.

The next slot is always computed from the previous *scheduled* slot, never from "now" or from a
completion time, so a slow run or a late poll never shifts the series.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator

from .cron import CronExpr, load_timezone
from .model import Schedule

# Widening look-back spans for "the latest slot at or before t" (an hour, a day, a month, a year,
# five years): a sparse cron needs a long look, a dense one must not iterate a year of minutes.
_LOOKBACK = (3600.0, 86_400.0, 32 * 86_400.0, 367 * 86_400.0, 5 * 366 * 86_400.0)


def interval_anchor(s: Schedule) -> float:
    """Slots of an interval schedule are anchor + k·interval, k ≥ 0."""
    assert s.interval_seconds
    return s.start_at if s.start_at is not None else s.created_at + s.interval_seconds


def slot_after(s: Schedule, t: float) -> float | None:
    """The schedule's first slot strictly after `t`, or None when it has no more."""
    if s.cron_expr:
        return CronExpr.parse(s.cron_expr).next_after(t, load_timezone(s.timezone))
    if s.interval_seconds:
        anchor, step = interval_anchor(s), s.interval_seconds
        if t < anchor:
            return anchor
        # Always a grid point anchor + k·step: the division may round either way, so settle k
        # by comparing grid points (an off-grid slot would make the next call return it again).
        k = math.floor((t - anchor) / step) + 1
        while k > 1 and anchor + (k - 1) * step > t:
            k -= 1
        while anchor + k * step <= t:
            k += 1
        return anchor + k * step
    if s.run_at is not None:
        return s.run_at if s.run_at > t else None
    return None


def first_slot(s: Schedule, now: float) -> float | None:
    """The first slot of a new (or re-enabled) schedule: the next one from now; a one-off's run_at
    as given (the manager rejects one too far in the past)."""
    if s.run_at is not None and not s.cron_expr and not s.interval_seconds:
        return s.run_at
    if s.interval_seconds and s.start_at is not None and s.start_at >= now:
        return s.start_at
    return slot_after(s, now)


def iter_slots(s: Schedule, start: float, end: float) -> Iterator[float]:
    """Slots in [start, end], where `start` is itself a slot (the cursor)."""
    slot: float | None = start
    while slot is not None and slot <= end:
        yield slot
        slot = slot_after(s, slot)


def latest_at_or_before(s: Schedule, cursor: float, t: float) -> float:
    """The latest slot in [cursor, t]; `cursor` is a slot ≤ t, so there is one."""
    if s.interval_seconds and not s.cron_expr:
        anchor, step = interval_anchor(s), s.interval_seconds
        k = math.floor((t - anchor) / step)
        while anchor + k * step > t:
            k -= 1
        while anchor + (k + 1) * step <= t:
            k += 1
        return max(cursor, anchor + k * step)
    for span in _LOOKBACK:
        lo = max(cursor, t - span)
        first = cursor if lo == cursor else slot_after(s, lo)
        if first is not None and first <= t:
            last = first
            for slot in iter_slots(s, first, t):
                last = slot
            return last
    return cursor


def count_slots(s: Schedule, start: float, end: float, cap: int) -> int:
    """How many slots lie in [start, end] (start a slot), counting at most `cap`."""
    if s.interval_seconds and not s.cron_expr:
        return min(cap, math.floor((end - start) / s.interval_seconds + 1e-9) + 1)
    n = 0
    for _ in iter_slots(s, start, end):
        n += 1
        if n >= cap:
            break
    return n


def last_slots(s: Schedule, start: float, end: float, keep: int) -> tuple[list[float], int]:
    """The last `keep` slots in [start, end] (start a slot), and how many were dropped before."""
    if s.interval_seconds and not s.cron_expr:  # arithmetic, however long the window
        anchor, step = interval_anchor(s), s.interval_seconds
        base = round((start - anchor) / step)  # start is a grid point: its index on the grid
        total = count_slots(s, start, end, cap=2**62)
        first = max(0, total - keep)
        return [anchor + (base + k) * step for k in range(first, total)], first
    kept: deque[float] = deque(maxlen=keep)
    total = 0
    for slot in iter_slots(s, start, end):
        kept.append(slot)
        total += 1
    return list(kept), total - len(kept)
