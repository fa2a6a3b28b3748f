"""What every route of the AgentOS app shares: the server's state (`ServerContext`), the bearer
token check, the caller's user id, and the kernel's errors as HTTP errors.

Errors keep the reference AgentOS's shapes: 401 `{"detail": "..."}` for a missing or wrong token
(never 403, never a 500), 422 `{"detail": [{"loc", "msg", "type"}]}` naming the field (FastAPI's
own shape, so a client parses one format), 404 and 409 `{"detail": "..."}`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from leasecron.kernel import (
    ScheduleExistsError,
    ScheduleManager,
    ScheduleNotFoundError,
    StoreError,
    ValidationError,
)

MISSING_TOKEN = "Authorization header required"
WRONG_TOKEN = "Invalid authentication token"


@dataclass(slots=True, eq=False)
class ServerContext:
    """The state the routes read. `store` and `manager` exist once the lifespan has opened the
    store; `agents`, `teams` and `workflows` map an id to the object serving it."""

    token: str | None
    agents: dict[str, Any] = field(default_factory=dict)
    teams: dict[str, Any] = field(default_factory=dict)
    workflows: dict[str, Any] = field(default_factory=dict)
    # Endpoints a schedule may target besides this app's own run endpoints: exact paths, or
    # prefixes ending in "*".
    allowed_endpoints: tuple[str, ...] = ()
    store: Any = None
    manager: ScheduleManager | None = None
    scheduler: Any = None
    runs: Any = None  # the RunExecutor (executor.py): runs in flight, while the lifespan runs
    started_at: float = 0.0


def check_token(ctx: ServerContext, request: Request) -> None:
    """Raise 401 unless the request carries `Authorization: Bearer <ctx.token>` (no token
    configured: every request passes). Compared in constant time."""
    if ctx.token is None:
        return
    header = request.headers.get("authorization")
    if not header:
        raise HTTPException(401, MISSING_TOKEN)
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), ctx.token.encode()
    ):
        raise HTTPException(401, WRONG_TOKEN)


def request_user(request: Request) -> str | None:
    """The user a request acts for: the `user_id` query parameter, else the `X-User-Id` header;
    None for the operator (sees every schedule). The token authenticates the caller; this only
    scopes what it sees and changes."""
    user = request.query_params.get("user_id") or request.headers.get("x-user-id")
    return user or None


def validation_detail(exc: ValidationError, where: str = "body") -> list[dict[str, Any]]:
    msg = str(exc)
    prefix = f"{exc.field}: "
    return [
        {
            "loc": [where, exc.field],
            "msg": msg[len(prefix) :] if msg.startswith(prefix) else msg,
            "type": "value_error",
        }
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Kernel errors raised by a route become their HTTP status, with the field named."""

    @app.exception_handler(ValidationError)
    async def _invalid(request: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(exc)}, status_code=422)

    @app.exception_handler(ScheduleExistsError)
    async def _exists(request: Request, exc: ScheduleExistsError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(ScheduleNotFoundError)
    async def _not_found(request: Request, exc: ScheduleNotFoundError) -> JSONResponse:
        return JSONResponse({"detail": "Schedule not found"}, status_code=404)

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> JSONResponse:
        # The store is down or refused: the caller may retry; the cause is in the server log.
        return JSONResponse(
            {"detail": f"store unavailable ({exc.operation})"},
            status_code=503,
            headers={"Retry-After": "1"},
        )
