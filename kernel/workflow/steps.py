"""Workflow steps that do work: `Step` (one executor or agent, with retries, backoff, a timeout and
skip_on_failure), `Steps` (a sequence) and `Parallel` (concurrent branches). What every step
shares (the run context, the chain from one step to the next, the span around each step) is in
nodes.py; calling the user's function in calls.py; merging branch state in branch_state.py.

The control-flow steps (Loop, Router, Condition) live in flow.py, the `Workflow` that
runs them all in engine.py. A step never raises for a failure of the work it runs: it returns
a failed `StepOutput`, and the sequence it is in stops there. Exceptions that do cross a step are
cancellation (a cancelled run unwinds through every step, closing its span as `cancelled`) and
faults of the engine itself.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from typing import Any

from ..errors import ValidationError
from .branch_state import copy_state, merge_state
from .calls import accepted_kwargs, in_thread, is_async, with_timeout
from .nodes import (
    Carry,
    Node,
    RunContext,
    Scope,
    check_name,
    check_number,
    display_name,
    make_input,
    run_sequence,
    sequence_output,
)
from .trace import Span
from .types import StepInput, StepOutput, to_step_output

# --- Step -----------------------------------------------------------------------------------

_MEDIA_KWARGS = ("images", "audio", "videos", "files")


class Step(Node):
    """One unit of work. `executor(step_input)` gets the whole `StepInput`; an `agent` (an object
    with `arun`, or a plain callable) gets the chained content (the previous step's, or the
    workflow input for the first step), plus `images=`/`audio=`/`videos=`/`files=` when it
    accepts them and the step before produced media. Either may be sync or async and return a
    str, a dict, a StepOutput or an agent run result (see `to_step_output`).

    A failure (an exception, a timeout, or a StepOutput with success=False) is tried again up to
    `max_retries` times, waiting `retry_delay_seconds · retry_backoff^(n−1)` on the run's clock
    before the n-th retry. `timeout_seconds` bounds each attempt (on the run's clock: the work is
    cancelled). A sync executor or agent runs in a worker thread (`asyncio.to_thread`), so the
    event loop, the timeout and sibling Parallel branches go on meanwhile; a thread cannot be
    stopped, so on a timeout or cancellation it is abandoned: it runs on to its end and its
    result is dropped (its writes to session_state may still land).
    `skip_on_failure`: a step that still fails is recorded failed and `skipped`, and the run goes
    on as if it had not been there."""

    step_type = "step"

    def __init__(
        self,
        name: str,
        executor: Callable[[StepInput], Any] | None = None,
        *,
        agent: Any = None,
        max_retries: int = 0,
        retry_delay_seconds: float = 1.0,
        retry_backoff: float = 2.0,
        timeout_seconds: float | None = None,
        skip_on_failure: bool = False,
        description: str | None = None,
    ):
        self.name = check_name(name, "Step")
        where = f"Step {name!r}"
        if (executor is None) == (agent is None):
            raise ValidationError("executor", f"{where}: give exactly one of executor or agent")
        if executor is not None and not callable(executor):
            raise ValidationError("executor", f"{where}: {executor!r} is not callable")
        if agent is not None and not (hasattr(agent, "arun") or callable(agent)):
            raise ValidationError(
                "agent", f"{where}: {agent!r} has no arun method and is not callable"
            )
        self.executor = executor
        self.agent = agent
        self.max_retries = check_number("max_retries", max_retries, where, minimum=0, integer=True)
        self.retry_delay_seconds = check_number(
            "retry_delay_seconds", retry_delay_seconds, where, minimum=0
        )
        self.retry_backoff = check_number("retry_backoff", retry_backoff, where, minimum=1)
        self.timeout_seconds = check_number(
            "timeout_seconds", timeout_seconds, where, minimum=0, allow_none=True, above=True
        )
        self.skip_on_failure = bool(skip_on_failure)
        self.description = description
        self._call_kind = "agent" if agent is not None else "executor"
        self._target = display_name(agent if agent is not None else executor)
        self._agent_call = getattr(agent, "arun", None) or agent
        self._media_kwargs = accepted_kwargs(self._agent_call, _MEDIA_KWARGS) if agent else ()
        self._in_thread = not is_async(self._agent_call if agent is not None else executor)

    @property
    def origin(self) -> Any:
        """The executor or agent this step runs (a Router selector may return it)."""
        return self.agent if self.agent is not None else self.executor

    async def _run(self, ctx: RunContext, scope: Scope, carry: Carry, span: Span) -> StepOutput:
        attempts = 1 + self.max_retries
        last_failure: StepOutput | None = None
        error = ""
        for attempt in range(1, attempts + 1):
            step_input = make_input(ctx, scope, carry)
            with ctx.tracer.span(self._target, self._call_kind, span, attempt=attempt) as call:
                try:
                    out = to_step_output(await self._attempt(ctx, step_input), self.name)
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    last_failure = None
                    ctx.tracer.end(call, "error", error)
                else:
                    if out.success:
                        out.metadata.setdefault("attempts", attempt)
                        return out
                    error = out.error or "the step returned success=False"
                    last_failure = out
                    ctx.tracer.end(call, "error", error)
            if attempt < attempts:
                delay = self.retry_delay_seconds * self.retry_backoff ** (attempt - 1)
                await ctx.clock.sleep(delay)
        failed = last_failure or StepOutput()
        failed.success, failed.error, failed.skipped = False, error, self.skip_on_failure
        failed.metadata["attempts"] = attempts
        return failed

    async def _attempt(self, ctx: RunContext, step_input: StepInput) -> Any:
        if self.timeout_seconds is None:
            return await self._call(step_input)
        return await with_timeout(ctx.clock, self.timeout_seconds, self._call(step_input))

    async def _call(self, step_input: StepInput) -> Any:
        if self.agent is not None:
            message = step_input.previous_step_content
            if message is None:
                message = step_input.input
            kwargs = {}
            for name in self._media_kwargs:
                items = getattr(step_input, name)
                if items:
                    kwargs[name] = items
            fn, args = self._agent_call, (message,)
        else:
            fn, args, kwargs = self.executor, (step_input,), {}
        if self._in_thread:
            result = await in_thread(fn, *args, **kwargs)
        else:
            result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result


def as_node(item: Any, field: str) -> Node:
    """A step as given in a list: a step as is; a nested list as a Steps; an object with
    `arun` as an agent step; any other callable as an executor step, named after it."""
    if isinstance(item, Node):
        return item
    if isinstance(item, list | tuple):
        return Steps(*item)
    if hasattr(item, "arun"):
        return Step(display_name(item), agent=item)
    if callable(item):
        return Step(display_name(item), executor=item)
    raise ValidationError(
        field,
        f"{item!r} is not a step: give a Step, Steps, Parallel, Loop, Router, Condition, "
        "a callable or an agent (an object with arun)",
    )


def as_nodes(items: Any, field: str, where: str, *, allow_empty: bool = False) -> list[Node]:
    if not isinstance(items, list | tuple):
        raise ValidationError(field, f"{where}: must be a list of steps, got {items!r}")
    if not items and not allow_empty:
        raise ValidationError(field, f"{where}: must name at least one step")
    return [as_node(item, field) for item in items]


# --- Steps, Parallel ------------------------------------------------------------------------


def _items(positional: tuple[Any, ...], steps: Any, kind: str) -> Any:
    if positional and steps is not None:
        raise ValidationError("steps", f"{kind}: give the steps as arguments or steps=, not both")
    return list(positional) if steps is None else steps


class Steps(Node):
    """A sequence: each step chained to the one before; stops at the first failure. Its output
    is the last contributing step's content and media, with every child under `steps`."""

    step_type = "steps"

    def __init__(self, *items: Any, name: str = "steps", steps: Any = None, description=None):
        self.name = check_name(name, "Steps")
        self.steps = as_nodes(_items(items, steps, f"Steps {name!r}"), "steps", f"Steps {name!r}")
        self.description = description

    async def _run(self, ctx: RunContext, scope: Scope, carry: Carry, span: Span) -> StepOutput:
        outputs, after = await run_sequence(self.steps, ctx, scope, carry, span)
        return sequence_output(outputs, after)


