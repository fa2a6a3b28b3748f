"""Response models of the run routes, for the OpenAPI document only: the routes build their
answers in views.py and return them as they are. Every model allows extra keys, so the document
never promises less than a reply carries; error replies are listed once here (`ERRORS`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Detail(_Open):
    detail: str


class FieldError(_Open):
    type: str
    loc: list[str | int]
    msg: str
    input: Any = None


class ValidationDetail(_Open):
    detail: list[FieldError]


class RunAccepted(_Open):
    run_id: str
    session_id: str
    status: str


class Run(_Open):
    run_id: str
    session_id: str
    user_id: str | None = None
    status: str
    content: Any = None
    content_type: str | None = None
    created_at: int | None = None
    input: Any = None
    metadata: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    error: str | None = None


class Session(_Open):
    session_id: str
    session_type: str
    user_id: str | None = None
    session_state: dict[str, Any]
    created_at: int
    updated_at: int
    runs: list[Run]


class SpanNode(_Open):
    span_id: str
    parent_span_id: str | None = None
    name: str
    kind: str
    status: str
    start: str | None = None
    end: str | None = None
    duration: float | None = None
    attributes: dict[str, Any]
    error: str | None = None
    children: list[SpanNode]


class Trace(_Open):
    trace_id: str
    run_id: str
    spans: list[SpanNode]


class Health(_Open):
    status: str
    instantiated_at: str | None = None


class SchedulerInfo(_Open):
    running: bool
    replica_id: str | None = None


class Info(_Open):
    os_id: str
    name: str
    version: str
    agent_count: int
    team_count: int
    workflow_count: int
    auth_mode: str
    scheduler: SchedulerInfo


class ComponentSummary(_Open):
    id: str
    name: str
    description: str | None = None


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for the given error statuses."""
    described = {
        401: {"model": Detail, "description": "missing or wrong bearer token"},
        404: {"model": Detail, "description": "no such agent, team, workflow, run or session"},
        415: {"model": Detail, "description": "a body type the route does not read"},
        422: {"model": ValidationDetail, "description": "a field is missing or invalid"},
        503: {"model": Detail, "description": "the store is unavailable; retry"},
    }
    return {code: described[code] for code in codes}


SSE = {"text/event-stream": {"schema": {"type": "string"}}}
