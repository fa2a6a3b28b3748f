"""Workflow steps that decide: `Loop` (repeat until an end condition), `Router` (run the choice a
selector names) and `Condition` (run `steps` or `else_steps`).

Each decision is a CEL string (cel.py: compiled and checked when the step is built) or a
Python callable, and each evaluation is a span of its own (`cel` with the expression and result,
or `decision` for a callable), so a trace shows why a run went the way it did. A decision that
fails fails its step, with the expression and the error in the step's error and in the span.
`cel_errors="false"` (per step, or for the whole workflow) instead treats a failed CEL
evaluation as false: a Condition runs `else_steps`, a Loop goes on, a Router runs nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..errors import ValidationError
from .cel import (
    CONDITION_VARIABLES,
    LOOP_VARIABLES,
    ROUTER_VARIABLES,
    CelEvaluationError,
    CelExpression,
    compile_cel,
)
from .nodes import (
    Carry,
    Node,
    RunContext,
    Scope,
    check_cel_errors,
    check_name,
    check_number,
    make_input,
    run_sequence,
    sequence_output,
)
from .steps import as_nodes
from .trace import Span
from .types import StepInput, StepOutput


class DecisionError(Exception):
    """A decision could not be made; the message says which and why."""


_FALSE = object()  # a failed CEL evaluation under cel_errors="false"


def _rule(value: Any, field: str, variables: tuple[str, ...], where: str, *, bools: bool):
    if isinstance(value, str):
        return compile_cel(value, field=field, variables=variables, where=where)
    if callable(value) or (bools and isinstance(value, bool)):
        return value
    allowed = "a CEL string, a callable" + (" or a bool" if bools else "")
    raise ValidationError(field, f"{where}: {value!r} must be {allowed}")


def _brief(value: Any) -> Any:
    """A decision's result as a span attribute: short, and plain."""
    if isinstance(value, Node):
        return value.name
    if isinstance(value, list | tuple):
        return [_brief(v) for v in value]
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + "…"
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)[:200]


def _text(value: Any) -> Any:
    """Content as CEL sees it: nothing yet is the empty string, so `.size()` works on step one."""
    return "" if value is None else value


def step_variables(step_input: StepInput) -> dict[str, Any]:
    """The variables of a Condition or Router expression."""
    return {
        "input": _text(step_input.input),
        "previous_step_content": _text(step_input.previous_step_content),
        "previous_step_outputs": {
            name: _text(out.content) for name, out in step_input.previous_step_outputs.items()
        },
        "additional_data": step_input.additional_data,
        "session_state": step_input.session_state,
    }


class _Decides(Node):
    cel_errors: str | None = None

    async def _decide(
        self,
        ctx: RunContext,
        parent: Span,
        field: str,
        rule: Any,
        variables: Callable[[], dict[str, Any]],
        args: tuple[Any, ...],
        expect: str,
    ) -> Any:
        """Evaluate one decision in its own span. Raises DecisionError; returns _FALSE for a CEL
        error under cel_errors="false"."""
        span_name = f"{self.name}.{field}"
        if isinstance(rule, CelExpression):
            with ctx.tracer.span(span_name, "cel", parent, expression=rule.source) as s:
                try:
                    value = rule.evaluate(variables())
                    _check_result(rule, value, expect)
                except CelEvaluationError as exc:
                    if (self.cel_errors or ctx.cel_errors) == "false":
                        ctx.tracer.end(s, "error", str(exc), treated_as=False)
                        return _FALSE
                    ctx.tracer.end(s, "error", str(exc))
                    raise DecisionError(f"{field}: {exc}") from exc
                s.attributes["result"] = _brief(value)
                return value
        if isinstance(rule, bool):
            return rule
        label = getattr(rule, "__qualname__", None) or type(rule).__name__
        with ctx.tracer.span(span_name, "decision", parent, callable=label) as s:
            try:
                value = rule(*args)
                if inspect.isawaitable(value):
                    value = await value
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                ctx.tracer.end(s, "error", error)
                raise DecisionError(f"{field}: {label} raised {error}") from exc
            s.attributes["result"] = _brief(value)
            return value


def _check_result(rule: CelExpression, value: Any, expect: str) -> None:
    if expect == "bool" and not isinstance(value, bool):
        raise CelEvaluationError(
            rule.source, f"must give a bool, gave {type(value).__name__} {_brief(value)!r}"
        )
    names = isinstance(value, list) and all(isinstance(v, str) for v in value)
    if expect == "choice" and not (isinstance(value, str) or names):
        raise CelEvaluationError(
            rule.source,
            f"must give a step name or a list of names, gave {type(value).__name__} "
            f"{_brief(value)!r}",
        )


