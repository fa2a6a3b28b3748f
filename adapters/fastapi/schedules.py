"""Schedule routes: `/schedules` CRUD, enable/disable, trigger, and their runs.

Every write goes through the kernel's ScheduleManager, which validates it; this file adds what
only a server knows: which endpoints a schedule may target (targets.py), whose schedules a request
may see (a user sees only their own, and another user's is a 404, never a 403 that would reveal
it), paging, and the wire shapes (schedule_models.py). The server's token never leaves in a body.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from leasecron.kernel import Schedule, ScheduleManager, ScheduleNotFoundError, ValidationError

from .context import ServerContext, request_user, validation_detail
from .schedule_models import (
    PageMeta,
    RunOut,
    RunPage,
    ScheduleCreate,
    ScheduleOut,
    SchedulePage,
    ScheduleUpdate,
    errors,
    given,
)
from .targets import check_target

MAX_PAGE = 100
REDACTED = "[redacted]"

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Items per page")]
Page = Annotated[int, Query(ge=1, description="Page number, from 1")]
# Declared so the OpenAPI document shows them; request_user() reads them.
UserQuery = Annotated[
    str | None, Query(description="Act for this user: see and change only their schedules")
]
UserHeader = Annotated[str | None, Header(description="Same as the user_id query parameter")]


@contextlib.contextmanager
def _as_request_errors() -> Iterator[None]:
    """Kernel ValidationErrors as FastAPI's 422, under the names this API uses: the kernel calls
    cron_expr `cron`, and a bad `user_id` can only have come from the query (or X-User-Id)."""
    try:
        yield
    except ValidationError as exc:
        where = "query" if exc.field == "user_id" else "body"
        detail = validation_detail(exc, where)
        if exc.field == "cron":
            detail[0]["loc"] = [where, "cron_expr"]
        raise RequestValidationError(detail) from None


def _scrub(value: Any, token: str | None) -> Any:
    """`value` with every occurrence of the server's token replaced: a run's output or a payload
    may echo it, and a body must never carry it out."""
    if token is None:
        return value
    if isinstance(value, str):
        return value.replace(token, REDACTED)
    if isinstance(value, dict):
        return {_scrub(k, token): _scrub(v, token) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, token) for v in value]
    return value


def _meta(page: int, limit: int, total: int) -> PageMeta:
    return PageMeta(page=page, limit=limit, total_pages=-(-total // limit), total_count=total)


def router(ctx: ServerContext) -> APIRouter:
    api = APIRouter(prefix="/schedules", tags=["Schedules"])

    def manager() -> ScheduleManager:
        if ctx.manager is None:
            raise HTTPException(503, "the store is not open yet", headers={"Retry-After": "1"})
        return ctx.manager

    def schedule_json(s: Schedule) -> dict[str, Any]:
        return _scrub(ScheduleOut.of(s).model_dump(), ctx.token)

    def run_json(r: Any) -> dict[str, Any]:
        return _scrub(RunOut.of(r).model_dump(), ctx.token)

    async def visible(request: Request, schedule_id: str) -> Schedule:
        """The schedule, if the request's user may see it; else 404 as if it did not exist."""
        s = await manager().get(schedule_id)
        user = request_user(request)
        if s is None or (user is not None and s.user_id != user):
            raise ScheduleNotFoundError(schedule_id)
        return s

    @api.get("", response_model=SchedulePage, responses=errors(401, 503))
    async def list_schedules(
        request: Request,
        enabled: Annotated[bool | None, Query(description="Only enabled (or disabled)")] = None,
        q: Annotated[
            str | None, Query(max_length=200, description="Only names containing this (any case)")
        ] = None,
        limit: Limit = 20,
        page: Page = 1,
        user_id: UserQuery = None,
        x_user_id: UserHeader = None,
    ) -> dict[str, Any]:
        """Schedules by name, a page at a time; a user sees only their own. `q` keeps the names
        containing it (any case), filtered in the store's query."""
        m, user = manager(), request_user(request)
        offset = (page - 1) * limit
        with _as_request_errors():
            total = await m.count(enabled, user_id=user, name_contains=q or None)
            # Past the last page there is nothing to read (and no offset too large for SQL).
            items = (
                await m.list(
                    enabled, user_id=user, limit=limit, offset=offset, name_contains=q or None
                )
                if offset < total
                else []
            )
        return {
            "data": [schedule_json(s) for s in items],
            "meta": _meta(page, limit, total).model_dump(),
        }

    @api.post("", status_code=201, response_model=ScheduleOut, responses=errors(401, 409, 503))
    async def create_schedule(
        request: Request,
        body: ScheduleCreate,
        user_id: UserQuery = None,
        x_user_id: UserHeader = None,
    ) -> dict[str, Any]:
        """Create a schedule (409 if the name is taken), owned by the request's user."""
        fields = given(body)
        user = request_user(request)
        if user is not None:
            fields["user_id"] = user
        with _as_request_errors():
            check_target(ctx, body.endpoint, body.payload)
            s = await manager().create(**fields)
        return schedule_json(s)

    @api.get("/{schedule_id}", response_model=ScheduleOut, responses=errors(401, 404, 503))
    async def get_schedule(
        request: Request,
        schedule_id: str,
        user_id: UserQuery = None,
        x_user_id: UserHeader = None,
    ) -> dict[str, Any]:
        return schedule_json(await visible(request, schedule_id))

    @api.patch("/{schedule_id}", response_model=ScheduleOut, responses=errors(401, 404, 409, 503))
    async def update_schedule(
        request: Request,
        schedule_id: str,
        body: ScheduleUpdate,
        user_id: UserQuery = None,
        x_user_id: UserHeader = None,
    ) -> dict[str, Any]:
        """Change the fields given (a new name must be free); the owner cannot be changed."""
        current = await visible(request, schedule_id)
        changes = given(body)
        with _as_request_errors():
            if {"endpoint", "payload"} & changes.keys() or changes.get("enabled") is True:
                check_target(
                    ctx,
                    changes.get("endpoint", current.endpoint),
                    changes.get("payload", current.payload),
                )
            s = await manager().update(schedule_id, **changes)
        return schedule_json(s)

    @api.delete(
        "/{schedule_id}", status_code=204, response_class=Response, responses=errors(401, 404, 503)
    )
    async def delete_schedule(
        request: Request,
        schedule_id: str,
        user_id: UserQuery = None,
        x_user_id: UserHeader = None,
    ) -> Response:
        """Delete it; pending runs are cancelled, run history stays."""
        await visible(request, schedule_id)
        if not await manager().delete(schedule_id):
            raise ScheduleNotFoundError(schedule_id)  # deleted by someone else meanwhile
        return Response(status_code=204)

    @api.post("/{schedule_id}/enable", response_model=ScheduleOut, responses=errors(401, 404, 503))
    async def enable_schedule(
        request: Request,
        schedule_id: str,
        user_id: UserQuery = None,
        x_user_id: UserHeader = None,
    ) -> dict[str, Any]:
        """Resume at the next slot after now (slots missed while disabled are not fired)."""
        current = await visible(request, schedule_id)
        with _as_request_errors():
            check_target(ctx, current.endpoint, current.payload)
        return schedule_json(await manager().enable(schedule_id))

    @api.post("/{schedule_id}/disable", response_model=ScheduleOut, responses=errors(401, 404, 503))
    async def disable_schedule(
        request: Request,
        schedule_id: str,
        user_id: UserQuery = None,
        x_user_id: UserHeader = None,
    ) -> dict[str, Any]:
        """Stop firing; pending triggers and retries are cancelled."""
        await visible(request, schedule_id)
        return schedule_json(await manager().disable(schedule_id))

    @api.post(
        "/{schedule_id}/trigger",
        status_code=202,
        response_model=RunOut,
        responses=errors(401, 404, 409, 503),
    )
    async def trigger_schedule(
        request: Request,
        schedule_id: str,
        user_id: UserQuery = None,
        x_user_id: UserHeader = None,
    ) -> dict[str, Any]:
        """Queue a run now and return its pending row; the run itself happens later (a
        scheduler fires it), so this never waits for it. 409 if the schedule is disabled."""
        current = await visible(request, schedule_id)
        m = manager()
        with _as_request_errors():
            check_target(ctx, current.endpoint, current.payload)
        try:
            run_row_id = await m.trigger(schedule_id)
        except ValidationError as exc:
            if exc.field != "enabled":
                raise
            raise HTTPException(409, "Schedule is disabled; enable it before triggering") from None
        run = await m.get_run(run_row_id)
        if run is None:  # pruned or its schedule deleted in between: it was queued, say so
            raise ScheduleNotFoundError(schedule_id)
        return run_json(run)

    @api.get("/{schedule_id}/runs", response_model=RunPage, responses=errors(401, 404, 503))
    async def list_runs(
        request: Request,
        schedule_id: str,
        limit: Limit = 20,
        page: Page = 1,
        user_id: UserQuery = None,
        x_user_id: UserHeader = None,
    ) -> dict[str, Any]:
        """The schedule's runs, newest first, a page at a time."""
        await visible(request, schedule_id)
        m = manager()
        offset = (page - 1) * limit
        total = await m.count_runs(schedule_id)
        items = await m.runs(schedule_id, limit, offset) if offset < total else []
        return {
            "data": [run_json(r) for r in items],
            "meta": _meta(page, limit, total).model_dump(),
        }

    @api.get("/{schedule_id}/runs/{run_id}", response_model=RunOut, responses=errors(401, 404, 503))
    async def get_run(
        request: Request,
        schedule_id: str,
        run_id: str,
        user_id: UserQuery = None,
        x_user_id: UserHeader = None,
    ) -> dict[str, Any]:
        await visible(request, schedule_id)
        run = await manager().get_run(run_id)
        if run is None or run.schedule_id != schedule_id:
            raise HTTPException(404, "Schedule run not found")
        return run_json(run)

    return api
