"""`Prefer: wait` (RFC 7240) and client-chosen run ids: a run's POST held until the run ends,
a poll held likewise, a repeated POST of one run id answered with that run; and the kernel's
dispatcher speaking it (`long_poll`): the run named and recorded before the POST, one request
for a short run, a lost reply attached on retry rather than run twice."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from test_agentos_server import agent_of, make_os, poll, serving, settle, start
from test_dispatch import make_fire

from leasecron.adapters.fastapi.executor import Component, RunRequest
from leasecron.adapters.fastapi.prefer import MAX_WAIT, preferred_wait
from leasecron.kernel import HttpDispatcher, SimClock, ValidationError, WorkflowRunOutput

HELD = {"Prefer": "wait=5"}
BACKGROUND = {"stream": "false", "background": "true"}


async def test_a_held_post_answers_200_with_the_finished_run_as_its_poll_does(tmp_path):
    agent_os = make_os(tmp_path)
    async with serving(agent_os) as client:
        held = await client.post(
            "/agents/echo/runs", data={"message": "hi", **BACKGROUND}, headers=HELD
        )
        polled = await poll(client, "/agents/echo/runs", held.json())
        # A poll of a run no longer in flight is answered at once: no wait is claimed, so a
        # client backs off rather than asking again at once.
        ended = held.json()
        unheld = await client.get(
            f"/agents/echo/runs/{ended['run_id']}",
            params={"session_id": ended["session_id"]},
            headers=HELD,
        )
        plain = await client.post("/agents/echo/runs", data={"message": "hi", **BACKGROUND})
    assert held.status_code == 200
    assert held.headers["preference-applied"] == "wait=5"
    assert held.json() == polled
    assert unheld.status_code == 200 and "preference-applied" not in unheld.headers
    assert polled["status"] == "COMPLETED" and polled["content"] == "echo: hi"
    # Without the preference: the reference's answer, unchanged.
    assert plain.status_code == 202 and "preference-applied" not in plain.headers
    assert plain.json()["status"] == "PENDING"


async def test_a_held_post_of_a_longer_run_answers_202_at_the_wait_and_the_run_goes_on(tmp_path):
    clock = SimClock(start=1_000.0)
    agent_os = make_os(tmp_path, clock=clock)
    async with serving(agent_os) as client:
        gated = agent_of(agent_os, "gated")
        post = asyncio.ensure_future(
            client.post("/agents/gated/runs", data={"message": "slow", **BACKGROUND}, headers=HELD)
        )
        await gated.entered.wait()
        await clock.advance(4.9)
        assert not post.done()  # still held: the wait is not over
        await clock.advance(0.2)
        reply = await post
        assert reply.status_code == 202 and reply.headers["preference-applied"] == "wait=5"
        started = reply.json()
        assert started["status"] == "PENDING"
        # A held poll answers as soon as the run ends.
        url = f"/agents/gated/runs/{started['run_id']}"
        params = {"session_id": started["session_id"]}
        held_poll = asyncio.ensure_future(client.get(url, params=params, headers=HELD))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not held_poll.done()
        gated.gate.set()
        answer = await held_poll
    assert answer.status_code == 200 and answer.headers["preference-applied"] == "wait=5"
    assert (answer.json()["status"], answer.json()["content"]) == ("COMPLETED", "done: slow")


async def test_a_repeated_post_of_one_run_id_answers_that_run_and_starts_no_second(tmp_path):
    agent_os = make_os(tmp_path)
    async with serving(agent_os) as client:
        echo = agent_of(agent_os, "echo")
        form = {"message": "once", "run_id": "r-1", "session_id": "s-1", **BACKGROUND}
        first = await client.post("/agents/echo/runs", data=form)
        again_live = await client.post("/agents/echo/runs", data=form)  # still in flight
        await settle(agent_os)
        again_held = await client.post("/agents/echo/runs", data=form, headers=HELD)
        agent_os.ctx.runs.saved.forget("r-1")  # as another process would see it: from the store
        again_sync = await client.post("/agents/echo/runs", data={**form, "background": "false"})
        session = (await client.get("/sessions/s-1")).json()
    assert first.status_code == 202 and first.json()["run_id"] == "r-1"
    assert again_live.status_code == 202 and again_live.json()["run_id"] == "r-1"
    assert again_held.status_code == 200 and again_held.json()["content"] == "echo: once"
    assert "preference-applied" not in again_held.headers  # over already: nothing was held
    assert again_sync.status_code == 200 and again_sync.json() == again_held.json()
    assert len(echo.calls) == 1
    assert [r["run_id"] for r in session["runs"]] == ["r-1"]


async def test_a_run_id_of_another_component_or_session_is_409_and_a_malformed_one_422(tmp_path):
    agent_os = make_os(tmp_path)
    async with serving(agent_os) as client:
        taken = await start(client, "/agents/echo/runs", message="m", run_id="mine")
        await settle(agent_os)
        other_agent = await client.post(
            "/teams/crew/runs", data={"message": "m", "run_id": "mine", **BACKGROUND}
        )
        other_session = await client.post(
            "/agents/echo/runs",
            data={"message": "m", "run_id": "mine", "session_id": "elsewhere", **BACKGROUND},
        )
        bad = [
            await client.post(
                "/agents/echo/runs", data={"message": "m", "run_id": value, **BACKGROUND}
            )
            for value in ("../x", "a b", "x" * 129, "-lead")
        ]
        kept = await poll(client, "/agents/echo/runs", taken)
    assert other_agent.status_code == 409 and "mine" in other_agent.json()["detail"]
    assert other_session.status_code == 409
    for reply in bad:
        assert reply.status_code == 422, reply.text
        assert reply.json()["detail"][0]["loc"] == ["body", "run_id"]
    assert kept["status"] == "COMPLETED" and kept["session_id"] == taken["session_id"]


async def test_a_run_id_the_store_refuses_at_its_start_leaves_the_stored_run_untouched(tmp_path):
    """Two processes given one run id in the same instant: the second's start save is refused
    (the store's insert), and it must not save an ERROR over the first's run."""
    agent_os = make_os(tmp_path)
    async with serving(agent_os):
        executor = agent_os.ctx.runs
        theirs = WorkflowRunOutput(
            run_id="shared", workflow_id="teams/crew", workflow_name="crew", session_id="s"
        )
        theirs.status = "COMPLETED"
        theirs.content = "theirs"
        await executor.store.save_run(theirs)
        component = Component("agents", "echo", agent_of(agent_os, "echo"))
        live = executor.submit(component, RunRequest(message="mine", run_id="shared"))
        assert await executor.settle(live, 5)
        stored = await executor.store.get_workflow_run("shared")
    assert live.refused and "shared" in live.refused
    assert (stored.status, stored.content) == ("COMPLETED", "theirs")
    assert agent_of(agent_os, "echo").calls == []


def test_the_wait_preference_is_read_as_rfc_7240_words_it_and_capped():
    from starlette.requests import Request

    def asked(value: str | None) -> float | None:
        headers = [] if value is None else [(b"prefer", value.encode())]
        return preferred_wait(Request({"type": "http", "headers": headers}))

    assert asked("wait=10") == 10.0
    assert asked("respond-async, wait=2.5") == 2.5
    assert asked('handling=lenient, WAIT="3"; x=y') == 3.0
    assert asked("wait=100000") == MAX_WAIT
    for ignored in (None, "", "respond-async", "wait=", "wait=soon", "wait=-1", "wait=nan"):
        assert asked(ignored) is None, ignored


# -- the dispatcher's side --------------------------------------------------------------------


class Counting(httpx.AsyncBaseTransport):
    """The app's ASGI transport, counting requests and seeing each one's headers and form."""

    def __init__(self, app: Any, lose_post_reply: bool = False, log: list[Any] | None = None):
        self.inner = httpx.ASGITransport(app=app)
        self.sent: list[tuple[str, str, dict[str, str], dict[str, str]]] = []
        self.lose_post_reply = lose_post_reply
        self.log = log if log is not None else []  # "sent" for each request, in order

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = (await request.aread()).decode()
        form = dict(pair.split("=", 1) for pair in body.split("&")) if body else {}
        self.sent.append((request.method, request.url.path, dict(request.headers), form))
        self.log.append("sent")
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and self.lose_post_reply:
            self.lose_post_reply = False
            await response.aread()
            raise httpx.ReadError("connection reset before the reply was read")
        return response


async def test_the_dispatcher_names_the_run_records_it_first_and_sends_one_request(tmp_path):
    agent_os = make_os(tmp_path)
    async with serving(agent_os):
        order: list[Any] = []
        transport = Counting(agent_os.get_app(), log=order)
        dispatcher = HttpDispatcher("http://os", transport=transport, long_poll=5)

        async def on_started(run_id, session_id):
            order.append(("recorded", run_id, session_id))

        fire = make_fire("/agents/echo/runs", payload={"message": "hi"})
        outcome = await dispatcher.dispatch(fire, on_started)
        await dispatcher.aclose()
    assert outcome.status == "success", outcome.error
    assert outcome.output["content"] == "echo: hi"
    assert len(transport.sent) == 1
    method, path, headers, form = transport.sent[0]
    assert (method, path, headers["prefer"]) == ("POST", "/agents/echo/runs", "wait=5")
    # Recorded before it is sent; the session is the server's to make up, and comes back.
    assert order == [("recorded", outcome.run_id, None), "sent"]
    assert form["run_id"] == outcome.run_id and "session_id" not in form
    assert outcome.session_id


async def test_a_lost_reply_is_attached_on_retry_not_run_twice(tmp_path):
    agent_os = make_os(tmp_path)
    async with serving(agent_os):
        transport = Counting(agent_os.get_app(), lose_post_reply=True)
        dispatcher = HttpDispatcher("http://os", transport=transport, long_poll=5)
        fire = make_fire("/agents/echo/runs", payload={"message": "hi"})
        lost = await dispatcher.dispatch(fire)
        await settle(agent_os)
        retry = make_fire(
            "/agents/echo/runs",
            payload={"message": "hi"},
            attempt=2,
            run_id=lost.run_id,
            session_id=lost.session_id,
        )
        attached = await dispatcher.dispatch(retry)
        await dispatcher.aclose()
    assert lost.status == "failed" and lost.retryable and lost.run_id
    assert attached.status == "success" and attached.run_id == lost.run_id
    assert len(agent_of(agent_os, "echo").calls) == 1
    assert [m for m, *_ in transport.sent] == ["POST", "GET"]


async def test_long_poll_against_a_target_that_ignores_it_polls_the_id_the_target_gave():
    """The reference AgentOS knows neither the preference nor client run ids: it answers 202
    with its own run id; the dispatcher records that one too and polls it with backoff."""
    polls: list[str] = []

    def reference(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(
                202, json={"run_id": "theirs", "session_id": "their-s", "status": "PENDING"}
            )
        polls.append(request.url.path)
        status = "RUNNING" if len(polls) < 3 else "COMPLETED"
        return httpx.Response(200, json={"run_id": "theirs", "status": status, "content": "ok"})

    clock = SimClock(start=0.0)
    recorded: list[tuple[str, str]] = []

    async def on_started(run_id, session_id):
        recorded.append((run_id, session_id))

    dispatcher = HttpDispatcher(
        "http://ref", transport=httpx.MockTransport(reference), long_poll=5, clock=clock
    )
    task = asyncio.ensure_future(
        dispatcher.dispatch(make_fire("/agents/a/runs", payload={"message": "m"}), on_started)
    )
    while not task.done():
        await clock.advance(0.5)
    outcome = task.result()
    await dispatcher.aclose()
    assert outcome.status == "success" and outcome.run_id == "theirs"
    assert recorded == [(recorded[0][0], None), ("theirs", "their-s")]
    assert recorded[0][0] != "theirs"
    assert polls == ["/agents/a/runs/theirs"] * 3
    assert clock.now() > 0  # it backed off between the unheld polls


@pytest.mark.parametrize("value", [0, -1, 61, float("nan")])
def test_a_long_poll_out_of_bounds_is_refused_naming_it(value):
    with pytest.raises(ValidationError) as info:
        HttpDispatcher("http://x", long_poll=value)
    assert info.value.field == "long_poll"


def test_the_openapi_document_describes_the_run_id_field(tmp_path):
    schema = make_os(tmp_path).get_app().openapi()
    body = schema["paths"]["/agents/{component_id}/runs"]["post"]["requestBody"]["content"]
    props = body["application/json"]["schema"]["properties"]
    assert props["run_id"]["type"] == "string"
    json.dumps(schema)  # serialisable as served