def _failed(error: str, **metadata: Any) -> StepOutput:
    return StepOutput(success=False, error=error, metadata=metadata)


# --- Condition ------------------------------------------------------------------------------


class Condition(_Decides):
    """Runs `steps` when `evaluator` holds, else `else_steps` (when given; otherwise the
    Condition is skipped and the chain passes through it). `evaluator`: a CEL string over
    input, previous_step_content, previous_step_outputs, additional_data and session_state that
    gives a bool; a callable(step_input) (sync or async; its truth value counts); or a bool."""

    step_type = "condition"

    def __init__(
        self,
        evaluator: str | Callable[[StepInput], Any] | bool,
        steps: Any,
        *,
        else_steps: Any = None,
        name: str = "condition",
        cel_errors: str | None = None,
        description: str | None = None,
    ):
        self.name = check_name(name, "Condition")
        where = f"Condition {name!r}"
        self.evaluator = _rule(evaluator, "evaluator", CONDITION_VARIABLES, where, bools=True)
        self.steps = as_nodes(steps, "steps", where)
        self.else_steps = as_nodes(else_steps or [], "else_steps", where, allow_empty=True)
        self.cel_errors = check_cel_errors(cel_errors, where)
        self.description = description

    async def _run(self, ctx: RunContext, scope: Scope, carry: Carry, span: Span) -> StepOutput:
        step_input = make_input(ctx, scope, carry)
        try:
            verdict = await self._decide(
                ctx,
                span,
                "evaluator",
                self.evaluator,
                lambda: step_variables(step_input),
                (step_input,),
                "bool",
            )
        except DecisionError as exc:
            return _failed(str(exc))
        result = verdict is not _FALSE and bool(verdict)
        branch, which = (self.steps, "steps") if result else (self.else_steps, "else_steps")
        if not branch:
            return StepOutput(
                content=carry.content,
                media=list(carry.media),
                skipped=True,
                metadata={"result": result, "branch": None},
            )
        outputs, after = await run_sequence(branch, ctx, scope, carry, span)
        out = sequence_output(outputs, after)
        out.metadata.update(result=result, branch=which)
        return out


# --- Router ---------------------------------------------------------------------------------


class Router(_Decides):
    """Runs the choice(s) `selector` names, in the order named, as one sequence. `selector`: a
    CEL string over the Condition variables plus `step_choices` (the choice names) giving a name
    or a list of names; or a callable(step_input) or callable(step_input, choices) (a second
    parameter without a default, or named `choices` / `step_choices`, gets the list of choices),
    sync or async, giving a name, a choice (or the function or agent it wraps) or a list.
    Naming nothing, or anything that is not a choice, fails the Router."""

    step_type = "router"

    def __init__(
        self,
        selector: str | Callable[..., Any],
        choices: Any,
        *,
        name: str = "router",
        cel_errors: str | None = None,
        description: str | None = None,
    ):
        self.name = check_name(name, "Router")
        where = f"Router {name!r}"
        self.choices = as_nodes(choices, "choices", where)
        names = [c.name for c in self.choices]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValidationError("choices", f"{where}: two choices named {duplicates[0]!r}")
        self.selector = _rule(selector, "selector", ROUTER_VARIABLES, where, bools=False)
        self._pass_choices = not isinstance(self.selector, CelExpression) and _takes_two(selector)
        self.cel_errors = check_cel_errors(cel_errors, where)
        self.description = description
        if isinstance(self.selector, CelExpression) and not self.selector.names:
            try:  # a constant selector can be checked now rather than on every run
                self._resolve(self.selector.evaluate({}))
            except (DecisionError, CelEvaluationError) as exc:
                raise ValidationError("selector", f"{where}: {exc}") from None

    async def _run(self, ctx: RunContext, scope: Scope, carry: Carry, span: Span) -> StepOutput:
        step_input = make_input(ctx, scope, carry)
        names = [c.name for c in self.choices]

        def variables() -> dict[str, Any]:
            return {**step_variables(step_input), "step_choices": names}

        args = (step_input, list(self.choices)) if self._pass_choices else (step_input,)
        try:
            picked = await self._decide(
                ctx, span, "selector", self.selector, variables, args, "choice"
            )
            if picked is _FALSE:
                return StepOutput(
                    content=carry.content,
                    media=list(carry.media),
                    skipped=True,
                    metadata={"selected": []},
                )
            chosen = self._resolve(picked)
        except DecisionError as exc:
            return _failed(str(exc), selected=[])
        outputs, after = await run_sequence(chosen, ctx, scope, carry, span)
        out = sequence_output(outputs, after)
        out.metadata["selected"] = [c.name for c in chosen]
        return out

    def _resolve(self, picked: Any) -> list[Node]:
        items = list(picked) if isinstance(picked, list | tuple) else [picked]
        if not items:
            raise DecisionError("selector: named no choice")
        chosen = []
        for item in items:
            match = next((c for c in self.choices if _is_choice(c, item)), None)
            if match is None:
                names = ", ".join(c.name for c in self.choices)
                raise DecisionError(
                    f"selector: {_brief(item)!r} names no choice (choices: {names})"
                )
            chosen.append(match)
        return chosen


