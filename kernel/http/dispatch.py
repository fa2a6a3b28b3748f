"""The pluggable HTTP boundary: a Dispatcher turns one Fire into HTTP calls and one Outcome.

This module owns only that translation. It never touches the store and never decides when a
retry happens: it classifies an Outcome as `retryable` (and passes on a target's Retry-After),
and the scheduler decides the rest.

`HttpDispatcher` speaks two dialects:

* run endpoints (`POST /agents|teams|workflows/<id>/runs`): the AgentOS protocol (`agentos.py`).
  A form-encoded background run is started, `on_started(run_id, session_id)` is awaited at once,
  then `GET /<kind>/<id>/runs/<run_id>?session_id=...` is polled with backoff on the injected
  clock until the run reaches COMPLETED, ERROR, CANCELLED or PAUSED. The whole exchange is
  bounded by `fire.timeout_seconds` of that clock; at that deadline the run is cancelled on the
  AgentOS (`POST .../runs/<run_id>/cancel`), which ignores Idempotency-Key and would otherwise
  keep working beside a retry. A fire that carries a `run_id` (a re-delivery, or a retry after a
  timeout) attaches to that run by polling it, and starts a new one only if it is gone (404) or
  ended CANCELLED or ERROR.
* any other endpoint: one request (a JSON body for POST/PUT/PATCH when there is a payload),
  success on 2xx, bounded by an httpx timeout of `fire.timeout_seconds`.

The bearer token never leaves in an Outcome: it is replaced by "[redacted]" in what a target
echoes back (error text and output, nested JSON strings included).

`dispatch()` never raises except `asyncio.CancelledError`: every failure becomes an Outcome.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
from collections.abc import Iterable
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from ..clock import Clock, SystemClock
from ..errors import ValidationError
from ..model import Fire, Outcome
from .agentos import CANCEL_TIMEOUT, MAX_LONG_POLL, RUN_ENDPOINT_RE, AgentOsRuns, OnStarted
from .http11 import Http11Transport
from .reply import (
    OUTPUT_BYTES,
    RETRY_AFTER_CODES,
    RETRYABLE_CODES,
    Redactor,
    Reply,
    decimal_text,
    exc_text,
    short,
)
from .validate import validate_endpoint, validate_headers, validate_method


class Dispatcher(Protocol):
    async def dispatch(self, fire: Fire, on_started: OnStarted | None = None) -> Outcome:
        """Call the fire's endpoint and report what happened; raise only CancelledError."""

    async def aclose(self) -> None:
        """Release connections."""


