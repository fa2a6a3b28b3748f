"""The cron grammar: an expression's five fields (or a macro, or croniter's 6- and 7-field forms)
read into sorted value sets, each refusal a ValidationError naming the construct. `cron.py` owns
the slot search over what this returns and says which expressions are accepted.
Must not: know about time zones, instants or clocks.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import ValidationError

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

# Where L, W, # and ? may stand, for the error that refuses one elsewhere.
_EXTENSIONS = {
    "day-of-month": "day-of-month takes '?' alone, 'L', 'a-L', 'a-L/n' and 'nW'; ",
    "day-of-week": "day-of-week takes '?' alone, 'd#k' and 'Ld'; ",
}
_EXTENSIONS_ELSEWHERE = "L, W, # and ? belong to the day fields; "

# How day-of-month and day-of-week combine.
DAYS_ALL, DAYS_DOM, DAYS_DOW, DAYS_EITHER = range(4)


class MonthDays(NamedTuple):
    """Day-of-month items whose day depends on the month's length."""

    last: bool  # `L`
    to_last: tuple[tuple[int, int], ...]  # `a-L` and `a-L/n` as (a, n)
    nearest_weekday: tuple[int, ...]  # `nW` as n


class WeekdaysOfMonth(NamedTuple):
    """Day-of-week items that depend on where in its month a day falls."""

    nth: frozenset[tuple[int, int]]  # `d#k` as (d, k), d in 0-6
    last: frozenset[int]  # `Ld` as d


class CronFields(NamedTuple):
    """A cron expression read into what the slot search needs."""

    times: tuple[int, ...]  # minutes of the day, h * 60 + m, ascending
    months: frozenset[int]
    doms: frozenset[int]
    month_days: MonthDays | None
    dows: frozenset[int]  # 0-6, Sunday 0
    weekdays_of_month: WeekdaysOfMonth | None
    day_rule: int  # DAYS_ALL | DAYS_DOM | DAYS_DOW | DAYS_EITHER
    fifth_weekday: bool  # a `d#5`: a fifth weekday may take decades to recur
    wall_clock: bool  # the hour field is a fixed set of hours: wall-clock DST mode


def parse_fields(expr: str) -> CronFields:
    """Read and validate `expr` (a string). Raises ValidationError("cron", ...) naming the
    construct at fault."""
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
        day_rule = DAYS_ALL
    elif dow_star:
        day_rule = DAYS_DOM
        if month_days is None and min(doms) > max(_MAX_DAYS_IN_MONTH[m] for m in months):
            raise ValidationError(
                "cron",
                f"{expr!r} never matches: day-of-month {parts[2]} does not occur in month "
                f"{parts[3]}",
            )
    elif dom_star:
        day_rule = DAYS_DOW
    else:
        day_rule = DAYS_EITHER
        _refuse_ambiguous_day_pair(expr, parts, month_days, weekdays_of_month)
    fifth = weekdays_of_month is not None and any(k == 5 for _, k in weekdays_of_month.nth)
    # Every hour listed (`0-23`) means "every hour" as much as `*` does: elapsed mode.
    fixed_hours = "*" not in parts[1] and "/" not in parts[1] and len(hours) < 24
    return CronFields(
        times=tuple(sorted(h * 60 + m for h in hours for m in minutes)),
        months=months,
        doms=doms,
        month_days=month_days,
        dows=dows,
        weekdays_of_month=weekdays_of_month,
        day_rule=day_rule,
        fifth_weekday=fifth,
        wall_clock=fixed_hours,
    )


# -- the fields ----------------------------------------------------------------------


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


def _parse_days_of_month(expr: str, text: str) -> tuple[frozenset[int], MonthDays | None]:
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
    return doms, MonthDays(last, tuple(to_last), tuple(nearest))


def _parse_days_of_week(expr: str, text: str) -> tuple[frozenset[int], WeekdaysOfMonth | None]:
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
    return dows, WeekdaysOfMonth(frozenset(nth), frozenset(last))


def _refuse_ambiguous_day_pair(
    expr: str,
    parts: list[str],
    month_days: MonthDays | None,
    weekdays_of_month: WeekdaysOfMonth | None,
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
