"""Cron expressions and their slots in an IANA time zone.

Owns: `CronExpr` (an expression validated into sorted field sets by `cron_parse.py`, the
grammar), loading time zones, and computing the next slot strictly after an instant in a zone,
with exact daylight-saving rules.
Must not: do any I/O, read a clock, sleep or schedule anything. Callers pass `after` (epoch
seconds) and a zone; they get epoch seconds back.

Accepted: 5 fields (minute hour day-of-month month day-of-week) of numbers, names (JAN-DEC,
SUN-SAT), `*`, ranges a-b, lists a,b and steps /n; `?` for a whole day field (same as `*`); in
day-of-month `L` (the last day, also as a range end: `15-L`) and `nW` (the weekday nearest day
n, within the month); in day-of-week `d#k` (the k-th weekday d of the month) and `Ld` (the last
weekday d); the macros @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually; and
croniter's 6- and 7-field forms (seconds, then year, last) when the seconds field is 0 and the
year field `*`. Everything else is refused with a ValidationError naming the construct.

The DST rules depend on the expression's HOUR field:

* wall-clock mode -- the hour field is a fixed set of hours (no `*`, no `/`, not all 24),
  e.g. `30 2 * * *`, `@daily`:
  each matching local wall time fires once per local day. An ambiguous time (fall-back) fires at
  its first occurrence only; a nonexistent time (spring-forward) fires at the instant the gap ends,
  and all the nonexistent times of one gap collapse into that one fire.
* elapsed mode -- the hour field is `*` or has a step, e.g. `*/15 * * * *`, `@hourly`: every real
  instant whose local wall time matches fires, so a repeated hour fires twice and a skipped one
  not at all.

Day rule: when day-of-month and day-of-week are both restricted (neither is `*` or `?`), a day
matches if EITHER matches; otherwise both must (the `*` one always does).
"""

from __future__ import annotations

import bisect
import calendar
import functools
import zoneinfo
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone, tzinfo

from .cron_parse import DAYS_ALL, DAYS_DOM, DAYS_DOW, MonthDays, WeekdaysOfMonth, parse_fields
from .errors import ValidationError

__all__ = ["CronExpr", "load_timezone"]

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MAX_DAY = date.max.toordinal() - _EPOCH_ORDINAL - 2  # keep a margin for offsets near year 9999
_HORIZON_YEARS = 10  # covers Feb 29 across a skipped century leap year (2096 -> 2104)
# A fifth weekday of February (`* 2 5#5`) needs a leap year starting on that weekday: 28 years.
_HORIZON_YEARS_FIFTH_WEEKDAY = 30
_SECONDS_PER_DAY = 86_400
_MINUTES_PER_DAY = 1_440

_UTC_KEYS = frozenset(
    ("UTC", "UCT", "GMT", "GMT0", "GMT+0", "GMT-0", "Greenwich", "Universal", "Zulu")
)


