"""A reply as the dispatcher reads it: status, headers and a body cut to size, its text and
JSON with the bearer token redacted; and the short texts an Outcome carries."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx

ERROR_CHARS = 500  # at most this much of a reply body goes into Outcome.error
OUTPUT_BYTES = 64 * 1024  # Outcome.output is cut to about this size
REDACTED = "[redacted]"
# Reply codes a retry may cure, besides 5xx; and those whose Retry-After is honoured.
RETRYABLE_CODES = frozenset({408, 429})
RETRY_AFTER_CODES = frozenset({429, 503})


def decimal_text(seconds: float | None) -> str:
    """Epoch seconds as a plain decimal string (shortest round-trip form, never an exponent)."""
    if seconds is None:
        return ""
    return format(Decimal(repr(float(seconds))), "f")


def short(text: str, limit: int = ERROR_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "…"


def small(value: Any) -> Any:
    """Keep Outcome.output small: a long string is cut, a large structure becomes cut JSON."""
    if isinstance(value, str):
        return value if len(value) <= OUTPUT_BYTES else value[:OUTPUT_BYTES]
    if isinstance(value, dict | list):
        try:
            text = json.dumps(value, default=str)
        except (TypeError, ValueError):
            return small(str(value))
        return value if len(text) <= OUTPUT_BYTES else text[:OUTPUT_BYTES]
    return value


def exc_text(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class Redactor:
    """Replaces a secret wherever it appears in a string or a JSON value's strings."""

    __slots__ = ("margin", "secret")

    def __init__(self, secret: str | None):
        self.secret = secret or None
        # A body cut at N bytes is read to N + margin, so a secret across the cut is still
        # whole when it is replaced (and the text cut after).
        self.margin = len(secret.encode()) if secret else 0

    def __call__(self, value: Any) -> Any:
        if self.secret is None:
            return value
        if isinstance(value, str):
            return value.replace(self.secret, REDACTED) if self.secret in value else value
        if isinstance(value, dict):
            return {self(k): self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        return value


class Reply:
    """A read reply: status, headers and (possibly cut) body bytes; text and JSON come out with
    the secret redacted."""

    __slots__ = ("body", "code", "headers", "reason", "redact", "response", "truncated")

    def __init__(self, response: httpx.Response, body: bytes, truncated: bool, redact: Redactor):
        self.code = response.status_code
        self.reason = response.reason_phrase
        self.headers = response.headers
        self.response = response  # its encoding is read only for text: parsing it costs
        self.body = body
        self.truncated = truncated
        self.redact = redact

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    def text(self) -> str:
        encoding = self.response.encoding or "utf-8"
        return self.redact(self.body.decode(encoding, errors="replace"))

    def json(self) -> Any:
        """The body as JSON, or None when it is empty, cut or not JSON."""
        if not self.body or self.truncated:
            return None
        try:
            return self.redact(json.loads(self.body))
        except ValueError:
            return None

    def output(self) -> Any:
        if not self.body:
            return None
        if not self.truncated and "json" in self.headers.get("content-type", "").lower():
            parsed = self.json()
            if parsed is not None:
                return small(parsed)
        return small(self.text())
