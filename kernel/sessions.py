"""Workflow runs and their traces as the SQL stores keep them, shared by SqliteStore and
PostgresStore: the values the read-back methods return (`WorkflowSession`, `TraceNode`, and the
engine's own `WorkflowRunOutput` and `Span`), and the mapping of a run and its spans to row
parameters and back. No SQL and no I/O here.

Tables (names follow the store's prefix, default `agno_`):
  sessions  one row per session: its type, workflow (or agent), user and current session_state
  runs      one row per run (`{prefix}workflow_runs`): found by run id in one primary-key lookup,
            a session's runs by one index range
  traces    one row per span; trace id = run id, so a run's spans are one key range

Everything a run carried is stored as JSON and comes back as JSON gives it back: a tuple as a list,
an object the encoder does not know as its `str()`, dict keys as strings. Media keep their bytes
(base64 in the row). Each store passes `load`, its way of decoding a JSON column: SQLite keeps
text, while psycopg hands Postgres JSONB back already decoded.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .trace import Span
from .workflow_types import Media, RunStatus, StepOutput, WorkflowRunOutput

SESSION_TYPE = "workflow"

Row = Mapping[str, Any]
Load = Callable[[Any], Any]


@dataclass(slots=True, eq=False)
class WorkflowSession:
    """A session as stored: `session_state` as the last finished run left it, and its runs in the
    order they started (each a `WorkflowRunOutput` without spans: read those with `get_trace`)."""

    session_id: str
    session_type: str
    workflow_id: str | None
    agent_id: str | None
    user_id: str | None
    session_state: dict[str, Any]
    created_at: float
    updated_at: float
    runs: list[WorkflowRunOutput] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class TraceNode:
    """One span of a stored trace and the spans it parents, in start order."""

    span: Span
    children: list[TraceNode] = field(default_factory=list)

    def walk(self, depth: int = 0) -> Iterator[tuple[int, TraceNode]]:
        """This node and every node below it, depth first, with their depth below this one."""
        yield depth, self
        for child in self.children:
            yield from child.walk(depth + 1)


def span_tree(spans: Iterable[Span]) -> list[TraceNode]:
    """Spans as a forest: roots first, every list in start order. Span ids count up in start
    order within a trace, so they break ties between spans started in the same instant. A span
    whose parent is not in the trace (a partial save) is a root rather than lost."""
    nodes = {span.span_id: TraceNode(span) for span in spans}
    roots: list[TraceNode] = []
    for node in sorted(nodes.values(), key=lambda n: (n.span.start, n.span.span_id)):
        parent = nodes.get(node.span.parent_span_id or "")
        (roots if parent is None or parent is node else parent.children).append(node)
    return roots


# -- values -> row parameters ------------------------------------------------------------------


def _json(value: Any) -> str | None:
    """JSON text for a column; an object the encoder cannot take (a cycle, a key that is not a
    string, NaN, which Postgres JSONB refuses) is kept as its repr, so one odd value never costs
    the run its record."""
    if value is None:
        return None
    try:
        return json.dumps(value, separators=(",", ":"), default=str, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps(repr(value)[:65_536])


def _state_json(state: dict[str, Any]) -> str:
    """The session's state is read back into the next run, so it must be JSON as it is: a repr
    in its place would lose it. A state JSON cannot hold fails the save instead."""
    try:
        return json.dumps(state, separators=(",", ":"), default=str, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"session_state cannot be stored as JSON: {exc}") from exc


def _media(media: Media) -> dict[str, Any]:
    content = None if media.content is None else base64.b64encode(media.content).decode()
    return {
        "kind": media.kind,
        "mime_type": media.mime_type,
        "url": media.url,
        "name": media.name,
        "content_base64": content,
    }


def _step(out: StepOutput) -> dict[str, Any]:
    return {
        "step_name": out.step_name,
        "step_type": out.step_type,
        "content": out.content,
        "success": out.success,
        "error": out.error,
        "stop": out.stop,
        "skipped": out.skipped,
        "media": [_media(m) for m in out.media],
        "metadata": out.metadata,
        "started_at": out.started_at,
        "ended_at": out.ended_at,
        "steps": [_step(child) for child in out.steps],
    }


def run_ended(run: WorkflowRunOutput) -> bool:
    """Whether the run is over (or paused): only then does its session_state become the
    session's. The save at the start leaves a stored session's state alone, so a run that
    starts while another is finishing cannot put back the state that run replaced."""
    return RunStatus(run.status) not in (RunStatus.PENDING, RunStatus.RUNNING)


def session_params(run: WorkflowRunOutput) -> dict[str, Any]:
    """The session row a run writes: created with the run's start, touched at its end."""
    at = run.ended_at if run.ended_at is not None else run.started_at
    if at is None:  # a run saved before it started (PENDING) carries no time of its own
        at = time.time()
    return {
        "session_id": run.session_id,
        "session_type": SESSION_TYPE,
        "workflow_id": run.workflow_id,
        "user_id": run.user_id,
        "session_state": _state_json(run.session_state),
        "created_at": run.started_at if run.started_at is not None else at,
        "updated_at": at,
        "ended": run_ended(run),
    }


