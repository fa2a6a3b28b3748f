"""Slot arithmetic for interval and one-off schedules (cron slots are tested in test_cron.py)."""

from __future__ import annotations

import random

from leasecron.kernel.model import Schedule
from leasecron.kernel.slots import (
    count_slots,
    first_slot,
    last_slots,
    latest_at_or_before,
    slot_after,
)


def interval(step: float, created_at: float = 1_780_000_000.0, start_at=None) -> Schedule:
    return Schedule(
        id="x",
        name="x",
        endpoint="/",
        interval_seconds=step,
        created_at=created_at,
        start_at=start_at,
    )


def test_fractional_interval_slots_stay_on_the_grid():
    # Regression: an off-grid slot made the next call return the same slot again (+2e-7), so
    # two replicas fired one slot twice under the same idempotency key.
    s = interval(0.3, created_at=1795656227.2378197)
    a = slot_after(s, 1795656228.1378195)
    b = slot_after(s, a)
    assert f"{a:.3f}" != f"{b:.3f}"
    assert abs((b - a) - 0.3) < 1e-6


def test_interval_grid_property_over_random_schedules():
    rng = random.Random(5)
    for _ in range(5000):
        step = rng.choice([0.3, 0.1, 0.7, 1 / 3, 2.5, 60.0, 0.001 * rng.randint(1, 1000)])
        s = interval(step, created_at=1.78e9 + rng.random() * 1e6)
        t = s.created_at + rng.random() * 1e5
        x = slot_after(s, t)
        y = slot_after(s, x)
        assert x > t and y > x and abs((y - x) - step) < 1e-5
        assert latest_at_or_before(s, s.created_at + step, x) == x
        assert latest_at_or_before(s, s.created_at + step, y - step / 2) == x


def test_first_slot_kinds():
    now = 1_780_000_000.0
    assert first_slot(interval(30, created_at=now), now) == now + 30
    assert first_slot(interval(30, created_at=now, start_at=now + 5), now) == now + 5
    # start_at in the past: the next grid point after now
    assert first_slot(interval(30, created_at=now, start_at=now - 50), now) == now + 10
    once = Schedule(id="o", name="o", endpoint="/", run_at=now + 99, created_at=now)
    assert first_slot(once, now) == now + 99
    assert slot_after(once, now + 99) is None
    on_demand = Schedule(id="d", name="d", endpoint="/", created_at=now)
    assert first_slot(on_demand, now) is None


def test_counting_and_last_slots():
    s = interval(60, created_at=0.0)  # slots 60, 120, ...
    assert count_slots(s, 60, 600, cap=1000) == 10
    assert count_slots(s, 60, 600, cap=3) == 3
    assert last_slots(s, 60, 600, keep=3) == ([480, 540, 600], 7)
    assert latest_at_or_before(s, 60, 659.9) == 600
