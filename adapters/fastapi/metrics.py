"""`GET /metrics`: the app's scheduler counts (kernel/observe/metrics.py) in the Prometheus text
format, plus what the store says at scrape time: schedules enabled and disabled. Guarded by the
token like every data route (a Prometheus scrape job sends it with `authorization:
{credentials}`)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from leasecron.kernel.observe.metrics import CONTENT_TYPE, Metrics

from .context import ServerContext


def router(ctx: ServerContext, metrics: Metrics) -> APIRouter:
    api = APIRouter()

    @api.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {CONTENT_TYPE: {}}}, 401: {"description": "No or wrong token"}},
        summary="Scheduler metrics (Prometheus text format)",
    )
    async def get_metrics() -> PlainTextResponse:
        lines = [metrics.render().rstrip("\n")]
        if ctx.manager is not None:
            enabled = await ctx.manager.count(True)
            disabled = await ctx.manager.count(False)
            lines += [
                "# HELP leasecron_schedules Schedules in the store, by state.",
                "# TYPE leasecron_schedules gauge",
                f'leasecron_schedules{{state="enabled"}} {enabled}',
                f'leasecron_schedules{{state="disabled"}} {disabled}',
            ]
        body = "\n".join(line for line in lines if line) + "\n"
        return PlainTextResponse(body, media_type=CONTENT_TYPE)

    return api
