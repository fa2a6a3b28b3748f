"""Workflow steps that do work: `Step` (one executor or agent, with retries, backoff, a timeout and
skip_on_failure), `Steps` (a sequence) and `Parallel` (concurrent branches); plus what every step
shares: the run context, the chain from one step to the next, and the span around each step.

The control-flow steps (Loop, Router, Condition) live in workflow_flow.py, the `Workflow` that
runs them all in workflow.py. A step never raises for a failure of the work it runs: it returns
a failed `StepOutput`, and the sequence it is in stops there. Exceptions that do cross a step are
cancellation (a cancelled run unwinds through every step, closing its span as `cancelled`) and
faults of the engine itself.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import json
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..clock import Clock
from ..errors import LeasecronError, ValidationError
from ..offload import tracked
from .trace import Span, Tracer
from .types import Media, StepInput, StepOutput, to_step_output

CEL_ERROR_MODES = ("fail", "false")


class StepTimeoutError(LeasecronError, TimeoutError):
    def __init__(self, seconds: float):
        self.seconds = seconds
        super().__init__(f"timed out after {seconds:g} s")


@dataclass(slots=True, eq=False)
class RunContext:
    """What every step of one run shares (read-only while the run lasts)."""

    workflow_id: str
    run_id: str
    session_id: str
    input: Any
    additional_data: dict[str, Any]
    clock: Clock
    tracer: Tracer
    cel_errors: str = "fail"


@dataclass(slots=True, eq=False)
class Scope:
    """What a step may change: the session state and the outputs recorded by name. A Parallel
    branch runs in a copy of its own, so branches never see each other's writes."""

    session_state: dict[str, Any]
    outputs: dict[str, StepOutput] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Carry:
    """What the step before hands to the next: its content and media."""

    content: Any = None
    media: tuple[Media, ...] = ()


def make_input(ctx: RunContext, scope: Scope, carry: Carry) -> StepInput:
    return StepInput(
        input=ctx.input,
        previous_step_content=carry.content,
        previous_step_outputs=dict(scope.outputs),
        additional_data=ctx.additional_data,
        session_state=scope.session_state,
        media=list(carry.media),
        workflow_id=ctx.workflow_id,
        run_id=ctx.run_id,
        session_id=ctx.session_id,
    )


class Node:
    """Base of every step type. `execute` wraps `_run` in the step's span, stamps the output with
    the step's name, type and times, and records it under the name for the steps after it."""

    step_type: ClassVar[str] = "step"
    name: str
    description: str | None = None

    async def execute(
        self, ctx: RunContext, scope: Scope, carry: Carry, parent: Span
    ) -> StepOutput:
        started = ctx.clock.now()
        with ctx.tracer.span(self.name, self.step_type, parent) as span:
            out = await self._run(ctx, scope, carry, span)
            out.step_name, out.step_type = self.name, self.step_type
            out.started_at, out.ended_at = started, ctx.clock.now()
            marks = {"skipped": True} if out.skipped else {}
            if out.success:
                ctx.tracer.end(span, "ok", **marks)
            else:
                ctx.tracer.end(span, "error", out.error, **marks)
        scope.outputs[self.name] = out
        return out

    async def _run(self, ctx: RunContext, scope: Scope, carry: Carry, span: Span) -> StepOutput:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


async def run_sequence(
    nodes: Iterable[Node],
    ctx: RunContext,
    scope: Scope,
    carry: Carry,
    parent: Span,
    outputs: list[StepOutput] | None = None,
) -> tuple[list[StepOutput], Carry]:
    """Run `nodes` in order, each chained to the last one that contributed (a skipped output
    hands the chain on untouched). Stops after a failure or a `stop`. `outputs` collects as it
    goes, so a caller keeps what finished even if the sequence is cancelled midway."""
    outputs = [] if outputs is None else outputs
    for node in nodes:
        out = await node.execute(ctx, scope, carry, parent)
        outputs.append(out)
        if not out.skipped:
            carry = Carry(out.content, tuple(out.media))
        if out.failed or out.stop:
            break
    return outputs, carry


def sequence_output(outputs: list[StepOutput], carry: Carry) -> StepOutput:
    """A composite's output over the sequence it ran: the chain's content, the first failure."""
    failed = next((o for o in outputs if o.failed), None)
    return StepOutput(
        content=carry.content,
        media=list(carry.media),
        steps=outputs,
        success=failed is None,
        error=None if failed is None else f"{failed.step_name}: {failed.error}",
        stop=any(o.stop for o in outputs),
    )


# --- building -------------------------------------------------------------------------------


def as_node(item: Any, field: str) -> Node:
    """A step as given in a list: a step as is; a nested list as a Steps; an object with
    `arun` as an agent step; any other callable as an executor step, named after it."""
    if isinstance(item, Node):
        return item
    if isinstance(item, list | tuple):
        return Steps(*item)
    if hasattr(item, "arun"):
        return Step(_display_name(item), agent=item)
    if callable(item):
        return Step(_display_name(item), executor=item)
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


