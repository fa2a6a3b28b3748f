"""The workflow engine's own cost: per step, per Parallel branch, per CEL evaluation.

Prints, each next to a baseline measured in the same run:

- a 100-step workflow of no-op async executors, in µs per step, against the same 100 callables
  awaited in a plain loop; the difference is the engine's overhead per step (input, span,
  output, chaining; the run's fixed cost spread over its 100 steps);
- a Parallel of 1,000 no-op branches, total ms and µs per branch, against asyncio.gather of the
  same 1,000 coroutines (one task each, as the engine makes one task per branch);
- one CEL evaluation compiled once and cached (CelExpression.evaluate, the engine's path) against
  compiled on every evaluation (a new celpy Environment, compile, program, then evaluate, with
  the whole context converted, as the reference does), and the ratio.

Each figure is the best and the median of several repeats (time.perf_counter). The whole run takes
a few seconds. Usage: python tests/bench/bench_workflow.py [REPEATS] (default 15)
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from common import machine
from leasecron.kernel import Parallel, Step, StepInput, Workflow
from leasecron.kernel.workflow.cel import CONDITION_VARIABLES, ROUTER_VARIABLES, compile_cel, to_cel

STEPS = 100
BRANCHES = 1_000


async def noop(step_input: StepInput) -> str:
    return "ok"


def noops(n: int) -> list[Callable[[StepInput], Awaitable[str]]]:
    # Distinct function objects, as a real workflow has distinct steps.
    made = []
    for _ in range(n):

        async def one(step_input: StepInput) -> str:
            return "ok"

        made.append(one)
    return made


def spread(samples: list[float]) -> tuple[float, float]:
    return min(samples), statistics.median(samples)


async def timed(repeats: int, work: Callable[[], Awaitable[Any]]) -> list[float]:
    await work()  # warm-up: imports, first-call caches, the loop's own start-up
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        await work()
        samples.append(time.perf_counter() - t0)
    return samples


async def sequence(repeats: int) -> tuple[list[float], list[float]]:
    fns = noops(STEPS)
    wf = Workflow(id="bench-seq", steps=[Step(f"s{i:03d}", executor=f) for i, f in enumerate(fns)])
    step_input = StepInput(input="x")

    async def engine():
        out = await wf.arun("x")
        assert out.status == "COMPLETED" and len(out.step_outputs) == STEPS, out.error

    async def plain():
        for fn in fns:
            await fn(step_input)

    # A loop of 100 awaits is far shorter than one run; time it in batches of 100 so both
    # figures rest on comparable spans of clock time.
    async def plain_batch():
        for _ in range(100):
            await plain()

    engine_s = await timed(repeats * 4, engine)
    plain_s = [s / 100 for s in await timed(repeats, plain_batch)]
    return engine_s, plain_s


async def parallel(repeats: int) -> tuple[list[float], list[float]]:
    fns = noops(BRANCHES)
    wf = Workflow(
        id="bench-par",
        steps=[Parallel(*(Step(f"b{i:04d}", executor=f) for i, f in enumerate(fns)))],
    )
    step_input = StepInput(input="x")

    async def engine():
        out = await wf.arun("x")
        assert out.status == "COMPLETED" and len(out.step_outputs[0].steps) == BRANCHES

    async def gather():
        await asyncio.gather(*(fn(step_input) for fn in fns))

    return await timed(repeats, engine), await timed(repeats, gather)


def cel_costs(repeats: int) -> tuple[float, list[tuple[str, list[float], list[float]]]]:
    """The first compile in the process (cel-python builds its grammar then, once, whichever
    path is taken), then per-evaluation samples for each expression."""
    import celpy

    context = {
        "input": "write a short thread about leases",
        "previous_step_content": "draft " * 200,
        "previous_step_outputs": {"research": "notes on leases", "draft": "draft " * 200},
        "additional_data": {"audience": "engineers"},
        "session_state": {"rounds": 2, "approved": False},
        "step_choices": ["thread", "article"],
    }
    cases = [
        (
            "Condition",
            "previous_step_content.size() > 500 && session_state.rounds < 3",
            CONDITION_VARIABLES,
        ),
        ("Router", 'input.contains("short") ? "thread" : "article"', ROUTER_VARIABLES),
    ]
    t0 = time.perf_counter()
    compile_cel("true", field="bench", variables=(), where="warm-up")
    first = time.perf_counter() - t0
    results = []
    for kind, source, variables in cases:
        expr = compile_cel(source, field="bench", variables=variables, where=kind)
        names = {k: context[k] for k in variables}

        def cached(expr=expr, names=names):
            return expr.evaluate(names)

        def compiled_each_time(source=source, names=names):
            env = celpy.Environment()
            program = env.program(env.compile(source))
            return program.evaluate({k: to_cel(v) for k, v in names.items()})

        assert cached() == compiled_each_time()
        results.append(
            (
                f"{kind:<9} {source}",
                per_call(cached, 200, repeats),
                per_call(compiled_each_time, 50, repeats),
            )
        )
    return first, results


def per_call(fn: Callable[[], Any], batch: int, repeats: int) -> list[float]:
    """Seconds per call, one sample per batch of `batch` calls."""
    fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - t0) / batch)
    return samples


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    cel = importlib.metadata.version("cel-python")
    print(f"# workflow engine, best / median of {repeats}+ repeats; {machine()}, cel-python {cel}")

    engine_s, plain_s = asyncio.run(sequence(repeats))
    (e_best, e_med), (p_best, p_med) = spread(engine_s), spread(plain_s)
    us = 1e6 / STEPS
    print(f"\n{STEPS}-step workflow of no-op async executors (µs per step, best / median)")
    print(f"  engine (Workflow.arun)          : {e_best * us:7.1f} / {e_med * us:7.1f}")
    print(f"  baseline: plain loop of awaits  : {p_best * us:7.2f} / {p_med * us:7.2f}")
    print(f"  engine overhead per step        : {(e_best - p_best) * us:7.1f} / ", end="")
    print(f"{(e_med - p_med) * us:7.1f}")

    engine_s, gather_s = asyncio.run(parallel(repeats))
    (e_best, e_med), (g_best, g_med) = spread(engine_s), spread(gather_s)
    print(f"\nParallel of {BRANCHES:,} no-op branches (total ms, best / median; µs per branch)")
    print(
        f"  engine (one Parallel step)      : {e_best * 1e3:7.1f} / {e_med * 1e3:7.1f} ms"
        f"   {e_best / BRANCHES * 1e6:6.1f} / {e_med / BRANCHES * 1e6:6.1f} µs"
    )
    print(
        f"  baseline: asyncio.gather        : {g_best * 1e3:7.1f} / {g_med * 1e3:7.1f} ms"
        f"   {g_best / BRANCHES * 1e6:6.1f} / {g_med / BRANCHES * 1e6:6.1f} µs"
    )

    first, cases = cel_costs(repeats)
    print("\nCEL, µs per evaluation (best / median)")
    print(f"  first compile in the process (grammar build, once): {first * 1e3:.0f} ms")
    for label, cached, each in cases:
        (c_best, c_med), (x_best, x_med) = spread(cached), spread(each)
        print(f"  {label}")
        print(f"    compiled once, cached (engine) : {c_best * 1e6:8.1f} / {c_med * 1e6:8.1f}")
        print(f"    compiled every evaluation      : {x_best * 1e6:8.1f} / {x_med * 1e6:8.1f}")
        print(f"    ratio (median)                 : {x_med / c_med:8.1f}x")


if __name__ == "__main__":
    main()
