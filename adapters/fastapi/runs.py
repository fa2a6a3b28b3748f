"""Run routes: `POST /agents|teams|workflows/{id}/runs` (background 202, synchronous 200, or
SSE), their polls, lists and cancels, `GET /sessions/{id}` and `GET /traces/{run_id}`, the
component lists; and the open routes (`/health`, `/info`). The AgentOS protocol's shapes
(README, "AgentOS server"); the runs themselves are executor.py's, their JSON views.py's.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import AsyncIterator
from importlib import metadata
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from leasecron.kernel import RunStatus, WorkflowRunOutput

from . import schemas
from .context import ServerContext, request_user
from .executor import END, KINDS, SINGULAR, Component, LiveRun, RunExecutor, RunRequest
from .prefer import applied, preferred_wait
from .run_cache import as_stored
from .run_request import OPENAPI_BODY, read_run_request
from .server_stamp import ENDED as PROCESS_ENDED
from .server_stamp import KEY as STAMP_KEY
from .server_stamp import process_gone
from .views import iso, live_view, run_view, session_view, trace_view

RUN_NOT_FOUND = "Run not found"
FINAL = (RunStatus.COMPLETED, RunStatus.ERROR, RunStatus.CANCELLED, RunStatus.PAUSED)
# SSE event names, as the reference's agents, teams and workflows send them.
EVENTS = {
    "agents": {
        "started": "RunStarted",
        "content": "RunContent",
        RunStatus.COMPLETED: "RunCompleted",
        RunStatus.ERROR: "RunError",
        RunStatus.CANCELLED: "RunCancelled",
        RunStatus.PAUSED: "RunPaused",
    },
    "teams": {
        "started": "TeamRunStarted",
        "content": "TeamRunContent",
        RunStatus.COMPLETED: "TeamRunCompleted",
        RunStatus.ERROR: "TeamRunError",
        RunStatus.CANCELLED: "TeamRunCancelled",
        RunStatus.PAUSED: "TeamRunPaused",
    },
    "workflows": {
        "started": "WorkflowStarted",
        RunStatus.COMPLETED: "WorkflowCompleted",
        RunStatus.ERROR: "WorkflowError",
        RunStatus.CANCELLED: "WorkflowCancelled",
        RunStatus.PAUSED: "WorkflowPaused",
    },
}


def _version() -> str:
    try:
        return metadata.version("leasecron")
    except metadata.PackageNotFoundError:
        return "0"


def open_router(ctx: ServerContext, agent_os: Any) -> APIRouter:
    """`/health` and `/info`: open without a token (readiness and discovery)."""
    router = APIRouter(tags=["health"])
    instantiated_at = time.time()
    name = getattr(agent_os, "name", "leasecron AgentOS")
    os_id = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "agentos"
    version = _version()

    @router.get("/health", response_model=schemas.Health)
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "instantiated_at": iso(instantiated_at)})

    @router.get("/info", response_model=schemas.Info)
    async def info() -> JSONResponse:
        scheduler = ctx.scheduler
        return JSONResponse(
            {
                "os_id": os_id,
                "name": name,
                "version": version,
                "agent_count": len(ctx.agents),
                "team_count": len(ctx.teams),
                "workflow_count": len(ctx.workflows),
                "auth_mode": "security_key" if ctx.token else "none",
                "scheduler": {
                    "running": scheduler is not None,
                    "replica_id": getattr(scheduler, "replica_id", None),
                },
            }
        )

    return router


def router(ctx: ServerContext) -> APIRouter:
    """The guarded routes (the app adds the token check to every one)."""
    api = APIRouter()
    for kind in KINDS:
        _component_routes(api, ctx, kind)
    _history_routes(api, ctx)
    return api


def _executor(ctx: ServerContext) -> RunExecutor:
    if ctx.runs is None:
        raise HTTPException(503, "the server is not started (its lifespan is not running)")
    return ctx.runs


def _components(ctx: ServerContext, kind: str) -> dict[str, Any]:
    return {"agents": ctx.agents, "teams": ctx.teams, "workflows": ctx.workflows}[kind]


def find_component(ctx: ServerContext, kind: str, component_id: str) -> Component:
    obj = _components(ctx, kind).get(component_id)
    if obj is None:
        raise HTTPException(404, f"{SINGULAR[kind].capitalize()} not found")
    return Component(kind, component_id, obj)


def _summary(component: Component) -> dict[str, Any]:
    return {
        "id": component.id,
        "name": component.name,
        "description": getattr(component.obj, "description", None),
    }


def _component_routes(api: APIRouter, ctx: ServerContext, kind: str) -> None:
    noun = SINGULAR[kind]
    tags = [kind]

    @api.get(
        f"/{kind}",
        response_model=list[schemas.ComponentSummary],
        responses=schemas.errors(401),
        tags=tags,
        name=f"list_{kind}",
    )
    async def list_components() -> JSONResponse:
        found = [_summary(Component(kind, key, obj)) for key, obj in _components(ctx, kind).items()]
        return JSONResponse(found)

    @api.get(
        f"/{kind}/{{component_id}}",
        response_model=schemas.ComponentSummary,
        responses=schemas.errors(401, 404),
        tags=tags,
        name=f"get_{noun}",
    )
    async def get_component(component_id: str) -> JSONResponse:
        return JSONResponse(_summary(find_component(ctx, kind, component_id)))

    @api.post(
        f"/{kind}/{{component_id}}/runs",
        response_model=schemas.Run,
        status_code=200,
        responses={
            200: {
                "description": "the finished run, or SSE events (stream=true)",
                "content": {"application/json": {}, **schemas.SSE},
            },
            202: {"model": schemas.RunAccepted, "description": "background run accepted"},
            **schemas.errors(401, 404, 415, 422, 503),
        },
        openapi_extra=OPENAPI_BODY,
        tags=tags,
        name=f"create_{noun}_run",
    )
    async def create_run(component_id: str, request: Request) -> Any:
        component = find_component(ctx, kind, component_id)
        run_request = await read_run_request(request)
        if run_request.user_id is None:
            run_request.user_id = request_user(request)
        executor = _executor(ctx)
        wait = preferred_wait(request)
        if run_request.run_id is not None:
            # A run this process knows answers from memory; one only the store holds is found
            # when the store refuses the new run's start (below), so a fresh id costs no read.
            known = _known_run(executor, component, run_request)
            if run_request.stream and known is None:
                known = await _stored_of(executor, component, run_request)
            if known is not None:
                return await _repeated(executor, known, run_request, wait)
        if run_request.stream:
            live = executor.submit(component, run_request, stream=True)
            return StreamingResponse(_events(executor, live), media_type="text/event-stream")
        live = executor.submit(component, run_request)
        ended, headers = True, None
        if not run_request.background:
            await executor.wait(live)
        elif wait is not None:
            ended, headers = await executor.settle(live, wait), applied(wait)
        else:
            ended = False
            if run_request.run_id is not None:
                await live.begun.wait()  # saved, or refused: its id is another's
        if live.refused is not None:
            return await _refused(executor, component, run_request, wait)
        return _ended(live, headers) if ended else accepted(live, headers)

    @api.get(
        f"/{kind}/{{component_id}}/runs",
        response_model=list[schemas.Run],
        responses=schemas.errors(401, 404, 422, 503),
        tags=tags,
        name=f"list_{noun}_runs",
    )
    async def list_runs(component_id: str, session_id: str = Query(...)) -> JSONResponse:
        component = find_component(ctx, kind, component_id)
        executor = _executor(ctx)
        session = await executor.store.get_session(session_id)
        stored = [r for r in (session.runs if session else []) if _belongs(r, component)]
        seen = {r.run_id for r in stored}
        views = [run_view(r) for r in stored]
        views += [
            live_view(live)
            for live in list(executor.runs.values())
            if live.session_id == session_id
            and live.component.stored_id == component.stored_id
            and live.run_id not in seen
        ]
        return JSONResponse(views)

    @api.get(
        f"/{kind}/{{component_id}}/runs/{{run_id}}",
        response_model=schemas.Run,
        responses=schemas.errors(401, 404, 422, 503),
        tags=tags,
        name=f"get_{noun}_run",
    )
    async def get_run(
        component_id: str,
        run_id: str,
        request: Request,
        session_id: str | None = Query(
            None, description="the run's session (the reference requires it; here optional)"
        ),
    ) -> JSONResponse:
        component = find_component(ctx, kind, component_id)
        executor = _executor(ctx)
        wait = preferred_wait(request)
        live = executor.runs.get(run_id)
        # Long-poll a run in flight here: answer once it ends, or at the wait. A run this
        # process does not hold is answered at once, and says no wait was applied, so the
        # client backs off instead of asking again at once.
        held = wait is not None and live is not None and _live_belongs(live, component, session_id)
        if held:
            await executor.settle(live, wait)
        answer = poll_answer(
            executor, component, run_id, session_id, await _stored_run(executor, run_id)
        )
        if answer is None:
            raise HTTPException(404, RUN_NOT_FOUND)
        if held:
            answer.headers.update(applied(wait))
        return answer

    @api.post(
        f"/{kind}/{{component_id}}/runs/{{run_id}}/cancel",
        response_model=dict[str, Any],
        responses={
            **schemas.errors(401, 404, 503),
            409: {"model": schemas.Detail, "description": "the run is not in this process"},
        },
        tags=tags,
        name=f"cancel_{noun}_run",
    )
    async def cancel_run(
        component_id: str, run_id: str, session_id: str | None = Query(None)
    ) -> JSONResponse:
        component = find_component(ctx, kind, component_id)
        executor = _executor(ctx)
        live = executor.runs.get(run_id)
        if live is not None and _live_belongs(live, component, session_id):
            await executor.cancel(run_id)
            return JSONResponse({})
        run = await _stored_run(executor, run_id)
        if run is None or not _belongs(run, component):
            raise HTTPException(404, RUN_NOT_FOUND)
        if session_id is not None and run.session_id != session_id:
            raise HTTPException(404, RUN_NOT_FOUND)
        if RunStatus(run.status) not in FINAL:
            # Stored as running, but by another process (or one that ended without saving
            # it): nothing here can stop it.
            raise HTTPException(409, "the run is not running in this server process")
        return JSONResponse({})  # already over: nothing to cancel


def accepted(live: LiveRun, headers: dict[str, str] | None = None) -> JSONResponse:
    """The 202 answer to a background run's POST."""
    return JSONResponse(
        {"run_id": live.run_id, "session_id": live.session_id, "status": "PENDING"},
        status_code=202,
        headers=headers,
    )


