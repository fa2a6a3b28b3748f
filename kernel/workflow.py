"""Workflows: a list of steps run in memory as one traced run.

    wf = Workflow(id="blog", name="Blog post", steps=[research, Parallel(facts, quotes), ...])
    out = await wf.arun(input="topic", session_state={})   # a WorkflowRunOutput

The step types are in workflow_steps.py (Step, Steps, Parallel) and workflow_flow.py (Loop,
Router, Condition); the values they pass in workflow_types.py; CEL in cel.py; spans in trace.py.
This module owns the run: its ids, its status, its cancellation, and the hand-off to a store.

Persistence seam. `db` is optional (None: nothing is persisted, the run output still carries its
whole trace). When `db` has them, the engine calls

    await db.get_session(session_id, with_runs=False)  # a run continuing a session without
                                # passing session_state: the stored session's state, if any
    await db.save_run(run)      # a WorkflowRunOutput: once RUNNING at the start, once at the end
    await db.save_spans(spans)  # list[Span] of the run (trace id = run id), once at the end

SqliteStore and PostgresStore implement them (the `WorkflowStore` part of kernel/store.py). Saves
must copy what they keep (the output object goes on changing while the run lasts). A store that
fails is logged and noted in `run.persist_error`; the run's own result stands. If the stored state
cannot be read, the run starts from an empty state and is not saved, so that it cannot overwrite
the state it did not see. `recorder`, any object with `record(span)`, gets every span as it ends
(an exporter, a live view).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

from .clock import Clock, SystemClock
from .errors import ValidationError
from .trace import SpanRecorder, Tracer
from .workflow_flow import Condition, Loop, Router
from .workflow_steps import (
    Carry,
    Parallel,
    RunContext,
    Scope,
    Step,
    Steps,
    as_nodes,
    check_cel_errors,
    run_sequence,
)
from .workflow_types import Media, RunStatus, StepInput, StepOutput, WorkflowRunOutput

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
        self._running: dict[str, asyncio.Task] = {}

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
        propagates."""
        run_id = run_id or self.new_id()
        if run_id in self._running:
            raise ValidationError("run_id", f"{run_id!r} is already running")
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
        await self._save(db, out, spans=False)
        # The steps run in a task of their own, so cancel(run_id) can stop them without
        # cancelling the caller, and the caller's own cancellation still reaches them.
        task = asyncio.create_task(self._execute(ctx, out, media or []))
        self._running[run_id] = task
        try:
            await task
        except asyncio.CancelledError:
            out.status, out.error, out.ended_at = RunStatus.CANCELLED, "cancelled", clock.now()
            await self._save(db, out, spans=True)
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            return out
        finally:
            self._running.pop(run_id, None)
        await self._save(db, out, spans=True)
        return out

    def cancel(self, run_id: str) -> bool:
        """Cancel a run in progress: its running steps are cancelled, their spans close as
        `cancelled`, and its `arun` returns a CANCELLED output. False if no such run is running."""
        task = self._running.get(run_id)
        if task is None or task.done():
            return False
        task.cancel()
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

    async def _save(self, db: Any, out: WorkflowRunOutput, *, spans: bool) -> None:
        if db is None:
            return
        try:
            save_run = getattr(db, "save_run", None)
            if save_run is not None:
                await save_run(out)
            save_spans = getattr(db, "save_spans", None)
            if spans and save_spans is not None:
                await save_spans(list(out.spans))
        except Exception as exc:  # the run happened; a store that refuses it must not undo it
            log.warning("workflow %s run %s not saved: %s", self.id, out.run_id, exc)
            out.persist_error = f"{type(exc).__name__}: {exc}"

    def __repr__(self) -> str:
        return f"Workflow({self.id!r}, steps={self.steps!r})"
