"""Idle poll cost: what one look at the store costs when nothing is due, at 10k, 100k and 1M
schedules, and the CPU an idle replica burns.

What it measures, per table size (N schedules none due: due_at 1e6 s ahead):
  raw SQL        the idle poll statement run directly on a sqlite3 connection (the baseline):
                 SELECT MIN(due_at) FROM agno_schedules WHERE enabled = 1 AND due_at IS NOT NULL
  inline         `await store.next_due()` on SqliteStore(path, inline=True) (no thread hop)
  threaded       `await store.next_due()` on SqliteStore(path) (the default: its worker thread)
  idle claim     one `store.claim()` with nothing due, inline (a write transaction; for reference)
each as µs/call, best of 3 runs of a tight loop, with the ratio 1M/10k (flat = one index probe).
Then an idle replica: a Scheduler (SystemClock, threaded store, 100k schedules none due,
poll_interval=0.05) runs for ~10 s; its process CPU time / wall time is the share of a core it
uses, and CPU / polls is the whole cost of one idle loop turn.

Targets: idle poll <= 20 µs and flat across sizes; idle replica < 2 % of a core at poll 0.05 s.
Reference: the reference scheduler (Agno AgentOS) spends 236 µs per idle poll.

Usage: python tests/bench/bench_idle.py [--sizes 10000 100000 1000000] [--calls 20000]
                                        [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import time
from collections.abc import Callable

from common import bulk_schedules_sql, cpu_seconds, machine, noop_transport, temp_db
from leasecron.kernel import HttpDispatcher, Scheduler, SqliteStore

TARGET_US = 20.0
TARGET_CPU = 0.02
REFERENCE_US = 236.0
NEXT_DUE_SQL = "SELECT MIN(due_at) FROM agno_schedules WHERE enabled = 1 AND due_at IS NOT NULL"


def build(n: int) -> str:
    path = temp_db(f"idle-{n}.db")
    t0 = time.perf_counter()
    bulk_schedules_sql(path, n, due_at=time.time() + 1e6)
    print(f"  set-up: {n:,} schedules in {time.perf_counter() - t0:.1f} s", flush=True)
    return path


def best_us(run: Callable[[int], float], calls: int, repeats: int = 3) -> float:
    """Best of `repeats` runs of `run(calls)` (which returns seconds), as µs per call."""
    return min(run(calls) for _ in range(repeats)) / calls * 1e6


def raw_sql(path: str) -> Callable[[int], float]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")

    def run(calls: int) -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            conn.execute(NEXT_DUE_SQL).fetchone()
        return time.perf_counter() - t0

    return run


def store_next_due(store: SqliteStore) -> Callable[[int], float]:
    async def loop(calls: int) -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            await store.next_due()
        return time.perf_counter() - t0

    return lambda calls: asyncio.run(loop(calls))


def store_idle_claim(store: SqliteStore) -> Callable[[int], float]:
    async def loop(calls: int) -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            if await store.claim("idle", time.time(), 30.0, 10):
                raise AssertionError("something was due")
        return time.perf_counter() - t0

    return lambda calls: asyncio.run(loop(calls))


def poll_costs(path: str, calls: int) -> dict[str, float]:
    costs = {"raw SQL": best_us(raw_sql(path), calls)}
    inline = SqliteStore(path, inline=True)
    costs["inline"] = best_us(store_next_due(inline), calls)
    costs["idle claim"] = best_us(store_idle_claim(inline), max(1, calls // 10))
    asyncio.run(inline.close())
    threaded = SqliteStore(path)
    costs["threaded"] = best_us(store_next_due(threaded), max(1, calls // 4))
    asyncio.run(threaded.close())
    return costs


async def idle_replica(path: str, seconds: float) -> tuple[float, int]:
    """Share of a core used by a process running one idle Scheduler, and its polls."""
    store = SqliteStore(path)
    polls = 0
    next_due = store.next_due

    async def counted() -> float | None:
        nonlocal polls
        polls += 1
        return await next_due()

    store.next_due = counted  # count the loop's looks at the store
    dispatcher = HttpDispatcher("http://bench", transport=noop_transport())
    scheduler = Scheduler(store, dispatcher, replica_id="idle", poll_interval=0.05)
    await scheduler.start()
    await asyncio.sleep(0.5)  # past start-up
    polls = 0
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    await asyncio.sleep(seconds)
    share = (cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
    counted_polls = polls
    await scheduler.stop()
    await dispatcher.aclose()
    await store.close()
    return share, counted_polls


async def bare_loop(seconds: float, interval: float) -> tuple[float, int]:
    """Share of a core used by a loop that only does `await asyncio.sleep(interval)`: the floor,
    what waking `1/interval` times a second costs on this machine before any work."""
    turns = 0
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    while time.perf_counter() - wall0 < seconds:
        await asyncio.sleep(interval)
        turns += 1
    return (cpu_seconds() - cpu0) / (time.perf_counter() - wall0), turns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"# idle poll cost, no schedule due, best of 3, µs/call; {machine()}")
    print(f"reference scheduler (Agno AgentOS): {REFERENCE_US:.0f} µs per idle poll")
    results: dict[int, dict[str, float]] = {}
    paths: dict[int, str] = {}
    for n in args.sizes:
        paths[n] = build(n)
        results[n] = costs = poll_costs(paths[n], args.calls)
        print(
            f"N={n:>9,}  raw SQL {costs['raw SQL']:6.1f}  inline next_due {costs['inline']:6.1f}"
            f"  threaded next_due {costs['threaded']:6.1f}  idle claim (inline) "
            f"{costs['idle claim']:6.1f}",
            flush=True,
        )
    lo, hi = min(results), max(results)
    for key in ("raw SQL", "inline", "threaded", "idle claim"):
        print(f"ratio N={hi:,}/N={lo:,}  {key:<11}: {results[hi][key] / results[lo][key]:5.2f}x")
    for key in ("inline", "threaded"):
        worst = max(r[key] for r in results.values())
        verdict = "meets" if worst <= TARGET_US else "MISSES"
        print(
            f"{key} next_due: worst {worst:.1f} µs/call ({verdict} <= {TARGET_US:.0f} µs); "
            f"{REFERENCE_US / worst:.0f}x less than the reference; "
            f"{worst / max(r['raw SQL'] for r in results.values()):.1f}x the raw statement"
        )

    n = 100_000 if 100_000 in paths else min(paths, key=lambda k: abs(k - 100_000))
    floor_seconds = min(3.0, args.seconds)
    floor, turns = asyncio.run(bare_loop(floor_seconds, 0.05))
    share, polls = asyncio.run(idle_replica(paths[n], args.seconds))
    verdict = "meets" if share < TARGET_CPU else "MISSES"
    print(
        f"idle replica, N={n:,}, poll 0.05 s, {args.seconds:.0f} s: {share:.2%} of a core "
        f"({verdict} < {TARGET_CPU:.0%}); {polls} polls = {polls / args.seconds:.1f}/s; "
        f"{share * args.seconds / max(1, polls) * 1e6:.0f} µs CPU per loop turn"
    )
    print(
        f"floor, a bare `await asyncio.sleep(0.05)` loop: {floor:.2%} of a core, "
        f"{floor * floor_seconds / max(1, turns) * 1e6:.0f} µs CPU per wake-up "
        f"(an idle thread's wake-up is cold: far dearer than in the tight loops above)"
    )


if __name__ == "__main__":
    main()
