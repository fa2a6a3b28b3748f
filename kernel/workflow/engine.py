"""Workflows: a list of steps run in memory as one traced run.

    wf = Workflow(id="blog", name="Blog post", steps=[research, Parallel(facts, quotes), ...])
    out = await wf.arun(input="topic", session_state={})   # a WorkflowRunOutput

The step types are in steps.py (Step, Steps, Parallel) and flow.py (Loop, Router,
Condition); the values they pass in types.py; CEL in cel.py; spans in trace.py.
This module owns the run: its ids, its status, its cancellation, and the hand-off to a store.

Persistence seam. `db` is optional (None: nothing is persisted, the run output still carries its
whole trace). When `db` has them, the engine calls

    await db.get_session(session_id, with_runs=False)  # a run continuing a session without
                                # passing session_state: the stored session's state, if any
    await db.save_run(run, create=True)  # a WorkflowRunOutput, RUNNING, as the run starts: a
                                # run id the store already keeps is refused (ValidationError on
                                # run_id), and arun raises it before any step runs
    await db.save_run(run)      # as the run ends; if that fails, once more with a summary of the
                                # run (summary=True: no step outputs or media, the reason in
                                # its error), so the stored run never stays RUNNING
    await db.save_spans(spans)  # list[Span] of the run (trace id = run id), once at the end,
                                # whether or not the run row was saved
    await db.save_end(run, spans)  # instead of the two saves at the end, when db has it: both
                                # in one transaction; if it fails, the two calls as above

(`create=` and `summary=` are passed only to a save_run that takes them.) SqliteStore and
PostgresStore implement them (the `WorkflowStore` protocol of store.py). Saves must copy what
they keep (the output object goes on changing while the run lasts). Every save runs to its end
even when the caller is cancelled meanwhile (the cancellation is raised after it), so a
cancelled caller never leaves a RUNNING row, or no row, behind. A store that fails is logged and
noted in `run.persist_error`; the run's own result stands. If the stored state cannot be read,
the run starts from an empty state and is not saved, so that it cannot overwrite the state it
did not see. `recorder`, any object with `record(span)`, gets every span as it ends (an
exporter, a live view).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..clock import Clock, SystemClock
from ..errors import ValidationError
from .calls import accepted_kwargs
from .flow import Condition, Loop, Router
from .nodes import Carry, RunContext, Scope, check_cel_errors, run_sequence
from .steps import Parallel, Step, Steps, as_nodes
from .trace import SpanRecorder, Tracer
from .types import (
    Media,
    RunStatus,
    StepInput,
    StepOutput,
    WorkflowRunOutput,
    check_media,
)

__all__ = [
    "Condition",
    "Loop",
    "Media",
    "Parallel",
    "Router",
    "RunStatus",
    "Step",
    "StepInput",
    "StepOutput",
    "Steps",
    "Workflow",
    "WorkflowRunOutput",
]

log = logging.getLogger("leasecron")


class Workflow:
    """A named list of steps. Plain callables and agents in `steps` become `Step`s. Every CEL
    expression is compiled and checked here (through the steps' constructors), so a bad one is a
    `ValidationError` naming its field before anything runs.

    `clock` times the run and its waits (backoff, timeouts): a `SimClock` makes them virtual.
    `cel_errors`: "fail" (a CEL evaluation error fails its step) or "false" (it counts as false);
    a step's own `cel_errors` overrides it. `new_id` makes run and session ids reproducible."""

    def __init__(
        self,
        *,
        id: str,
        steps: Any,
        name: str | None = None,
        description: str | None = None,
        db: Any = None,
        recorder: SpanRecorder | None = None,
        clock: Clock | None = None,
        cel_errors: str = "fail",
        new_id: Callable[[], str] | None = None,
    ):
        if not isinstance(id, str) or not id.strip():
            raise ValidationError("id", f"a workflow needs a non-empty id, got {id!r}")
        self.id = id
        self.name = name or id
        where = f"Workflow {id!r}"
        self.steps = as_nodes(steps, "steps", where)
        self.description = description
        self.db = db
        self.recorder = recorder
        self.clock = clock or SystemClock()
        self.cel_errors = check_cel_errors(cel_errors, where) or "fail"
        self.new_id = new_id or (lambda: uuid.uuid4().hex)
        self._running: dict[str, _Handle] = {}

    async def arun(
        self,
        input: Any = None,
        *,
        session_id: str | None = None,
        additional_data: dict[str, Any] | None = None,
        session_state: dict[str, Any] | None = None,
        media: list[Media] | None = None,
        run_id: str | None = None,
        user_id: str | None = None,
    ) -> WorkflowRunOutput:
        """Run the workflow once. `session_state` is used and changed in place; when None, the
        state `db` keeps for `session_id` (a new dict if none). `media` goes to the first step;
        `user_id` is recorded with the run and its session. Returns the run's output, COMPLETED
        or ERROR; CANCELLED when `cancel(run_id)` stopped it. If the task awaiting `arun` is
        itself cancelled, the run ends CANCELLED (and is saved) and the cancellation
        propagates. A `run_id` already running here, or already stored in `db`, is a
        ValidationError naming run_id (nothing runs, nothing is written)."""
        run_id = run_id or self.new_id()
        if run_id in self._running:
            raise ValidationError("run_id", f"{run_id!r} is already running")
        media = check_media(media, "arun media")
        # Registered before anything is awaited, so cancel(run_id) reaches a run still starting.
        handle = _Handle()
        self._running[run_id] = handle
        try:
            return await self._run(
                handle, run_id, input, session_id, additional_data, session_state, media, user_id
            )
        finally:
            self._running.pop(run_id, None)

    async def _run(
        self,
        handle: _Handle,
        run_id: str,
        input: Any,
        session_id: str | None,
        additional_data: dict[str, Any] | None,
        session_state: dict[str, Any] | None,
        media: list[Media],
        user_id: str | None,
    ) -> WorkflowRunOutput:
        clock = self.clock
        db, unread = self.db, None
        if session_state is None and session_id is not None:
            session_state, unread = await self._stored_state(session_id)
            if unread is not None:
                db = None
        tracer = Tracer(run_id, clock, self.recorder)
        out = WorkflowRunOutput(
            run_id=run_id,
            workflow_id=self.id,
            workflow_name=self.name,
            session_id=session_id or self.new_id(),
            user_id=user_id,
            status=RunStatus.RUNNING,
            input=input,
            session_state=session_state if session_state is not None else {},
            additional_data=additional_data if additional_data is not None else {},
            started_at=clock.now(),
            spans=tracer.spans,
            persist_error=unread,
        )
        ctx = RunContext(
            workflow_id=self.id,
            run_id=run_id,
            session_id=out.session_id,
            input=input,
            additional_data=out.additional_data,
            clock=clock,
            tracer=tracer,
            cel_errors=self.cel_errors,
        )
        # The start save runs to its end even if the caller is cancelled meanwhile: cut short,
        # it could leave a RUNNING row behind, or no row for a run that did start.
        start, interrupted = await to_the_end(self._save_start(db, out))
        refused = start.result()
        if refused is not None:  # the run id is another run's: nothing of this one is written
            if interrupted is not None:
                raise interrupted
            raise refused
        if interrupted is not None or handle.cancelled:
            return await self._cancelled_at_start(db, out, tracer, interrupted)
        # The steps run in a task of their own, so cancel(run_id) can stop them without
        # cancelling the caller, and the caller's own cancellation still reaches them.
        task = asyncio.create_task(self._execute(ctx, out, media))
        handle.task = task
        try:
            await task
        except asyncio.CancelledError:
            out.status, out.error, out.ended_at = RunStatus.CANCELLED, "cancelled", clock.now()
            await self._save_end(db, out)
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            return out
        await self._save_end(db, out)
        return out

    async def _cancelled_at_start(
        self,
        db: Any,
        out: WorkflowRunOutput,
        tracer: Tracer,
        interrupted: asyncio.CancelledError | None,
    ) -> WorkflowRunOutput:
        """The run was cancelled (by cancel(run_id) or its caller) before its steps started: it
        ends CANCELLED, with its workflow span, and is saved as such."""
        with tracer.span(self.name, "workflow", None, workflow_id=self.id) as span:
            span.attributes["session_id"] = out.session_id
            tracer.end(span, "cancelled", "cancelled")
        out.status, out.error, out.ended_at = RunStatus.CANCELLED, "cancelled", self.clock.now()
        await self._save_end(db, out)
        if interrupted is not None:
            raise interrupted
        return out

    def cancel(self, run_id: str) -> bool:
        """Cancel a run in progress: its running steps are cancelled, their spans close as
        `cancelled`, and its `arun` returns a CANCELLED output. A run still starting (reading
        its session, saving its start) ends CANCELLED before its first step. False if no such
        run is running."""
        handle = self._running.get(run_id)
        if handle is None:
            return False
        if handle.task is None:
            handle.cancelled = True
            return True
        if handle.task.done():
            return False
        handle.task.cancel()
        return True

    @property
    def running(self) -> list[str]:
        """Ids of the runs in progress."""
        return list(self._running)

    async def _execute(self, ctx: RunContext, out: WorkflowRunOutput, media: list[Media]):
        scope = Scope(out.session_state)
        tracer = ctx.tracer
        with tracer.span(self.name, "workflow", None, workflow_id=self.id) as span:
            span.attributes["session_id"] = ctx.session_id
            try:
                outputs, last = await run_sequence(
                    self.steps, ctx, scope, Carry(None, tuple(media)), span, out.step_outputs
                )
            except Exception as exc:  # a fault of the engine: the run ends ERROR, not lost
                log.exception("workflow %s run %s failed", self.id, ctx.run_id)
                out.status, out.error = RunStatus.ERROR, f"{type(exc).__name__}: {exc}"
                out.ended_at = ctx.clock.now()
                tracer.end(span, "error", out.error)
                return
            out.content, out.media = last.content, list(last.media)
            failed = next((o for o in outputs if o.failed), None)
            if failed is None:
                out.status = RunStatus.COMPLETED
            else:
                out.status, out.error = RunStatus.ERROR, f"{failed.step_name}: {failed.error}"
                tracer.end(span, "error", out.error)
            out.ended_at = ctx.clock.now()

    async def _stored_state(self, session_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """(the state `db` keeps for the session, or None; why it could not be read, or None)."""
        get_session = getattr(self.db, "get_session", None)
        if get_session is None:
            return None, None
        try:
            session = await get_session(session_id, with_runs=False)
        except Exception as exc:  # the run goes ahead; only its saves are given up
            log.warning("workflow %s session %s not read: %s", self.id, session_id, exc)
            return None, f"session state not read, run not saved: {type(exc).__name__}: {exc}"
        return (None if session is None else session.session_state), None

    async def _save_start(self, db: Any, out: WorkflowRunOutput) -> ValidationError | None:
        """Save the run as it starts (RUNNING), as a new run: a store that keeps this run id
        for another run refuses it, and the refusal is returned. Any other failure is noted in
        `persist_error` and the run goes ahead."""
        save_run = getattr(db, "save_run", None)
        if save_run is None:
            return None
        try:
            await save_run(out, **_supported(save_run, create=True))
        except ValidationError as exc:
            if exc.field == "run_id":
                return exc
            self._not_saved(out, exc)
        except Exception as exc:  # the run goes ahead; a store that refuses it must not stop it
            self._not_saved(out, exc)
        return None

    async def _save_end(self, db: Any, out: WorkflowRunOutput) -> None:
        """Save the run as it ends, and its spans, to the end even if the caller is cancelled
        meanwhile (the cancellation is raised once the save is done)."""
        _, interrupted = await to_the_end(self._save_ended(db, out))
        if interrupted is not None:
            raise interrupted

    async def _save_ended(self, db: Any, out: WorkflowRunOutput) -> None:
        """The run row and the spans are saved apart: one failing does not cost the other. A run
        row that cannot be saved whole is saved again as a summary (status, times, input,
        content, state, and an error saying why; no step outputs or media), so the store never
        keeps a finished run as RUNNING for want of one odd value."""
        if db is None:
            return
        save_end = getattr(db, "save_end", None)
        if save_end is not None:  # one transaction for the row and the spans, when it works
            try:
                await save_end(out, list(out.spans))
            except Exception as exc:
                log.warning("workflow %s run %s end save failed: %s", self.id, out.run_id, exc)
            else:
                return
        problems = []
        save_run = getattr(db, "save_run", None)
        if save_run is not None:
            try:
                await save_run(out)
            except Exception as exc:
                failed = f"{type(exc).__name__}: {exc}"
                log.warning("workflow %s run %s not saved whole: %s", self.id, out.run_id, failed)
                try:
                    await save_run(run_summary(out, failed), **_supported(save_run, summary=True))
                except Exception as again:
                    log.warning("workflow %s run %s not saved: %s", self.id, out.run_id, again)
                    problems.append(
                        f"{failed}; the summary row failed too: {type(again).__name__}: {again}"
                    )
                else:
                    problems.append(f"{failed} (a summary row was saved instead)")
        save_spans = getattr(db, "save_spans", None)
        if save_spans is not None:
            try:
                await save_spans(list(out.spans))
            except Exception as exc:
                log.warning("workflow %s run %s spans not saved: %s", self.id, out.run_id, exc)
                problems.append(f"spans not saved: {type(exc).__name__}: {exc}")
        if problems:
            out.persist_error = "; ".join(problems)

    def _not_saved(self, out: WorkflowRunOutput, exc: Exception) -> None:
        log.warning("workflow %s run %s not saved: %s", self.id, out.run_id, exc)
        out.persist_error = f"{type(exc).__name__}: {exc}"

    def __repr__(self) -> str:
        return f"Workflow({self.id!r}, steps={self.steps!r})"


@dataclass(slots=True, eq=False)
class _Handle:
    """A run in `Workflow._running`: the task of its steps once they start; `cancelled` when
    cancel(run_id) came before they did."""

    task: asyncio.Task | None = None
    cancelled: bool = False


async def to_the_end(work: Any) -> tuple[asyncio.Future, asyncio.CancelledError | None]:
    """Await `work` to its end even if the caller is cancelled meanwhile: a save cut short
    would leave a RUNNING row, or none. Returns the finished task and the caller's cancellation
    if one came, for the caller to raise once the run's record is straight."""
    task = asyncio.ensure_future(work)
    interrupted = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as exc:
            interrupted = exc
    return task, interrupted


def run_summary(out: WorkflowRunOutput, failed: str) -> WorkflowRunOutput:
    """What is saved of a run whose full save failed (`failed` says why): its status, times,
    input, content and state (each kept as text by the store if JSON cannot hold it; the
    session keeps its own state if the run's cannot be stored), and an error saying why the
    step outputs and media are missing."""
    why = f"run saved without its step outputs and media: the full save failed: {failed}"
    return replace(
        out,
        media=[],
        step_outputs=[],
        spans=[],
        error=f"{out.error} ({why})" if out.error else why,
    )


def _supported(fn: Any, **options: Any) -> dict[str, Any]:
    """The keyword options `fn` accepts: a store of its own may take a plain save_run(run)."""
    return {name: options[name] for name in accepted_kwargs(fn, tuple(options))}
