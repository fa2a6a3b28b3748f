"""What a dispatcher refuses before it sends anything: a method it does not speak, an endpoint
outside the allowed hosts, a header that would not go on the wire as given."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from ..errors import ValidationError
from ..spec import validate_endpoint as check_endpoint

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
HEADER_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 7230 token (fullmatch)


def validate_method(method: str) -> None:
    """Raise ValidationError("method", ...) unless `method` is GET, POST, PUT, PATCH or DELETE."""
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise ValidationError("method", f"{method!r} is not one of {', '.join(METHODS)}")


def validate_endpoint(endpoint: str, allowed_hosts: Iterable[str] = ()) -> None:
    """Raise ValidationError("endpoint", ...) unless `endpoint` is a path starting with "/" (no
    dot segments) or an http(s) URL whose host (or host:port) is in `allowed_hosts`: the rule the
    manager applies when a schedule is written, checked again here for rows written by others."""
    check_endpoint(endpoint, allowed_hosts)


def _control_char(text: str) -> str | None:
    """The first control character (C0, DEL or C1) in `text`, if any."""
    return next((c for c in text if unicodedata.category(c) == "Cc"), None)


def validate_headers(token: str | None, headers: dict[str, str] | None) -> None:
    """Raise ValidationError("token" | "headers", ...) unless every header would go on the wire
    as given: names RFC 7230 tokens, values and the token free of CR, LF and other control
    characters (which would let a value end its header line and start another)."""
    if token is not None:
        if not isinstance(token, str):
            raise ValidationError("token", f"must be a string, not {type(token).__name__}")
        bad = _control_char(token)
        if bad is not None:  # never echo the token itself
            raise ValidationError("token", f"must not contain control characters (found {bad!r})")
    if headers is None:
        return
    if not isinstance(headers, dict):
        raise ValidationError("headers", f"must be a dict of names to values, not {headers!r}")
    for name, value in headers.items():
        if not isinstance(name, str) or not HEADER_NAME_RE.fullmatch(name):
            raise ValidationError("headers", f"header name {name!r} is not an RFC 7230 token")
        if not isinstance(value, str):
            raise ValidationError(
                "headers", f"value of header {name!r} must be a string, not {type(value).__name__}"
            )
        bad = _control_char(value)
        if bad is not None:
            raise ValidationError(
                "headers",
                f"value of header {name!r} must not contain control characters (found {bad!r})",
            )