class HttpDispatcher(AgentOsRuns):
    """Dispatch fires as HTTP calls on one shared, bounded httpx.AsyncClient."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        clock: Clock | None = None,
        headers: dict[str, str] | None = None,
        allowed_hosts: Iterable[str] = (),
        max_connections: int = 10,
        poll_initial: float = 0.5,
        poll_max: float = 10.0,
        poll_factor: float = 1.6,
        cancel_timeout: float = CANCEL_TIMEOUT,
        long_poll: float | None = None,
    ):
        validate_headers(token, headers)
        if max_connections < 1:
            raise ValidationError("max_connections", f"{max_connections!r} must be >= 1")
        if poll_initial < 0:
            raise ValidationError("poll_initial", f"{poll_initial!r} must be >= 0")
        if poll_max <= 0:
            raise ValidationError("poll_max", f"{poll_max!r} must be > 0")
        if poll_factor < 1:
            raise ValidationError("poll_factor", f"{poll_factor!r} must be >= 1")
        if not cancel_timeout > 0:
            raise ValidationError("cancel_timeout", f"{cancel_timeout!r} must be > 0")
        if long_poll is not None and not 0 < long_poll <= MAX_LONG_POLL:
            raise ValidationError("long_poll", f"{long_poll!r} must be > 0 and <= {MAX_LONG_POLL}")
        self.base_url = base_url
        self.token = token
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.allowed_hosts = tuple(h.lower() for h in allowed_hosts)
        self.max_connections = max_connections
        self.poll_initial = float(poll_initial)
        self.poll_max = float(poll_max)
        self.poll_factor = float(poll_factor)
        self.cancel_timeout = float(cancel_timeout)
        self.long_poll = None if long_poll is None else float(long_poll)
        self._redact = Redactor(token)
        self._given_transport = transport
        self._transport: httpx.AsyncBaseTransport | None = None
        base_headers = dict(headers or {})
        if token:
            base_headers["Authorization"] = f"Bearer {token}"
        self._base_headers = [(k.encode(), v.encode()) for k, v in base_headers.items()]
        self._targets: dict[tuple[str, str], tuple[httpx.URL, re.Match[str] | None]] = {}
        self._open_transport()

    # -- lifecycle ---------------------------------------------------------------------------

    def _open_transport(self) -> httpx.AsyncBaseTransport:
        """Requests go straight to an httpx transport: the client layer (cookies, redirects,
        URL merging) costs ~4x the transport's own work per request and we need none of it.
        Redirects are not followed: one could leave the allowed hosts. The default transport is
        Http11Transport (http11.py), whose connection limit bounds concurrent requests."""
        if self._transport is None:
            if self._given_transport is not None:
                self._transport = self._given_transport
            else:
                # http:// through the lean keep-alive transport; https:// through httpx's own.
                self._transport = Http11Transport(self.max_connections)
        return self._transport

    async def aclose(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None and transport is not self._given_transport:
            await transport.aclose()

    async def __aenter__(self) -> HttpDispatcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def validate_endpoint(self, endpoint: str) -> None:
        """Raise ValidationError("endpoint", ...) unless this dispatcher may call `endpoint`."""
        validate_endpoint(endpoint, self.allowed_hosts)

    # -- dispatch ----------------------------------------------------------------------------

    def _target(self, method: str, endpoint: str) -> tuple[httpx.URL, re.Match[str] | None]:
        """The endpoint's URL and, for a run endpoint, its match; validated once, then cached."""
        key = (method, endpoint)
        target = self._targets.get(key)
        if target is None:
            validate_method(method)
            self.validate_endpoint(endpoint)
            if endpoint.startswith("/"):
                url = httpx.URL(self.base_url.rstrip("/") + endpoint)
            else:
                url = httpx.URL(endpoint)
            match = RUN_ENDPOINT_RE.match(urlsplit(endpoint).path) if method == "POST" else None
            if len(self._targets) >= 4096:
                self._targets.clear()
            target = self._targets[key] = (url, match)
        return target

    async def dispatch(self, fire: Fire, on_started: OnStarted | None = None) -> Outcome:
        outcome = await self._dispatch(fire, on_started)
        # Bodies are redacted as they are read; this catches the rest (exception texts).
        outcome.error = self._redact(outcome.error)
        return outcome

    async def _dispatch(self, fire: Fire, on_started: OnStarted | None) -> Outcome:
        method = fire.method.upper() if isinstance(fire.method, str) else fire.method
        try:
            url, match = self._target(method, fire.endpoint)
        except ValidationError as exc:
            return Outcome(status="failed", retryable=False, error=str(exc))
        try:
            if match is None:
                return await self._plain(fire, method, url)
            return await self._run_bounded(fire, url, match, on_started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let a surprise escape: the scheduler may retry
            return Outcome(status="failed", retryable=True, error=short(repr(exc)))

    def _fire_headers(self, fire: Fire) -> list[tuple[bytes, bytes]]:
        return [
            *self._base_headers,
            (b"Idempotency-Key", fire.idempotency_key.encode()),
            (b"X-Schedule-Id", fire.schedule_id.encode()),
            (b"X-Schedule-Attempt", str(int(fire.attempt)).encode()),
            (b"X-Scheduled-For", decimal_text(fire.scheduled_for).encode()),
        ]

    async def _send(
        self,
        method: str,
        url: httpx.URL,
        *,
        cap: int | None,
        headers: list[tuple[bytes, bytes]],
        timeout: float,
        content: bytes | None = None,
        content_type: bytes | None = None,
    ) -> Reply:
        """One request; reads at most `cap` + 1 body bytes (all of it when cap is None), and
        the redaction margin beyond that."""
        if content_type is not None:
            headers = [*headers, (b"Content-Type", content_type)]
        request = httpx.Request(
            method,
            url,
            headers=headers,
            content=content,
            extensions={
                "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
            },
        )
        response = await self._open_transport().handle_async_request(request)
        response.request = request
        try:  # a transport that answered with the whole body (MockTransport, Http11Transport)
            body = response.content  # has it read and decoded already: no stream to walk
        except httpx.ResponseNotRead:
            pass
        else:
            return self._reply(response, body, cap)
        keep = None if cap is None else cap + self._redact.margin
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if keep is not None and size > keep:
                    break
        finally:
            await response.aclose()
        return self._reply(response, b"".join(chunks), cap)

    def _reply(self, response: httpx.Response, body: bytes, cap: int | None) -> Reply:
        truncated = False
        if cap is not None and len(body) > cap:
            truncated = True
            body = body[: cap + self._redact.margin]
        return Reply(response, body, truncated, self._redact)

    def _failure(self, reply: Reply) -> Outcome:
        """The Outcome of a non-2xx reply."""
        code = reply.code
        retryable = code >= 500 or code in RETRYABLE_CODES
        text = short(reply.text()) if reply.body else ""
        error = f"HTTP {code} {reply.reason}".rstrip() + (f": {text}" if text else "")
        retry_after = None
        if code in RETRY_AFTER_CODES:
            retry_after = self._retry_after(reply.headers.get("retry-after"))
        return Outcome(
            status="failed",
            status_code=code,
            error=error,
            retryable=retryable,
            retry_after=retry_after,
        )

    def _retry_after(self, value: str | None) -> float | None:
        """Retry-After as seconds from now: delta-seconds or an HTTP-date (on the clock)."""
        if not value:
            return None
        value = value.strip()
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                return None
            if when is None:
                return None
            seconds = when.timestamp() - self.clock.now()
        if seconds != seconds or seconds in (float("inf"), float("-inf")):
            return None
        return max(0.0, seconds)

    @staticmethod
    def _request_error(exc: Exception) -> Outcome:
        if isinstance(exc, httpx.TimeoutException):
            return Outcome(status="timeout", retryable=True, error=short(exc_text(exc)))
        return Outcome(status="failed", retryable=True, error=short(exc_text(exc)))

    # -- plain endpoints ---------------------------------------------------------------------

    async def _plain(self, fire: Fire, method: str, url: httpx.URL) -> Outcome:
        content = content_type = None
        if method in ("POST", "PUT", "PATCH") and fire.payload is not None:
            content = json.dumps(fire.payload, separators=(",", ":")).encode()
            content_type = b"application/json"
        try:
            reply = await self._send(
                method,
                url,
                cap=OUTPUT_BYTES,
                headers=self._fire_headers(fire),
                timeout=fire.timeout_seconds,
                content=content,
                content_type=content_type,
            )
        except httpx.HTTPError as exc:
            return self._request_error(exc)
        if not reply.ok:
            return self._failure(reply)
        extra = {"output_truncated": True} if reply.truncated else {}
        return Outcome(status="success", status_code=reply.code, output=reply.output(), extra=extra)

    # -- run endpoints (AgentOS protocol) ----------------------------------------------------
