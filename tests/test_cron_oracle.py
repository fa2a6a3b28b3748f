"""leasecron.kernel.cron against croniter, the parser AgentOS validates and schedules with.

croniter is the oracle here, not a dependency of the kernel: every expression it accepts is
either read to the same slots or refused with an error naming the construct. In zones with
daylight saving the two differ only where the kernel's rule is exact by design, and the
comparison removes exactly those slots: croniter fires a repeated wall time twice in wall-clock
mode (the kernel once), and in elapsed mode moves a wall time that does not exist to the end of
the gap (the kernel skips it). Expressions whose day field lists every day beside a restricted
other one are left out: croniter reads such a field as `*`, the kernel as a restriction."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from leasecron.kernel.cron import CronExpr
from leasecron.kernel.errors import ValidationError

DST_ZONES = [
    ZoneInfo(name)
    for name in (
        "America/New_York",
        "Europe/Berlin",
        "Europe/London",
        "Australia/Lord_Howe",  # a 30-minute shift
        "America/Santiago",  # the southern hemisphere, transitions at midnight
        "Pacific/Chatham",  # +12:45 / +13:45
        "America/Havana",  # transitions at 00:00 / 01:00 local
    )
]
NAMES_MONTH = ["jan", "FEB", "Mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
NAMES_DOW = ["sun", "MON", "Tue", "wed", "thu", "fri", "sat"]


def _value(rng: random.Random, v: int, low: int, names: list[str] | None) -> str:
    if names is not None and rng.random() < 0.3:
        return names[(v - low) % len(names)]
    return str(v)


def _plain_field(rng: random.Random, low: int, high: int, names: list[str] | None = None) -> str:
    roll = rng.random()
    if roll < 0.3:
        return "*"
    if roll < 0.45:
        return f"*/{rng.randint(2, max(2, (high - low) // 2))}"
    items = []
    for _ in range(rng.randint(1, 3)):
        a = rng.randint(low, high - 1)
        kind = rng.random()
        if kind < 0.4:
            items.append(_value(rng, a, low, names))
        elif kind < 0.5:
            items.append(f"{_value(rng, a, low, names)}/{rng.randint(2, 4)}")
        else:
            b = rng.randint(a + 1, high)
            step = f"/{rng.randint(2, 5)}" if kind > 0.75 else ""
            items.append(f"{_value(rng, a, low, names)}-{_value(rng, b, low, names)}{step}")
    return ",".join(items)


def _day_fields(rng: random.Random, month: str) -> tuple[str, str]:
    """A (day-of-month, day-of-week) pair in the forms croniter accepts and reads one way."""
    dom_high = 31 if month == "*" else 28
    roll = rng.random()
    if roll < 0.15:  # L, alone, in a list or as a range end; any day-of-week beside it
        dom = rng.choice(["L", f"{rng.randint(1, 28)},L", f"{rng.randint(1, 28)}-L"])
        if rng.random() < 0.4:
            dom = f"{rng.randint(1, 28)}-L/{rng.randint(2, 5)}"
        return dom, rng.choice(["*", "?", _plain_field(rng, 0, 6, NAMES_DOW)])
    if roll < 0.25:  # nW, with day-of-week unrestricted
        return f"{rng.randint(1, 31)}W", rng.choice(["*", "?"])
    if roll < 0.4:  # d#k and Ld, with day-of-month unrestricted
        items = []
        for _ in range(rng.randint(1, 2)):
            d = rng.randint(0, 7)
            if rng.random() < 0.6:
                items.append(f"{_value(rng, d % 7, 0, NAMES_DOW)}#{rng.randint(1, 5)}")
            else:
                items.append(f"L{d}")
        return rng.choice(["*", "?"]), ",".join(items)
    dom = _plain_field(rng, 1, dom_high)
    dow = _plain_field(rng, 0, 6, NAMES_DOW)
    if rng.random() < 0.1:
        dom, dow = ("?", dow) if rng.random() < 0.5 else (dom, "?")
    return dom, dow


def random_expression(rng: random.Random) -> str:
    if rng.random() < 0.05:
        return rng.choice(["@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly"])
    month = _plain_field(rng, 1, 12, NAMES_MONTH)
    dom, dow = _day_fields(rng, month)
    fields = [_plain_field(rng, 0, 59), _plain_field(rng, 0, 23), dom, month, dow]
    tail = rng.random()
    if tail < 0.1:
        fields.append("0")  # croniter's seconds field
    elif tail < 0.15:
        fields += ["0", "*"]  # seconds and year
    return " ".join(fields)


def croniter_slots(expr: str, tz, after: float, n: int) -> list[float]:
    it = croniter(expr, datetime.fromtimestamp(after, tz))
    return [it.get_next(float) for _ in range(n)]


def ours(expr: str, tz, after: float, n: int) -> list[float]:
    it = CronExpr.parse(expr).iter_after(after, tz)
    return [next(it) for _ in range(n)]


def _every_day(field: str, position: int) -> bool:
    """The day field (2: day-of-month, 4: day-of-week) lists every day though it is not `*`."""
    fields = ["0", "0", "*", "1", "*"]  # January: 31 days, every weekday
    fields[position] = field
    it = CronExpr.parse(" ".join(fields)).iter_after(datetime(2026, 1, 1).timestamp() - 1, UTC)
    return [next(it) for _ in range(31)][-1] == datetime(2026, 1, 31, tzinfo=UTC).timestamp()


def _usable(expr: str) -> bool:
    """croniter reads it as the kernel's day rule does, and finds slots for it. croniter counts
    a restricted day field that lists every day as `*`, which the kernel (as Vixie cron) does
    not; and it gives up on e.g. day 31 in a 30-day month only."""
    fields = expr.split()
    both_restricted = len(fields) >= 5 and not {"*", "?"} & {fields[2], fields[4]}
    if both_restricted and (_every_day(fields[2], 2) or _every_day(fields[4], 4)):
        return False
    try:
        croniter(expr, datetime(2026, 1, 1, tzinfo=UTC)).get_next(float)
    except Exception:
        return False
    return True


def test_random_expressions_croniter_accepts_give_the_same_slots_in_utc():
    rng = random.Random(11)
    compared = 0
    while compared < 400:
        expr = random_expression(rng)
        assert croniter.is_valid(expr), expr  # the generator writes only what AgentOS accepts
        if not _usable(expr):
            continue
        start = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(8 * 365 * 86400))
        assert ours(expr, UTC, start.timestamp(), 25) == croniter_slots(
            expr, UTC, start.timestamp(), 25
        ), expr
        compared += 1


# -- zones with daylight saving --------------------------------------------------------------------


def _offset(tz, t: float) -> timedelta:
    return datetime.fromtimestamp(t, tz).utcoffset()


def _second_occurrence(tz, t: float) -> bool:
    """t is the second time its local wall clock shows this time (a fall-back repeat)."""
    wall = datetime.fromtimestamp(t, tz).replace(tzinfo=None)
    first = wall.replace(tzinfo=tz, fold=0).timestamp()
    return first < t and wall.replace(tzinfo=tz, fold=1).timestamp() == t


def _wall_time_matches(expr: str, tz, t: float) -> bool:
    """The wall time at t is one of the expression's: read in the fixed offset tz has at t,
    where no daylight saving moves anything."""
    fixed = timezone(_offset(tz, t))
    return CronExpr.parse(expr).next_after(t - 60, fixed) == t


def expected_slots(expr: str, tz, start: float, end: float) -> list[float]:
    """croniter's slots in [start, end) less the ones the kernel's DST rule leaves out."""
    wall_clock = CronExpr.parse(expr).mode == "wall-clock"
    it = croniter(expr, datetime.fromtimestamp(start - 1, tz))
    out = []
    while (t := it.get_next(float)) < end:
        if wall_clock and _second_occurrence(tz, t):
            continue
        if not wall_clock and not _wall_time_matches(expr, tz, t):
            continue
        out.append(t)
    return out


def slots_between(expr: str, tz, start: float, end: float) -> list[float]:
    out = []
    for t in CronExpr.parse(expr).iter_after(start - 1, tz):
        if t >= end:
            return out
        out.append(t)
    raise AssertionError("unreachable")


def transitions(tz, year: int) -> list[int]:
    """The instants in `year` at which the zone's UTC offset changes (to the hour, enough here:
    the windows below are days wide)."""
    t = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    out = []
    while t < end:
        if _offset(tz, t + 3600) != _offset(tz, t):
            out.append(t + 3600)
        t += 3600
    return out


FIXED_EXPRESSIONS = [
    "0 * * * *",
    "*/15 * * * *",
    "30 * * * *",
    "0 */2 * * *",
    "*/7 1,2 * * *",
    "0 0-23 * * *",
    "30 2 * * *",
    "30 1 * * *",
    "0,30 2 * * *",
    "15 1-3 * * *",
    "0 0 * * *",
    "59 23 * * ?",
    "45 3 L * *",
    "0 2 * * 0#1",
    "30 1 ? * L0",
    "0 2 8W * *",
]


@pytest.mark.parametrize("tz", DST_ZONES, ids=lambda z: z.key)
def test_around_every_2026_transition_croniter_agrees_but_where_the_dst_rule_is_exact(tz):
    rng = random.Random(tz.key)
    found = transitions(tz, 2026)
    assert found, tz.key  # the zone still has daylight saving, or this test compares nothing
    exprs = FIXED_EXPRESSIONS + [random_expression(rng) for _ in range(15)]
    for at in found:
        start, end = at - 2 * 86400, at + 2 * 86400
        for expr in exprs:
            if not _usable(expr):
                continue
            assert slots_between(expr, tz, start, end) == expected_slots(expr, tz, start, end), (
                tz.key,
                expr,
                datetime.fromtimestamp(at, UTC).isoformat(),
            )


def test_the_rules_differ_from_croniter_exactly_where_the_docstring_says():
    ny = ZoneInfo("America/New_York")
    # Fall back: croniter fires 01:30 twice; the kernel's wall-clock rule once.
    after = datetime(2026, 11, 1, 0, 0, tzinfo=ny).timestamp()
    assert croniter_slots("30 1 * * *", ny, after, 2)[:2] == [
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC).timestamp(),
        datetime(2026, 11, 1, 6, 30, tzinfo=UTC).timestamp(),
    ]
    assert ours("30 1 * * *", ny, after, 2) == [
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC).timestamp(),
        datetime(2026, 11, 2, 6, 30, tzinfo=UTC).timestamp(),
    ]
    # Spring forward, elapsed mode: croniter moves 02:00 to 03:00; the kernel skips it.
    after = datetime(2026, 3, 8, 0, 30, tzinfo=ny).timestamp()
    assert croniter_slots("0 */2 * * *", ny, after, 1) == [
        datetime(2026, 3, 8, 7, 0, tzinfo=UTC).timestamp()  # 03:00 EDT
    ]
    assert ours("0 */2 * * *", ny, after, 1) == [
        datetime(2026, 3, 8, 8, 0, tzinfo=UTC).timestamp()  # 04:00 EDT
    ]


@pytest.mark.parametrize("tz", DST_ZONES, ids=lambda z: z.key)
def test_random_instants_over_years_in_dst_zones(tz):
    rng = random.Random(f"instants {tz.key}")
    compared = 0
    while compared < 60:
        expr = random_expression(rng)
        if not _usable(expr):
            continue
        start = datetime(2024, 1, 1, tzinfo=UTC).timestamp() + rng.randrange(6 * 365 * 86400)
        got = ours(expr, tz, start, 5)
        assert got == expected_slots(expr, tz, start + 1, got[-1] + 1), (tz.key, expr, start)
        compared += 1


# -- what croniter accepts and the kernel refuses --------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "construct"),
    [
        ("0 0 * * * 30", "seconds field '30'"),
        ("*/30 * * * * */15", "seconds field '*/15'"),
        ("0 0 * * * 0 2027", "year field '2027'"),
        ("0 0 * * * 0 2026-2030", "year field '2026-2030'"),
        ("R * * * *", "'R' (a random value)"),
        ("0 R * * *", "'R' (a random value)"),
        ("5-1 * * * *", "range '5-1' runs backwards"),
        ("0 0 * * FRI-SUN", "range 'FRI-SUN' runs backwards"),
        ("0 0 15W * 1", "day-of-month '15W' (nW, the nearest weekday) with a restricted"),
        ("0 0 1 * 5#3", "day-of-week '5#3' (d#k or Ld) with a restricted day-of-month"),
        ("0 0 */2 * L5", "day-of-week 'L5' (d#k or Ld) with a restricted day-of-month"),
        ("0 0 30 2 *", "never matches"),
    ],
)
def test_what_croniter_accepts_and_the_kernel_refuses_names_the_construct(expr, construct):
    assert croniter.is_valid(expr), expr  # AgentOS would have stored it
    with pytest.raises(ValidationError) as info:
        CronExpr.parse(expr)
    assert info.value.field == "cron"
    assert construct in str(info.value)


@pytest.mark.parametrize(
    "expr", ["H * * * *", "H(0-29) * * * *", "0 0 LW * *", "0 0 * * 5L", "0 0 * * L", "@reboot"]
)
def test_what_neither_accepts(expr):
    assert not croniter.is_valid(expr)
    with pytest.raises(ValidationError) as info:
        CronExpr.parse(expr)
    assert info.value.field == "cron"