def run_params(run: WorkflowRunOutput) -> dict[str, Any]:
    """The run row. Built on the caller's thread at the moment of the call: the output object
    goes on changing while the run lasts, so this is the copy the store keeps."""
    return {
        "run_id": run.run_id,
        "session_id": run.session_id,
        "workflow_id": run.workflow_id,
        "workflow_name": run.workflow_name,
        "user_id": run.user_id,
        "status": RunStatus(run.status).value,
        "input": _json(run.input),
        "content": _json(run.content),
        "media": _json([_media(m) for m in run.media]),
        "step_outputs": _json([_step(out) for out in run.step_outputs]),
        "session_state": _json(run.session_state),
        "additional_data": _json(run.additional_data),
        "error": run.error,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
    }


def span_params(span: Span) -> dict[str, Any]:
    return {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "name": span.name,
        "kind": span.kind,
        "status": span.status,
        "started_at": span.start,
        "ended_at": span.end,
        "attributes": _json(span.attributes),
        "error": span.error,
    }


# -- rows -> values ------------------------------------------------------------------------------


def _media_from(item: Any) -> Media | None:
    if not isinstance(item, dict):
        return None
    content = item.get("content_base64")
    return Media(
        item["kind"],
        item["mime_type"],
        content=None if content is None else base64.b64decode(content),
        url=item.get("url"),
        name=item.get("name"),
    )


def _media_list(items: Any) -> list[Media]:
    found = (_media_from(item) for item in items) if isinstance(items, list) else ()
    return [m for m in found if m is not None]


def _step_from(item: dict[str, Any]) -> StepOutput:
    return StepOutput(
        content=item.get("content"),
        step_name=item.get("step_name"),
        step_type=item.get("step_type") or "step",
        success=bool(item.get("success", True)),
        error=item.get("error"),
        stop=bool(item.get("stop")),
        skipped=bool(item.get("skipped")),
        media=_media_list(item.get("media")),
        steps=[_step_from(child) for child in item.get("steps") or () if isinstance(child, dict)],
        metadata=item.get("metadata") or {},
        started_at=item.get("started_at"),
        ended_at=item.get("ended_at"),
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def run_from_row(row: Row, load: Load) -> WorkflowRunOutput:
    steps = load(row["step_outputs"])
    return WorkflowRunOutput(
        run_id=row["run_id"],
        workflow_id=row["workflow_id"],
        workflow_name=row["workflow_name"] or row["workflow_id"],
        session_id=row["session_id"],
        user_id=row["user_id"],
        status=RunStatus(row["status"]),
        input=load(row["input"]),
        content=load(row["content"]),
        media=_media_list(load(row["media"])),
        step_outputs=[_step_from(s) for s in steps if isinstance(s, dict)]
        if isinstance(steps, list)
        else [],
        session_state=_dict(load(row["session_state"])),
        additional_data=_dict(load(row["additional_data"])),
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        error=row["error"],
    )


def session_from_row(row: Row, load: Load, runs: list[WorkflowRunOutput]) -> WorkflowSession:
    return WorkflowSession(
        session_id=row["session_id"],
        session_type=row["session_type"],
        workflow_id=row["workflow_id"],
        agent_id=row["agent_id"],
        user_id=row["user_id"],
        session_state=_dict(load(row["session_state"])),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        runs=runs,
    )


def span_from_row(row: Row, load: Load) -> Span:
    return Span(
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        parent_span_id=row["parent_span_id"],
        name=row["name"],
        kind=row["kind"],
        start=row["started_at"],
        end=row["ended_at"],
        status=row["status"],
        attributes=_dict(load(row["attributes"])),
        error=row["error"],
    )
