"""What a valid schedule is: every caller-settable field checked, with errors naming the field,
the value and the rule. Used by the manager (and so by the CLI, the REST adapter and agent tools).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .cron import CronExpr, load_timezone
from .errors import ValidationError
from .model import IF_EXISTS, MISFIRE_POLICIES, OVERLAP_POLICIES

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/-]{0,199}$")
_ABSOLUTE = re.compile(r"^https?://[^/\s]+(/\S*)?$")

# Fields whose change moves the slot series: an update recomputes next_run_at from now.
TIMING_FIELDS = ("cron_expr", "interval_seconds", "run_at", "start_at", "timezone")


def _number(
    field: str, value: Any, *, minimum: float, integer: bool = False, allow_none: bool = False
) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(field, f"{value!r} must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(field, f"{value!r} must be finite")
    if integer and int(value) != value:
        raise ValidationError(field, f"{value!r} must be a whole number")
    if value < minimum:
        raise ValidationError(field, f"{value!r} must be >= {minimum:g}")
    return int(value) if integer else float(value)


def _choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValidationError(field, f"{value!r} must be one of {', '.join(choices)}")
    return value


def validate_endpoint(endpoint: Any) -> str:
    if not isinstance(endpoint, str) or not endpoint:
        raise ValidationError(
            "endpoint", f"{endpoint!r} must be a non-empty path like /agents/x/runs"
        )
    if any(c.isspace() for c in endpoint):
        raise ValidationError("endpoint", f"{endpoint!r} must not contain white space")
    if not (endpoint.startswith("/") or _ABSOLUTE.match(endpoint)):
        raise ValidationError(
            "endpoint", f"{endpoint!r} must be a path starting with '/' or an http(s) URL"
        )
    return endpoint


def validate_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Check and normalise the caller fields present in `fields` (a create or an update)."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "name":
            if not isinstance(value, str) or not _NAME.match(value):
                raise ValidationError(
                    "name", f"{value!r} must be 1-200 characters of letters, digits, space ._:/-"
                )
        elif key == "description":
            if value is not None and not isinstance(value, str):
                raise ValidationError("description", f"{value!r} must be text")
        elif key == "method":
            value = _choice("method", str(value).upper(), METHODS)
        elif key == "endpoint":
            value = validate_endpoint(value)
        elif key == "payload":
            if value is not None:
                if not isinstance(value, dict):
                    raise ValidationError(
                        "payload", f"{type(value).__name__} must be a JSON object"
                    )
                try:
                    json.dumps(value)
                except (TypeError, ValueError) as exc:
                    raise ValidationError("payload", f"must be JSON-serialisable: {exc}") from exc
        elif key == "cron_expr":
            if value is not None and not isinstance(value, str):
                raise ValidationError("cron", f"{value!r} must be a string")
            value = (value or "").strip() or None
            if value is not None:
                CronExpr.parse(value)
        elif key == "timezone":
            if not isinstance(value, str):
                raise ValidationError(
                    "timezone", f"{value!r} must be an IANA name like Europe/Paris"
                )
            load_timezone(value)
        elif key == "interval_seconds":
            value = _number(key, value, minimum=0.001, allow_none=True)
        elif key in ("run_at", "start_at"):
            value = _number(key, value, minimum=0, allow_none=True)
        elif key == "timeout_seconds":
            value = _number(key, value, minimum=0.001)
        elif key in ("max_retries", "max_catchup"):
            value = _number(key, value, minimum=0 if key == "max_retries" else 1, integer=True)
        elif key in (
            "retry_delay_seconds",
            "misfire_grace_seconds",
            "jitter_seconds",
            "catchup_window_seconds",
        ):
            value = _number(key, value, minimum=0)
        elif key == "overlap":
            value = _choice("overlap", value, OVERLAP_POLICIES)
        elif key == "misfire":
            value = _choice("misfire", value, MISFIRE_POLICIES)
        elif key == "enabled":
            if not isinstance(value, bool):
                raise ValidationError("enabled", f"{value!r} must be true or false")
        elif key == "if_exists":
            value = _choice("if_exists", value, IF_EXISTS)
        else:
            raise ValidationError(key, "unknown field")
        out[key] = value
    return out


def check_timing(spec: dict[str, Any], now: float) -> None:
    """At most one of cron / interval / run_at; a one-off must not be already long past."""
    kinds = [k for k in ("cron_expr", "interval_seconds", "run_at") if spec.get(k) is not None]
    if len(kinds) > 1:
        names = {"cron_expr": "cron", "interval_seconds": "interval_seconds", "run_at": "run_at"}
        raise ValidationError(
            names[kinds[1]], f"give only one of cron, interval_seconds, run_at (got {kinds})"
        )
    run_at = spec.get("run_at")
    if run_at is not None and run_at < now - spec.get("misfire_grace_seconds", 60.0):
        raise ValidationError("run_at", f"{run_at} is in the past (now {now:.3f})")
    if spec.get("start_at") is not None and spec.get("interval_seconds") is None:
        raise ValidationError("start_at", "only applies to interval_seconds schedules")