def check_name(name: Any, kind: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("name", f"{kind} needs a non-empty name, got {name!r}")
    return name


def check_number(
    field: str,
    value: Any,
    where: str,
    *,
    minimum: float,
    integer: bool = False,
    allow_none: bool = False,
    above: bool = False,
) -> Any:
    if value is None and allow_none:
        return None
    kind = int if integer else int | float
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if ok:
        ok = value > minimum if above else value >= minimum
    if not ok:
        rule = f"{'>' if above else '≥'} {minimum:g}"
        what = "an integer" if integer else "a number"
        raise ValidationError(field, f"{where}: {value!r} must be {what} {rule}")
    return value


def check_cel_errors(value: Any, where: str) -> str | None:
    if value is not None and value not in CEL_ERROR_MODES:
        raise ValidationError("cel_errors", f"{where}: {value!r} must be 'fail' or 'false'")
    return value


def _display_name(obj: Any) -> str:
    name = getattr(obj, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(obj, "__name__", None) or type(obj).__name__


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
        self._target = _display_name(agent if agent is not None else executor)
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


def is_async(fn: Any) -> bool:
    """Whether calling `fn` gives a coroutine: an async function, a partial of one, or an object
    with an async __call__. Anything else is called in a worker thread."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = inspect.getattr_static(type(fn), "__call__", None)
    return inspect.iscoroutinefunction(call)


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)` in a worker thread. Counted as work in flight while awaited, so a
    SimClock settles after it (a sync call takes no simulated time); once the await is
    cancelled (a timeout, a cancelled run) the thread is abandoned and no longer counted."""
    with tracked():
        return await asyncio.to_thread(fn, *args, **kwargs)


# function -> its parameter names, or ANY (it takes **kwargs), or () (no signature): reading a
# signature costs more than most steps, and the engine asks before every save.
_PARAMS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_ANY = object()


def _param_names(fn: Any) -> Any:
    # A bound method's names are its function's (plus self): cached on the function, so no
    # bound method (nor the object it is bound to) is kept alive by the cache.
    key = getattr(fn, "__func__", fn)
    if inspect.isfunction(key):
        found = _PARAMS.get(key)
        if found is not None:
            return found
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        found = ()
    else:
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            found = _ANY
        else:
            found = frozenset(params)
    if inspect.isfunction(key):
        _PARAMS[key] = found
    return found


def accepted_kwargs(fn: Any, names: tuple[str, ...]) -> tuple[str, ...]:
    params = _param_names(fn)
    if params is _ANY:
        return names
    return tuple(n for n in names if n in params)


async def with_timeout(clock: Clock, seconds: float, work: Any) -> Any:
    """Await `work`, cancelling it if `seconds` of `clock` time pass first (StepTimeoutError).
    Measured on the run's clock rather than the loop's, so a simulated clock decides it."""
    task = asyncio.ensure_future(work)
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        done, _ = await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        timer.cancel()
        await _unwind(task)
        raise
    timer.cancel()
    if task in done:
        return task.result()
    await _unwind(task)
    raise StepTimeoutError(seconds)


async def _unwind(task: asyncio.Future) -> None:
    """Cancel `task` and wait until it has finished, so its spans close before its parent's."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: it failed while being cancelled; the timeout is the error


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


# --- session state across branches ---------------------------------------------------------


def copy_state(state: dict[str, Any]) -> dict[str, Any]:
    """A deep copy; a value that cannot be copied (a client, a lock) is shared, not copied."""
    try:
        return copy.deepcopy(state)
    except Exception:
        out = {}
        for key, value in state.items():
            try:
                out[key] = copy.deepcopy(value)
            except Exception:
                out[key] = value
        return out


def merge_state(target: dict[str, Any], base: dict[str, Any], branch: dict[str, Any]) -> None:
    """Apply to `target` what `branch` changed relative to `base`: keys set or changed, keys
    removed, and nested dicts merged key by key (so two branches filling different keys of one
    dict both land, whether that dict was there before the Parallel or a branch created it)."""
    for key, value in branch.items():
        if key in base:
            old = base[key]
            if isinstance(old, dict) and isinstance(value, dict):
                inner = target.get(key)
                if isinstance(inner, dict):
                    merge_state(inner, old, value)
                    continue
            elif _same(old, value):
                continue
        elif isinstance(value, dict):
            inner = target.get(key)
            if isinstance(inner, dict):  # created by an earlier branch too: merge, not replace
                merge_state(inner, {}, value)
                continue
        target[key] = value
    for key in base:
        if key not in branch:
            target.pop(key, None)


def _same(a: Any, b: Any) -> bool:
    """Unchanged: equal and of the same type, all the way down (1 == True == 1.0 in Python, but
    a branch that turned a 1 into True changed it)."""
    if a is b:
        return True
    try:
        return _alike(a, b)
    except Exception:  # an __eq__ that refuses (arrays), a structure too deep: treat as changed
        return False


def _alike(a: Any, b: Any) -> bool:
    if type(a) is not type(b) or not bool(a == b):
        return False
    if isinstance(a, list | tuple):
        return all(x is y or _alike(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return all(a[k] is b[k] or _alike(a[k], b[k]) for k in a)
    return True
