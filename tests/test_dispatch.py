"""HttpDispatcher: headers, bodies, the AgentOS run protocol on a SimClock, failure classes, the
allowed-hosts rule, and both HTTP paths across a real loopback socket.

No pytest-asyncio: each async test is a sync test running its coroutine with `arun`."""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from leasecron.kernel.clock import SimClock
from leasecron.kernel.errors import ValidationError
from leasecron.kernel.http.dispatch import (
    HttpDispatcher,
    validate_endpoint,
    validate_method,
)
from leasecron.kernel.http.http11 import Http11Transport
from leasecron.kernel.model import Fire, Outcome

BASE = "http://agentos.test"
T0 = 1_780_000_000.0


def arun(coro, limit: float = 5.0):
    """Run `coro` on a fresh loop, bounded in real time so a bug cannot hang the suite."""

    async def main():
        async with asyncio.timeout(limit):
            return await coro

    return asyncio.run(main())


def make_fire(endpoint: str = "/hooks/nightly", method: str = "POST", **kw) -> Fire:
    values = {
        "schedule_id": "sch-1",
        "schedule_name": "nightly",
        "run_row_id": "row-1",
        "method": method,
        "endpoint": endpoint,
        "payload": {"message": "hello"},
        "attempt": 2,
        "scheduled_for": 1_780_000_000.5,
        "idempotency_key": "sch-1:1780000000.5",
        "timeout_seconds": 60.0,
    }
    values.update(kw)
    return Fire(**values)


