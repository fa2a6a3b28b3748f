"""What a valid schedule is: every caller-settable field checked, with errors naming the field,
the value and the rule. Used by the manager (and so by the CLI, the REST adapter and agent tools).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from .cron import CronExpr, load_timezone
from .errors import ValidationError
from .model import IF_EXISTS, MISFIRE_POLICIES, OVERLAP_POLICIES

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/-]{0,199}$")

# Bounds that keep every slot a time Python (and every store) can represent and print: an
# interval of 1e12 s was once accepted, and its first slot (year 33715) broke `leasecron list` for
# the whole file.
MAX_EPOCH = 32_503_680_000.0  # 3000-01-01T00:00:00Z: the latest run_at / start_at
MAX_INTERVAL = 100 * 365.25 * 86_400  # a century
MAX_DURATION = MAX_INTERVAL  # timeouts, delays, windows: a later time must stay representable
MAX_COUNT = 2**31 - 1  # max_retries, max_catchup: Postgres INTEGER columns; SQLite takes 2**63
MAX_PAYLOAD_BYTES = 1 << 20  # the manager's default max_payload_bytes: 1 MiB of JSON
MAX_PAYLOAD_DEPTH = 100  # nesting levels; deeper JSON exhausts decoders' stacks (Python's too)

# Fields whose change moves the slot series: an update recomputes next_run_at from now.
TIMING_FIELDS = ("cron_expr", "interval_seconds", "run_at", "start_at", "timezone")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(
    field: str,
    value: Any,
    *,
    minimum: float,
    maximum: float | None = None,
    integer: bool = False,
    allow_none: bool = False,
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
    if maximum is not None and value > maximum:
        shown = f"{maximum:d}" if integer else f"{maximum:g}"  # 2147483647, not 2.14748e+09
        raise ValidationError(field, f"{value!r} must be <= {shown}")
    return int(value) if integer else float(value)


def _epoch(field: str, value: Any) -> float | None:
    """An instant (run_at, start_at): epoch seconds from 1970 up to MAX_EPOCH."""
    instant: float | None = _number(field, value, minimum=0, allow_none=True)
    if instant is not None and instant >= MAX_EPOCH:
        raise ValidationError(field, f"{instant!r} must be before {_iso(MAX_EPOCH)}")
    return instant


def validate_payload(payload: Any, max_bytes: int = MAX_PAYLOAD_BYTES) -> None:
    """A JSON object that every store and target can take: finite numbers only (NaN would go
    out as invalid JSON), at most MAX_PAYLOAD_DEPTH levels deep, at most `max_bytes` encoded."""
    if not isinstance(payload, dict):
        raise ValidationError("payload", f"{type(payload).__name__} must be a JSON object")
    depth_of: list[tuple[Any, int]] = [
        (payload, 1)
    ]  # iterative: a deep structure must not exhaust our own stack
    while depth_of:
        value, depth = depth_of.pop()
        if depth > MAX_PAYLOAD_DEPTH:
            raise ValidationError("payload", f"nested more than {MAX_PAYLOAD_DEPTH} levels deep")
        children = value.values() if isinstance(value, dict) else value
        depth_of.extend((v, depth + 1) for v in children if isinstance(v, dict | list))
    try:
        text = json.dumps(payload, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:
        raise ValidationError("payload", f"must be plain JSON: {exc}") from None
    except TypeError as exc:
        raise ValidationError("payload", f"must be JSON-serialisable: {exc}") from None
    size = len(text.encode())
    if size > max_bytes:
        raise ValidationError(
            "payload", f"{size} bytes of JSON, more than max_payload_bytes={max_bytes}"
        )


def check_unicode(field: str, value: Any) -> None:
    """Every string in `value` (a payload's keys and values too) must be encodable as UTF-8: a
    lone surrogate ("\\ud800" in JSON) cannot be stored in a text column, sent as a JSON body or
    rendered in a response, so one written would break every later read or fire of the row."""
    stack = [value]
    while stack:  # iterative: a deep payload must not exhaust our stack
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValidationError(
                    field, f"{exc.object[exc.start : exc.end]!r}: not valid Unicode text"
                ) from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def validate_user_id(value: Any) -> str | None:
    """An owner: None, or 1-200 characters of text without control characters."""
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 200:
        raise ValidationError("user_id", f"{value!r} must be 1-200 characters of text or null")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value):
        raise ValidationError("user_id", f"{value!r} must not contain control characters")
    check_unicode("user_id", value)
    return value


def validate_page(limit: Any, offset: Any) -> None:
    """A page of a list: limit None (all) or a whole number >= 0, offset a whole number >= 0."""
    for field, value in (("limit", limit), ("offset", offset)):
        if value is None and field == "limit":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValidationError(field, f"{value!r} must be a whole number >= 0")


def _choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValidationError(field, f"{value!r} must be one of {', '.join(choices)}")
    return str(value)


def _check_path(endpoint: str, path: str) -> None:
    """No dot segments (`/../admin` would leave the base path: sent as /api/admin under
    base_url .../api), no backslashes (some servers read them as slashes)."""
    if "\\" in path:
        raise ValidationError("endpoint", f"{endpoint!r} must not contain a backslash")
    for segment in path.split("/"):
        if unquote(segment) in (".", ".."):
            raise ValidationError(
                "endpoint", f"{endpoint!r}: dot segments ('.', '..') are not allowed"
            )


def validate_endpoint(endpoint: Any, allowed_hosts: Iterable[str] = ()) -> str:
    """A path on the dispatcher's base URL, starting with "/", or an http(s) URL whose host (or
    host:port) is in `allowed_hosts`. Checked when a schedule is written, so a schedule that
    could only ever fail (or call somewhere it must not) is refused, not stored."""
    if not isinstance(endpoint, str) or not endpoint:
        raise ValidationError(
            "endpoint", f"{endpoint!r} must be a non-empty path like /agents/x/runs"
        )
    if any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in endpoint):
        raise ValidationError(
            "endpoint", f"{endpoint!r} must not contain white space or control characters"
        )
    if endpoint.startswith("//"):
        raise ValidationError(
            "endpoint", f"{endpoint!r}: scheme-relative URLs (//host/...) are not allowed"
        )
    if endpoint.startswith("/"):
        _check_path(endpoint, urlsplit(endpoint).path)
        return endpoint
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError as exc:
        raise ValidationError("endpoint", f"{endpoint!r} is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValidationError(
            "endpoint", f"{endpoint!r} must be a path starting with '/' or an http(s) URL"
        )
    allowed = {h.lower() for h in allowed_hosts}
    host = parts.hostname.lower()
    if host not in allowed and (port is None or f"{host}:{port}" not in allowed):
        raise ValidationError(
            "endpoint",
            f"{endpoint!r}: host {parts.netloc.rpartition('@')[2]!r} is not an allowed host"
            " (allowed_hosts)",
        )
    _check_path(endpoint, parts.path)
    return endpoint


def validate_fields(
    fields: dict[str, Any],
    *,
    allowed_hosts: Iterable[str] = (),
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
) -> dict[str, Any]:
    """Check and normalise the caller fields present in `fields` (a create or an update)."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        check_unicode("cron" if key == "cron_expr" else key, value)
        if key == "name":
            if not isinstance(value, str) or not _NAME.match(value):
                raise ValidationError(
                    "name", f"{value!r} must be 1-200 characters of letters, digits, space ._:/-"
                )
        elif key == "description":
            if value is not None and not isinstance(value, str):
                raise ValidationError("description", f"{value!r} must be text")
            if value is not None and "\x00" in value:  # Postgres text cannot hold it
                raise ValidationError("description", "must not contain a NUL character")
        elif key == "user_id":
            value = validate_user_id(value)
        elif key == "method":
            value = _choice("method", str(value).upper(), METHODS)
        elif key == "endpoint":
            value = validate_endpoint(value, allowed_hosts)
        elif key == "payload":
            if value is not None:
                validate_payload(value, max_payload_bytes)
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
            value = _number(key, value, minimum=0.001, maximum=MAX_INTERVAL, allow_none=True)
        elif key in ("run_at", "start_at"):
            value = _epoch(key, value)
        elif key == "timeout_seconds":
            value = _number(key, value, minimum=0.001, maximum=MAX_DURATION)
        elif key in ("max_retries", "max_catchup"):
            minimum = 0 if key == "max_retries" else 1
            value = _number(key, value, minimum=minimum, maximum=MAX_COUNT, integer=True)
        elif key in (
            "retry_delay_seconds",
            "misfire_grace_seconds",
            "jitter_seconds",
            "catchup_window_seconds",
        ):
            value = _number(key, value, minimum=0, maximum=MAX_DURATION)
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
        raise ValidationError("run_at", f"{_iso(run_at)} is in the past (now {_iso(now)})")
    if spec.get("start_at") is not None and spec.get("interval_seconds") is None:
        raise ValidationError("start_at", "only applies to interval_seconds schedules")