def _is_choice(choice: Node, item: Any) -> bool:
    if isinstance(item, str):
        return choice.name == item
    return item is choice or (item is not None and getattr(choice, "origin", None) is item)


def _takes_two(fn: Any) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) < 2:
        return False
    # A defaulted second parameter is a closure's captured value, unless named for the choices.
    second = positional[1]
    return second.default is inspect.Parameter.empty or second.name in ("choices", "step_choices")


# --- Loop -----------------------------------------------------------------------------------


class Loop(_Decides):
    """Runs `steps` as a sequence up to `max_iterations` times, ending early when `end_condition`
    holds after an iteration, when a step returns `stop=True` (the stop ends this Loop only), or
    at a failure (the Loop then fails). `end_condition`: a CEL string over current_iteration
    (1-based), max_iterations, all_success, last_step_content and step_outputs (this iteration's
    outputs by name) giving a bool; or a callable(outputs of the iteration), sync or async.

    Every iteration starts from the Loop's own input, unless `forward_iteration_output`: then
    iteration n+1 is chained to iteration n's last output. The Loop's output is the last
    iteration's; `metadata` gives `iterations` and `ended_by` (end_condition, stop,
    max_iterations, failure)."""

    step_type = "loop"

    def __init__(
        self,
        steps: Any,
        *,
        name: str = "loop",
        max_iterations: int = 3,
        end_condition: str | Callable[[list[StepOutput]], Any] | None = None,
        forward_iteration_output: bool = False,
        cel_errors: str | None = None,
        description: str | None = None,
    ):
        self.name = check_name(name, "Loop")
        where = f"Loop {name!r}"
        self.steps = as_nodes(steps, "steps", where)
        self.max_iterations = check_number(
            "max_iterations", max_iterations, where, minimum=1, integer=True
        )
        self.end_condition = (
            None
            if end_condition is None
            else _rule(end_condition, "end_condition", LOOP_VARIABLES, where, bools=False)
        )
        self.forward_iteration_output = bool(forward_iteration_output)
        self.cel_errors = check_cel_errors(cel_errors, where)
        self.description = description

    async def _run(self, ctx: RunContext, scope: Scope, carry: Carry, span: Span) -> StepOutput:
        every: list[StepOutput] = []
        start, last = carry, carry
        ended_by, error = "max_iterations", None
        iteration = 0
        for iteration in range(1, self.max_iterations + 1):
            with ctx.tracer.span(f"{self.name}[{iteration}]", "iteration", span) as ispan:
                ispan.attributes["iteration"] = iteration
                outputs, last = await run_sequence(self.steps, ctx, scope, start, ispan)
                every.extend(outputs)
                failed = next((o for o in outputs if o.failed), None)
                if failed is not None:
                    error = f"iteration {iteration}: {failed.step_name}: {failed.error}"
                    ctx.tracer.end(ispan, "error", error)
                    ended_by = "failure"
                    break
                if any(o.stop for o in outputs):
                    ended_by = "stop"
                    break
                if self.end_condition is not None:
                    try:
                        done = await self._ended(ctx, ispan, iteration, outputs)
                    except DecisionError as exc:
                        error = f"iteration {iteration}: {exc}"
                        ctx.tracer.end(ispan, "error", error)
                        ended_by = "failure"
                        break
                    if done:
                        ended_by = "end_condition"
                        break
            if self.forward_iteration_output:
                start = last
        return StepOutput(
            content=last.content,
            media=list(last.media),
            steps=every,
            success=error is None,
            error=error,
            metadata={"iterations": iteration, "ended_by": ended_by},
        )

    async def _ended(self, ctx: RunContext, span: Span, iteration: int, outputs: list[StepOutput]):
        def variables() -> dict[str, Any]:
            contributed = [o for o in outputs if not o.skipped]
            return {
                "current_iteration": iteration,
                "max_iterations": self.max_iterations,
                "all_success": all(o.success for o in outputs),
                "last_step_content": _text(contributed[-1].content if contributed else None),
                "step_outputs": {o.step_name: _text(o.content) for o in outputs},
            }

        done = await self._decide(
            ctx, span, "end_condition", self.end_condition, variables, (outputs,), "bool"
        )
        return done is not _FALSE and bool(done)