class Target:
    """An in-process HTTP target: `handler(request)` answers; every request is recorded with
    the clock time it arrived at."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response], clock=None):
        self.handler = handler
        self.clock = clock
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request):
            self.requests.append(request)
            self.times.append(self.clock.now() if self.clock else 0.0)
            return self.handler(request)

        return httpx.MockTransport(handle)

    def gets(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "GET"]


def run_target(poll_statuses, clock=None, post=None, cancel=None):
    """A run target: POST answers `post` (default 202 run r1/s1 PENDING); the n-th GET answers
    poll_statuses[n] (an int is an HTTP code, an Exception is raised, a dict is the JSON);
    POST .../cancel answers `cancel` (default 200 {})."""
    polls = list(poll_statuses)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/cancel"):
            return cancel if cancel is not None else httpx.Response(200, json={})
        if request.method == "POST":
            if post is not None:
                return post
            body = {"run_id": "r1", "session_id": "s1", "status": "PENDING"}
            return httpx.Response(202, json=body)
        step = polls.pop(0) if len(polls) > 1 else polls[0]
        if isinstance(step, Exception):
            raise step
        if isinstance(step, int):
            return httpx.Response(step, text="not yet")
        return httpx.Response(200, json=step)

    return Target(handler, clock)


def dispatcher(target: Target | None = None, **kw) -> HttpDispatcher:
    transport = target.transport() if target is not None else None
    return HttpDispatcher(BASE, kw.pop("token", "s3cret"), transport, **kw)


# -- headers and bodies -----------------------------------------------------------------------


def test_plain_post_headers_json_body_and_output():
    target = Target(lambda r: httpx.Response(200, json={"ok": True, "n": 3}))

    async def main():
        async with dispatcher(target, headers={"X-Extra": "yes"}) as d:
            return await d.dispatch(make_fire(payload={"message": "hi", "n": [1, 2]}))

    out = arun(main())
    assert out == Outcome(status="success", status_code=200, output={"ok": True, "n": 3})
    [req] = target.requests
    assert req.method == "POST"
    assert str(req.url) == "http://agentos.test/hooks/nightly"
    assert req.headers["Idempotency-Key"] == "sch-1:1780000000.5"
    assert req.headers["X-Schedule-Id"] == "sch-1"
    assert req.headers["X-Schedule-Attempt"] == "2"
    assert req.headers["X-Scheduled-For"] == "1780000000.5"
    assert req.headers["Authorization"] == "Bearer s3cret"
    assert req.headers["X-Extra"] == "yes"
    assert req.headers["Content-Type"] == "application/json"
    assert json.loads(req.content) == {"message": "hi", "n": [1, 2]}


def test_no_token_no_authorization_get_has_no_body_and_text_output():
    target = Target(lambda r: httpx.Response(200, text="pong"))

    async def main():
        async with dispatcher(target, token=None) as d:
            fire = make_fire("/ping", method="get", scheduled_for=None, attempt=1)
            return await d.dispatch(fire)

    out = arun(main())
    assert out == Outcome(status="success", status_code=200, output="pong")
    [req] = target.requests
    assert req.method == "GET"
    assert "Authorization" not in req.headers
    assert req.headers["X-Scheduled-For"] == ""
    assert req.headers["X-Schedule-Attempt"] == "1"
    assert req.content == b""


def test_put_patch_send_json_delete_sends_nothing():
    target = Target(lambda r: httpx.Response(204))

    async def main():
        async with dispatcher(target) as d:
            return [await d.dispatch(make_fire(method=m)) for m in ("PUT", "PATCH", "DELETE")]

    outs = arun(main())
    assert [o.status for o in outs] == ["success"] * 3
    assert [o.output for o in outs] == [None] * 3
    assert [json.loads(r.content) if r.content else None for r in target.requests] == [
        {"message": "hello"},
        {"message": "hello"},
        None,
    ]


def test_plain_output_is_cut_to_64_kib():
    target = Target(lambda r: httpx.Response(200, text="x" * 200_000))

    async def main():
        async with dispatcher(target) as d:
            return await d.dispatch(make_fire())

    out = arun(main())
    assert out.status == "success"
    assert out.output == "x" * 65536
    assert out.extra == {"output_truncated": True}


def test_run_endpoint_form_body():
    target = run_target([{"status": "COMPLETED", "content": "done"}])
    clock = SimClock(T0)
    payload = {
        "message": "summarise",
        "user_id": None,
        "metadata": {"a": 1, "b": [True]},
        "add_history": True,
        "debug": False,
        "n": 3,
        "stream": True,  # the protocol's own values win
    }

    async def main():
        async with dispatcher(target, clock=clock) as d:
            task = asyncio.create_task(d.dispatch(make_fire("/agents/a1/runs", payload=payload)))
            await clock.advance(0.5)
            return await task

    out = arun(main())
    assert out.status == "success"
    post = target.requests[0]
    assert post.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qsl(post.content.decode(), keep_blank_values=True) == [
        ("message", "summarise"),
        ("metadata", '{"a": 1, "b": [true]}'),
        ("add_history", "true"),
        ("debug", "false"),
        ("n", "3"),
        ("stream", "false"),
        ("background", "true"),
    ]


# -- the run protocol -------------------------------------------------------------------------


def test_on_started_before_polling_then_completed():
    clock = SimClock(T0)
    target = run_target([{"status": "COMPLETED", "content": {"answer": 42}}], clock)
    started: list[tuple] = []

    async def on_started(run_id, session_id):
        started.append((run_id, session_id, len(target.gets())))

    async def main():
        async with dispatcher(target, clock=clock) as d:
            task = asyncio.create_task(d.dispatch(make_fire("/teams/t9/runs/"), on_started))
            await clock.settle()
            assert started == [("r1", "s1", 0)]
            assert not task.done()
            assert target.gets() == []
            await clock.advance(0.5)
            assert task.done()
            return await task

    out = arun(main())
    assert out == Outcome(
        status="success",
        status_code=202,
        run_id="r1",
        session_id="s1",
        output={"content": {"answer": 42}, "content_type": "str"},
        extra={"polls": 1},
    )
    assert started == [("r1", "s1", 0)]
    [get] = target.gets()
    assert str(get.url) == "http://agentos.test/teams/t9/runs/r1?session_id=s1"
    assert target.times == [T0, T0 + 0.5]
    for name in ("Idempotency-Key", "X-Schedule-Id", "X-Schedule-Attempt", "Authorization"):
        assert get.headers[name] == target.requests[0].headers[name]


@pytest.mark.parametrize(
    ("reply", "status", "retryable", "error", "output"),
    [
        (
            {"status": "completed", "content": "hi", "content_type": "markdown"},
            "success",
            False,
            None,
            {"content": "hi", "content_type": "markdown"},
        ),
        ({"status": "COMPLETED"}, "success", False, None, {"content": None, "content_type": "str"}),
        ({"status": "ERROR", "error": "model exploded"}, "failed", True, "model exploded", None),
        ({"status": "Error", "content": "tool failed"}, "failed", True, "tool failed", None),
        ({"status": "ERROR"}, "failed", True, "run ended with status ERROR", None),
        ({"status": "CANCELLED"}, "cancelled", False, "run ended with status CANCELLED", None),
        (
            {"status": "paused", "content": "?"},
            "paused",
            False,
            "run ended with status PAUSED",
            {"content": "?", "content_type": "str"},
        ),
    ],
)
def test_poll_status_mapping(reply, status, retryable, error, output):
    clock = SimClock(T0)
    target = run_target([reply], clock)

    async def main():
        async with dispatcher(target, clock=clock) as d:
            task = asyncio.create_task(d.dispatch(make_fire("/workflows/w1/runs")))
            await clock.advance(0.5)
            return await task

    out = arun(main())
    assert (out.status, out.retryable, out.error, out.output) == (status, retryable, error, output)
    assert (out.run_id, out.session_id, out.status_code) == ("r1", "s1", 202)


def test_backoff_delays_and_polling_through_404_errors_and_unknown_statuses():
    clock = SimClock(T0)
    steps = [
        404,
        httpx.ConnectError("refused"),
        {"status": "PENDING"},
        503,
        {"status": "RUNNING"},
        httpx.ReadTimeout("slow"),
        {"status": "SOMETHING_NEW"},
        {"nostatus": True},
        429,
        {"status": "COMPLETED", "content": "finally"},
    ]
    target = run_target(steps, clock)

    async def main():
        async with dispatcher(target, clock=clock) as d:
            task = asyncio.create_task(
                d.dispatch(make_fire("/agents/a1/runs", timeout_seconds=1e4))
            )
            await clock.advance(100)
            return await task

    out = arun(main())
    assert out.status == "success"
    assert out.output == {"content": "finally", "content_type": "str"}
    assert out.extra == {"polls": 10}
    times = target.times[1:]  # [0] is the POST
    delays = [b - a for a, b in zip([T0, *times], times, strict=False)]
    expected = [0.5, 0.8, 1.28, 2.048, 3.2768, 5.24288, 8.388608, 10.0, 10.0, 10.0]
    assert delays == pytest.approx(expected, abs=1e-6)


def test_custom_backoff_parameters():
    clock = SimClock(T0)
    target = run_target([{"status": "RUNNING"}] * 5 + [{"status": "COMPLETED"}], clock)

    async def main():
        d = dispatcher(target, clock=clock, poll_initial=1.0, poll_factor=2.0, poll_max=5.0)
        async with d:
            task = asyncio.create_task(d.dispatch(make_fire("/agents/a1/runs")))
            await clock.advance(100)
            return await task

    out = arun(main())
    assert out.status == "success"
    assert [t - T0 for t in target.times[1:]] == pytest.approx([1, 3, 7, 12, 17, 22])


def test_timeout_on_the_sim_clock_keeps_run_ids():
    clock = SimClock(T0)
    target = run_target([{"status": "RUNNING"}], clock)

    async def main():
        async with dispatcher(target, clock=clock) as d:
            fire = make_fire("/agents/a1/runs", timeout_seconds=5.0)
            task = asyncio.create_task(d.dispatch(fire))
            await clock.advance(4.99)
            assert not task.done()
            await clock.advance(0.02)
            assert task.done()
            return await task

    out = arun(main())
    assert out == Outcome(
        status="timeout",
        status_code=202,
        run_id="r1",
        session_id="s1",
        error="run did not finish within 5s; cancel accepted",
        retryable=True,
        extra={"polls": 4},
    )
    assert [t - T0 for t in target.times[1:]] == pytest.approx([0.5, 1.3, 2.58, 4.628, 5.0])
    cancel = target.requests[-1]
    assert (cancel.method, str(cancel.url)) == (
        "POST",
        "http://agentos.test/agents/a1/runs/r1/cancel?session_id=s1",
    )
    assert cancel.content == b"" and "Content-Type" not in cancel.headers
    assert cancel.headers["Authorization"] == "Bearer s3cret"


def test_timeout_covers_a_post_that_never_answers():
    clock = SimClock(T0)
    never = asyncio.Event

    async def handler(request):
        await never().wait()

    async def main():
        d = HttpDispatcher(BASE, transport=httpx.MockTransport(handler), clock=clock)
        async with d:
            task = asyncio.create_task(d.dispatch(make_fire("/agents/a1/runs", timeout_seconds=30)))
            await clock.advance(29.9)
            assert not task.done()
            await clock.advance(0.1)
            return await task

    out = arun(main())
    assert (out.status, out.retryable, out.run_id, out.status_code) == ("timeout", True, None, None)


def test_poll_auth_failure_is_final():
    clock = SimClock(T0)
    target = run_target([401], clock)

    async def main():
        async with dispatcher(target, clock=clock) as d:
            task = asyncio.create_task(d.dispatch(make_fire("/agents/a1/runs")))
            await clock.advance(0.5)
            return await task

    out = arun(main())
    assert out == Outcome(
        status="failed",
        status_code=401,
        run_id="r1",
        session_id="s1",
        error="poll: HTTP 401 Unauthorized: not yet",
        retryable=False,
    )


@pytest.mark.parametrize(
    ("reply", "shown"),
    [
        (httpx.Response(200, json={"status": "COMPLETED", "content": "sync"}),
         '{"status":"COMPLETED","content":"sync"}'),
        (httpx.Response(200, json={"status": "ERROR", "error": "bad"}),
         '{"status":"ERROR","error":"bad"}'),
        (httpx.Response(200, json={"content": "no status"}), '{"content":"no status"}'),
        (httpx.Response(200, json={"run_id": "", "status": "PENDING"}),
         '{"run_id":"","status":"PENDING"}'),
        (httpx.Response(200, json=["r1"]), '["r1"]'),
        (httpx.Response(200, text="plain words"), "plain words"),
        (httpx.Response(200), "an empty body"),
    ],
)  # fmt: skip
def test_run_endpoint_reply_without_a_run_id_is_not_a_success(reply, shown):
    # Nothing to poll, cancel or attach to: whatever the target did, it was not an AgentOS run,
    # and asking again would get the same answer.
    target = run_target([{"status": "RUNNING"}], post=reply)
    started = []

    async def on_started(run_id, session_id):
        started.append(run_id)

    async def main():
        async with dispatcher(target) as d:
            return await d.dispatch(make_fire("/agents/a1/runs"), on_started)

    out = arun(main())
    assert out == Outcome(
        status="failed",
        status_code=200,
        error=f"the reply was not an AgentOS run reply (no run_id): {shown}",
        retryable=False,
    )
    assert target.gets() == []
    assert started == []


def test_final_status_in_the_start_reply_needs_no_poll():
    body = {"run_id": "r7", "session_id": "s7", "status": "COMPLETED", "content": "quick"}
    target = run_target([{"status": "RUNNING"}], post=httpx.Response(200, json=body))
    started = []

    async def on_started(run_id, session_id):
        started.append((run_id, session_id))

    async def main():
        async with dispatcher(target) as d:
            return await d.dispatch(make_fire("/agents/a1/runs"), on_started)

    out = arun(main())
    assert (out.status, out.run_id) == ("success", "r7")
    assert out.output == {"content": "quick", "content_type": "str"}
    assert started == [("r7", "s7")]
    assert target.gets() == []


def test_run_path_with_get_is_a_plain_call():
    target = Target(lambda r: httpx.Response(200, json=[1]))

    async def main():
        async with dispatcher(target) as d:
            return await d.dispatch(make_fire("/agents/a1/runs", method="GET"))

    out = arun(main())
    assert out == Outcome(status="success", status_code=200, output=[1])
    assert [r.method for r in target.requests] == ["GET"]


# -- failure classes of the initial request ---------------------------------------------------

HTTP_DATE = email.utils.formatdate(T0 + 120, usegmt=True)


@pytest.mark.parametrize("endpoint", ["/hooks/x", "/agents/a1/runs"])
@pytest.mark.parametrize(
    ("code", "headers", "retryable", "retry_after"),
    [
        (400, {}, False, None),
        (404, {}, False, None),
        (408, {}, True, None),
        (429, {"Retry-After": "7"}, True, 7.0),
        (429, {"Retry-After": HTTP_DATE}, True, 120.0),
        (429, {"Retry-After": "soon"}, True, None),
        (429, {}, True, None),
        (500, {"Retry-After": "9"}, True, None),  # Retry-After counts on 429/503 only
        (502, {}, True, None),
        (503, {"Retry-After": "30"}, True, 30.0),
        (503, {"Retry-After": HTTP_DATE}, True, 120.0),
        (302, {"Location": "http://elsewhere/"}, False, None),
    ],
)
def test_status_code_classes(endpoint, code, headers, retryable, retry_after):
    clock = SimClock(T0)
    target = Target(lambda r: httpx.Response(code, headers=headers, text="nope"))
    started = []

    async def on_started(*ids):
        started.append(ids)

    async def main():
        async with dispatcher(target, clock=clock) as d:
            return await d.dispatch(make_fire(endpoint), on_started)

    out = arun(main())
    reason = httpx.codes.get_reason_phrase(code)
    assert out == Outcome(
        status="failed",
        status_code=code,
        error=f"HTTP {code} {reason}: nope",
        retryable=retryable,
        retry_after=retry_after,
    )
    assert len(target.requests) == 1  # no redirect followed
    assert started == []


def test_error_text_is_short():
    target = Target(lambda r: httpx.Response(500, text="E" * 5000))

    async def main():
        async with dispatcher(target) as d:
            return await d.dispatch(make_fire())

    out = arun(main())
    assert out.error == "HTTP 500 Internal Server Error: " + "E" * 500 + "…"


@pytest.mark.parametrize("endpoint", ["/hooks/x", "/agents/a1/runs"])
@pytest.mark.parametrize(
    ("exc", "status", "error"),
    [
        (httpx.ConnectError("connection refused"), "failed", "ConnectError: connection refused"),
        (httpx.RemoteProtocolError("peer closed"), "failed", "RemoteProtocolError: peer closed"),
        (httpx.ReadTimeout("timed out"), "timeout", "ReadTimeout: timed out"),
        (httpx.ConnectTimeout(""), "timeout", "ConnectTimeout"),
    ],
)
def test_transport_errors(endpoint, exc, status, error):
    def handler(request):
        raise exc

    async def main():
        d = HttpDispatcher(BASE, transport=httpx.MockTransport(handler))
        async with d:
            return await d.dispatch(make_fire(endpoint))

    assert arun(main()) == Outcome(status=status, error=error, retryable=True)


def test_unexpected_exceptions_become_retryable_failures():
    def handler(request):
        raise RuntimeError("kaput")

    async def boom(run_id, session_id):
        raise KeyError("store down")

    async def main():
        d1 = HttpDispatcher(BASE, transport=httpx.MockTransport(handler))
        d2 = dispatcher(run_target([{"status": "RUNNING"}]))
        async with d1, d2:
            plain = await d1.dispatch(make_fire())
            run = await d1.dispatch(make_fire("/agents/a1/runs"))
            started = await d2.dispatch(make_fire("/agents/a1/runs"), boom)
            return plain, run, started

    plain, run, started = arun(main())
    assert plain == Outcome(status="failed", error="RuntimeError('kaput')", retryable=True)
    assert run == Outcome(status="failed", error="RuntimeError('kaput')", retryable=True)
    assert started == Outcome(
        status="failed",
        status_code=202,
        run_id="r1",
        session_id="s1",
        error="KeyError('store down')",
        retryable=True,
    )


def test_cancellation_propagates_and_stops_polling():
    clock = SimClock(T0)
    target = run_target([{"status": "RUNNING"}], clock)

    async def main():
        async with dispatcher(target, clock=clock) as d:
            task = asyncio.create_task(d.dispatch(make_fire("/agents/a1/runs")))
            await clock.advance(1.0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            polls = len(target.gets())
            await clock.advance(100)
            return polls, len(target.gets())

    assert arun(main()) == (1, 1)


# -- endpoints, methods, allowed hosts --------------------------------------------------------


def test_allowed_hosts_rule():
    def handler(request):
        if request.method == "POST" and request.url.path == "/agents/a1/runs":
            return httpx.Response(202, json={"run_id": "r/1", "session_id": "s1"})
        if request.method == "GET":
            return httpx.Response(200, json={"status": "COMPLETED"})
        return httpx.Response(200, json={})

    target = Target(handler)
    fires = [
        make_fire("http://evil.example/steal"),
        make_fire("https://Agents.Internal/hook"),
        make_fire("http://other.internal:9000/hook"),
        make_fire("http://other.internal:9001/hook"),
        make_fire("http://agents.internal/agents/a1/runs"),
        make_fire("//evil.example/steal"),
        make_fire("relative/path"),
    ]

    async def main():
        d = dispatcher(
            target, allowed_hosts=["agents.internal", "other.internal:9000"], poll_initial=0.0
        )
        async with d:
            return [await d.dispatch(f) for f in fires]

    outs = arun(main())
    assert outs[0] == Outcome(
        status="failed",
        retryable=False,
        error="endpoint: 'http://evil.example/steal': host 'evil.example' is not an allowed host"
        " (allowed_hosts)",
    )
    assert [o.status for o in outs[1:3]] == ["success", "success"]
    assert outs[3].error == (
        "endpoint: 'http://other.internal:9001/hook': host 'other.internal:9001' is not an allowed"
        " host (allowed_hosts)"
    )
    assert (outs[4].status, outs[4].run_id) == ("success", "r/1")
    assert outs[5].error.startswith("endpoint: ")
    assert outs[6].error.startswith("endpoint: ")
    assert all(not o.retryable for o in (outs[0], outs[3], outs[5], outs[6]))
    assert [str(r.url) for r in target.requests] == [
        "https://agents.internal/hook",
        "http://other.internal:9000/hook",
        "http://agents.internal/agents/a1/runs",
        "http://agents.internal/agents/a1/runs/r%2F1?session_id=s1",
    ]


@pytest.mark.parametrize(
    "endpoint",
    ["", "relative/x", "//evil.example/x", "ftp://agents.internal/x", "http://evil.example/x",
     "/with space", "http://", None],
)  # fmt: skip
def test_validate_endpoint_rejects(endpoint):
    with pytest.raises(ValidationError) as info:
        validate_endpoint(endpoint, ["agents.internal"])
    assert info.value.field == "endpoint"
    assert str(info.value).startswith("endpoint: ")
    with pytest.raises(ValidationError):
        HttpDispatcher(BASE, allowed_hosts=["agents.internal"]).validate_endpoint(endpoint)


def test_validate_endpoint_accepts():
    d = HttpDispatcher(BASE, allowed_hosts=["agents.internal"])
    for endpoint in ("/agents/a1/runs", "/x?y=1", "http://agents.internal:8080/x"):
        assert validate_endpoint(endpoint, ["agents.internal"]) is None
        assert d.validate_endpoint(endpoint) is None
    with pytest.raises(ValidationError) as info:
        validate_endpoint("http://agents.internal/x")  # no allowed hosts by default
    assert str(info.value) == (
        "endpoint: 'http://agents.internal/x': host 'agents.internal' is not an allowed host"
        " (allowed_hosts)"
    )


def test_validate_method():
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "post"):
        assert validate_method(method) is None
    for method in ("FETCH", "HEAD", "", None):
        with pytest.raises(ValidationError) as info:
            validate_method(method)
        assert info.value.field == "method"
    assert str(info.value) == "method: None is not one of GET, POST, PUT, PATCH, DELETE"


def test_bad_method_fails_without_a_request():
    target = Target(lambda r: httpx.Response(200))

    async def main():
        async with dispatcher(target) as d:
            return await d.dispatch(make_fire(method="HEAD"))

    out = arun(main())
    assert out == Outcome(
        status="failed",
        retryable=False,
        error="method: 'HEAD' is not one of GET, POST, PUT, PATCH, DELETE",
    )
    assert target.requests == []


def test_constructor_and_lifecycle():
    with pytest.raises(ValidationError) as info:
        HttpDispatcher(BASE, max_connections=0)
    assert info.value.field == "max_connections"
    with pytest.raises(ValidationError) as info:
        HttpDispatcher(BASE, poll_factor=0.5)
    assert info.value.field == "poll_factor"

    async def main():
        d = HttpDispatcher(BASE, max_connections=7)
        transport = d._open_transport()
        assert d._open_transport() is transport  # shared, built once
        assert isinstance(transport, Http11Transport) and transport.max_connections == 7
        async with d:
            pass
        assert d._transport is None
        # a caller's transport is used as given and not closed by the dispatcher
        mine = httpx.MockTransport(lambda request: httpx.Response(200))
        d2 = HttpDispatcher(BASE, transport=mine)
        assert d2._open_transport() is mine
        await d2.aclose()
        assert d2._open_transport() is mine

    arun(main())


# -- a real loopback socket -------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, dict, bytes]]

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append((self.command, self.path, dict(self.headers), body))
        return body

    def do_POST(self):
        body = self._record()
        if self.path == "/agents/a1/runs":
            self._reply(202, {"run_id": "r1", "session_id": "s1", "status": "PENDING"})
        else:
            self._reply(200, {"echo": json.loads(body)})

    def do_GET(self):
        self._record()
        if urlsplit(self.path).path == "/agents/a1/runs/r1":
            self._reply(200, {"run_id": "r1", "status": "COMPLETED", "content": "real"})
        else:
            self._reply(200, {"pong": True})

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def loopback():
    handler = type("Handler", (_Handler,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.seen
    server.shutdown()
    server.server_close()


def test_loopback_plain_endpoint(loopback):
    base, seen = loopback
    seen.clear()

    async def main():
        async with HttpDispatcher(base, "tok") as d:
            return await d.dispatch(make_fire("/hooks/x", payload={"k": [1, "two"]}))

    out = arun(main())
    assert out == Outcome(status="success", status_code=200, output={"echo": {"k": [1, "two"]}})
    [(method, path, headers, _)] = seen
    assert (method, path) == ("POST", "/hooks/x")
    assert headers["Authorization"] == "Bearer tok"
    assert headers["Idempotency-Key"] == "sch-1:1780000000.5"
    assert headers["X-Scheduled-For"] == "1780000000.5"


def test_loopback_run_endpoint(loopback):
    # SystemClock with poll_initial=0.0: the first poll follows the start reply with no real wait,
    # and the target answers COMPLETED to it. (A SimClock would need advancing while the POST is
    # still on the socket, which its advance() does not wait for.)
    base, seen = loopback
    seen.clear()
    started = []

    async def on_started(run_id, session_id):
        started.append((run_id, session_id))

    async def main():
        async with HttpDispatcher(base, "tok", poll_initial=0.0) as d:
            fire = make_fire("/agents/a1/runs", payload={"message": "hi", "meta": {"x": None}})
            return await d.dispatch(fire, on_started)

    out = arun(main())
    assert out == Outcome(
        status="success",
        status_code=202,
        run_id="r1",
        session_id="s1",
        output={"content": "real", "content_type": "str"},
        extra={"polls": 1},
    )
    assert started == [("r1", "s1")]
    assert [(m, p) for m, p, _, _ in seen] == [
        ("POST", "/agents/a1/runs"),
        ("GET", "/agents/a1/runs/r1?session_id=s1"),
    ]
    assert parse_qsl(seen[0][3].decode()) == [
        ("message", "hi"),
        ("meta", '{"x": null}'),
        ("stream", "false"),
        ("background", "true"),
    ]


def test_loopback_connection_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # the port is closed again: nothing listens there

    async def main():
        async with HttpDispatcher(f"http://127.0.0.1:{port}") as d:
            return await d.dispatch(make_fire())

    out = arun(main())
    assert (out.status, out.retryable, out.status_code) == ("failed", True, None)
    assert out.error.startswith("ConnectError: ")


# -- cancel on timeout, attach to an earlier run ----------------------------------------------


def test_timeout_while_attached_cancels_the_attached_run():
    clock = SimClock(T0)
    target = run_target([{"status": "RUNNING"}], clock)

    async def main():
        async with dispatcher(target, clock=clock) as d:
            fire = make_fire(
                "/workflows/w1/runs", timeout_seconds=2.0, run_id="r0", session_id="s0"
            )
            task = asyncio.create_task(d.dispatch(fire))
            await clock.advance(3)
            return await task

    out = arun(main())
    assert (out.status, out.run_id, out.session_id, out.status_code) == ("timeout", "r0", "s0", 200)
    assert out.error == "run did not finish within 2s; cancel accepted"
    assert [(r.method, str(r.url)) for r in target.requests] == [
        ("GET", "http://agentos.test/workflows/w1/runs/r0?session_id=s0"),
        ("GET", "http://agentos.test/workflows/w1/runs/r0?session_id=s0"),
        ("GET", "http://agentos.test/workflows/w1/runs/r0?session_id=s0"),
        ("POST", "http://agentos.test/workflows/w1/runs/r0/cancel?session_id=s0"),
    ]


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx.Response(404, json={"detail": "Run not found"}),
         'cancel refused: HTTP 404 Not Found: {"detail":"Run not found"}'),
        (httpx.Response(401, text="no"), "cancel refused: HTTP 401 Unauthorized: no"),
        (httpx.ConnectError("refused"), "cancel failed: ConnectError: refused"),
        (RuntimeError("boom"), "cancel failed: RuntimeError: boom"),
        (None, "cancel failed: no answer within 2s"),
    ],
)  # fmt: skip
def test_what_became_of_the_cancel_is_recorded(answer, error):
    clock = SimClock(T0)

    async def handler(request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/cancel"):
            if request.method == "POST":
                return httpx.Response(202, json={"run_id": "r1", "session_id": "s1"})
            return httpx.Response(200, json={"status": "RUNNING"})
        if answer is None:
            await asyncio.Event().wait()  # never answers: the cancel's own bound ends it
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def main():
        d = HttpDispatcher(
            BASE, transport=httpx.MockTransport(handler), clock=clock, cancel_timeout=2.0
        )
        async with d:
            task = asyncio.create_task(d.dispatch(make_fire("/agents/a1/runs", timeout_seconds=5)))
            await clock.advance(5)
            await clock.advance(2)
            return await task

    out = arun(main())
    assert (out.status, out.retryable, out.run_id) == ("timeout", True, "r1")
    assert out.error == f"run did not finish within 5s; {error}"


def test_no_cancel_without_a_run_or_on_a_local_cancellation():
    clock = SimClock(T0)
    target = run_target([{"status": "RUNNING"}], clock)

    async def never(request):
        await asyncio.Event().wait()

    async def main():
        # the POST never answered: there is no run to cancel
        silent = HttpDispatcher(BASE, transport=httpx.MockTransport(never), clock=clock)
        async with silent, dispatcher(target, clock=clock) as d:
            task = asyncio.create_task(
                silent.dispatch(make_fire("/agents/a1/runs", timeout_seconds=1))
            )
            await clock.advance(1)
            unstarted = await task
            # stop() or a lost lease cancels the attempt: the run goes on for the next holder
            task = asyncio.create_task(d.dispatch(make_fire("/agents/a1/runs", timeout_seconds=9)))
            await clock.advance(2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await clock.advance(20)
            return unstarted

    unstarted = arun(main())
    assert (unstarted.status, unstarted.error) == ("timeout", "run did not finish within 1s")
    assert [r.method for r in target.requests] == ["POST", "GET", "GET"]


ATTACHED = "http://agentos.test/agents/a1/runs/r0?session_id=s0"
POLLED = "http://agentos.test/agents/a1/runs/r1?session_id=s1"
STARTED = "http://agentos.test/agents/a1/runs"


@pytest.mark.parametrize(
    ("polls", "status", "run_id", "calls"),
    [
        ([{"status": "COMPLETED", "content": "kept"}], "success", "r0", [("GET", ATTACHED)]),
        ([{"status": "RUNNING"}, 503, httpx.ReadTimeout("slow"), {"status": "COMPLETED"}],
         "success", "r0", [("GET", ATTACHED)] * 4),
        ([{"status": "PAUSED"}], "paused", "r0", [("GET", ATTACHED)]),
        ([404, {"status": "COMPLETED"}], "success", "r1",
         [("GET", ATTACHED), ("POST", STARTED), ("GET", POLLED)]),
        ([{"status": "CANCELLED"}, {"status": "COMPLETED"}], "success", "r1",
         [("GET", ATTACHED), ("POST", STARTED), ("GET", POLLED)]),
        ([{"status": "error"}, {"status": "COMPLETED"}], "success", "r1",
         [("GET", ATTACHED), ("POST", STARTED), ("GET", POLLED)]),
        ([401], "failed", "r0", [("GET", ATTACHED)]),
    ],
)  # fmt: skip
def test_a_fire_with_a_run_id_attaches_before_it_starts_another(polls, status, run_id, calls):
    clock = SimClock(T0)
    target = run_target(polls, clock)
    started = []

    async def on_started(*ids):
        started.append(ids)

    async def main():
        async with dispatcher(target, clock=clock) as d:
            fire = make_fire("/agents/a1/runs", run_id="r0", session_id="s0")
            task = asyncio.create_task(d.dispatch(fire, on_started))
            await clock.advance(30)
            return await task

    out = arun(main())
    assert (out.status, out.run_id) == (status, run_id)
    assert [(r.method, str(r.url)) for r in target.requests] == calls
    assert target.times[0] == T0  # an attach looks at once: the run may be long over
    assert started == ([("r1", "s1")] if run_id == "r1" else [])
    if status == "success" and run_id == "r0":
        assert out.status_code == 200  # the poll's: nothing was started


def test_paused_output_keeps_what_the_run_waits_for():
    clock = SimClock(T0)
    paused = {
        "status": "PAUSED",
        "content_type": "str",
        "paused_step_name": "boom",
        "paused_step_index": 1,
        "error_requirements": [
            {"step_name": "boom", "step_index": 1, "error_message": "x", "decision": None}
        ],
        "requirements": [{"kind": "confirmation"}],
        "metrics": {"ignored": True},
    }
    target = run_target([paused], clock)

    async def main():
        async with dispatcher(target, clock=clock) as d:
            task = asyncio.create_task(d.dispatch(make_fire("/workflows/w1/runs")))
            await clock.advance(1)
            return await task

    out = arun(main())
    assert (out.status, out.retryable, out.error) == (
        "paused",
        False,
        "run ended with status PAUSED",
    )
    assert out.output == {
        "content": None,
        "content_type": "str",
        "paused_step_name": "boom",
        "paused_step_index": 1,
        "error_requirements": paused["error_requirements"],
        "requirements": [{"kind": "confirmation"}],
    }


def test_constructor_checks_cancel_timeout():
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValidationError) as info:
            HttpDispatcher(BASE, cancel_timeout=bad)
        assert info.value.field == "cancel_timeout"


# -- header checks, token redaction, empty bodies ---------------------------------------------


@pytest.mark.parametrize(
    ("token", "headers", "field"),
    [
        ("s3cret\r\nX-Evil: 1", None, "token"),
        ("s3cret\n", None, "token"),
        ("s3\x00cret", None, "token"),
        ("s3\x7fcret", None, "token"),
        ("s3\x85cret", None, "token"),
        (7, None, "token"),
        ("tok", {"X-A": "v\r\nX-Evil: 1"}, "headers"),
        ("tok", {"X-A": "v\rw"}, "headers"),
        ("tok", {"X-A": "v\tw"}, "headers"),
        ("tok", {"X-A": 3}, "headers"),
        ("tok", {"X-A\r\nX-Evil": "1"}, "headers"),
        ("tok", {"X-A\n": "1"}, "headers"),
        ("tok", {"Bad Name": "v"}, "headers"),
        ("tok", {"X-A:": "v"}, "headers"),
        ("tok", {"": "v"}, "headers"),
        ("tok", {"Ünïcode": "v"}, "headers"),
        ("tok", [("X-A", "v")], "headers"),
    ],
)
def test_header_injection_is_refused_when_built(token, headers, field):
    with pytest.raises(ValidationError) as info:
        HttpDispatcher(BASE, token, headers=headers)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    if field == "token" and isinstance(token, str):
        assert "s3" not in str(info.value)  # the secret is never echoed


def test_header_names_that_are_tokens_and_plain_values_are_sent():
    target = Target(lambda r: httpx.Response(204))
    headers = {"X-Tenant": "acme corp / eu", "x_trace.id~1": "a=b; c", "X-Empty": ""}

    async def main():
        async with dispatcher(target, token="abc.DEF-123_~+/=", headers=headers) as d:
            return await d.dispatch(make_fire())

    assert arun(main()).status == "success"
    [req] = target.requests
    assert req.headers["Authorization"] == "Bearer abc.DEF-123_~+/="
    assert req.headers["X-Tenant"] == "acme corp / eu"
    assert req.headers["x_trace.id~1"] == "a=b; c"


def test_the_token_is_redacted_from_output_and_errors():
    def echo(request: httpx.Request) -> httpx.Response:
        auth = request.headers["authorization"]
        if request.url.path == "/echo":
            body = {"headers": {"authorization": auth}, "seen": [f"x {auth} y", 1], "s3cret": True}
            return httpx.Response(200, json=body)
        if request.url.path == "/fail":
            return httpx.Response(500, text=f"rejected {auth}")
        if request.url.path == "/edge":  # the token right across the 64 KiB cut
            return httpx.Response(200, text="x" * 65533 + "s3cret" + "y" * 100)
        if request.url.path == "/long-error":  # and across the 500-character error cut
            return httpx.Response(500, text="E" * 498 + "s3cret")
        raise RuntimeError(f"handler saw {auth}")

    async def main():
        async with dispatcher(Target(echo)) as d:
            return [
                await d.dispatch(make_fire(path))
                for path in ("/echo", "/fail", "/edge", "/long-error", "/raise")
            ]

    echoed, failed, edge, long_error, raised = arun(main())
    assert echoed.output == {
        "headers": {"authorization": "Bearer [redacted]"},
        "seen": ["x Bearer [redacted] y", 1],
        "[redacted]": True,
    }
    assert failed.error == "HTTP 500 Internal Server Error: rejected Bearer [redacted]"
    assert edge.output == "x" * 65533 + "[re" and edge.extra == {"output_truncated": True}
    assert long_error.error == "HTTP 500 Internal Server Error: " + "E" * 498 + "[r…"
    assert raised.error == "RuntimeError('handler saw Bearer [redacted]')"


def test_the_token_is_redacted_from_run_output_and_poll_errors():
    clock = SimClock(T0)
    done = {"status": "COMPLETED", "content": {"said": ["token s3cret"]}, "content_type": "json"}
    target = run_target([done], clock)
    failing = run_target([403], clock)
    failing.handler = lambda r: (
        httpx.Response(202, json={"run_id": "r1", "session_id": "s1"})
        if r.method == "POST"
        else httpx.Response(403, text=f"no for {r.headers['authorization']}")
    )

    async def main():
        async with dispatcher(target, clock=clock) as d, dispatcher(failing, clock=clock) as f:
            tasks = [asyncio.create_task(x.dispatch(make_fire("/agents/a1/runs"))) for x in (d, f)]
            await clock.advance(1)
            return [await t for t in tasks]

    completed, refused = arun(main())
    assert completed.output == {"content": {"said": ["token [redacted]"]}, "content_type": "json"}
    assert refused.error == "poll: HTTP 403 Forbidden: no for Bearer [redacted]"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_no_payload_sends_no_body_and_no_content_type(method):
    target = Target(lambda r: httpx.Response(200, json={"ok": True}))

    async def main():
        async with dispatcher(target) as d:
            none = await d.dispatch(make_fire(method=method, payload=None))
            empty = await d.dispatch(make_fire(method=method, payload={}))
            return none, empty

    none, empty = arun(main())
    assert none.status == empty.status == "success"
    bare, braces = target.requests
    assert bare.content == b"" and "Content-Type" not in bare.headers
    assert (braces.content, braces.headers["Content-Type"]) == (b"{}", "application/json")


class _AgentOSHandler(BaseHTTPRequestHandler):
    """A loopback AgentOS: POST /workflows/wf/runs starts a background run (the first keeps
    running, later ones are COMPLETED at once), GET <run>?session_id= polls it, and POST
    <run>/cancel?session_id= cancels it (200 {})."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, str | None]]
    runs: dict[str, dict]

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.seen.append((self.command, self.path, self.headers.get("Authorization")))
        parts = urlsplit(self.path)
        session = dict(parse_qsl(parts.query)).get("session_id")
        path = parts.path.split("/")[4:]  # after /workflows/wf/runs
        run = self.runs.get(path[0]) if path else None
        if run is not None and run["session_id"] != session:
            run = None
        return path, run

    def do_POST(self):
        path, run = self._route()
        if not path:
            n = len(self.runs) + 1
            run_id = f"wr{n}"
            status = "RUNNING" if n == 1 else "COMPLETED"
            self.runs[run_id] = {"run_id": run_id, "session_id": f"ws{n}", "status": status}
            self._reply(202, {"run_id": run_id, "session_id": f"ws{n}", "status": "PENDING"})
        elif path[1:] == ["cancel"] and run is not None:
            run["status"] = "CANCELLED"
            self._reply(200, {})
        else:
            self._reply(404, {"detail": "Run not found"})

    def do_GET(self):
        _, run = self._route()
        if run is None:
            self._reply(404, {"detail": "Run not found"})
        else:
            done = {"content": f"{run['run_id']} done", "content_type": "str"}
            self._reply(200, {**run, **(done if run["status"] == "COMPLETED" else {})})

    def log_message(self, *args):
        pass


