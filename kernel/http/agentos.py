"""The AgentOS run protocol, the run-endpoint half of `HttpDispatcher`: start a background run
(form-encoded), report its ids through `on_started`, poll it with backoff (or a long poll) on the
injected clock until it ends, attach to a run a re-delivery carries, and cancel it on the AgentOS
at the fire's deadline. `dispatch.py` holds the plain requests these calls are made of."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from ..clock import Clock
from ..model import Fire, Outcome
from .reply import ERROR_CHARS, RETRYABLE_CODES, Reply, exc_text, short, small

OnStarted = Callable[[str | None, str | None], Awaitable[None]]

RUN_ENDPOINT_RE = re.compile(r"^/(agents|teams|workflows)/([^/]+)/runs/?$")
MIN_POLL_GAP = 0.05  # polls after the first are never closer than this (no hot loop)
MAX_LONG_POLL = 60.0  # what a server holds one request for at most (adapters/fastapi/prefer.py)
CANCEL_TIMEOUT = 5.0  # default bound of the AgentOS cancel sent when a run times out
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


class RunState:
    __slots__ = ("polls", "run_id", "session_id", "status_code")

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.session_id: str | None = None
        self.status_code: int | None = None
        self.polls = 0


class AgentOsRuns:
    """The run-endpoint calls of `HttpDispatcher` (which provides the attributes below)."""

    clock: Clock
    poll_initial: float
    poll_max: float
    poll_factor: float
    cancel_timeout: float
    long_poll: float | None
    _send: Callable[..., Awaitable[Reply]]
    _failure: Callable[[Reply], Outcome]
    _request_error: Callable[[Exception], Outcome]
    _fire_headers: Callable[[Fire], list[tuple[bytes, bytes]]]

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
        state = RunState()
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

    async def _cancel_run(self, fire: Fire, url: httpx.URL, state: RunState) -> str:
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
            return f"cancel failed: {short(exc_text(exc))}"
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
        state: RunState,
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
                error=short(repr(exc)),
                retryable=True,
            )

    async def _run_protocol(
        self,
        fire: Fire,
        url: httpx.URL,
        match: re.Match[str],
        on_started: OnStarted | None,
        state: RunState,
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
            text = short(reply.text(), 200) if reply.body else "an empty body"
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
        state: RunState,
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
    def _run_result(body: dict[str, Any], state: RunState, default: str | None) -> Outcome | None:
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
                "content": small(body.get("content")),
                "content_type": _str_or_none(body.get("content_type")) or "str",
            }
            if outcome_status == "paused":
                output.update({k: small(body[k]) for k in PAUSE_KEYS if k in body})
        if outcome_status == "failed":
            detail = body.get("error") or body.get("content")
            error = short(str(detail)) if detail else f"run ended with status {status}"
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


def _wait_applied(reply: Reply) -> bool:
    """The target held the request as `Prefer: wait` asked (RFC 7240 Preference-Applied)."""
    applied = reply.headers.get("preference-applied")
    return applied is not None and "wait" in applied.lower()


def _str_or_none(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