def _ended(live: LiveRun, headers: dict[str, str] | None = None) -> JSONResponse:
    """A run that ended while its POST waited: 200 with the run as a poll shows it (the same
    view), or 503 if the server's shutdown cancelled it before it was saved."""
    if live.output is None:
        raise HTTPException(503, "the server is shutting down; the run was cancelled")
    return JSONResponse(run_view(live.output), headers=headers)


def _known_run(
    executor: RunExecutor, component: Component, run_request: RunRequest
) -> LiveRun | WorkflowRunOutput | None:
    """The run a POST's client-chosen `run_id` names if this process has it (in flight, or in
    what it saved), so a client repeating its POST (after a lost reply, a re-delivered fire)
    gets that run instead of a second one. An id another component's run, or another
    session's, holds is a 409."""
    run_id = run_request.run_id
    assert run_id is not None
    found: LiveRun | WorkflowRunOutput | None = executor.runs.get(run_id)
    if found is None and run_id in executor.saved:
        found = executor.saved.get(run_id)
    return None if found is None else _same_run(found, component, run_request)


async def _stored_of(
    executor: RunExecutor, component: Component, run_request: RunRequest
) -> WorkflowRunOutput | None:
    """The run the store keeps under the POST's `run_id` (None: none), checked as _known_run."""
    assert run_request.run_id is not None
    found = await _stored_run(executor, run_request.run_id)
    return None if found is None else _same_run(found, component, run_request)


