"""The optional part of a store that keeps workflow runs, their sessions and traces: what
`Workflow(db=store)` calls. The lease core's `Store` (kernel/store.py) never mentions it."""

from __future__ import annotations

from typing import Protocol

from .sessions import TraceNode, WorkflowSession
from .trace import Span
from .types import WorkflowRunOutput


class WorkflowStore(Protocol):
    """Optional: workflow runs, their sessions and traces (sessions.py). The engine calls
    `save_run` as a run starts (RUNNING) and as it ends, `save_spans` once at the end, and
    `get_session(id, with_runs=False)` before a run that continues a session without passing
    its own session_state; the reads serve whoever wants the history (a run endpoint's poll, a
    UI, a test)."""

    async def save_run(
        self, run: WorkflowRunOutput, *, create: bool = False, summary: bool = False
    ) -> None:
        """Upsert the run (keyed by run_id) and its session (keyed by session_id), atomically.
        The session takes the run's session_state only once the run has ended (or paused).
        `create=True` (the save as a run starts): insert only; a run_id already stored raises
        ValidationError("run_id") and nothing is written. `summary=True` (the engine's second
        try when the save at a run's end failed): a state JSON cannot hold is left out of the
        session instead of failing the save. Text and JSON are cleaned alike on every store
        (NUL and lone surrogates to U+FFFD, non-finite floats to strings: sessions.py)."""

    async def save_spans(self, spans: list[Span]) -> None:
        """Upsert spans, keyed by (trace_id, span_id); trace id = run id."""

    async def save_end(self, run: WorkflowRunOutput, spans: list[Span]) -> None:
        """The save at a run's end, atomically: `save_run(run)` and `save_spans(spans)` in one
        transaction (all or nothing). Optional: the engine uses it when the store has it, and
        falls back to the two calls apart when it fails."""

    async def get_workflow_run(self, run_id: str) -> WorkflowRunOutput | None:
        """The run as last saved, without spans; None if unknown."""

    async def get_session(
        self, session_id: str, *, with_runs: bool = True, limit: int | None = None
    ) -> WorkflowSession | None:
        """The session with its runs in the order they started (no runs if with_runs=False; the
        newest `limit` only, still in start order, given a limit); None if unknown."""

    async def get_trace(self, run_id: str) -> list[TraceNode]:
        """The run's spans as a tree: the roots, each node with its children, every list in
        start order; [] if the run has none."""
