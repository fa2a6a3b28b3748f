"""What every workflow step shares: the run context, the scope and the carry from one step to
the next, the `Node` base with the span around each step, running a sequence, and the checks
that build a step from what a user gave."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..clock import Clock
from ..errors import ValidationError
from .trace import Span, Tracer
from .types import Media, StepInput, StepOutput

CEL_ERROR_MODES = ("fail", "false")


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


def display_name(obj: Any) -> str:
    name = getattr(obj, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(obj, "__name__", None) or type(obj).__name__
