"""Deterministic simulation: N replicas on one real store under one SimClock, a recording target,
a workload and faults all drawn from one seed. The same seed replays the same run bit for bit;
`check.py` then proves the lease algorithm's invariants over what happened.

Memory stays flat however long the run: the target's log goes to a scratch SQLite file as each
request ends (`target.Trace`), and the checker reads it and the runs table back in sorted
pages; only the schedules, the faults' own records (a few per simulated hour) and what is in
flight are held.

    result = await simulate(SimConfig(seed=7, replicas=5, hours=6, faults=ALL_FAULTS))
    print(result.report())            # exit status 1 from the CLI when result.violations

What it must not do: use wall time, threads or the network. Stores run inline; the target is an
in-process Dispatcher; every random choice comes from a random.Random derived from the seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import shutil
import tempfile
import time
from typing import Any

from ..clock import SimClock
from ..errors import StoreError
from ..manager import ScheduleManager
from ..model import Fire, Schedule
from ..scheduler import Scheduler
from ..sqlite import SqliteStore
from .check import check_run
from .config import ALL_FAULTS, FAULTS, STARTS, T0, ZONES, SimConfig
from .faults import CRASH_POINTS, FaultyStore, ReplicaClock, _Crash
from .readback import attach_runs, running_runs
from .result import Change, SimResult, Summary, max_rss_mib
from .target import Behaviour, Request, TargetDispatcher, Trace

__all__ = [
    "ALL_FAULTS",
    "FAULTS",
    "T0",
    "Change",
    "SimConfig",
    "SimResult",
    "Simulation",
    "Summary",
    "max_rss_mib",
    "simulate",
]


class Simulation:
    def __init__(self, config: SimConfig):
        self.config = config
        seed = config.seed
        self.rng = random.Random(f"{seed}:sim")
        self.workload_rng = random.Random(f"{seed}:workload")
        self.fault_rng = random.Random(f"{seed}:faults")
        self.target_rng = random.Random(f"{seed}:target")
        if config.start is None:
            config = dataclasses.replace(
                config, start=random.Random(f"{seed}:start").choice(STARTS)
            )
            self.config = config
        self.clock = SimClock(start=config.start)
        self._ids = 0
        self._tick = 0
        self.steps: list[tuple[int, float]] = []  # (event number, delta) of clock steps
        self.crash_seq: dict[str, int] = {}  # replica id -> event number of its death
        self.step_times: list[tuple[float, float]] = []  # (monotonic time, delta) of steps
        self.stalls: list[tuple[str, float, float]] = []  # (name, from, until), monotonic
        self.changes: list[Change] = []
        self.behaviours: dict[str, Behaviour] = {}
        self.specs: dict[str, Schedule] = {}
        self.max_retries: dict[str, int] = {}
        self.offsets: dict[str, float] = {}
        self.triggers: list[tuple[str, str]] = []  # (pending run id, schedule id)
        # (replica id, wall time, [(schedule id, lease expiry)], monotonic time) at each death
        self.deaths: list[tuple[str, float, list[tuple[str, float]], float]] = []
        self.faults: dict[str, int] = {}
        self.crashes: list[tuple[str, float]] = []
        self.replicas: dict[str, Scheduler | None] = {}
        self.stores: dict[str, Any] = {}  # replica id -> its store, while it lives
        self.closing: set[asyncio.Future] = set()  # dead replicas' stores being closed
        self.generation: dict[str, int] = {}
        self.clocks: dict[str, ReplicaClock] = {}
        self.faults_on = True
        self.tmp = tempfile.mkdtemp(prefix="leasecron-sim-")
        self.path = os.path.join(self.tmp, "sim.db")
        self.trace = Trace(os.path.join(self.tmp, "trace.db"))
        factory = config.store_factory or _scratch_store
        self.store_factory = factory
        self.manager = ScheduleManager(factory(self.path), clock=self.clock, new_id=self.new_id)

    def tick(self) -> int:
        """The next event number: requests, replies, starts, changes and clock steps share one
        order, which wall times (they jump with clock steps) cannot give."""
        self._tick += 1
        return self._tick

    def new_id(self) -> str:
        self._ids += 1
        return f"{self._ids:012x}"

    def count(self, fault: str) -> None:
        self.faults[fault] = self.faults.get(fault, 0) + 1

    def on(self, fault: str) -> bool:
        return self.faults_on and fault in self.config.faults

    # -- faults, asked by the wrappers --------------------------------------------------------

    def store_error(self, op: str, when: str) -> bool:
        if not self.on("store_errors"):
            return False
        if self.fault_rng.random() < 0.01 * self.config.fault_rate:
            self.count(f"store_error_{op}_{when}")
            return True
        return False

    def target_fault(self) -> str | None:
        if not self.on("target_errors"):
            return None
        x = self.fault_rng.random() / max(self.config.fault_rate, 1e-9)
        for name, p in (("timeout", 0.01), ("5xx", 0.03), ("429", 0.01), ("reset", 0.01)):
            if x < p:
                self.count(f"target_{name}")
                return name
            x -= p
        return None

    def maybe_crash(self, replica: str, hook: str) -> None:
        point = CRASH_POINTS.get(hook)
        if point is None or not self.on("crash") or self.replicas.get(replica) is None:
            return
        if self.fault_rng.random() < 0.002 * self.config.fault_rate:
            self.count(f"crash_{point}")
            self.kill(replica)
            raise _Crash

    def kill(self, replica: str) -> None:
        sched = self.replicas.get(replica)
        if sched is not None:
            sched.kill()
            self.manager.store.remove_listener(sched.wake)
            self.replicas[replica] = None
            self.crashes.append((sched.replica_id, self.clock.now()))
            self.deaths.append(
                (sched.replica_id, self.clock.now(), self._leases_of(sched), self.clock.monotonic())
            )
            self.crash_seq[sched.replica_id] = self.tick()
            raw = self.stores.pop(sched.replica_id)
            if not isinstance(raw, SqliteStore):  # a pooled store: give its connections back
                self.closing.add(asyncio.ensure_future(raw.close()))

    def _leases_of(self, sched: Scheduler) -> list[tuple[str, float]]:
        """The leases a replica holds as it dies, read from the store (SQLite stores only)."""
        store = self.manager.store
        if not isinstance(store, SqliteStore):
            return []
        rows = store.execute(
            f"SELECT id, lease_expires_at FROM {store.schedules_table} WHERE locked_by = ?",
            (sched.replica_id,),
        )
        return [(row[0], row[1]) for row in rows]

    # -- the parts ----------------------------------------------------------------------------

    def record(self, replica: str, fire: Fire) -> Request:
        rec = Request(
            seq=self.tick(),
            at=self.clock.now(),
            mono=self.clock.monotonic(),
            replica=replica,
            schedule_id=fire.schedule_id,
            slot=fire.scheduled_for,
            attempt=fire.attempt,
            key=fire.idempotency_key,
            run_row_id=fire.run_row_id,
            trigger=fire.trigger,
        )
        self.trace.sending(rec)
        return rec

    async def start_replica(self, name: str) -> None:
        gen = self.generation.get(name, 0) + 1
        self.generation[name] = gen
        clock = self.clocks[name]
        replica_id = f"{name}.{gen}"
        raw = self.store_factory(self.path)
        self.stores[replica_id] = raw
        store = FaultyStore(raw, self, name)
        sched = Scheduler(
            store,
            TargetDispatcher(self, name, replica_id, clock),
            clock=clock,
            replica_id=replica_id,
            poll_interval=self.config.poll_interval,
            lease_seconds=self.config.lease_seconds,
            max_concurrent=10,
            rng=random.Random(f"{self.config.seed}:replica:{replica_id}"),
            new_id=self.new_id,
            retention_seconds=0,  # the check reads the whole history, however long the run
        )
        self.replicas[name] = sched
        self.offsets[replica_id] = clock.offset
        self.manager.store.add_listener(sched.wake)
        await sched.start()

    # -- the workload -------------------------------------------------------------------------

    async def create_workload(self) -> None:
        rng = self.workload_rng
        m = self.manager
        for i in range(self.config.schedules):
            kind = rng.choice(
                ("cron", "cron", "interval", "interval", "interval", "once", "demand")
            )
            fields: dict[str, Any] = {
                "overlap": rng.choice(("skip", "buffer_one", "allow")),
                "misfire": rng.choice(("fire_once", "skip", "catch_up")),
                "max_retries": rng.choice((0, 0, 1, 2, 3)),
                "retry_delay_seconds": rng.choice((1.0, 5.0, 20.0)),
                "timeout_seconds": rng.choice((30.0, 120.0)),
                "jitter_seconds": rng.choice((0.0, 0.0, 10.0)),
                "max_catchup": rng.choice((3, 100)),
                "catchup_window_seconds": rng.choice((600.0, 86_400.0)),
            }
            if kind == "cron":
                fields["cron"] = rng.choice(
                    (
                        "* * * * *",
                        "*/5 * * * *",
                        "0 * * * *",
                        "30 1 * * *",
                        "15 2 * * *",
                        "*/15 * * * *",
                        "0,30 * * * *",
                    )
                )
                fields["timezone"] = rng.choice(ZONES)
            elif kind == "interval":
                lo = self.config.min_interval
                fields["interval_seconds"] = rng.choice((lo, lo * 2, lo * 3, lo * 6, lo * 30))
            elif kind == "once":
                fields["run_at"] = self.clock.now() + rng.uniform(60, self.config.hours * 3600)
            s = await m.create(f"s{i:03d}-{kind}", endpoint=f"/hooks/s{i}", **fields)
            self.specs[s.id] = s
            self.max_retries[s.id] = s.max_retries
            slow = rng.random() < 0.2
            self.behaviours[s.id] = Behaviour(
                fail_rate=rng.choice((0.0, 0.0, 0.1, 0.3)),
                duration=(0.0, rng.choice((120.0, 300.0))) if slow else (0.0, 2.0),
                agent=rng.random() < 0.3,
            )
        for i, fields in enumerate(self.config.extra_schedules):
            s = await m.create(f"x{i:03d}", endpoint=f"/hooks/x{i}", **fields)
            self.specs[s.id] = s
            self.max_retries[s.id] = s.max_retries
            self.behaviours[s.id] = Behaviour()

    async def chaos(self, until: float) -> None:
        """Schedule changes and cluster faults, at random times, until `until`."""
        rng = self.fault_rng
        names = list(self.replicas)
        while self.clock.now() < until:
            await self.clock.sleep(rng.expovariate(1 / (600 / self.config.fault_rate)))
            if self.clock.now() >= until:
                break
            roll = rng.random()
            if roll < 0.35 and self.on("mutations"):
                await self.mutate()
            elif roll < 0.5 and self.on("crash"):
                name = rng.choice(names)
                if self.replicas[name] is not None:
                    self.count("crash_idle")
                    self.kill(name)
            elif roll < 0.65 and self.on("stall"):
                name = rng.choice(names)
                clock = self.clocks[name]
                began = self.clock.monotonic()
                clock.stalled_until = began + self.config.lease_seconds * rng.uniform(1.2, 3.0)
                self.stalls.append((name, began, clock.stalled_until))
                self.count("stall")
            elif roll < 0.72 and self.on("clock_steps"):
                delta = rng.choice((-3600.0, 7200.0))
                self.clock.step(delta)
                self.steps.append((self.tick(), delta))
                self.step_times.append((self.clock.monotonic(), delta))
                self.count("clock_step_back" if delta < 0 else "clock_step_forward")
            elif roll < 0.78 and self.on("downtime"):
                self.count("downtime")
                for name in names:
                    self.kill(name)
                await self.clock.sleep(rng.uniform(600, 3 * 3600))
            # restart what is down, some of the time (always after downtime)
            for name in names:
                if self.replicas[name] is None and (roll >= 0.72 or rng.random() < 0.5):
                    await self.start_replica(name)

    async def mutate(self) -> None:
        rng = self.fault_rng
        schedules = [s for s in await self.manager.list() if s.id in self.behaviours]
        if not schedules:
            return
        s = rng.choice(schedules)
        op = rng.choice(("trigger", "trigger", "update", "retime", "disable", "enable", "delete"))
        now = self.clock.now()
        try:
            if op == "trigger":
                if not s.enabled:
                    return
                self.triggers.append((await self.manager.trigger(s.id), s.id))
            elif op == "update":
                retries = rng.choice((0, 1, 2))
                self.max_retries[s.id] = max(self.max_retries[s.id], retries)
                await self.manager.update(
                    s.id, description=f"edited at {now:.0f}", max_retries=retries
                )
            elif op == "retime":
                if s.interval_seconds:
                    await self.manager.update(s.id, interval_seconds=s.interval_seconds * 2)
                elif s.cron_expr:
                    await self.manager.update(s.id, cron="*/10 * * * *")
                else:
                    return
            elif op == "disable":
                await self.manager.disable(s.id)
            elif op == "enable":
                await self.manager.enable(s.id)
            elif op == "delete":
                await self.manager.delete(s.id)
        except StoreError:
            return
        self.changes.append(Change(now, op, s.id, self.tick()))
        self.count(f"mutation_{op}")


async def simulate(config: SimConfig) -> SimResult:
    """Run one simulation and check it. Deterministic for a given config."""
    wall0 = time.perf_counter()
    sim = Simulation(config)
    config = sim.config  # with its start drawn from the seed
    loop = asyncio.get_running_loop()
    handler = loop.get_exception_handler()
    loop.set_exception_handler(
        lambda lp, ctx: (
            None if isinstance(ctx.get("exception"), _Crash) else lp.default_exception_handler(ctx)
        )
    )
    try:
        await sim.create_workload()
        names = [f"r{i}" for i in range(config.replicas)]
        for name in names:
            skew = 0.0
            if "skew" in config.faults:  # pairwise at most lease/3 apart
                skew = sim.fault_rng.uniform(-1, 1) * config.lease_seconds / 6
            sim.clocks[name] = ReplicaClock(sim.clock, skew)
            sim.replicas[name] = None
            await sim.start_replica(name)
        end_faults = config.start + config.hours * 3600
        chaos = loop.create_task(sim.chaos(end_faults))
        if config.on_progress is None:
            await sim.clock.advance(config.hours * 3600)
        else:
            done = 0.0
            while done < config.hours:
                step = min(1.0, config.hours - done)
                await sim.clock.advance_to(config.start + (done + step) * 3600)
                done += step
                config.on_progress(done, sim.trace.sent)
        chaos.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await chaos
        # Drain: faults off, everyone up and unstalled, time for leases, retries and slow runs.
        sim.faults_on = False
        end_faults_at = sim.clock.now()
        for name in names:
            sim.clocks[name].stalled_until = 0.0
            if sim.replicas[name] is None:
                await sim.start_replica(name)
        await sim.clock.advance(1800)
        snapshot = {s.id: s for s in await sim.manager.list()}
        open_runs = await running_runs(sim.manager.store, sim.specs)
        snapshot_at = sim.clock.now()
        alive = [sched.replica_id for sched in sim.replicas.values() if sched is not None]
        for name in names:
            sched = sim.replicas[name]
            if sched is not None:
                await sched.stop(timeout=0)
        await sim.clock.settle()
        if not isinstance(sim.manager.store, SqliteStore):
            for store in sim.stores.values():
                sim.closing.add(asyncio.ensure_future(store.close()))
        await asyncio.gather(*sim.closing)
        end_at = sim.clock.now()
        sim.trace.close()
        await attach_runs(sim.trace.db, sim.manager.store, sim.specs)
        schedules = {s.id: s for s in await sim.manager.list()}
        result = SimResult(
            config,
            sim.trace.db,
            sim.changes,
            schedules,
            end_faults_at,
            end_at,
            dict(sorted(sim.faults.items())),
            sim.crashes,
            sim.specs,
            sim.max_retries,
            snapshot,
            snapshot_at,
            alive,
            open_runs,
            sim.offsets,
            sim.steps,
            sim.crash_seq,
            sim.stalls,
            sim.triggers,
            sim.deaths,
            sim.step_times,
        )
        result.summarise()
        check0 = time.perf_counter()
        result.violations = check_run(result, sim.behaviours)
        result.check_seconds = time.perf_counter() - check0
        if not isinstance(sim.manager.store, SqliteStore):
            await sim.manager.store.close()
    finally:
        loop.set_exception_handler(handler)
        sim.trace.db.close()
        shutil.rmtree(sim.tmp, ignore_errors=True)
    result.db = None
    result.wall_seconds = time.perf_counter() - wall0
    return result


def _scratch_store(path: str) -> SqliteStore:
    """The default store: SQLite inline, on a file deleted after the run, so without fsync (a
    WAL checkpoint would otherwise wait on the disk; what commits, and in which order, is the
    same)."""
    store = SqliteStore(path, inline=True)
    store.execute("PRAGMA synchronous=OFF")
    return store
