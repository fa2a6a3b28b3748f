"""Cron expressions and their slots in an IANA time zone.

Owns: parsing and validating cron expressions into sorted field sets, loading time zones, and
computing the next slot strictly after an instant in a zone, with exact daylight-saving rules.
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
import re
import zoneinfo
from collections.abc import Iterator
from datetime import date, datetime, timezone, tzinfo
from typing import NamedTuple

from .errors import ValidationError

__all__ = ["CronExpr", "load_timezone"]

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MAX_DAY = date.max.toordinal() - _EPOCH_ORDINAL - 2  # keep a margin for offsets near year 9999
_HORIZON_YEARS = 10  # covers Feb 29 across a skipped century leap year (2096 -> 2104)
# A fifth weekday of February (`* 2 5#5`) needs a leap year starting on that weekday: 28 years.
_HORIZON_YEARS_FIFTH_WEEKDAY = 30
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


class _Field(NamedTuple):
    name: str
    low: int
    high: int
    names: dict[str, int] | None
    described: str  # the range, as errors say it
    star_high: int  # where `*` and `a/n` end: day-of-week's 7 is a second Sunday, not a day more


_MINUTE = _Field("minute", 0, 59, None, "0-59", 59)
_HOUR = _Field("hour", 0, 23, None, "0-23", 23)
_DOM = _Field("day-of-month", 1, 31, None, "1-31", 31)
_MONTH = _Field("month", 1, 12, _MONTH_NAMES, "1-12 or JAN-DEC", 12)
_DOW = _Field("day-of-week", 0, 7, _DOW_NAMES, "0-7 (0 and 7 are Sunday) or SUN-SAT", 6)
_FIELDS = (_MINUTE, _HOUR, _DOM, _MONTH, _DOW)

_MAX_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DIGITS = re.compile(r"[0-9]+")
_NEAREST_WEEKDAY = re.compile(r"([0-9]+)W", re.IGNORECASE)
_UNSUPPORTED = re.compile(r"[LW#?]", re.IGNORECASE)
_UTC_KEYS = frozenset(
    ("UTC", "UCT", "GMT", "GMT0", "GMT+0", "GMT-0", "Greenwich", "Universal", "Zulu")
)

# Where L, W, # and ? may stand, for the error that refuses one elsewhere.
_EXTENSIONS = {
    "day-of-month": "day-of-month takes '?' alone, 'L', 'a-L', 'a-L/n' and 'nW'; ",
    "day-of-week": "day-of-week takes '?' alone, 'd#k' and 'Ld'; ",
}
_EXTENSIONS_ELSEWHERE = "L, W, # and ? belong to the day fields; "

# How day-of-month and day-of-week combine.
_DAYS_ALL, _DAYS_DOM, _DAYS_DOW, _DAYS_EITHER = range(4)


class _MonthDays(NamedTuple):
    """Day-of-month items whose day depends on the month's length."""

    last: bool  # `L`
    to_last: tuple[tuple[int, int], ...]  # `a-L` and `a-L/n` as (a, n)
    nearest_weekday: tuple[int, ...]  # `nW` as n


class _WeekdaysOfMonth(NamedTuple):
    """Day-of-week items that depend on where in its month a day falls."""

    nth: frozenset[tuple[int, int]]  # `d#k` as (d, k), d in 0-6
    last: frozenset[int]  # `Ld` as d


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
        parts = _five_fields(expr, fields_text.split())
        for spec, part in zip(_FIELDS, parts, strict=True):
            _refuse_unhonourable(expr, spec, part)
        minutes = _parse_field(expr, _MINUTE, parts[0])
        hours = _parse_field(expr, _HOUR, parts[1])
        doms, month_days = _parse_days_of_month(expr, parts[2])
        months = _parse_field(expr, _MONTH, parts[3])
        dows, weekdays_of_month = _parse_days_of_week(expr, parts[4])
        dom_star, dow_star = parts[2] in ("*", "?"), parts[4] in ("*", "?")
        if dom_star and dow_star:
            day_rule = _DAYS_ALL
        elif dow_star:
            day_rule = _DAYS_DOM
            if month_days is None and min(doms) > max(_MAX_DAYS_IN_MONTH[m] for m in months):
                raise ValidationError(
                    "cron",
                    f"{expr!r} never matches: day-of-month {parts[2]} does not occur in month "
                    f"{parts[3]}",
                )
        elif dom_star:
            day_rule = _DAYS_DOW
        else:
            day_rule = _DAYS_EITHER
            _refuse_ambiguous_day_pair(expr, parts, month_days, weekdays_of_month)
        fifth = weekdays_of_month is not None and any(k == 5 for _, k in weekdays_of_month.nth)
        set_ = object.__setattr__
        set_(self, "expr", expr)
        set_(self, "_times", tuple(sorted(h * 60 + m for h in hours for m in minutes)))
        set_(self, "_months", months)
        set_(self, "_doms", doms)
        set_(self, "_month_days", month_days)
        set_(self, "_dows", dows)
        set_(self, "_weekdays_of_month", weekdays_of_month)
        set_(self, "_day_rule", day_rule)
        set_(self, "_horizon_years", _HORIZON_YEARS_FIFTH_WEEKDAY if fifth else _HORIZON_YEARS)
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
        if rule == _DAYS_ALL:
            return True
        if rule == _DAYS_DOM:
            return self._dom_matches(d)
        if rule == _DAYS_DOW:
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


