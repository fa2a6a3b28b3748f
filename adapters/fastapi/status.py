"""`GET /status`: the cluster as the store shows it (kernel/observe/status.py) as JSON: replicas
seen and their leases, overdue schedules, failures in the window, history kept, fire lag,
schema version. What `leasecron status --json` prints; the dashboard's cluster view reads it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query

from leasecron.kernel.observe.status import cluster_status

from .context import ServerContext


def router(ctx: ServerContext) -> APIRouter:
    api = APIRouter()

    @api.get(
        "/status",
        summary="Cluster status: replicas, leases, overdue schedules, recent failures",
        responses={401: {"description": "No or wrong token"}},
    )
    async def get_status(
        window_minutes: float = Query(60, gt=0, le=7 * 24 * 60),
    ) -> dict[str, Any]:
        manager = ctx.manager
        if manager is None:
            raise HTTPException(503, "the store is not open yet")
        status = await cluster_status(manager, await manager.now(), window=window_minutes * 60)
        return status.as_dict()

    return api