def test_loopback_agentos_cancel_on_timeout_then_retry_attaches():
    handler = type("Handler", (_AgentOSHandler,), {"seen": [], "runs": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    clock = SimClock(T0)

    async def main():
        started = asyncio.Event()

        async def on_started(run_id, session_id):
            started.set()

        # The deadline falls while the run is RUNNING (the next poll would be 10 s away).
        async with HttpDispatcher(base, "tok", clock=clock, poll_initial=10.0) as d:
            fire = make_fire("/workflows/wf/runs", timeout_seconds=1)
            task = asyncio.create_task(d.dispatch(fire, on_started))
            await started.wait()
            await clock.advance(1)
            timed_out = await task
        # Its retry attaches, finds the run CANCELLED and starts one; a re-delivery of that
        # attempt attaches to the new run and takes its result without starting anything.
        async with HttpDispatcher(base, "tok", clock=clock, poll_initial=0.0) as d:
            retry = make_fire("/workflows/wf/runs", attempt=2, run_id="wr1", session_id="ws1")
            retried = await d.dispatch(retry)
            again = make_fire("/workflows/wf/runs", attempt=2, run_id="wr2", session_id="ws2")
            redelivered = await d.dispatch(again)
        return timed_out, retried, redelivered

    try:
        timed_out, retried, redelivered = arun(main())
    finally:
        server.shutdown()
        server.server_close()
    assert (timed_out.status, timed_out.run_id, timed_out.session_id) == ("timeout", "wr1", "ws1")
    assert timed_out.error == "run did not finish within 1s; cancel accepted"
    assert (retried.status, retried.run_id, retried.status_code) == ("success", "wr2", 202)
    assert retried.output == {"content": "wr2 done", "content_type": "str"}
    assert (redelivered.status, redelivered.run_id, redelivered.status_code) == (
        "success",
        "wr2",
        200,
    )
    assert [(m, p) for m, p, _ in handler.seen] == [
        ("POST", "/workflows/wf/runs"),
        ("POST", "/workflows/wf/runs/wr1/cancel?session_id=ws1"),
        ("GET", "/workflows/wf/runs/wr1?session_id=ws1"),
        ("POST", "/workflows/wf/runs"),
        ("GET", "/workflows/wf/runs/wr2?session_id=ws2"),
        ("GET", "/workflows/wf/runs/wr2?session_id=ws2"),
    ]
    assert {auth for _, _, auth in handler.seen} == {"Bearer tok"}
    assert handler.runs["wr1"]["status"] == "CANCELLED"
