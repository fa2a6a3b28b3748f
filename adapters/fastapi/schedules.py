"""Schedule routes: `/schedules` CRUD, enable/disable, trigger, and their runs."""

from __future__ import annotations

from fastapi import APIRouter

from .context import ServerContext


def router(ctx: ServerContext) -> APIRouter:
    return APIRouter()