def load_timezone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA zone `name` (cached). Raises ValidationError("timezone", ...) for a bad name."""
    if not isinstance(name, str):
        raise ValidationError("timezone", f"{name!r} is not an IANA time zone name (not a string)")
    return _load_timezone(name)


@functools.lru_cache(maxsize=256)
def _load_timezone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValidationError(
            "timezone",
            f"{name!r} is not an IANA time zone (e.g. 'UTC', 'Europe/Berlin', 'America/New_York')",
        ) from exc


class CronExpr:
    """A parsed cron expression. Immutable; get one with `CronExpr.parse(expr)` (cached)."""

    __slots__ = (
        "_day_rule",
        "_doms",
        "_dows",
        "_horizon_years",
        "_month_days",
        "_months",
        "_times",
        "_wall_clock",
        "_weekdays_of_month",
        "expr",
    )

    expr: str
    _times: tuple[int, ...]  # minutes of the day, ascending
    _months: frozenset[int]
    _doms: frozenset[int]
    _month_days: MonthDays | None
    _dows: frozenset[int]
    _weekdays_of_month: WeekdaysOfMonth | None
    _day_rule: int
    _horizon_years: int
    _wall_clock: bool

    def __init__(self, expr: str):
        fields = parse_fields(expr)
        set_ = object.__setattr__
        set_(self, "expr", expr)
        set_(self, "_times", fields.times)
        set_(self, "_months", fields.months)
        set_(self, "_doms", fields.doms)
        set_(self, "_month_days", fields.month_days)
        set_(self, "_dows", fields.dows)
        set_(self, "_weekdays_of_month", fields.weekdays_of_month)
        set_(self, "_day_rule", fields.day_rule)
        horizon = _HORIZON_YEARS_FIFTH_WEEKDAY if fields.fifth_weekday else _HORIZON_YEARS
        set_(self, "_horizon_years", horizon)
        set_(self, "_wall_clock", fields.wall_clock)

    @classmethod
    def parse(cls, expr: str) -> CronExpr:
        """Parse and validate `expr` (cached). Raises ValidationError("cron", ...) naming the
        wrong part."""
        if not isinstance(expr, str):
            raise ValidationError("cron", f"{expr!r} is not a cron expression (not a string)")
        return _parse_cached(expr)

    @property
    def mode(self) -> str:
        """Either "wall-clock" (hour field a fixed set) or "elapsed" (hour field `*` or a step)."""
        return "wall-clock" if self._wall_clock else "elapsed"

    def next_after(self, after: float, tz: tzinfo) -> float:
        """The first slot strictly after `after` (epoch seconds) in zone `tz`, as epoch seconds."""
        fixed = _fixed_offset(tz)
        offset = fixed if fixed is not None else _offset_at(tz, after)
        first = int((after + offset) // 60) + 1  # first naive local minute strictly after
        limit = min(first // _MINUTES_PER_DAY + self._horizon_years * 366, _MAX_DAY)
        if fixed is not None:
            return float(self._next_minute(first, limit) * 60 - fixed)
        if self._wall_clock:
            return self._next_wall_clock(after, tz, first, limit)
        return self._next_elapsed(after, tz, offset, first, limit)

    def iter_after(self, after: float, tz: tzinfo) -> Iterator[float]:
        """Successive slots strictly after `after`, strictly increasing, without end."""
        while True:
            after = self.next_after(after, tz)
            yield after

    # -- slot search ---------------------------------------------------------------------------

    def _next_wall_clock(self, after: float, tz: tzinfo, first: int, limit: int) -> float:
        # Naive local wall times map monotonically to instants (fold=0 when ambiguous, gap end
        # when nonexistent), and every wall time up to the wall time of `after` maps to an instant
        # <= after; so walk the matches from there and skip the few that still map <= after.
        minute = first
        while True:
            wall = self._next_minute(minute, limit)
            instant = _wall_to_instant(wall, tz)
            if instant > after:
                return float(instant)
            minute = wall + 1

    def _next_elapsed(self, after: float, tz: tzinfo, offset: int, first: int, limit: int) -> float:
        # Walk segments of constant UTC offset: in a segment with offset o the next match W of
        # the naive wall clock is the instant W - o, unless the offset changes before that; then
        # continue from the transition with the new offset, the transition itself included.
        start: float = after
        minute = first
        while True:
            candidate = self._next_minute(minute, limit) * 60 - offset
            transition = _transition_in(tz, start, candidate, offset)
            if transition is None:
                return float(candidate)
            start = transition
            offset = _offset_at(tz, transition)
            minute = -(-(transition + offset) // 60)  # ceiling: inclusive of the segment start

    def _next_minute(self, minute: int, limit: int) -> int:
        """The first matching naive local minute (minutes since 1970-01-01 00:00) >= `minute`."""
        day, minute_of_day = divmod(minute, _MINUTES_PER_DAY)
        times = self._times
        if day > limit:
            raise self._never(limit)
        if self._day_matches(day):
            i = bisect.bisect_left(times, minute_of_day)
            if i < len(times):
                return day * _MINUTES_PER_DAY + times[i]
        return self._next_day(day + 1, limit) * _MINUTES_PER_DAY + times[0]

    def _day_matches(self, day: int) -> bool:
        d = date.fromordinal(day + _EPOCH_ORDINAL)
        return d.month in self._months and self._dom_dow(d, (day + 4) % 7)

    def _dom_dow(self, d: date, dow: int) -> bool:
        rule = self._day_rule
        if rule == DAYS_ALL:
            return True
        if rule == DAYS_DOM:
            return self._dom_matches(d)
        if rule == DAYS_DOW:
            return self._dow_matches(d, dow)
        return self._dom_matches(d) or self._dow_matches(d, dow)

    def _dom_matches(self, d: date) -> bool:
        if d.day in self._doms:
            return True
        month_days = self._month_days
        if month_days is None:
            return False
        last = calendar.monthrange(d.year, d.month)[1]
        if month_days.last and d.day == last:
            return True
        if any(a <= d.day and (d.day - a) % n == 0 for a, n in month_days.to_last):
            return True
        return any(
            d.day == _nearest_weekday(d.year, d.month, n, last) for n in month_days.nearest_weekday
        )

    def _dow_matches(self, d: date, dow: int) -> bool:
        if dow in self._dows:
            return True
        weekdays = self._weekdays_of_month
        if weekdays is None:
            return False
        if (dow, (d.day - 1) // 7 + 1) in weekdays.nth:
            return True
        return dow in weekdays.last and d.day + 7 > calendar.monthrange(d.year, d.month)[1]

    def _next_day(self, day: int, limit: int) -> int:
        """The first matching day (days since 1970-01-01; 1970-01-01 was a Thursday) >= `day`."""
        months = self._months
        while day <= limit:
            d = date.fromordinal(day + _EPOCH_ORDINAL)
            if d.month not in months:
                year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
                if year > date.max.year:
                    break
                day = date(year, month, 1).toordinal() - _EPOCH_ORDINAL
                continue
            if self._dom_dow(d, (day + 4) % 7):
                return day
            day += 1
        raise self._never(limit)

    def _never(self, limit: int) -> ValidationError:
        until = date.fromordinal(min(limit, _MAX_DAY) + _EPOCH_ORDINAL)
        return ValidationError(
            "cron",
            f"{self.expr!r} never matches: no slot found up to {until.isoformat()} "
            f"(searched up to {self._horizon_years} years ahead)",
        )

    # -- value behaviour -----------------------------------------------------------------------

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("CronExpr is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CronExpr) and other.expr == self.expr

    def __hash__(self) -> int:
        return hash(self.expr)

    def __repr__(self) -> str:
        return f"CronExpr({self.expr!r})"


_parse_cached = functools.lru_cache(maxsize=1024)(CronExpr)


def _nearest_weekday(year: int, month: int, day: int, last: int) -> int:
    """The Monday-Friday day of the month nearest `day` (a day past the month's end counts as
    its last day), never leaving the month: Saturday the 1st gives Monday the 3rd."""
    day = min(day, last)
    weekday = date(year, month, day).weekday()  # Monday is 0
    if weekday == 5:  # Saturday
        return day - 1 if day > 1 else day + 2
    if weekday == 6:  # Sunday
        return day + 1 if day < last else day - 2
    return day


# -- time zone helpers ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _fixed_offset(tz: tzinfo) -> int | None:
    """The zone's constant UTC offset in seconds, or None when it may change (fast path only)."""
    if isinstance(tz, timezone):
        return _seconds(tz.utcoffset(None))
    key = getattr(tz, "key", None)
    if isinstance(tz, zoneinfo.ZoneInfo) and key and (key in _UTC_KEYS or key.startswith("Etc/")):
        return _seconds(tz.utcoffset(datetime(2000, 1, 1)))
    return None


