"""Which endpoints a schedule on this server may target.

A schedule fires with the server's own token, so a caller who may write schedules could otherwise
make the server call, as itself, something the caller may not (a confused deputy: an admin route,
another service's URL). A schedule may target only this app's run endpoints
(`/agents|teams|workflows/<served id>/runs`) or an entry of `allowed_endpoints` (an exact path, or
a prefix ending in `*`); absolute URLs are refused. A run endpoint's payload must carry the
`message` the run is started with.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from leasecron.kernel import ValidationError

from .context import ServerContext

KINDS = ("agents", "teams", "workflows")


def run_target(ctx: ServerContext, endpoint: str) -> tuple[str, str] | None:
    """(kind, id) when `endpoint` is exactly the run endpoint of something this app serves."""
    parts = endpoint.split("/")
    if len(parts) != 4 or parts[0] or parts[3] != "runs" or parts[1] not in KINDS:
        return None
    served = getattr(ctx, parts[1])
    target_id = unquote(parts[2])  # the router decodes it the same way before looking it up
    return (parts[1], target_id) if target_id in served else None


def _allowed(ctx: ServerContext, endpoint: str) -> bool:
    for entry in ctx.allowed_endpoints:
        if endpoint == entry or (entry.endswith("*") and endpoint.startswith(entry[:-1])):
            return True
    return False


def check_target(ctx: ServerContext, endpoint: Any, payload: Any) -> None:
    """Raise ValidationError("endpoint" | "payload") unless a schedule may fire at `endpoint`
    with `payload`. Values of the wrong type are left to the kernel's own checks."""
    if not isinstance(endpoint, str):
        return
    if "://" in endpoint or endpoint.startswith("//") or not endpoint.startswith("/"):
        raise ValidationError(
            "endpoint", f"{endpoint!r}: absolute URLs are not allowed; give a path of this app"
        )
    if urlsplit(endpoint).path != endpoint:  # a query or fragment names another resource
        if not _allowed(ctx, endpoint):
            raise ValidationError("endpoint", f"{endpoint!r} must not carry a query or fragment")
        return
    if run_target(ctx, endpoint) is not None:
        message = payload.get("message") if isinstance(payload, dict) else None
        if not isinstance(message, str) or not message.strip():
            raise ValidationError(
                "payload", f"a run endpoint ({endpoint}) needs a non-empty text 'message'"
            )
        return
    if not _allowed(ctx, endpoint):
        raise ValidationError(
            "endpoint",
            f"{endpoint!r} is not a run endpoint of this app (/agents|teams|workflows/<id>/runs"
            " for a served id) nor in allowed_endpoints",
        )
