"""The simulator's footprint and speed: the same seed and workload run for 10 and for 40
simulated hours, each in a fresh process (peak RSS is per process), every fault class on.

What it prints, per run: fires (requests sent), wall seconds (of which the check), simulated
fires per wall second, and the process's max RSS (getrusage). Then the ratio of the two peaks
(flat memory: the checker streams, the target's log is on disk) and, last, the fires per wall
second of the longer run.

Targets: max RSS of the 40 h run <= 1.3x that of the 10 h run; >= 5,000 simulated fires per
wall second.

Usage: python tests/bench/bench_sim.py [--hours 10 40] [--seed 2029] [--replicas 5]
                                       [--schedules 300] [--min-interval 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from common import machine

TARGET_RATIO = 1.3
TARGET_RATE = 5000.0

CHILD = """
import asyncio, json, sys
from leasecron.kernel.sim.simulation import SimConfig, max_rss_mib, simulate
args = json.loads(sys.argv[1])
result = asyncio.run(simulate(SimConfig(**args)))
print(json.dumps({
    "fires": result.fires, "wall": result.wall_seconds, "check": result.check_seconds,
    "violations": len(result.violations), "digest": result.digest(), "rss": max_rss_mib(),
}))
"""


def run(hours: float, args: argparse.Namespace) -> dict:
    config = {
        "seed": args.seed,
        "replicas": args.replicas,
        "schedules": args.schedules,
        "min_interval": args.min_interval,
        "hours": hours,
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(config)],
        check=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the replicas' warnings about injected store errors
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--hours", type=float, nargs=2, default=(10.0, 40.0))
    p.add_argument("--seed", type=int, default=2029)
    p.add_argument("--replicas", type=int, default=5)
    p.add_argument("--schedules", type=int, default=300)
    p.add_argument("--min-interval", type=float, default=10.0)
    args = p.parse_args()
    print(machine())
    print(
        f"seed={args.seed} replicas={args.replicas} schedules={args.schedules} "
        f"min_interval={args.min_interval:g}, every fault class on"
    )
    results = []
    for hours in args.hours:
        r = run(hours, args)
        rate = r["fires"] / r["wall"]
        print(
            f"{hours:g} h: {r['fires']:,} fires in {r['wall']:.1f} s (check {r['check']:.1f} s), "
            f"{rate:,.0f} fires/s, max RSS {r['rss']:.0f} MiB, {r['violations']} violations, "
            f"digest {r['digest']}",
            flush=True,
        )
        results.append((r, rate))
    (short, _), (long, rate) = results
    ratio = long["rss"] / short["rss"]
    hours = f"{args.hours[1]:g} h vs {args.hours[0]:g} h"
    print(f"max RSS {hours}: {ratio:.2f} (target <= {TARGET_RATIO})")
    print(f"rss_ratio={ratio:.3f}")
    print(f"fires_per_second={rate:.0f} (target >= {TARGET_RATE:,.0f})")


if __name__ == "__main__":
    main()