def _same_run(
    found: LiveRun | WorkflowRunOutput, component: Component, run_request: RunRequest
) -> LiveRun | WorkflowRunOutput:
    if isinstance(found, LiveRun):
        same = found.component.stored_id == component.stored_id
    else:
        same = _belongs(found, component)
    if not same or (
        run_request.session_id is not None and found.session_id != run_request.session_id
    ):
        raise HTTPException(409, f"run_id {run_request.run_id!r} is another run's")
    return found


async def _refused(
    executor: RunExecutor, component: Component, run_request: RunRequest, wait: float | None
) -> JSONResponse:
    """The store refused the new run's start: its id is a stored run's (one another process
    started, or this one before a restart). That run is the answer if it is this component's
    and session's; else 409. Nothing ran and nothing was saved for this request."""
    found = await _stored_of(executor, component, run_request)
    if found is None:  # gone again since (pruned): the client may simply try again
        raise HTTPException(409, f"run_id {run_request.run_id!r} is another run's")
    return await _repeated(executor, found, run_request, wait)


async def _repeated(
    executor: RunExecutor,
    found: LiveRun | WorkflowRunOutput,
    run_request: RunRequest,
    wait: float | None,
) -> JSONResponse:
    """The answer to a repeated POST: the run it names, as its poll would answer (held for
    `wait` if it is in flight here); a background request that finds it unfinished gets the
    202 it got the first time."""
    if isinstance(found, LiveRun):
        headers = None
        if wait is not None:  # held here: the preference is applied
            await executor.settle(found, wait)
            headers = applied(wait)
        if not found.done.is_set():
            if run_request.background:
                return accepted(found, headers)
            await executor.wait(found)
        return _ended(found, headers)
    # Stored (another process's, or this one's from before): answered at once, nothing held.
    if run_request.background and RunStatus(found.status) not in FINAL:
        status = RunStatus(found.status).value
        body = {"run_id": found.run_id, "session_id": found.session_id, "status": status}
        return JSONResponse(body, status_code=202)
    return JSONResponse(run_view(found))


