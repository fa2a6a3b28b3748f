"""What every route of the AgentOS app shares: the server's state (`ServerContext`), the bearer
token check, the caller's user id, and the kernel's errors as HTTP errors.

Errors keep the reference AgentOS's shapes: 401 `{"detail": "..."}` for a missing or wrong token
(never 403, never a 500), 422 `{"detail": [{"loc", "msg", "type"}]}` naming the field (FastAPI's
own shape, so a client parses one format), 404 and 409 `{"detail": "..."}`.
"""

from __future__ import annotations

import hmac
import json
import math
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from leasecron.kernel import (
    ScheduleExistsError,
    ScheduleManager,
    ScheduleNotFoundError,
    StoreError,
    ValidationError,
)

MISSING_TOKEN = "Authorization header required"
WRONG_TOKEN = "Invalid authentication token"
# FastAPI's 400 for a JSON body it cannot decode (not UTF-8): a malformed body, so a 422 here.
UNPARSABLE_BODY = "There was an error parsing the body"


class _AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a 422 echoes the input, and a lone surrogate in it (valid
    in a JSON string escape) cannot be encoded as UTF-8."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":"), allow_nan=False).encode()


# How a 422 echoes input that JSON text cannot carry: bytes that are not UTF-8, NaN, Infinity.
_ECHO = {
    bytes: lambda b: b.decode("utf-8", "replace"),
    float: lambda f: f if math.isfinite(f) else str(f),
}


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

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler answers 500 for a non-JSON body that is not UTF-8 (it decodes the
        # echoed input bytes strictly) or one with NaN; the same errors, encoded so nothing fails.
        detail = jsonable_encoder(exc.errors(), custom_encoder=_ECHO)
        return _AsciiJSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Any:
        if exc.status_code == 400 and exc.detail == UNPARSABLE_BODY:
            detail = [{"type": "json_invalid", "loc": ["body"], "msg": "not JSON text in UTF-8"}]
            return JSONResponse({"detail": detail}, status_code=422)
        return await http_exception_handler(request, exc)

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
