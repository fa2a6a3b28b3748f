"""The pluggable HTTP boundary: a Dispatcher turns one Fire into HTTP calls and one Outcome.

This module owns only that translation. It never touches the store and never decides when a
retry happens: it classifies an Outcome as `retryable` (and passes on a target's Retry-After),
and the scheduler decides the rest.

`HttpDispatcher` speaks two dialects:

* run endpoints (`POST /agents|teams|workflows/<id>/runs`): the AgentOS protocol. A form-encoded
  background run is started, `on_started(run_id, session_id)` is awaited at once, then
  `GET /<kind>/<id>/runs/<run_id>?session_id=...` is polled with backoff on the injected clock
  until the run reaches COMPLETED, ERROR, CANCELLED or PAUSED. The whole exchange is bounded by
  `fire.timeout_seconds` of that clock; at that deadline the run is cancelled on the AgentOS
  (`POST .../runs/<run_id>/cancel`), which ignores Idempotency-Key and would otherwise keep
  working beside a retry. A fire that carries a `run_id` (a re-delivery, or a retry after a
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
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

import httpx

from ..clock import Clock, SystemClock
from ..errors import ValidationError
from ..model import Fire, Outcome
from ..spec import validate_endpoint as check_endpoint
from .http11 import Http11Transport

OnStarted = Callable[[str | None, str | None], Awaitable[None]]

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
RUN_ENDPOINT_RE = re.compile(r"^/(agents|teams|workflows)/([^/]+)/runs/?$")
RETRYABLE_CODES = frozenset({408, 429})
RETRY_AFTER_CODES = frozenset({429, 503})
ERROR_CHARS = 500  # at most this much of a reply body goes into Outcome.error
OUTPUT_BYTES = 64 * 1024  # Outcome.output is cut to about this size
MIN_POLL_GAP = 0.05  # polls after the first are never closer than this (no hot loop)
MAX_LONG_POLL = 60.0  # what a server holds one request for at most (adapters/fastapi/prefer.py)
CANCEL_TIMEOUT = 5.0  # default bound of the AgentOS cancel sent when a run times out
REDACTED = "[redacted]"
HEADER_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 7230 token (fullmatch)
# Statuses after which an attached run has nothing more to give: a new run is started instead.
RESTART_RUN_STATUSES = frozenset({"CANCELLED", "ERROR"})
# What a PAUSED run says it waits for, kept in the run row's output beside its content.
PAUSE_KEYS = ("requirements", "error_requirements", "paused_step_name", "paused_step_index")
# AgentOS run statuses (case-insensitive) that end polling, and what they become.
FINAL_RUN_STATUSES = {
    "COMPLETED": ("success", False),
    "ERROR": ("failed", True),
    "CANCELLED": ("cancelled", False),
    "PAUSED": ("paused", False),
}


class Dispatcher(Protocol):
    async def dispatch(self, fire: Fire, on_started: OnStarted | None = None) -> Outcome:
        """Call the fire's endpoint and report what happened; raise only CancelledError."""

    async def aclose(self) -> None:
        """Release connections."""


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


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _form_body(payload: dict[str, Any] | None) -> dict[str, str]:
    body = {k: _form_value(v) for k, v in (payload or {}).items() if v is not None}
    body["stream"] = "false"  # the protocol needs a non-streamed background run: ours win
    body["background"] = "true"
    return body


def _decimal(seconds: float | None) -> str:
    """Epoch seconds as a plain decimal string (shortest round-trip form, never an exponent)."""
    if seconds is None:
        return ""
    return format(Decimal(repr(float(seconds))), "f")


