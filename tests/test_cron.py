"""Tests of leasecron.kernel.cron: parsing, validation, the day rule and every DST rule.

Expected instants are written down independently of the code under test: as UTC wall times, or as
local wall times with an explicit fold, converted by the standard library."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from leasecron.kernel.cron import CronExpr, load_timezone
from leasecron.kernel.errors import ValidationError

UTC_ZONE = ZoneInfo("UTC")
NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
LONDON = ZoneInfo("Europe/London")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=UTC).timestamp()


def local(tz: ZoneInfo, y: int, mo: int, d: int, h: int = 0, mi: int = 0, fold: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=tz, fold=fold).timestamp()


def slots_between(expr: str, tz, start: float, end: float) -> list[float]:
    """Every slot s of `expr` with start <= s < end."""
    out = []
    for s in CronExpr.parse(expr).iter_after(start - 1, tz):
        if s >= end:
            return out
        out.append(s)
    raise AssertionError("unreachable")


def first_slots(expr: str, tz, after: float, n: int) -> list[float]:
    it = CronExpr.parse(expr).iter_after(after, tz)
    return [next(it) for _ in range(n)]


# -- the zone data the DST tests rely on -----------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "transition_utc", "before", "after"),
    [
        (NY, (2026, 3, 8, 7, 0), -5 * 3600, -4 * 3600),
        (NY, (2026, 11, 1, 6, 0), -4 * 3600, -5 * 3600),
        (BERLIN, (2026, 3, 29, 1, 0), 3600, 7200),
        (BERLIN, (2026, 10, 25, 1, 0), 7200, 3600),
        (LONDON, (2026, 3, 29, 1, 0), 0, 3600),
        (LONDON, (2026, 10, 25, 1, 0), 3600, 0),
        (LORD_HOWE, (2026, 4, 4, 15, 0), 11 * 3600, 37800),
        (LORD_HOWE, (2026, 10, 3, 15, 30), 37800, 11 * 3600),
    ],
)
def test_zoneinfo_has_the_2026_transitions_these_tests_assume(tz, transition_utc, before, after):
    t = utc(*transition_utc)
    assert datetime.fromtimestamp(t - 1, tz).utcoffset() == timedelta(seconds=before)
    assert datetime.fromtimestamp(t, tz).utcoffset() == timedelta(seconds=after)


# -- parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("*/20 1-3/2 * * *", [(1, 0), (1, 20), (1, 40), (3, 0), (3, 20), (3, 40), (25, 0)]),
        ("5,1-3 0 * * *", [(0, 1), (0, 2), (0, 3), (0, 5), (24, 1)]),
        ("50/4 23 * * *", [(23, 50), (23, 54), (23, 58), (47, 50)]),
        ("0-10/5 12 * * *", [(12, 0), (12, 5), (12, 10), (36, 0)]),
        ("07 009 * * *", [(9, 7), (33, 7)]),
        ("  15   6 * * *  ", [(6, 15), (30, 15)]),
    ],
)
def test_numbers_ranges_lists_and_steps(expr, expected):
    start = utc(2026, 1, 1)  # a Thursday
    got = first_slots(expr, UTC_ZONE, start - 1, len(expected))
    assert got == [start + h * 3600 + m * 60 for h, m in expected]


def test_expr_is_kept_as_given_and_parse_is_cached():
    expr = "  */5 * * * *"
    parsed = CronExpr.parse(expr)
    assert parsed.expr == expr
    assert CronExpr.parse(expr) is parsed
    assert CronExpr.parse("*/5 * * * *") is not parsed
    with pytest.raises(AttributeError):
        parsed.expr = "0 0 * * *"


@pytest.mark.parametrize(
    ("expr", "parts"),
    [
        ("61 * * * *", ["'61 * * * *'", "minute must be 0-59", "61"]),
        ("0 24 * * *", ["hour must be 0-23", "24"]),
        ("0 0 0 * *", ["day-of-month must be 1-31", "got 0"]),
        ("0 0 32 * *", ["day-of-month", "32"]),
        ("0 0 * 13 *", ["month must be 1-12", "13"]),
        ("0 0 * 0 *", ["month", "got 0"]),
        ("0 0 * * 8", ["day-of-week must be 0-7", "8"]),
        ("0 0 * FOO *", ["month", "'FOO'"]),
        ("0 0 * * MONDAY", ["day-of-week", "'MONDAY'"]),
        ("0 0 MON * *", ["day-of-month", "'MON'"]),
        ("0 0 * * JAN", ["day-of-week", "'JAN'"]),
        ("a * * * *", ["minute", "'a'"]),
        ("* * * * * *", ["seconds field '*'", "must be 0"]),
        ("0 0 * * * 2026", ["seconds field '2026'"]),
        ("0 9 * * * 30", ["seconds field '30'", "interval_seconds"]),
        ("0 0 9 * * ?", ["seconds field '?'"]),  # Quartz order (seconds first) is not croniter's
        ("0 0 * * * 0 2027", ["year field '2027'", "must be '*'"]),
        ("0 0 * * * 0 * 1", ["5 fields", "got 8"]),
        ("* * * *", ["5 fields", "got 4"]),
        ("", ["empty"]),
        ("   ", ["empty"]),
        ("@reboot", ["'@reboot'", "unknown macro"]),
        ("@every 5m", ["'@every 5m'", "unknown macro"]),
        ("0 0 LW * *", ["day-of-month", "'LW'", "not supported"]),
        ("0 0 L-3 * *", ["day-of-month", "'L'", "not supported", "'a-L'"]),
        ("0 0 L/2 * *", ["day-of-month", "'L'", "not supported"]),
        ("0 0 W * *", ["day-of-month", "'W'", "not supported"]),
        ("0 0 15W/2 * *", ["day-of-month", "'15W'", "not supported"]),
        ("0 0 32W * *", ["day-of-month", "'32W'", "1-31"]),
        ("0 0 * * 5L", ["day-of-week", "'5L'", "L5"]),
        ("0 0 * * L", ["day-of-week", "'L' alone", "not supported"]),
        ("0 0 * * L8", ["day-of-week must be 0-7", "8"]),
        ("0 0 * * 5#6", ["day-of-week", "'5#6'", "1-5"]),
        ("0 0 * * 5#0", ["day-of-week", "'5#0'", "1-5"]),
        ("0 0 * * 5#3/2", ["day-of-week", "'5#3/2'"]),
        ("0 0 15W * 1", ["'15W'", "day-of-week '1'", "not supported", "'?'"]),
        ("0 0 1 * 5#3", ["'5#3'", "day-of-month '1'", "not supported"]),
        ("0 0 */2 * L5", ["'L5'", "day-of-month '*/2'", "not supported"]),
        ("0 0 ?/2 * *", ["day-of-month", "'?'", "not supported"]),
        ("? * * * *", ["minute", "'?'", "whole day-of-month or day-of-week"]),
        ("0 0 * ? *", ["month", "'?'"]),
        ("0 L * * *", ["hour", "'L'", "day fields"]),
        ("0 0 * * 1W", ["day-of-week", "'1W'", "not supported"]),
        ("0 0 1#2 * *", ["day-of-month", "'1#2'", "not supported"]),
        ("H * * * *", ["minute", "'H'", "hashed", "not supported"]),
        ("H(0-29)/10 * * * *", ["minute", "'H(0-29)/10'", "hashed"]),
        ("0 H * * *", ["hour", "'H'", "hashed"]),
        ("R * * * *", ["minute", "'R'", "random", "not supported"]),
        ("0 0 R * *", ["day-of-month", "'R'", "random"]),
        ("5-1 * * * *", ["minute", "'5-1'", "backwards", "'5-59,0-1'"]),
        ("0 22-2 * * *", ["hour", "'22-2'", "backwards", "'22-23,0-2'"]),
        ("0 0 * * FRI-SUN", ["day-of-week", "'FRI-SUN'", "backwards"]),
        ("*/0 * * * *", ["minute", "step '0'"]),
        ("*/x * * * *", ["minute", "step 'x'"]),
        ("0 */-2 * * *", ["hour", "step '-2'"]),
        ("1,,2 * * * *", ["minute", "'1,,2'", "empty list item"]),
        ("1, * * * *", ["minute", "empty list item"]),
        ("-5 * * * *", ["minute", "missing value"]),
        ("1- * * * *", ["minute", "missing value"]),
        ("*-5 * * * *", ["minute", "'*'"]),
        ("0 0 30 2 *", ["'0 0 30 2 *'", "never matches", "day-of-month 30", "month 2"]),
        ("0 0 31 4,6,9,11 *", ["never matches"]),
        ("0 0 31 APR-JUN/2 *", ["never matches"]),
    ],
)
def test_invalid_expressions_name_the_bad_part(expr, parts):
    with pytest.raises(ValidationError) as info:
        CronExpr.parse(expr)
    assert info.value.field == "cron"
    message = str(info.value)
    assert message.startswith("cron: ")
    for part in parts:
        assert part in message


def test_non_string_expression_is_a_validation_error():
    with pytest.raises(ValidationError) as info:
        CronExpr.parse(None)  # type: ignore[arg-type]
    assert info.value.field == "cron"


def test_load_timezone_is_cached_and_rejects_bad_names():
    assert load_timezone("Europe/Berlin") is load_timezone("Europe/Berlin")
    assert load_timezone("UTC").utcoffset(datetime(2026, 1, 1)) == timedelta(0)
    for bad in ("Mars/Base", "", "Europe/../etc/passwd", "/etc/localtime", "America/Nowhere"):
        with pytest.raises(ValidationError) as info:
            load_timezone(bad)
        assert info.value.field == "timezone"
        assert f"{bad!r} is not an IANA time zone" in str(info.value)
    with pytest.raises(ValidationError) as info:
        load_timezone(5)  # type: ignore[arg-type]
    assert info.value.field == "timezone"


@pytest.mark.parametrize(
    ("macro", "expected"),
    [
        ("@hourly", [utc(2026, 1, 1, 1), utc(2026, 1, 1, 2)]),
        ("@daily", [utc(2026, 1, 2), utc(2026, 1, 3)]),
        ("@midnight", [utc(2026, 1, 2), utc(2026, 1, 3)]),
        ("@weekly", [utc(2026, 1, 4), utc(2026, 1, 11)]),  # Sundays
        ("@monthly", [utc(2026, 2, 1), utc(2026, 3, 1)]),
        ("@yearly", [utc(2027, 1, 1), utc(2028, 1, 1)]),
        ("@annually", [utc(2027, 1, 1), utc(2028, 1, 1)]),
        ("@DAILY", [utc(2026, 1, 2), utc(2026, 1, 3)]),
    ],
)
def test_macros(macro, expected):
    assert first_slots(macro, UTC_ZONE, utc(2026, 1, 1, 0, 30), 2) == expected


@pytest.mark.parametrize(
    ("expr", "mode"),
    [
        ("30 2 * * *", "wall-clock"),
        ("0 9,17 * * 1-5", "wall-clock"),
        ("0 0-23 * * *", "elapsed"),
        ("0 0-22 * * *", "wall-clock"),
        ("@daily", "wall-clock"),
        ("@weekly", "wall-clock"),
        ("@monthly", "wall-clock"),
        ("@yearly", "wall-clock"),
        ("0 */2 * * *", "elapsed"),
        ("*/15 * * * *", "elapsed"),
        ("0 1-5/2 * * *", "elapsed"),
        ("@hourly", "elapsed"),
    ],
)
def test_mode_follows_the_hour_field(expr, mode):
    assert CronExpr.parse(expr).mode == mode


# -- days ------------------------------------------------------------------------------------------


def _days(expr: str, start: tuple, n: int) -> list[str]:
    slots = first_slots(expr, UTC_ZONE, utc(*start) - 1, n)
    return [datetime.fromtimestamp(s, UTC).strftime("%a %m-%d") for s in slots]


def test_day_of_month_or_day_of_week_when_both_are_restricted():
    # 13th of the month OR a Friday.
    assert _days("0 0 13 * 5", (2026, 2, 1), 7) == [
        "Fri 02-06",
        "Fri 02-13",
        "Fri 02-20",
        "Fri 02-27",
        "Fri 03-06",
        "Fri 03-13",
        "Fri 03-20",
    ]
    assert _days("0 0 13 * 5", (2026, 1, 1), 5) == [
        "Fri 01-02",
        "Fri 01-09",
        "Tue 01-13",
        "Fri 01-16",
        "Fri 01-23",
    ]
    # A step is a restriction too: odd days OR Mondays.
    assert _days("0 0 */2 * 1", (2026, 1, 1), 6) == [
        "Thu 01-01",
        "Sat 01-03",
        "Mon 01-05",
        "Wed 01-07",
        "Fri 01-09",
        "Sun 01-11",
    ]
    # A day of month that does not exist in February: only the weekday side matches there.
    assert _days("0 0 30 2 1", (2026, 1, 1), 3) == ["Mon 02-02", "Mon 02-09", "Mon 02-16"]


def test_a_star_day_field_leaves_the_other_alone():
    assert _days("0 0 13 * *", (2026, 1, 1), 3) == ["Tue 01-13", "Fri 02-13", "Fri 03-13"]
    assert _days("0 0 * * 5", (2026, 1, 1), 3) == ["Fri 01-02", "Fri 01-09", "Fri 01-16"]
    assert _days("0 0 13 * 5", (2026, 1, 1), 5) != _days("0 0 13 * *", (2026, 1, 1), 5)


def test_month_and_weekday_names_case_insensitive_and_sunday_is_0_and_7():
    named = first_slots("0 12 * Jan,jul MON-fri", UTC_ZONE, utc(2026, 1, 1), 40)
    numbered = first_slots("0 12 * 1,7 1-5", UTC_ZONE, utc(2026, 1, 1), 40)
    assert named == numbered
    assert _days("0 12 * Jan,jul MON-fri", (2026, 1, 30), 3) == [
        "Fri 01-30",
        "Wed 07-01",
        "Thu 07-02",
    ]
    sundays = first_slots("0 0 * * 0", UTC_ZONE, utc(2026, 1, 1), 5)
    assert first_slots("0 0 * * 7", UTC_ZONE, utc(2026, 1, 1), 5) == sundays
    assert first_slots("0 0 * * sun", UTC_ZONE, utc(2026, 1, 1), 5) == sundays
    assert sundays[0] == utc(2026, 1, 4)
    assert _days("0 0 * * 5-7", (2026, 1, 1), 4) == [
        "Fri 01-02",
        "Sat 01-03",
        "Sun 01-04",
        "Fri 01-09",
    ]
    assert _days("0 0 * * FRI-7", (2026, 1, 1), 3) == ["Fri 01-02", "Sat 01-03", "Sun 01-04"]
    assert _days("0 0 1 dec/1 *", (2026, 1, 1), 2) == ["Tue 12-01", "Wed 12-01"]


def test_february_29_and_the_search_horizon():
    assert first_slots("0 0 29 2 *", UTC_ZONE, utc(2026, 1, 1), 2) == [
        utc(2028, 2, 29),
        utc(2032, 2, 29),
    ]
    # 2100 is not a leap year: eight years between two Feb 29ths must still be found.
    assert CronExpr.parse("0 0 29 2 *").next_after(utc(2097, 1, 1), UTC_ZONE) == utc(2104, 2, 29)
    assert CronExpr.parse("0 0 29 2 *").next_after(utc(2097, 1, 1), NY) == local(NY, 2104, 2, 29)


# -- L, W, #, Ld, ? and the longer forms ----------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "start", "expected"),
    [
        # L: the month's last day, also as a range end.
        ("0 0 L * *", (2026, 1, 1), ["Sat 01-31", "Sat 02-28", "Tue 03-31", "Thu 04-30"]),
        ("0 0 l * ?", (2026, 1, 1), ["Sat 01-31", "Sat 02-28", "Tue 03-31", "Thu 04-30"]),
        ("0 0 L,15 * *", (2026, 1, 1), ["Thu 01-15", "Sat 01-31", "Sun 02-15", "Sat 02-28"]),
        (
            "0 0 15-L/5 * *",
            (2026, 1, 1),
            ["Thu 01-15", "Tue 01-20", "Sun 01-25", "Fri 01-30", "Sun 02-15"],
        ),
        ("0 0 28-L 2 *", (2028, 1, 1), ["Mon 02-28", "Tue 02-29", "Wed 02-28"]),
        # nW: the weekday nearest day n, never leaving the month; past the end means the last day.
        ("0 0 15W * *", (2026, 1, 1), ["Thu 01-15", "Mon 02-16", "Mon 03-16", "Wed 04-15"]),
        ("0 0 1W 8 *", (2026, 1, 1), ["Mon 08-03", "Mon 08-02"]),  # Saturday the 1st: Monday
        (
            "0 0 31W * *",
            (2026, 1, 1),
            ["Fri 01-30", "Fri 02-27", "Tue 03-31", "Thu 04-30", "Fri 05-29"],
        ),
        # d#k: the k-th weekday d; a fifth only in months that have one.
        ("0 0 * * 5#3", (2026, 1, 1), ["Fri 01-16", "Fri 02-20", "Fri 03-20"]),
        ("0 0 ? * fri#3", (2026, 1, 1), ["Fri 01-16", "Fri 02-20", "Fri 03-20"]),
        ("0 0 * * MON#1", (2026, 1, 1), ["Mon 01-05", "Mon 02-02", "Mon 03-02"]),
        ("0 0 * * 7#1", (2026, 1, 1), ["Sun 01-04", "Sun 02-01", "Sun 03-01"]),
        ("0 0 * * 5#5", (2026, 1, 1), ["Fri 01-30", "Fri 05-29", "Fri 07-31", "Fri 10-30"]),
        # Ld: the last weekday d of the month.
        ("0 0 * * L5", (2026, 1, 1), ["Fri 01-30", "Fri 02-27", "Fri 03-27"]),
        ("0 0 * * L0", (2026, 1, 1), ["Sun 01-25", "Sun 02-22", "Sun 03-29"]),
        ("0 0 * * L7", (2026, 1, 1), ["Sun 01-25", "Sun 02-22", "Sun 03-29"]),
        # Lists mix them; the day rule still reads a restricted pair as either.
        ("0 0 * * 1#1,L5", (2026, 1, 1), ["Mon 01-05", "Fri 01-30", "Mon 02-02", "Fri 02-27"]),
        ("0 0 * * 1#1,5", (2026, 1, 1), ["Fri 01-02", "Mon 01-05", "Fri 01-09", "Fri 01-16"]),
        (
            "0 0 L * 5",
            (2026, 1, 23),
            ["Fri 01-23", "Fri 01-30", "Sat 01-31", "Fri 02-06"],
        ),
        # a/n in day-of-week ends at Saturday: 7 is a second name for Sunday, not an eighth day.
        (
            "0 0 * * 1/2",
            (2026, 1, 1),
            ["Fri 01-02", "Mon 01-05", "Wed 01-07", "Fri 01-09", "Mon 01-12"],
        ),
        ("0 0 * * 7/2", (2026, 1, 1), ["Thu 01-01", "Sat 01-03", "Sun 01-04"]),
    ],
)
def test_day_extensions(expr, start, expected):
    assert _days(expr, start, len(expected)) == expected


def test_a_fifth_weekday_of_february_is_found_28_years_on():
    cron = CronExpr.parse("0 0 * 2 5#5")
    assert first_slots("0 0 * 2 5#5", UTC_ZONE, utc(2026, 1, 1), 2) == [
        utc(2036, 2, 29),
        utc(2064, 2, 29),
    ]
    assert cron.next_after(utc(2036, 3, 1), NY) == local(NY, 2064, 2, 29)


@pytest.mark.parametrize(
    ("expr", "same_as"),
    [
        ("0 12 ? * MON", "0 12 * * 1"),
        ("0 0 ? * ?", "0 0 * * *"),
        ("0 9 * * 1-5 0", "0 9 * * 1-5"),  # croniter's seconds field, last
        ("0 9 * * 1-5 00", "0 9 * * 1-5"),
        ("*/10 * * * * 0 *", "*/10 * * * *"),  # seconds, then year
    ],
)
def test_forms_that_mean_the_same_slots(expr, same_as):
    for tz in (UTC_ZONE, NY):
        assert first_slots(expr, tz, utc(2026, 3, 1), 40) == first_slots(
            same_as, tz, utc(2026, 3, 1), 40
        )
    assert CronExpr.parse(expr).mode == CronExpr.parse(same_as).mode


def test_day_extensions_keep_the_hour_field_mode():
    assert CronExpr.parse("30 2 L * *").mode == "wall-clock"
    assert CronExpr.parse("0 * * * 5#3").mode == "elapsed"
    # 02:30 on the last day of March 2026 exists; on Sunday March 8 (NY) it does not.
    assert CronExpr.parse("30 2 * 3 0#2").next_after(utc(2026, 3, 1), NY) == utc(2026, 3, 8, 7)


@pytest.mark.parametrize("tz", [UTC_ZONE, NY])
@pytest.mark.parametrize("expr", ["0 0 29 2 *", "* * 29 2 *"])
def test_next_after_raises_when_nothing_matches_before_the_end_of_time(expr, tz):
    with pytest.raises(ValidationError) as info:
        CronExpr.parse(expr).next_after(utc(9998, 6, 1), tz)
    assert info.value.field == "cron"
    assert f"{expr!r} never matches" in str(info.value)


def test_strictly_after_and_fractional_instants():
    cron = CronExpr.parse("*/5 * * * *")
    slot = utc(2026, 5, 1, 10, 5)
    for tz in (UTC_ZONE, NY, LORD_HOWE):
        assert cron.next_after(slot, tz) == slot + 300
        assert cron.next_after(slot - 0.001, tz) == slot
        assert cron.next_after(slot - 299.5, tz) == slot
        assert cron.next_after(slot + 0.5, tz) == slot + 300
        assert isinstance(cron.next_after(slot, tz), float)


def test_fixed_offset_zones():
    minus_five = ZoneInfo("Etc/GMT+5")  # POSIX sign: UTC-5 all year, no DST
    assert first_slots("30 1 * * *", minus_five, utc(2026, 11, 1), 2) == [
        utc(2026, 11, 1, 6, 30),
        utc(2026, 11, 2, 6, 30),
    ]
    india = timezone(timedelta(hours=5, minutes=30))
    assert first_slots("0 * * * *", india, utc(2026, 3, 8), 2) == [
        utc(2026, 3, 8, 0, 30),
        utc(2026, 3, 8, 1, 30),
    ]


# -- DST: New York ---------------------------------------------------------------------------------


def test_ny_fall_back_hourly_fires_at_both_one_oclocks():
    day = slots_between("0 * * * *", NY, local(NY, 2026, 11, 1), local(NY, 2026, 11, 2))
    assert len(day) == 25
    assert day[:5] == [
        utc(2026, 11, 1, 4),  # 00:00 EDT
        utc(2026, 11, 1, 5),  # 01:00 EDT
        utc(2026, 11, 1, 6),  # 01:00 EST
        utc(2026, 11, 1, 7),  # 02:00 EST
        utc(2026, 11, 1, 8),
    ]
    assert day[1] == local(NY, 2026, 11, 1, 1, fold=0)
    assert day[2] == local(NY, 2026, 11, 1, 1, fold=1)
    assert day == [utc(2026, 11, 1, 4) + 3600 * i for i in range(25)]


def test_ny_fall_back_every_15_minutes_repeats_the_hour():
    got = slots_between("*/15 * * * *", NY, utc(2026, 11, 1, 5), utc(2026, 11, 1, 7, 1))
    assert got == [utc(2026, 11, 1, 5) + 900 * i for i in range(9)]
    assert got[4] == local(NY, 2026, 11, 1, 1, 0, fold=1)


def test_ny_fall_back_two_hourly_is_elapsed():
    got = first_slots("0 */2 * * *", NY, utc(2026, 11, 1, 3), 3)
    assert got == [utc(2026, 11, 1, 4), utc(2026, 11, 1, 7), utc(2026, 11, 1, 9)]


def test_elapsed_search_does_not_skip_a_pair_of_transitions():
    # From February (EST) the next match is months away, beyond BOTH 2026 transitions; the offset
    # at both ends is EST, yet 01:00 on Nov 1 first happens under EDT.
    got = first_slots("0 1-23/22 1 11 *", NY, utc(2026, 2, 1), 3)
    assert got == [utc(2026, 11, 1, 5), utc(2026, 11, 1, 6), utc(2026, 11, 2, 4)]


def test_ny_fall_back_daily_0130_fires_once_at_the_first_occurrence():
    got = first_slots("30 1 * * *", NY, utc(2026, 10, 31), 3)
    assert got == [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
    assert got[1] == local(NY, 2026, 11, 1, 1, 30, fold=0)
    # Asked from inside the repeated hour (01:10 EST), today's 01:30 is already past.
    assert CronExpr.parse("30 1 * * *").next_after(utc(2026, 11, 1, 6, 10), NY) == utc(
        2026, 11, 2, 6, 30
    )
    # Between the two occurrences of 01:30 as well.
    assert CronExpr.parse("30 1 * * *").next_after(utc(2026, 11, 1, 5, 30), NY) == utc(
        2026, 11, 2, 6, 30
    )


def test_ny_fall_back_every_hour_listed_is_elapsed_like_a_star():
    day = slots_between("0 0-23 * * *", NY, local(NY, 2026, 11, 1), local(NY, 2026, 11, 2))
    assert day == slots_between("0 * * * *", NY, local(NY, 2026, 11, 1), local(NY, 2026, 11, 2))
    assert len(day) == 25
    assert day[1:4] == [utc(2026, 11, 1, 5), utc(2026, 11, 1, 6), utc(2026, 11, 1, 7)]


def test_ny_fall_back_fixed_hours_range_is_wall_clock():
    day = slots_between("0 0-22 * * *", NY, local(NY, 2026, 11, 1), local(NY, 2026, 11, 2))
    assert len(day) == 23
    assert day[1:3] == [utc(2026, 11, 1, 5), utc(2026, 11, 1, 7)]


def test_ny_spring_forward_hourly_skips_the_missing_hour():
    day = slots_between("0 * * * *", NY, local(NY, 2026, 3, 8), local(NY, 2026, 3, 9))
    assert len(day) == 23
    assert day[:4] == [
        utc(2026, 3, 8, 5),  # 00:00 EST
        utc(2026, 3, 8, 6),  # 01:00 EST
        utc(2026, 3, 8, 7),  # 03:00 EDT
        utc(2026, 3, 8, 8),  # 04:00 EDT
    ]
    assert day[2] == local(NY, 2026, 3, 8, 3)


def test_ny_spring_forward_every_15_minutes():
    got = first_slots("*/15 * * * *", NY, utc(2026, 3, 8, 6, 30), 3)
    assert got == [utc(2026, 3, 8, 6, 45), utc(2026, 3, 8, 7), utc(2026, 3, 8, 7, 15)]
    assert got[1] == local(NY, 2026, 3, 8, 3, 0)


def test_ny_spring_forward_nonexistent_time_fires_at_the_end_of_the_gap():
    got = first_slots("30 2 * * *", NY, utc(2026, 3, 7), 3)
    assert got == [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)]
    assert got[1] == local(NY, 2026, 3, 8, 3, 0)


def test_ny_spring_forward_times_in_one_gap_collapse_into_one_fire():
    got = first_slots("0,30 2 * * *", NY, utc(2026, 3, 7), 5)
    assert got == [
        utc(2026, 3, 7, 7),
        utc(2026, 3, 7, 7, 30),
        utc(2026, 3, 8, 7),  # 02:00 and 02:30 do not exist: one fire at 03:00 EDT
        utc(2026, 3, 9, 6),
        utc(2026, 3, 9, 6, 30),
    ]
    # Asked from inside the collapsed fire's instant: the next is the next day.
    assert CronExpr.parse("0,30 2 * * *").next_after(utc(2026, 3, 8, 7), NY) == utc(2026, 3, 9, 6)


def test_ny_spring_forward_daily_0130_fires_once():
    day = slots_between("30 1 * * *", NY, local(NY, 2026, 3, 8), local(NY, 2026, 3, 9))
    assert day == [utc(2026, 3, 8, 6, 30)]
    day = slots_between("30 1 * * *", NY, local(NY, 2026, 11, 1), local(NY, 2026, 11, 2))
    assert day == [utc(2026, 11, 1, 5, 30)]


# -- DST: Berlin and London ------------------------------------------------------------------------


def test_berlin_2026():
    # Spring: 02:00 CET -> 03:00 CEST on Mar 29.
    assert first_slots("30 2 * * *", BERLIN, utc(2026, 3, 28, 12), 2) == [
        utc(2026, 3, 29, 1),  # 03:00 CEST, the end of the gap
        utc(2026, 3, 30, 0, 30),
    ]
    assert first_slots("0 * * * *", BERLIN, utc(2026, 3, 28, 23, 30), 3) == [
        utc(2026, 3, 29, 0),  # 01:00 CET
        utc(2026, 3, 29, 1),  # 03:00 CEST
        utc(2026, 3, 29, 2),
    ]
    # Autumn: 03:00 CEST -> 02:00 CET on Oct 25; 02:xx happens twice.
    assert first_slots("30 2 * * *", BERLIN, utc(2026, 10, 24, 12), 2) == [
        local(BERLIN, 2026, 10, 25, 2, 30, fold=0),
        local(BERLIN, 2026, 10, 26, 2, 30),
    ]
    assert first_slots("30 2 * * *", BERLIN, utc(2026, 10, 24, 12), 1) == [utc(2026, 10, 25, 0, 30)]
    assert first_slots("30 * * * *", BERLIN, utc(2026, 10, 24, 23, 45), 3) == [
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 1, 30),  # 02:30 CET
        utc(2026, 10, 25, 2, 30),  # 03:30 CET
    ]
    assert (
        len(
            slots_between(
                "@hourly", BERLIN, local(BERLIN, 2026, 10, 25), local(BERLIN, 2026, 10, 26)
            )
        )
        == 25
    )
    assert (
        len(
            slots_between("@hourly", BERLIN, local(BERLIN, 2026, 3, 29), local(BERLIN, 2026, 3, 30))
        )
        == 23
    )


def test_london_2026():
    # Spring: 01:00 GMT -> 02:00 BST on Mar 29.
    assert first_slots("30 1 * * *", LONDON, utc(2026, 3, 28, 12), 2) == [
        utc(2026, 3, 29, 1),  # 02:00 BST, the end of the gap
        utc(2026, 3, 30, 0, 30),
    ]
    assert first_slots("0 * * * *", LONDON, utc(2026, 3, 28, 23, 30), 3) == [
        utc(2026, 3, 29, 0),  # 00:00 GMT
        utc(2026, 3, 29, 1),  # 02:00 BST
        utc(2026, 3, 29, 2),
    ]
    # Autumn: 02:00 BST -> 01:00 GMT on Oct 25.
    assert first_slots("30 1 * * *", LONDON, utc(2026, 10, 24, 12), 2) == [
        utc(2026, 10, 25, 0, 30),  # 01:30 BST
        utc(2026, 10, 26, 1, 30),  # 01:30 GMT
    ]
    assert first_slots("0 * * * *", LONDON, utc(2026, 10, 24, 23, 30), 3) == [
        utc(2026, 10, 25, 0),  # 01:00 BST
        utc(2026, 10, 25, 1),  # 01:00 GMT
        utc(2026, 10, 25, 2),
    ]


# -- DST: Lord Howe, a 30-minute shift -------------------------------------------------------------


def test_lord_howe_april_fall_back_every_slot():
    # 2026-04-05 02:00 LHDT (+11) -> 01:30 LHST (+10:30): 01:30-01:59 happen twice.
    start, end = local(LORD_HOWE, 2026, 4, 4, 23), local(LORD_HOWE, 2026, 4, 5, 4)
    assert slots_between("0 * * * *", LORD_HOWE, start, end) == [
        local(LORD_HOWE, 2026, 4, 4, 23),
        utc(2026, 4, 4, 13),  # 00:00 +11
        utc(2026, 4, 4, 14),  # 01:00 +11
        utc(2026, 4, 4, 15, 30),  # 02:00 +10:30
        utc(2026, 4, 4, 16, 30),  # 03:00 +10:30
    ]
    assert slots_between("30 * * * *", LORD_HOWE, start, end) == [
        utc(2026, 4, 4, 12, 30),  # 23:30 +11
        utc(2026, 4, 4, 13, 30),  # 00:30 +11
        local(LORD_HOWE, 2026, 4, 5, 1, 30, fold=0),  # 14:30 UTC
        local(LORD_HOWE, 2026, 4, 5, 1, 30, fold=1),  # 15:00 UTC
        utc(2026, 4, 4, 16),  # 02:30 +10:30
        utc(2026, 4, 4, 17),  # 03:30 +10:30
    ]
    days = (local(LORD_HOWE, 2026, 4, 4), local(LORD_HOWE, 2026, 4, 7))
    assert slots_between("30 1 * * *", LORD_HOWE, *days) == [
        utc(2026, 4, 3, 14, 30),
        utc(2026, 4, 4, 14, 30),  # 01:30 +11, the first occurrence only
        utc(2026, 4, 5, 15),  # 01:30 +10:30
    ]
    assert slots_between("15 2 * * *", LORD_HOWE, *days) == [
        utc(2026, 4, 3, 15, 15),
        utc(2026, 4, 4, 15, 45),  # 02:15 +10:30 (02:15 exists once)
        utc(2026, 4, 5, 15, 45),
    ]


def test_lord_howe_october_spring_forward_every_slot():
    # 2026-10-04 02:00 LHST (+10:30) -> 02:30 LHDT (+11): 02:00-02:29 do not exist.
    start, end = local(LORD_HOWE, 2026, 10, 3, 23), local(LORD_HOWE, 2026, 10, 4, 4)
    assert slots_between("0 * * * *", LORD_HOWE, start, end) == [
        utc(2026, 10, 3, 12, 30),  # 23:00 +10:30
        utc(2026, 10, 3, 13, 30),  # 00:00 +10:30
        utc(2026, 10, 3, 14, 30),  # 01:00 +10:30
        utc(2026, 10, 3, 16),  # 03:00 +11 (02:00 does not exist)
    ]
    assert slots_between("30 * * * *", LORD_HOWE, start, end) == [
        utc(2026, 10, 3, 13),  # 23:30 +10:30
        utc(2026, 10, 3, 14),  # 00:30
        utc(2026, 10, 3, 15),  # 01:30 +10:30
        utc(2026, 10, 3, 15, 30),  # 02:30 +11, exists
        utc(2026, 10, 3, 16, 30),  # 03:30 +11
    ]
    days = (local(LORD_HOWE, 2026, 10, 3), local(LORD_HOWE, 2026, 10, 6))
    assert slots_between("30 1 * * *", LORD_HOWE, *days) == [
        utc(2026, 10, 2, 15),
        utc(2026, 10, 3, 15),  # 01:30 +10:30
        utc(2026, 10, 4, 14, 30),  # 01:30 +11
    ]
    assert slots_between("15 2 * * *", LORD_HOWE, *days) == [
        utc(2026, 10, 2, 15, 45),
        utc(2026, 10, 3, 15, 30),  # 02:15 does not exist: the gap ends at 02:30 +11
        utc(2026, 10, 4, 15, 15),
    ]
    assert utc(2026, 10, 3, 15, 30) == local(LORD_HOWE, 2026, 10, 4, 2, 30)


# -- brute-force oracles around every transition ---------------------------------------------------


def _brute_elapsed(pred, tz, start: int, end: int) -> list[float]:
    """Every minute instant in [start, end) whose local wall time matches."""
    return [float(x) for x in range(start, end, 60) if pred(datetime.fromtimestamp(x, tz))]


def _brute_wall_clock(pred, tz, start: int, end: int) -> list[float]:
    """Instants in (start, end) at which some matching wall time W is first reached, i.e. the
    first x with wall(x) >= W: the first occurrence when ambiguous, the gap end when skipped."""
    out = []
    high = datetime.fromtimestamp(start, tz).replace(tzinfo=None, fold=0)
    for x in range(start + 60, end, 60):
        wall = datetime.fromtimestamp(x, tz).replace(tzinfo=None, fold=0)
        if wall <= high:
            continue
        w = high + timedelta(minutes=1)
        while w <= wall:
            if pred(w):
                out.append(float(x))
                break
            w += timedelta(minutes=1)
        high = wall
    return out


TRANSITION_WINDOWS = [
    (NY, utc(2026, 3, 7, 12)),
    (NY, utc(2026, 10, 31, 12)),
    (BERLIN, utc(2026, 3, 28, 12)),
    (BERLIN, utc(2026, 10, 24, 12)),
    (LONDON, utc(2026, 3, 28, 12)),
    (LONDON, utc(2026, 10, 24, 12)),
    (LORD_HOWE, utc(2026, 4, 4)),
    (LORD_HOWE, utc(2026, 10, 3)),
]

ELAPSED = {
    "*/7 * * * *": lambda d: d.minute % 7 == 0,
    "0 */2 * * *": lambda d: d.minute == 0 and d.hour % 2 == 0,
    "15,45 * * * *": lambda d: d.minute in (15, 45),
    "*/20 1-3/1 * * *": lambda d: d.minute % 20 == 0 and 1 <= d.hour <= 3,
}
WALL_CLOCK = {
    "30 2 * * *": lambda d: (d.hour, d.minute) == (2, 30),
    "0,15,30,45 1,2 * * *": lambda d: d.hour in (1, 2) and d.minute % 15 == 0,
    "59 0,1 * * *": lambda d: d.hour in (0, 1) and d.minute == 59,
    "10 3 * * *": lambda d: (d.hour, d.minute) == (3, 10),
}


@pytest.mark.parametrize(("tz", "start"), TRANSITION_WINDOWS)
def test_every_rule_against_brute_force_around_transitions(tz, start):
    start, end = int(start), int(start) + 2 * 86400
    for expr, pred in ELAPSED.items():
        assert slots_between(expr, tz, start, end) == _brute_elapsed(pred, tz, start, end), expr
    for expr, pred in WALL_CLOCK.items():
        expected = _brute_wall_clock(pred, tz, start, end)
        assert slots_between(expr, tz, start + 1, end) == expected, expr


# -- a whole year ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "tz"),
    [
        ("*/15 * * * *", NY),
        ("0 * * * *", LORD_HOWE),
        ("30 2 * * *", NY),
        ("0 9 * * 1-5", BERLIN),
        ("*/30 * * * *", LONDON),
        ("0,30 1,2 * * *", LORD_HOWE),
        ("@monthly", NY),
    ],
)
def test_iter_after_is_strictly_increasing_over_a_year(expr, tz):
    start, end = local(tz, 2026, 1, 1), local(tz, 2027, 1, 1)
    got = slots_between(expr, tz, start, end)
    assert got
    assert all(a < b for a, b in pairwise(got))


@pytest.mark.parametrize("tz", [NY, LORD_HOWE, BERLIN, LONDON])
@pytest.mark.parametrize(
    ("expr", "pred"),
    [
        ("0 * * * *", lambda d: d.minute == 0),
        ("30 */3 * * *", lambda d: d.minute == 30 and d.hour % 3 == 0),
        ("0,30 * * * 1-5", lambda d: d.minute in (0, 30) and d.isoweekday() <= 5),
    ],
)
def test_elapsed_mode_matches_every_real_instant_for_a_year(tz, expr, pred):
    # All these zones' offsets are whole half hours, so every slot is a multiple of 1800 s.
    start, end = int(local(tz, 2026, 1, 1)), int(local(tz, 2027, 1, 1))
    expected = [float(x) for x in range(start, end, 1800) if pred(datetime.fromtimestamp(x, tz))]
    assert slots_between(expr, tz, start, end) == expected


def test_year_counts():
    year = (local(NY, 2026, 1, 1), local(NY, 2027, 1, 1))
    assert len(slots_between("0 * * * *", NY, *year)) == 8760
    lh_year = (local(LORD_HOWE, 2026, 1, 1), local(LORD_HOWE, 2027, 1, 1))
    assert len(slots_between("0 * * * *", LORD_HOWE, *lh_year)) == 8759  # 02:00 on Oct 4 is gone
    assert len(slots_between("*/30 * * * *", LORD_HOWE, *lh_year)) == 17520
    for expr in ("30 1 * * *", "30 2 * * *", "@daily"):
        got = slots_between(expr, NY, *year)
        assert len(got) == 365
        assert len({datetime.fromtimestamp(s, NY).date() for s in got}) == 365
        assert all(datetime.fromtimestamp(s, NY).fold == 0 for s in got)
