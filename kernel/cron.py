"""Cron expressions and their slots in an IANA time zone.

Owns: parsing and validating cron expressions (standard 5 fields, or one of the macros @hourly,
@daily, @midnight, @weekly, @monthly, @yearly, @annually) into sorted field sets, loading time
zones, and computing the next slot strictly after an instant in a zone, with exact daylight-saving
rules. Must not: do any I/O, read a clock, sleep or schedule anything. Callers pass `after` (epoch
seconds) and a zone; they get epoch seconds back.

The DST rules depend on the expression's HOUR field:

* wall-clock mode -- the hour field is a fixed set of hours (no `*`, no `/`, not all 24),
  e.g. `30 2 * * *`, `@daily`:
  each matching local wall time fires once per local day. An ambiguous time (fall-back) fires at
  its first occurrence only; a nonexistent time (spring-forward) fires at the instant the gap ends,
  and all the nonexistent times of one gap collapse into that one fire.
* elapsed mode -- the hour field is `*` or has a step, e.g. `*/15 * * * *`, `@hourly`: every real
  instant whose local wall time matches fires, so a repeated hour fires twice and a skipped one
  not at all.

Day rule: when day-of-month and day-of-week are both restricted (neither is literally `*`), a day
matches if EITHER matches; otherwise both must (the `*` one always does).
"""

from __future__ import annotations

import bisect
import functools
import re
import zoneinfo
from collections.abc import Iterator
from datetime import date, datetime, timezone, tzinfo

from .errors import ValidationError

__all__ = ["CronExpr", "load_timezone"]

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MAX_DAY = date.max.toordinal() - _EPOCH_ORDINAL - 2  # keep a margin for offsets near year 9999
_HORIZON_YEARS = 10  # covers Feb 29 across a skipped century leap year (2096 -> 2104)
_HORIZON_DAYS = _HORIZON_YEARS * 366
_SECONDS_PER_DAY = 86_400
_MINUTES_PER_DAY = 1_440