def _short(text: str, limit: int = ERROR_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "…"


def _small(value: Any) -> Any:
    """Keep Outcome.output small: a long string is cut, a large structure becomes cut JSON."""
    if isinstance(value, str):
        return value if len(value) <= OUTPUT_BYTES else value[:OUTPUT_BYTES]
    if isinstance(value, dict | list):
        try:
            text = json.dumps(value, default=str)
        except (TypeError, ValueError):
            return _small(str(value))
        return value if len(text) <= OUTPUT_BYTES else text[:OUTPUT_BYTES]
    return value


def _exc_text(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class _Redactor:
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


class _Reply:
    """A read reply: status, headers and (possibly cut) body bytes; text and JSON come out with
    the secret redacted."""

    __slots__ = ("body", "code", "headers", "reason", "redact", "response", "truncated")

    def __init__(self, response: httpx.Response, body: bytes, truncated: bool, redact: _Redactor):
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
                return _small(parsed)
        return _small(self.text())


class _RunState:
    __slots__ = ("polls", "run_id", "session_id", "status_code")

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.session_id: str | None = None
        self.status_code: int | None = None
        self.polls = 0


class HttpDispatcher:
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
        self._redact = _Redactor(token)
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
            return Outcome(status="failed", retryable=True, error=_short(repr(exc)))

    def _fire_headers(self, fire: Fire) -> list[tuple[bytes, bytes]]:
        return [
            *self._base_headers,
            (b"Idempotency-Key", fire.idempotency_key.encode()),
            (b"X-Schedule-Id", fire.schedule_id.encode()),
            (b"X-Schedule-Attempt", str(int(fire.attempt)).encode()),
            (b"X-Scheduled-For", _decimal(fire.scheduled_for).encode()),
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
    ) -> _Reply:
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

    def _reply(self, response: httpx.Response, body: bytes, cap: int | None) -> _Reply:
        truncated = cap is not None and len(body) > cap
        if truncated:
            body = body[: cap + self._redact.margin]
        return _Reply(response, body, truncated, self._redact)

    def _failure(self, reply: _Reply) -> Outcome:
        """The Outcome of a non-2xx reply."""
        code = reply.code
        retryable = code >= 500 or code in RETRYABLE_CODES
        text = _short(reply.text()) if reply.body else ""
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
            return Outcome(status="timeout", retryable=True, error=_short(_exc_text(exc)))
        return Outcome(status="failed", retryable=True, error=_short(_exc_text(exc)))

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

    async def _within(self, seconds: float, coro: Awaitable[Any]) -> tuple[bool, Any]:
        """Run `coro` for at most `seconds` of the injected clock: (True, its result) or, once
        the time is up, (False, None) after it was cancelled and has wound down."""
        done = asyncio.Event()
        task = asyncio.ensure_future(coro)
        task.add_done_callback(lambda _: done.set())
        try:
            finished = await self.clock.wait(done, seconds)
        finally:
            if not task.done():
                task.cancel()
        if finished:
            return True, task.result()
        await asyncio.wait({task})  # let the cancelled request close its response
        return False, None

    async def _run_bounded(
        self, fire: Fire, url: httpx.URL, match: re.Match[str], on_started: OnStarted | None
    ) -> Outcome:
        """Run the protocol under a deadline of fire.timeout_seconds on the injected clock; past
        it, cancel the run on the AgentOS before the timeout is reported. (A cancellation of
        ours, from stop() or a lost lease, raises past all this: the run keeps going and the
        next holder attaches to it.)"""
        state = _RunState()
        finished, outcome = await self._within(
            fire.timeout_seconds, self._run(fire, url, match, on_started, state)
        )
        if finished:
            return outcome
        error = f"run did not finish within {fire.timeout_seconds:g}s"
        if state.run_id is not None:
            error += "; " + await self._cancel_run(fire, url, state)
        return Outcome(
            status="timeout",
            status_code=state.status_code,
            run_id=state.run_id,
            session_id=state.session_id,
            error=error,
            retryable=True,
            extra={"polls": state.polls},
        )

    async def _cancel_run(self, fire: Fire, url: httpx.URL, state: _RunState) -> str:
        """POST <endpoint>/<run_id>/cancel, bounded by cancel_timeout; says how it went."""
        assert state.run_id is not None
        cancel_url = _run_url(url, state.run_id, state.session_id, "/cancel")
        request = self._send(
            "POST",
            cancel_url,
            cap=ERROR_CHARS,
            headers=self._fire_headers(fire),
            timeout=self.cancel_timeout,
        )
        try:
            finished, reply = await self._within(self.cancel_timeout, request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return f"cancel failed: {_short(_exc_text(exc))}"
        if not finished:
            return f"cancel failed: no answer within {self.cancel_timeout:g}s"
        if reply.ok:
            return "cancel accepted"
        return f"cancel refused: {self._failure(reply).error}"

    async def _run(
        self,
        fire: Fire,
        url: httpx.URL,
        match: re.Match[str],
        on_started: OnStarted | None,
        state: _RunState,
    ) -> Outcome:
        try:
            return await self._run_protocol(fire, url, match, on_started, state)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return Outcome(
                status="failed",
                status_code=state.status_code,
                run_id=state.run_id,
                session_id=state.session_id,
                error=_short(repr(exc)),
                retryable=True,
            )

    async def _run_protocol(
        self,
        fire: Fire,
        url: httpx.URL,
        match: re.Match[str],
        on_started: OnStarted | None,
        state: _RunState,
    ) -> Outcome:
        headers = self._fire_headers(fire)
        if fire.run_id:
            # An earlier delivery started a run: follow it rather than start a second one.
            state.run_id, state.session_id = fire.run_id, fire.session_id
            attached = await self._poll(url, headers, state, fire.timeout_seconds, attach=True)
            if attached is not None:
                return attached
            state.run_id = state.session_id = state.status_code = None
        form = _form_body(fire.payload)
        post_headers = headers
        if self.long_poll is not None:
            # Name the run ourselves and record it before sending: a lost reply or a crash
            # mid-request leaves an id the retry or the next holder attaches to (the target
            # answers a repeated POST of that id with the run it has), never a second run. The
            # session stays the target's to make up (a new one costs it no read); it is
            # recorded with the outcome.
            state.run_id = form["run_id"] = uuid.uuid4().hex
            state.session_id = form.get("session_id")
            if on_started is not None:
                await on_started(state.run_id, state.session_id)
            post_headers = [*headers, self._prefer(fire.timeout_seconds)]
        planned = (state.run_id, state.session_id)
        try:
            reply = await self._send(
                "POST",
                url,
                cap=None,
                headers=post_headers,
                timeout=fire.timeout_seconds,
                content=urlencode(form).encode(),
                content_type=b"application/x-www-form-urlencoded",
            )
        except httpx.HTTPError as exc:
            return self._planned(self._request_error(exc), planned)
        if not reply.ok:
            return self._planned(self._failure(reply), planned)
        body = reply.json()
        run_id = _str_or_none(body.get("run_id")) if isinstance(body, dict) else None
        if run_id is None:
            # Whatever it did, we cannot follow it, cancel it or attach to it: not a success,
            # and not worth repeating (it would answer the same).
            text = _short(reply.text(), 200) if reply.body else "an empty body"
            return Outcome(
                status="failed",
                status_code=reply.code,
                error=f"the reply was not an AgentOS run reply (no run_id): {text}",
                retryable=False,
            )
        assert isinstance(body, dict)
        state.status_code = reply.code
        state.run_id = run_id
        state.session_id = _str_or_none(body.get("session_id"))
        final = self._run_result(body, state, default=None)
        # Record what the target named, unless we named it ourselves and it is over already
        # (its session is recorded with the outcome).
        if on_started is not None and (
            state.run_id != planned[0] or (final is None and state.session_id != planned[1])
        ):
            await on_started(state.run_id, state.session_id)
        if final is not None:  # the start reply already carries a final status
            return final
        held = _wait_applied(reply)
        outcome = await self._poll(
            url, headers, state, fire.timeout_seconds, attach=False, held=held
        )
        assert outcome is not None
        return outcome

    async def _poll(
        self,
        url: httpx.URL,
        headers: list[tuple[bytes, bytes]],
        state: _RunState,
        timeout: float,
        *,
        attach: bool,
        held: bool = False,
    ) -> Outcome | None:
        """Poll state.run_id until it ends. Attached to an earlier delivery's run, it looks at
        once, and returns None when that run is gone (404) or ended CANCELLED or ERROR: a new
        one is to be started. A run we started ourselves may not be visible yet: 404 polls on.
        With `long_poll`, each poll asks the target to hold it until the run ends; after an
        answer the target did hold (`held`), the next poll goes at once, without a backoff."""
        assert state.run_id is not None
        poll_url = _run_url(url, state.run_id, state.session_id)
        if self.long_poll is not None:
            headers = [*headers, self._prefer(timeout)]
        delay = self.poll_initial
        look_now = attach or held  # an earlier delivery's run may be long over
        while True:
            if look_now:
                look_now = False
            else:
                await self.clock.sleep(delay)
                delay = min(self.poll_max, max(delay * self.poll_factor, MIN_POLL_GAP))
            state.polls += 1
            try:
                poll = await self._send("GET", poll_url, cap=None, headers=headers, timeout=timeout)
            except httpx.HTTPError:
                continue  # transport trouble: try again after the next backoff step
            look_now = _wait_applied(poll)
            if not poll.ok:
                if attach and poll.code == 404:
                    return None
                if poll.code == 404 or poll.code >= 500 or poll.code in RETRYABLE_CODES:
                    continue  # not visible yet, or the target is busy: keep polling
                failure = self._failure(poll)
                failure.retryable = False
                failure.error = f"poll: {failure.error}"
                failure.run_id, failure.session_id = state.run_id, state.session_id
                failure.retry_after = None
                return failure
            run = poll.json()
            if not isinstance(run, dict):
                continue
            if attach:
                state.status_code = state.status_code or poll.code
                if str(run.get("status") or "").upper() in RESTART_RUN_STATUSES:
                    return None
            final = self._run_result(run, state, default=None)
            if final is not None:
                return final

    def _prefer(self, timeout: float) -> tuple[bytes, bytes]:
        """`Prefer: wait=<s>` (RFC 7240): hold this request until the run ends, for at most
        the long-poll time, and never past the attempt's own bound."""
        assert self.long_poll is not None
        return (b"Prefer", f"wait={min(self.long_poll, timeout):g}".encode())

    @staticmethod
    def _planned(outcome: Outcome, planned: tuple[str | None, str | None]) -> Outcome:
        """A failed start that named its run: the retry attaches to that id (the target may
        have started it before the reply was lost) and starts a new run only if it is gone."""
        if outcome.run_id is None and planned[0] is not None:
            outcome.run_id, outcome.session_id = planned
        return outcome

    @staticmethod
    def _run_result(body: dict[str, Any], state: _RunState, default: str | None) -> Outcome | None:
        """Map a run reply's `status`; unknown or missing -> `default` (None: keep polling)."""
        status = str(body.get("status") or "").upper()
        mapped = FINAL_RUN_STATUSES.get(status)
        if mapped is None:
            if default is None:
                return None
            mapped = (default, False)
        outcome_status, retryable = mapped
        error = None
        output = None
        if outcome_status in ("success", "paused"):
            # Stored as the AgentOS gives it: content and its type; a pause adds what it waits for.
            output = {
                "content": _small(body.get("content")),
                "content_type": _str_or_none(body.get("content_type")) or "str",
            }
            if outcome_status == "paused":
                output.update({k: _small(body[k]) for k in PAUSE_KEYS if k in body})
        if outcome_status == "failed":
            detail = body.get("error") or body.get("content")
            error = _short(str(detail)) if detail else f"run ended with status {status}"
        elif outcome_status != "success":
            error = f"run ended with status {status}"
        return Outcome(
            status=outcome_status,
            status_code=state.status_code,
            run_id=state.run_id,
            session_id=state.session_id,
            error=error,
            retryable=retryable,
            output=output,
            extra={"polls": state.polls},
        )


def _run_url(url: httpx.URL, run_id: str, session_id: str | None, suffix: str = "") -> httpx.URL:
    """<endpoint>/<run_id><suffix>?session_id=...: beside the run endpoint, on its origin and
    base path."""
    run_path = url.raw_path.split(b"?")[0].rstrip(b"/").decode()
    query = f"?{urlencode({'session_id': session_id})}" if session_id else ""
    return url.copy_with(raw_path=f"{run_path}/{quote(run_id, safe='')}{suffix}{query}".encode())


def _wait_applied(reply: _Reply) -> bool:
    """The target held the request as `Prefer: wait` asked (RFC 7240 Preference-Applied)."""
    applied = reply.headers.get("preference-applied")
    return applied is not None and "wait" in applied.lower()


def _str_or_none(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
