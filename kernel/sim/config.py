"""What one simulation run is: its seed, size, faults and workload knobs (`SimConfig`), the
named fault classes, and the start instants it draws from. Imports nothing of the kernel, so the
CLI reads the fault names without loading the simulator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z
# Half an hour before each 2026 DST transition of the workload's zones, and one quiet instant: a
# run starts at one of them (drawn from the seed), so sweeps cross every kind of transition.
STARTS = (
    T0,
    1_772_947_800.0,  # New York springs forward (2026-03-08 07:00Z)
    1_793_511_000.0,  # New York falls back (2026-11-01 06:00Z)
    1_774_744_200.0,  # Berlin springs forward (2026-03-29 01:00Z)
    1_792_888_200.0,  # Berlin falls back (2026-10-25 01:00Z)
    1_775_313_000.0,  # Lord Howe falls back (2026-04-04 15:00Z)
    1_790_951_400.0,  # Lord Howe springs forward (2026-10-03 15:30Z)
)

# Fault classes, each switchable.
FAULTS = (
    "crash",  # a replica dies at a random step and restarts later
    "stall",  # a replica's event loop freezes past its lease (heartbeat starved)
    "store_errors",  # claim / start / heartbeat / finish fail, before or after committing
    "skew",  # replica clocks up to lease/3 apart (each within ±lease/6 of true time)
    "clock_steps",  # the wall clock steps back 1 h or forward 2 h
    "target_errors",  # timeouts, 5xx, 429 with Retry-After, connection resets
    "mutations",  # updates, disables, deletes and triggers racing with runs
    "downtime",  # the whole cluster down for a while (misfire policies)
)
ALL_FAULTS = frozenset(FAULTS)
ZONES = ("UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe")


@dataclass
class SimConfig:
    seed: int = 1
    replicas: int = 3
    schedules: int = 24
    hours: float = 2.0
    lease_seconds: float = 30.0
    poll_interval: float = 5.0
    faults: frozenset[str] = ALL_FAULTS
    fault_rate: float = 1.0  # scales how often faults strike
    min_interval: float = 20.0  # the densest interval schedule (a denser workload fires more)
    store_factory: Callable[[str], Any] | None = None  # path -> Store; default SqliteStore
    start: float | None = None  # epoch seconds; None: one of STARTS, drawn from the seed
    extra_schedules: tuple[dict[str, Any], ...] = ()  # create() keyword sets added to the draw
    # Called as on_progress(simulated hours done, requests sent so far) after each simulated
    # hour (the run then advances an hour at a time; the same timers fire in the same order).
    on_progress: Callable[[float, int], None] | None = None