def _seconds(delta: timedelta | None) -> int:
    if delta is None:  # tzinfo.utcoffset of a zone that has none: not an IANA zone
        raise ValueError("the time zone gives no UTC offset")
    return delta.days * _SECONDS_PER_DAY + delta.seconds


def _offset_at(tz: tzinfo, instant: float) -> int:
    """UTC offset of `tz` at `instant`, in seconds."""
    try:
        return _seconds(datetime.fromtimestamp(instant, tz).utcoffset())
    except (OverflowError, ValueError, OSError) as exc:
        raise ValidationError("after", f"{instant!r} is not a usable epoch time ({exc})") from exc


def _transition_in(tz: tzinfo, start: float, end: float, offset: int) -> int | None:
    """The first instant in (start, end] whose offset differs from `offset` (the offset at
    `start`), to the second; None if there is none. Looks in steps of at most a day so two
    transitions in one span are not missed."""
    while start < end:
        step_end = min(start + _SECONDS_PER_DAY, end)
        if _offset_at(tz, step_end) != offset:
            # Transitions fall on whole seconds: floor(start) still has `offset`, floor(step_end)
            # is already past the transition.
            lo, hi = int(start // 1), int(step_end // 1)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset_at(tz, mid) == offset:
                    lo = mid
                else:
                    hi = mid
            return hi
        start = step_end
    return None


def _wall_to_instant(wall_minute: int, tz: tzinfo) -> int:
    """The instant of a naive local wall time: its first occurrence when ambiguous, the end of
    the gap when it does not exist."""
    day, minute_of_day = divmod(wall_minute, _MINUTES_PER_DAY)
    d = date.fromordinal(day + _EPOCH_ORDINAL)
    local = datetime(d.year, d.month, d.day, minute_of_day // 60, minute_of_day % 60, tzinfo=tz)
    offset0 = _seconds(local.utcoffset())
    offset1 = _seconds(local.replace(fold=1).utcoffset())
    wall_seconds = wall_minute * 60
    if offset0 >= offset1:  # exists (or ambiguous: fold=0 is the first occurrence)
        return wall_seconds - offset0
    # In a gap, wall - offset1 lies before the transition and wall - offset0 after it.
    end = _transition_in(tz, wall_seconds - offset1, wall_seconds - offset0, offset0)
    return end if end is not None else wall_seconds - offset0