_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MONTH_NAMES = {
    name: i + 1
    for i, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    )
}
_DOW_NAMES = {name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
# (name, low, high, names, how the range is described in errors)
_FIELDS = (
    ("minute", 0, 59, None, "0-59"),
    ("hour", 0, 23, None, "0-23"),
    ("day-of-month", 1, 31, None, "1-31"),
    ("month", 1, 12, _MONTH_NAMES, "1-12 or JAN-DEC"),
    ("day-of-week", 0, 7, _DOW_NAMES, "0-7 (0 and 7 are Sunday) or SUN-SAT"),
)
_MAX_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DIGITS = re.compile(r"[0-9]+")
_UNSUPPORTED = re.compile(r"[LW#?]", re.IGNORECASE)
_UTC_KEYS = frozenset(
    ("UTC", "UCT", "GMT", "GMT0", "GMT+0", "GMT-0", "Greenwich", "Universal", "Zulu")
)

# How day-of-month and day-of-week combine.
_DAYS_ALL, _DAYS_DOM, _DAYS_DOW, _DAYS_EITHER = range(4)


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

    __slots__ = ("_day_rule", "_doms", "_dows", "_months", "_times", "_wall_clock", "expr")

    expr: str

    def __init__(self, expr: str):
        if not isinstance(expr, str):
            raise ValidationError("cron", f"{expr!r} is not a cron expression (not a string)")
        text = expr.strip()
        if not text:
            raise ValidationError("cron", "the cron expression is empty")
        if text.startswith("@"):
            fields_text = _MACROS.get(text.lower())
            if fields_text is None:
                raise ValidationError(
                    "cron", f"{expr!r}: unknown macro; supported are {', '.join(_MACROS)}"
                )
        else:
            fields_text = text
        parts = fields_text.split()
        if len(parts) != 5:
            raise ValidationError(
                "cron",
                f"{expr!r}: expected 5 fields (minute hour day-of-month month day-of-week), "
                f"got {len(parts)}; seconds and years are not supported",
            )
        minutes, hours, doms, months, dows = (
            _parse_field(expr, spec, part) for spec, part in zip(_FIELDS, parts, strict=True)
        )
        dows = frozenset(d % 7 for d in dows)  # 7 is Sunday too
        dom_star, dow_star = parts[2] == "*", parts[4] == "*"
        if dom_star and dow_star:
            day_rule = _DAYS_ALL
        elif dow_star:
            day_rule = _DAYS_DOM
            if min(doms) > max(_MAX_DAYS_IN_MONTH[m] for m in months):
                raise ValidationError(
                    "cron",
                    f"{expr!r} never matches: day-of-month {parts[2]} does not occur in month "
                    f"{parts[3]}",
                )
        elif dom_star:
            day_rule = _DAYS_DOW
        else:
            day_rule = _DAYS_EITHER
        set_ = object.__setattr__
        set_(self, "expr", expr)
        set_(self, "_times", tuple(sorted(h * 60 + m for h in hours for m in minutes)))
        set_(self, "_months", months)
        set_(self, "_doms", doms)
        set_(self, "_dows", dows)
        set_(self, "_day_rule", day_rule)
        # Every hour listed (`0-23`) means "every hour" as much as `*` does: elapsed mode.
        fixed_hours = "*" not in parts[1] and "/" not in parts[1] and len(hours) < 24
        set_(self, "_wall_clock", fixed_hours)

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
        limit = min(first // _MINUTES_PER_DAY + _HORIZON_DAYS, _MAX_DAY)
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
        return d.month in self._months and self._dom_dow(d.day, (day + 4) % 7)

    def _dom_dow(self, dom: int, dow: int) -> bool:
        rule = self._day_rule
        if rule == _DAYS_ALL:
            return True
        if rule == _DAYS_DOM:
            return dom in self._doms
        if rule == _DAYS_DOW:
            return dow in self._dows
        return dom in self._doms or dow in self._dows

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
            if self._dom_dow(d.day, (day + 4) % 7):
                return day
            day += 1
        raise self._never(limit)

    def _never(self, limit: int) -> ValidationError:
        until = date.fromordinal(min(limit, _MAX_DAY) + _EPOCH_ORDINAL)
        return ValidationError(
            "cron",
            f"{self.expr!r} never matches: no slot found up to {until.isoformat()} "
            f"(searched up to {_HORIZON_YEARS} years ahead)",
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


def _parse_field(expr: str, spec: tuple, text: str) -> frozenset[int]:
    """One field's values: items `*`, `a`, `a-b`, each optionally `/step`, joined by commas."""
    name, low, high, names, described = spec
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise ValidationError("cron", f"{expr!r}: {name} {text!r} has an empty list item")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not _DIGITS.fullmatch(step_text) or int(step_text) == 0:
                raise ValidationError(
                    "cron",
                    f"{expr!r}: {name} step {step_text!r} in {item!r} must be a positive "
                    f"whole number",
                )
            step = int(step_text)
        if base == "*":
            first, last = low, high
        else:
            start_text, dash, end_text = base.partition("-")
            first = _parse_value(expr, name, low, high, names, described, start_text)
            if dash:
                last = _parse_value(expr, name, low, high, names, described, end_text)
                if last < first:
                    hint = (
                        " (7 is Sunday too: write FRI-7, not FRI-SUN)"
                        if names is _DOW_NAMES
                        else ""
                    )
                    raise ValidationError(
                        "cron", f"{expr!r}: {name} range {base!r} runs backwards{hint}"
                    )
            else:
                last = high if slash else first  # `a/n` means `a-<max>/n`
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _parse_value(
    expr: str, name: str, low: int, high: int, names: dict | None, described: str, token: str
) -> int:
    if _DIGITS.fullmatch(token):
        value = int(token)
        if not low <= value <= high:
            raise ValidationError("cron", f"{expr!r}: {name} must be {described}, got {token}")
        return value
    if names is not None and token.upper() in names:
        return names[token.upper()]
    if not token:
        raise ValidationError("cron", f"{expr!r}: {name} has a missing value (a range or step?)")
    if _UNSUPPORTED.search(token) or token == "*":
        raise ValidationError(
            "cron",
            f"{expr!r}: {name} {token!r} is not supported (no L, W, # or ? extensions; "
            f"use numbers, names, '*', ranges a-b, lists a,b and steps /n)",
        )
    raise ValidationError("cron", f"{expr!r}: {name} value {token!r} is not {described}")


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


def _seconds(delta) -> int:
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
