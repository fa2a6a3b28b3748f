"""Runs, sessions and traces as the run routes answer them: the AgentOS wire shapes
(README, "AgentOS server") built from the kernel's stored values. Plain dicts, no I/O.

A run object carries `run_id, session_id, user_id, status, content_type, created_at, input,
metadata, metrics` and, by kind, `agent_id/agent_name`, `team_id/team_name` or
`workflow_id/workflow_name` with `step_results`. `content` is left out while a run is PENDING,
RUNNING or PAUSED (as in the reference); an ERROR run's content says why ("Background execution
failed: ..." for a background run, as the reference words it), a CANCELLED one's "Run <id> was
cancelled". `error` is an addition of ours: the reason, unworded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from leasecron.kernel import RunStatus, StepOutput, TraceNode, WorkflowRunOutput, WorkflowSession

from .executor import SINGULAR, LiveRun, parse_stored_id
from .server_stamp import KEY as STAMP_KEY

NO_CONTENT = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED)


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def content_type(content: Any) -> str:
    return "str" if content is None else type(content).__name__


def _step(out: StepOutput) -> dict[str, Any]:
    return {
        "step_name": out.step_name,
        "step_type": out.step_type,
        "content": out.content,
        "success": out.success,
        "error": out.error,
        "skipped": out.skipped,
        "started_at": out.started_at,
        "ended_at": out.ended_at,
        "duration": out.duration,
        "steps": [_step(child) for child in out.steps],
    }


def _identity(kind: str, component_id: str, name: str | None) -> dict[str, Any]:
    noun = SINGULAR[kind]
    return {f"{noun}_id": component_id, f"{noun}_name": name or component_id}


def run_view(run: WorkflowRunOutput) -> dict[str, Any]:
    """A stored (or just finished) run as the run routes return it."""
    kind, component_id = parse_stored_id(run.workflow_id)
    status = RunStatus(run.status)
    data = dict(run.additional_data)
    metadata = data.pop("metadata", None)
    background = bool(data.pop("background", False))
    data.pop(STAMP_KEY, None)  # which process ran it: for the server, not the client
    view: dict[str, Any] = {
        "run_id": run.run_id,
        "session_id": run.session_id,
        "user_id": run.user_id,
        **_identity(kind, component_id, run.workflow_name),
        "status": status.value,
        "content_type": content_type(run.content),
        "created_at": int(run.started_at) if run.started_at is not None else None,
        "input": run.input,
        "metadata": metadata,
        "metrics": {
            "started_at": iso(run.started_at),
            "ended_at": iso(run.ended_at),
            "duration": run.duration,
        },
        "error": run.error,
    }
    if status not in NO_CONTENT:
        view["content"] = _content(run, status, background)
    if kind == "workflows":
        if status not in NO_CONTENT:
            view["step_results"] = [_step(out) for out in run.step_outputs]
        view["additional_data"] = data
    else:
        view["session_state"] = run.session_state
    return view


def _content(run: WorkflowRunOutput, status: RunStatus, background: bool) -> Any:
    if status is RunStatus.ERROR:
        why = run.error or "the run failed"
        return f"Background execution failed: {why}" if background else f"Run failed: {why}"
    if status is RunStatus.CANCELLED:
        return f"Run {run.run_id} was cancelled"
    return run.content


def live_view(live: LiveRun) -> dict[str, Any]:
    """A run submitted but not yet in the store (its start save is still on its way)."""
    component = live.component
    return {
        "run_id": live.run_id,
        "session_id": live.session_id,
        "user_id": live.request.user_id,
        **_identity(component.kind, component.id, component.name),
        "status": RunStatus.RUNNING.value if live.started else RunStatus.PENDING.value,
        "content_type": "str",
        "created_at": int(live.created_at),
        "input": live.request.message,
        "metadata": live.request.metadata,
        "metrics": {"started_at": iso(live.created_at), "ended_at": None, "duration": None},
        "error": None,
    }


def session_view(session: WorkflowSession) -> dict[str, Any]:
    kind, component_id = parse_stored_id(session.workflow_id)
    noun = SINGULAR[kind]
    return {
        "session_id": session.session_id,
        "session_type": noun,
        f"{noun}_id": component_id,
        "user_id": session.user_id,
        "session_state": session.session_state,
        "created_at": int(session.created_at),
        "updated_at": int(session.updated_at),
        "runs": [run_view(run) for run in session.runs],
    }


def span_view(node: TraceNode) -> dict[str, Any]:
    span = node.span
    return {
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "name": span.name,
        "kind": span.kind,
        "status": span.status,
        "start": iso(span.start),
        "end": iso(span.end),
        "duration": span.duration,
        "attributes": span.attributes,
        "error": span.error,
        "children": [span_view(child) for child in node.children],
    }


def trace_view(run_id: str, roots: list[TraceNode]) -> dict[str, Any]:
    return {"trace_id": run_id, "run_id": run_id, "spans": [span_view(root) for root in roots]}