class Parallel(Node):
    """Branches run concurrently (at most `max_concurrency` at once), each on the same input and
    on its own deep copy of the session state. When all have finished, each branch's changes to
    the state are applied in declared order (a key two branches set ends with the later branch's
    value, however the branches interleaved) and their outputs are recorded by name, also in
    declared order. A failed branch does not stop the others; the Parallel then fails.

    Output content: every branch's content, in declared order, as `## <name>` sections of one
    text (so an agent downstream reads all of it); the branches' outputs are under `steps` and in
    `previous_step_outputs`; media: every branch's, in order."""

    step_type = "parallel"

    def __init__(
        self,
        *items: Any,
        name: str = "parallel",
        steps: Any = None,
        max_concurrency: int | None = None,
        description: str | None = None,
    ):
        self.name = check_name(name, "Parallel")
        where = f"Parallel {name!r}"
        self.steps = as_nodes(_items(items, steps, where), "steps", where)
        self.max_concurrency = check_number(
            "max_concurrency", max_concurrency, where, minimum=1, integer=True, allow_none=True
        )
        self.description = description

    async def _run(self, ctx: RunContext, scope: Scope, carry: Carry, span: Span) -> StepOutput:
        base = copy_state(scope.session_state)
        recorded = dict(scope.outputs)
        gate = asyncio.Semaphore(self.max_concurrency) if self.max_concurrency else None
        finished: dict[int, Scope] = {}
        merged = 0  # branches merged so far, in declared order

        def merge_finished() -> None:
            # Each branch's changes go in as soon as every branch declared before it is in, and
            # its copy is then dropped: the declared order holds, and at most max_concurrency
            # copies (plus those finished ahead of a slower earlier branch) are alive at once.
            nonlocal merged
            while merged in finished:
                branch_scope = finished.pop(merged)
                merge_state(scope.session_state, base, branch_scope.session_state)
                for key, out in branch_scope.outputs.items():
                    if recorded.get(key) is not out:
                        scope.outputs[key] = out
                merged += 1

        async def run_branch(index: int, node: Node) -> StepOutput:
            # The copy is made once the branch may run, not when the Parallel starts.
            branch_scope = Scope(copy_state(base), dict(recorded))
            out = await _branch(node, ctx, branch_scope, carry, span)
            finished[index] = branch_scope
            merge_finished()
            return out

        async def branch(index: int, node: Node) -> StepOutput:
            if gate is None:
                return await run_branch(index, node)
            async with gate:
                return await run_branch(index, node)

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(branch(i, node)) for i, node in enumerate(self.steps)]
        outputs = [t.result() for t in tasks]
        failed = [o for o in outputs if o.failed]
        return StepOutput(
            content="\n\n".join(_section(o) for o in outputs if not o.skipped),
            media=[m for o in outputs if not o.skipped for m in o.media],
            steps=outputs,
            success=not failed,
            error="; ".join(f"{o.step_name}: {o.error}" for o in failed) or None,
            stop=any(o.stop for o in outputs),
        )


async def _branch(node: Node, ctx: RunContext, scope: Scope, carry: Carry, span: Span):
    try:
        return await node.execute(ctx, scope, carry, span)
    except Exception as exc:  # an engine fault in one branch must not take the others down
        return StepOutput(step_name=node.name, success=False, error=f"{type(exc).__name__}: {exc}")


def _section(out: StepOutput) -> str:
    body = out.content if out.success else f"(failed: {out.error})"
    return f"## {out.step_name}\n\n{as_text(body)}"


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)