def poll_answer(
    executor: RunExecutor,
    component: Component,
    run_id: str,
    session_id: str | None,
    run: WorkflowRunOutput | None,
) -> JSONResponse | None:
    """A poll's answer given the run as stored (None: not stored, or not yet): the stored run,
    else the run in flight here not yet saved; None for "Run not found"."""
    if run is None:
        live = executor.runs.get(run_id)
        if live is not None and _live_belongs(live, component, session_id):
            return JSONResponse(live_view(live))
        return None
    if not _belongs(run, component) or session_id not in (None, run.session_id):
        return None
    return JSONResponse(run_view(run))


async def _stored_run(executor: RunExecutor, run_id: str) -> WorkflowRunOutput | None:
    """The run as the store holds it: from what this process saved when it ran it, else read."""
    run = executor.saved.get(run_id)
    if run is not None or executor.saved.unsaved(run_id):
        return run
    run = await executor.store.get_workflow_run(run_id)
    if (
        run is not None
        and RunStatus(run.status) in (RunStatus.RUNNING, RunStatus.PENDING)
        and run_id not in executor.runs
        and process_gone(run.additional_data.get(STAMP_KEY), executor.stamp)
    ):
        run = await _end_orphan(executor, run)
    return run


async def _end_orphan(executor: RunExecutor, run: WorkflowRunOutput) -> WorkflowRunOutput:
    """Save ERROR a run whose server process ended under it (no one else ever will), and
    return it as the store now holds it. Its session keeps the state it has: the run's copy is
    the one it started with."""
    session = await executor.store.get_session(run.session_id, with_runs=False)
    ended = dataclasses.replace(
        run,
        status=RunStatus.ERROR,
        error=PROCESS_ENDED,
        ended_at=time.time(),
        session_state=session.session_state if session is not None else run.session_state,
    )
    await executor.store.save_run(ended)
    return as_stored(ended)


