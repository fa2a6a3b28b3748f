"""`leasecron sim`: seeds of the deterministic simulation, each checked, with a replay line for a
failed one. Imports sim/; `main.py` imports this file only when the command runs, so a copy of
the kernel without sim/ keeps every other command."""

from __future__ import annotations

import argparse
import functools
import uuid
from typing import Any

from ..errors import ValidationError
from ..open_store import open_store
from ..sim.simulation import ALL_FAULTS, FAULTS, SimConfig, simulate
from .progress import Progress


def _sim_store(url: str, path: str, **options: Any) -> Any:
    # the simulation's file path is for SQLite; a URL store is opened on the URL instead
    return open_store(url, **options)


async def cmd_sim(args: argparse.Namespace) -> int:
    if args.faults == "all":
        faults = ALL_FAULTS
    elif args.faults == "none":
        faults = frozenset()
    else:
        faults = frozenset(f.strip() for f in args.faults.split(",") if f.strip())
        unknown = sorted(faults - ALL_FAULTS)
        if unknown:
            raise ValidationError("faults", f"unknown {unknown}; choose from {', '.join(FAULTS)}")
    for name in ("replicas", "schedules", "seeds"):
        if getattr(args, name) < 1:
            raise ValidationError(name, f"{getattr(args, name)!r} must be >= 1")
    failed = 0
    for seed in range(args.seed, args.seed + args.seeds):
        config = SimConfig(
            seed=seed,
            replicas=args.replicas,
            schedules=args.schedules,
            hours=args.hours,
            faults=faults,
            fault_rate=args.fault_rate,
            min_interval=args.min_interval,
        )
        progress = Progress()
        config.on_progress = lambda hours, sent, seed=seed, progress=progress: progress(
            f"seed {seed}: {hours:g} of {args.hours:g} simulated hours, {sent} requests sent"
        )
        if args.store:
            schema = f"sim_{seed}_{uuid.uuid4().hex[:8]}"
            # The simulated clock drives every statement: the store must not use its own.
            config.store_factory = functools.partial(
                _sim_store, args.store, schema=schema, time_authority="local"
            )
            print(f"store: {args.store} schema {schema}", flush=True)
        result = await simulate(config)
        print(result.report(), flush=True)
        if result.violations:
            failed += 1
            # the earliest violating slot is the one to replay first
            first = min(result.violations, key=lambda v: (v.slot is None, v.slot or 0.0))
            print(
                f"replay: leasecron sim --seed {seed} --replicas {args.replicas} "
                f"--schedules {args.schedules} --hours {args.hours:g} --faults {args.faults} "
                f"--fault-rate {args.fault_rate:g} --min-interval {args.min_interval:g}"
                f"  (first violating slot: {first})"
            )
    return 1 if failed else 0