# -- parsing ---------------------------------------------------------------------------------------


def _five_fields(expr: str, parts: list[str]) -> list[str]:
    """The five minute-to-weekday fields. croniter's longer forms put seconds sixth and a year
    seventh; they are accepted when they change nothing (seconds 0, every year)."""
    if len(parts) not in (5, 6, 7):
        raise ValidationError(
            "cron",
            f"{expr!r}: expected 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(parts)}",
        )
    if len(parts) >= 6 and not (_DIGITS.fullmatch(parts[5]) and int(parts[5]) == 0):
        raise ValidationError(
            "cron",
            f"{expr!r}: seconds field {parts[5]!r} (the 6th field) is not supported: slots are "
            f"whole minutes, so the seconds field must be 0 (use interval_seconds for a "
            f"sub-minute cadence)",
        )
    if len(parts) == 7 and parts[6] != "*":
        raise ValidationError(
            "cron",
            f"{expr!r}: year field {parts[6]!r} (the 7th field) is not supported: it must be '*' "
            f"(to stop a schedule after a date, disable or delete it)",
        )
    return parts[:5]


def _refuse_unhonourable(expr: str, spec: _Field, text: str) -> None:
    """Constructs other crons accept that have no one fixed series of slots."""
    for item in text.split(","):
        head = item[:1].upper()
        if head == "H":
            raise ValidationError(
                "cron",
                f"{expr!r}: {spec.name} {item!r}: 'H' (a hashed value) is not supported: its "
                f"value comes from a per-job seed this expression does not carry; write the value",
            )
        if head == "R":  # no month or weekday name starts with R
            raise ValidationError(
                "cron",
                f"{expr!r}: {spec.name} {item!r}: 'R' (a random value) is not supported: it "
                f"draws a new value each time the next slot is computed; write the value",
            )


def _parse_days_of_month(expr: str, text: str) -> tuple[frozenset[int], _MonthDays | None]:
    """Fixed days, and the items `L`, `a-L[/n]`, `nW` that depend on the month's length."""
    if text == "?":
        return _parse_field(expr, _DOM, "*"), None
    plain: list[str] = []
    last = False
    to_last: list[tuple[int, int]] = []
    nearest: list[int] = []
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        start_text, dash, end_text = base.partition("-")
        if item.upper() == "L":
            last = True
        elif dash and end_text.upper() == "L":
            start = _parse_value(expr, _DOM, start_text)
            to_last.append((start, _parse_step(expr, _DOM, item, step_text) if slash else 1))
        elif match := _NEAREST_WEEKDAY.fullmatch(item):
            day = int(match.group(1))
            if not 1 <= day <= 31:
                raise ValidationError(
                    "cron", f"{expr!r}: day-of-month {item!r}: W needs a day 1-31, got {day}"
                )
            nearest.append(day)
        elif item.upper() == "LW":
            raise ValidationError(
                "cron",
                f"{expr!r}: day-of-month 'LW' (the last weekday) is not supported; "
                f"'L' (the last day) and 'nW' (the weekday nearest day n) are",
            )
        else:
            plain.append(item)
    doms = _parse_field(expr, _DOM, ",".join(plain)) if plain else frozenset()
    if not (last or to_last or nearest):
        return doms, None
    return doms, _MonthDays(last, tuple(to_last), tuple(nearest))