def _belongs(run: WorkflowRunOutput, component: Component) -> bool:
    return run.workflow_id == component.stored_id


def _live_belongs(live: LiveRun, component: Component, session_id: str | None) -> bool:
    return live.component.stored_id == component.stored_id and (
        session_id is None or live.session_id == session_id
    )


def _history_routes(api: APIRouter, ctx: ServerContext) -> None:
    @api.get(
        "/sessions/{session_id}",
        response_model=schemas.Session,
        responses=schemas.errors(401, 404, 503),
        tags=["sessions"],
    )
    async def get_session(session_id: str) -> JSONResponse:
        session = await _executor(ctx).store.get_session(session_id)
        if session is None:
            raise HTTPException(404, "Session not found")
        return JSONResponse(session_view(session))

    @api.get(
        "/traces/{run_id}",
        response_model=schemas.Trace,
        responses=schemas.errors(401, 404, 503),
        tags=["traces"],
    )
    async def get_trace(run_id: str) -> JSONResponse:
        store = _executor(ctx).store
        roots = await store.get_trace(run_id)
        if not roots and await store.get_workflow_run(run_id) is None:
            raise HTTPException(404, "Trace not found")
        return JSONResponse(trace_view(run_id, roots))


# -- SSE ---------------------------------------------------------------------------------------


def _sse(event: str, data: dict[str, Any]) -> str:
    body = json.dumps({"event": event, **data}, separators=(",", ":"), default=str)
    return f"event: {event}\ndata: {body}\n\n"


async def _events(executor: RunExecutor, live: LiveRun) -> AsyncIterator[str]:
    """The run's events as SSE: started, one per finished workflow step, the content (agents,
    teams), and the end (completed, error, cancelled). A foreground stream whose client goes
    away cancels its run; a background one (background=true) runs on."""
    kind = live.component.kind
    names = EVENTS[kind]
    ids = {"run_id": live.run_id, "session_id": live.session_id}
    assert live.events is not None
    try:
        yield _sse(names["started"], {**ids, **_start_identity(live)})
        while True:
            item = await live.events.get()
            if item is END:
                break
            tag, value = item
            if tag == "step" and kind == "workflows":
                span = value
                event = "StepError" if span.status == "error" else "StepCompleted"
                yield _sse(
                    event,
                    {
                        **ids,
                        "step_name": span.name,
                        "status": span.status,
                        "error": span.error,
                        "duration": span.duration,
                    },
                )
            elif tag == "end":
                yield _end(names, ids, value)
    finally:
        if not live.request.background and live.run_id in executor.runs:
            await executor.cancel(live.run_id)


def _start_identity(live: LiveRun) -> dict[str, Any]:
    noun = SINGULAR[live.component.kind]
    return {
        f"{noun}_id": live.component.id,
        f"{noun}_name": live.component.name,
        "created_at": int(live.created_at),
    }


def _end(names: dict[Any, str], ids: dict[str, Any], out: WorkflowRunOutput | None) -> str:
    if out is None:  # cancelled by shutdown
        return _sse(names[RunStatus.CANCELLED], {**ids, "content": "the server shut down"})
    view = run_view(out)
    status = RunStatus(out.status)
    text = _sse(names.get(status, names[RunStatus.COMPLETED]), view)
    if status is RunStatus.COMPLETED and "content" in names:
        content = {**ids, "content": view.get("content"), "content_type": view["content_type"]}
        text = _sse(names["content"], content) + text
    return text