def _parse_days_of_week(expr: str, text: str) -> tuple[frozenset[int], _WeekdaysOfMonth | None]:
    """Weekdays (0-6, 7 folded into 0), and the items `d#k` and `Ld`."""
    if text == "?":
        return _parse_field(expr, _DOW, "*"), None
    plain: list[str] = []
    nth: set[tuple[int, int]] = set()
    last: set[int] = set()
    for item in text.split(","):
        day_text, hash_, k_text = item.partition("#")
        if hash_:
            if not (_DIGITS.fullmatch(k_text) and 1 <= int(k_text) <= 5):
                raise ValidationError(
                    "cron",
                    f"{expr!r}: day-of-week {item!r}: the k in d#k (the k-th weekday d of the "
                    f"month) must be 1-5, got {k_text!r}",
                )
            nth.add((_parse_value(expr, _DOW, day_text) % 7, int(k_text)))
        elif item[:1].upper() == "L" and len(item) > 1:
            last.add(_parse_value(expr, _DOW, item[1:]) % 7)
        elif len(item) > 1 and item[-1:].upper() == "L":
            raise ValidationError(
                "cron",
                f"{expr!r}: day-of-week {item!r} is not supported; the last weekday d of the "
                f"month is written Ld, e.g. L5 for the last Friday",
            )
        elif item.upper() == "L":
            raise ValidationError(
                "cron",
                f"{expr!r}: day-of-week 'L' alone is not supported; write Ld for the last "
                f"weekday d of the month (L5: the last Friday), or 6 for Saturday",
            )
        else:
            plain.append(item)
    dows = frozenset(d % 7 for d in (_parse_field(expr, _DOW, ",".join(plain)) if plain else ()))
    if not (nth or last):
        return dows, None
    return dows, _WeekdaysOfMonth(frozenset(nth), frozenset(last))


def _refuse_ambiguous_day_pair(
    expr: str,
    parts: list[str],
    month_days: _MonthDays | None,
    weekdays_of_month: _WeekdaysOfMonth | None,
) -> None:
    """Refuse the day pairs crons read differently: croniter ignores the day-of-week beside
    `nW`, and finds no slot at all for `d#k` or `Ld` beside a restricted day-of-month, where
    Vixie cron's rule would fire on either."""
    if month_days is not None and month_days.nearest_weekday:
        raise ValidationError(
            "cron",
            f"{expr!r}: day-of-month {parts[2]!r} (nW, the nearest weekday) with a restricted "
            f"day-of-week {parts[4]!r} is not supported: crons disagree on what the pair means; "
            f"put '*' or '?' in day-of-week",
        )
    if weekdays_of_month is not None:
        raise ValidationError(
            "cron",
            f"{expr!r}: day-of-week {parts[4]!r} (d#k or Ld) with a restricted day-of-month "
            f"{parts[2]!r} is not supported: crons disagree on what the pair means; put '*' or "
            f"'?' in day-of-month",
        )


def _parse_step(expr: str, spec: _Field, item: str, step_text: str) -> int:
    if not _DIGITS.fullmatch(step_text) or int(step_text) == 0:
        raise ValidationError(
            "cron",
            f"{expr!r}: {spec.name} step {step_text!r} in {item!r} must be a positive whole number",
        )
    return int(step_text)


def _parse_field(expr: str, spec: _Field, text: str) -> frozenset[int]:
    """One field's values: items `*`, `a`, `a-b`, each optionally `/step`, joined by commas."""
    if text == "?":
        raise ValidationError(
            "cron",
            f"{expr!r}: {spec.name} '?' is not supported: '?' stands only for a whole "
            f"day-of-month or day-of-week field",
        )
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise ValidationError("cron", f"{expr!r}: {spec.name} {text!r} has an empty list item")
        base, slash, step_text = item.partition("/")
        step = _parse_step(expr, spec, item, step_text) if slash else 1
        if base == "*":
            first, last = spec.low, spec.star_high
        else:
            start_text, dash, end_text = base.partition("-")
            first = _parse_value(expr, spec, start_text)
            if dash:
                last = _parse_value(expr, spec, end_text)
                if last < first:
                    hint = (
                        " (7 is Sunday too: write FRI-7, not FRI-SUN)"
                        if spec is _DOW
                        else f"; crons read a reversed range differently, so write it as two: "
                        f"'{start_text}-{spec.high},{spec.low}-{end_text}'"
                    )
                    raise ValidationError(
                        "cron", f"{expr!r}: {spec.name} range {base!r} runs backwards{hint}"
                    )
            elif slash:  # `a/n` means `a-<max>/n`
                if spec is _DOW:
                    first %= 7
                last = spec.star_high
            else:
                last = first
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _parse_value(expr: str, spec: _Field, token: str) -> int:
    if _DIGITS.fullmatch(token):
        value = int(token)
        if not spec.low <= value <= spec.high:
            raise ValidationError(
                "cron", f"{expr!r}: {spec.name} must be {spec.described}, got {token}"
            )
        return value
    if spec.names is not None and token.upper() in spec.names:
        return spec.names[token.upper()]
    if not token:
        raise ValidationError(
            "cron", f"{expr!r}: {spec.name} has a missing value (a range or step?)"
        )
    if _UNSUPPORTED.search(token) or token == "*":
        where = _EXTENSIONS.get(spec.name, _EXTENSIONS_ELSEWHERE)
        raise ValidationError(
            "cron",
            f"{expr!r}: {spec.name} {token!r} is not supported ({where}otherwise use numbers, "
            f"names, '*', ranges a-b, lists a,b and steps /n)",
        )
    raise ValidationError("cron", f"{expr!r}: {spec.name} value {token!r} is not {spec.described}")


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
