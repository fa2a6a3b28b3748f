"""The AgentOS server's run routes, sessions, traces, auth and lifespan, against a real SQLite
file: in-process over httpx.ASGITransport with the app's lifespan running, the app's own
scheduler firing through its routes, and one real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from leasecron.adapters.fastapi import AgentOS
from leasecron.kernel import ScheduleManager, SqliteStore, StepInput, ValidationError, Workflow

TOKEN = "s3cret-token"
FORM = "application/x-www-form-urlencoded"


# -- components ----------------------------------------------------------------------------------


class EchoAgent:
    """Answers "echo: <message>" and keeps what each call was given."""

    def __init__(self, id: str = "echo"):
        self.id = id
        self.name = f"{id} agent"
        self.description = "says it back"
        self.calls: list[dict[str, Any]] = []

    async def arun(self, message, *, session_id=None, user_id=None, **kwargs):
        self.calls.append(
            {"message": message, "session_id": session_id, "user_id": user_id, **kwargs}
        )
        return f"echo: {message}"


class GatedAgent:
    """Waits until `gate` is set (or forever), then answers."""

    id = "gated"

    def __init__(self):
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def arun(self, message, **kwargs):
        self.entered.set()
        await self.gate.wait()
        return f"done: {message}"


class BoomAgent:
    id = "boom"

    async def arun(self, message, **kwargs):
        raise RuntimeError(f"cannot handle {message!r}")


class SyncAgent:
    """A blocking `run`: served from a worker thread."""

    id = "sync"

    def __init__(self):
        self.threads: list[str] = []

    def run(self, message, *, session_id=None, user_id=None):
        self.threads.append(threading.current_thread().name)
        return f"sync: {message}"


@dataclass
class Reply:
    content: str
    status: str = "COMPLETED"


class Crew:
    """A team: answers an object with .content."""

    id = "crew"

    async def arun(self, message, **kwargs):
        return Reply(f"crew: {message}")


def upper(step_input: StepInput) -> str:
    return str(step_input.input).upper()


def review(step_input: StepInput) -> str:
    extra = step_input.additional_data.get("tone")
    return f"{step_input.previous_step_content} - reviewed" + (f" ({extra})" if extra else "")


def failing(step_input: StepInput) -> str:
    raise RuntimeError("step exploded")


def components() -> dict[str, Any]:
    return {
        "agents": [EchoAgent(), GatedAgent(), BoomAgent(), SyncAgent()],
        "teams": [Crew()],
        "workflows": [
            Workflow(id="blog", steps=[upper, review]),
            Workflow(id="fragile", steps=[upper, failing]),
        ],
    }


def make_os(tmp_path, **options: Any) -> AgentOS:
    parts = components()
    for key in ("agents", "teams", "workflows"):
        options.setdefault(key, parts[key])
    options.setdefault("scheduler", False)
    return AgentOS(db=str(tmp_path / "os.db"), **options)


@contextlib.asynccontextmanager
async def serving(agent_os: AgentOS, token: str | None = None):
    """The app with its lifespan running, and a client on it (ASGITransport, no socket)."""
    app = agent_os.get_app()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://os", headers=headers
        ) as client:
            yield client


def agent_of(agent_os: AgentOS, agent_id: str) -> Any:
    return agent_os.ctx.agents[agent_id]


async def settle(agent_os: AgentOS) -> None:
    """Wait until every run in flight has ended (their tasks, not the clock)."""
    tasks = [live.task for live in list(agent_os.ctx.runs.runs.values()) if live.task]
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


async def start(client, path: str, **form: str) -> dict[str, Any]:
    form.setdefault("stream", "false")
    form.setdefault("background", "true")
    r = await client.post(path, data=form)
    assert r.status_code == 202, r.text
    return r.json()


async def poll(client, path: str, started: dict[str, Any]) -> dict[str, Any]:
    r = await client.get(
        f"{path}/{started['run_id']}", params={"session_id": started["session_id"]}
    )
    assert r.status_code == 200, r.text
    return r.json()


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


# -- runs: bodies, modes, results ----------------------------------------------------------------


async def test_background_run_is_202_pending_then_polls_running_then_completed(tmp_path):
    agent_os = make_os(tmp_path)
    async with serving(agent_os) as client:
        gated = agent_of(agent_os, "gated")
        started = await start(client, "/agents/gated/runs", message="hi", session_id="s-1")
        assert set(started) == {"run_id", "session_id", "status"}
        assert started["status"] == "PENDING" and started["session_id"] == "s-1"
        await gated.entered.wait()
        running = await poll(client, "/agents/gated/runs", started)
        assert running["status"] == "RUNNING" and "content" not in running
        gated.gate.set()
        await settle(agent_os)
        done = await poll(client, "/agents/gated/runs", started)
    assert done["status"] == "COMPLETED"
    assert done["content"] == "done: hi" and done["content_type"] == "str"
    assert done["agent_id"] == "gated" and done["run_id"] == started["run_id"]
    assert done["input"] == "hi" and isinstance(done["created_at"], int)
    assert done["metrics"]["duration"] >= 0


async def test_a_background_run_without_session_gets_a_fresh_one(tmp_path):
    async with serving(make_os(tmp_path)) as client:
        a = await start(client, "/agents/echo/runs", message="x")
        b = await start(client, "/agents/echo/runs", message="y")
    assert a["session_id"] and b["session_id"] and a["session_id"] != b["session_id"]
    assert a["run_id"] != b["run_id"]


async def test_sync_run_answers_200_with_the_finished_run_for_form_multipart_and_json(tmp_path):
    async with serving(make_os(tmp_path)) as client:
        form = await client.post("/agents/echo/runs", data={"message": "form", "stream": "false"})
        multipart = await client.post(
            "/agents/echo/runs",
            data={"message": "multi", "stream": "0"},
            files={"unused": (None, "")},  # forces multipart/form-data with a plain field
        )
        as_json = await client.post(
            "/agents/echo/runs", json={"message": "json", "stream": False, "background": False}
        )
    assert multipart.request.headers["content-type"].startswith("multipart/form-data")
    for r, word in ((form, "form"), (multipart, "multi"), (as_json, "json")):
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "COMPLETED" and body["content"] == f"echo: {word}"


async def test_missing_message_is_422_in_the_reference_shape(tmp_path):
    expected = {"type": "missing", "loc": ["body", "message"], "msg": "Field required"}
    async with serving(make_os(tmp_path)) as client:
        replies = [
            await client.post("/agents/echo/runs", data={"stream": "false"}),
            await client.post("/agents/echo/runs", json={"stream": False}),
            await client.post("/agents/echo/runs"),
        ]
    for r in replies:
        assert r.status_code == 422
        assert r.json() == {"detail": [{**expected, "input": None}]}


@pytest.mark.parametrize(
    ("kwargs", "status", "field"),
    [
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, None),
        ({"json": ["a", "list"]}, 422, None),
        ({"json": {"message": 5}}, 422, "message"),
        ({"json": {"message": "m", "session_id": 3}}, 422, "session_id"),
        ({"data": {"message": "m", "stream": "perhaps"}}, 422, "stream"),
        ({"data": {"message": "m", "background": "2"}}, 422, "background"),
        ({"data": {"message": "m", "metadata": "[1, 2]"}}, 422, "metadata"),
        ({"data": {"message": "m", "metadata": "{oops"}}, 422, "metadata"),
        ({"json": {"message": "m", "metadata": "not an object"}}, 422, "metadata"),
        ({"json": {"message": "m", "session_state": [1]}}, 422, "session_state"),
        ({"files": {"message": ("m.txt", b"hi")}}, 422, "message"),
        (
            {
                "content": b"multipart/form-data; but no boundary",
                "headers": {"content-type": "multipart/form-data"},
            },
            422,
            None,
        ),
        ({"content": b"message=hi", "headers": {"content-type": "text/plain"}}, 415, None),
    ],
)
async def test_every_bad_body_is_a_4xx_naming_the_field(tmp_path, kwargs, status, field):
    async with serving(make_os(tmp_path)) as client:
        r = await client.post("/agents/echo/runs", **kwargs)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    if status == 422:
        assert detail[0]["loc"] == (["body"] if field is None else ["body", field])
        assert detail[0]["msg"]
    else:
        assert "content type" in detail


async def test_booleans_read_as_the_reference_reads_them(tmp_path):
    async with serving(make_os(tmp_path)) as client:
        for background, expected in (("true", 202), ("1", 202), ("False", 200), ("0", 200)):
            r = await client.post(
                "/agents/echo/runs",
                data={"message": "b", "stream": "FALSE", "background": background},
            )
            assert r.status_code == expected, (background, r.text)


async def test_stream_defaults_to_true_and_sends_agent_events(tmp_path):
    async with serving(make_os(tmp_path)) as client:
        r = await client.post("/agents/echo/runs", data={"message": "hi"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert [name for name, _ in events] == ["RunStarted", "RunContent", "RunCompleted"]
    assert events[1][1]["content"] == "echo: hi"
    completed = events[-1][1]
    assert completed["status"] == "COMPLETED" and completed["run_id"] == events[0][1]["run_id"]


async def test_workflow_stream_sends_step_events_and_error_events(tmp_path):
    async with serving(make_os(tmp_path)) as client:
        ok = await client.post("/workflows/blog/runs", data={"message": "hi", "stream": "true"})
        bad = await client.post("/workflows/fragile/runs", json={"message": "hi"})
        team = await client.post("/teams/crew/runs", data={"message": "go"})
    names = [name for name, _ in sse_events(ok.text)]
    assert names == ["WorkflowStarted", "StepCompleted", "StepCompleted", "WorkflowCompleted"]
    assert sse_events(ok.text)[-1][1]["content"] == "HI - reviewed"
    bad_events = sse_events(bad.text)
    assert [n for n, _ in bad_events] == [
        "WorkflowStarted",
        "StepCompleted",
        "StepError",
        "WorkflowError",
    ]
    assert "step exploded" in bad_events[-1][1]["content"]
    assert [n for n, _ in sse_events(team.text)] == [
        "TeamRunStarted",
        "TeamRunContent",
        "TeamRunCompleted",
    ]


async def test_workflow_sync_run_has_step_results_metadata_and_extra_data(tmp_path):
    async with serving(make_os(tmp_path)) as client:
        r = await client.post(
            "/workflows/blog/runs",
            data={
                "message": "hello",
                "stream": "false",
                "metadata": json.dumps({"origin": "test", "n": 1}),
                "tone": "warm",
            },
        )
        body = r.json()
        polled = await poll(client, "/workflows/blog/runs", body)
    assert r.status_code == 200 and body["status"] == "COMPLETED"
    assert body["content"] == "HELLO - reviewed (warm)"
    assert body["workflow_id"] == "blog" and body["workflow_name"] == "blog"
    assert [s["step_name"] for s in body["step_results"]] == ["upper", "review"]
    assert body["metadata"] == {"origin": "test", "n": 1}
    assert polled["metadata"] == {"origin": "test", "n": 1}
    assert polled["additional_data"] == {"tone": "warm"}
    assert polled["content"] == body["content"]


async def test_extra_keys_metadata_session_and_user_reach_the_agent(tmp_path):
    agent_os = make_os(tmp_path)
    async with serving(agent_os) as client:
        r = await client.post(
            "/agents/echo/runs",
            data={
                "message": "m",
                "stream": "false",
                "session_id": "s-9",
                "user_id": "ada",
                "metadata": '{"k": "v"}',
                "temperature": "0.2",
            },
        )
    assert r.status_code == 200 and r.json()["user_id"] == "ada"
    (call,) = agent_of(agent_os, "echo").calls
    assert call["message"] == "m" and call["session_id"] == "s-9" and call["user_id"] == "ada"
    assert call["metadata"] == {"k": "v"} and call["temperature"] == "0.2"
    assert call["run_id"] == r.json()["run_id"]


async def test_an_agent_that_raises_is_an_error_run_not_a_500(tmp_path):
    agent_os = make_os(tmp_path)
    async with serving(agent_os) as client:
        sync = await client.post("/agents/boom/runs", data={"message": "x", "stream": "false"})
        started = await start(client, "/agents/boom/runs", message="y")
        await settle(agent_os)
        polled = await poll(client, "/agents/boom/runs", started)
    assert sync.status_code == 200
    assert sync.json()["status"] == "ERROR"
    assert sync.json()["content"].startswith("Run failed: ")
    assert "cannot handle 'x'" in sync.json()["content"]
    assert polled["status"] == "ERROR"
    assert polled["content"].startswith("Background execution failed: ")
    assert "RuntimeError: cannot handle 'y'" in polled["content"]


async def test_a_sync_agent_runs_in_a_worker_thread(tmp_path):
    agent_os = make_os(tmp_path)
    async with serving(agent_os) as client:
        r = await client.post("/agents/sync/runs", data={"message": "s", "stream": "false"})
    assert r.json()["content"] == "sync: s"
    (thread,) = agent_of(agent_os, "sync").threads
    assert thread != threading.current_thread().name


async def test_team_runs_are_served_and_kept_apart_from_agents(tmp_path):
    async with serving(make_os(tmp_path)) as client:
        r = await client.post("/teams/crew/runs", data={"message": "go", "stream": "false"})
        run = r.json()
        as_agent = await client.get(
            f"/agents/crew/runs/{run['run_id']}", params={"session_id": run["session_id"]}
        )
    assert run["content"] == "crew: go" and run["team_id"] == "crew"
    assert as_agent.status_code == 404 and as_agent.json() == {"detail": "Agent not found"}


# -- polls, lists, not found ---------------------------------------------------------------------


async def test_unknown_components_runs_and_sessions_are_404_and_a_run_is_found_by_id(tmp_path):
    async with serving(make_os(tmp_path)) as client:
        assert (await client.post("/agents/nope/runs", data={"message": "m"})).json() == {
            "detail": "Agent not found"
        }
        r = await client.post("/teams/nope/runs", data={"message": "m"})
        assert r.status_code == 404 and r.json() == {"detail": "Team not found"}
        r = await client.post("/workflows/nope/runs", data={"message": "m"})
        assert r.status_code == 404 and r.json() == {"detail": "Workflow not found"}
        run = (await client.post("/agents/echo/runs", data={"message": "m", "stream": "0"})).json()
        wf = (
            await client.post("/workflows/blog/runs", json={"message": "m", "stream": False})
        ).json()
        rid, sid = run["run_id"], run["session_id"]
        cases = [
            (f"/agents/echo/runs/{rid}", {"session_id": "other"}),
            ("/agents/echo/runs/unknown-run", {"session_id": sid}),
            (f"/agents/gated/runs/{rid}", {"session_id": sid}),
            (f"/workflows/blog/runs/{rid}", {"session_id": sid}),
            (f"/agents/echo/runs/{wf['run_id']}", {"session_id": wf["session_id"]}),
        ]
        for path, params in cases:
            r = await client.get(path, params=params)
            assert r.status_code == 404 and r.json() == {"detail": "Run not found"}, path
        # Without session_id (the reference requires one), a run is found by its id alone.
        by_id = await client.get(f"/agents/echo/runs/{rid}")
        assert by_id.status_code == 200 and by_id.json() == run
        other = await client.get(f"/workflows/blog/runs/{rid}")
        assert other.status_code == 404
        assert (await client.get("/agents/echo/runs")).status_code == 422
        assert (await client.get("/sessions/unknown")).json() == {"detail": "Session not found"}
        assert (await client.get("/traces/unknown")).status_code == 404
        assert (await client.get("/agents/nope")).status_code == 404


async def test_a_reused_session_keeps_every_run_and_lists_them(tmp_path):
    async with serving(make_os(tmp_path)) as client:
        for word in ("one", "two"):
            r = await client.post(
                "/agents/echo/runs", data={"message": word, "session_id": "shared", "stream": "0"}
            )
            assert r.status_code == 200
        await client.post(
            "/workflows/blog/runs", data={"message": "three", "session_id": "shared", "stream": "0"}
        )
        listed = await client.get("/agents/echo/runs", params={"session_id": "shared"})
        session = await client.get("/sessions/shared")
    assert [run["content"] for run in listed.json()] == ["echo: one", "echo: two"]
    body = session.json()
    assert body["session_id"] == "shared"
    assert [run["input"] for run in body["runs"]] == ["one", "two", "three"]
    assert [run.get("agent_id") or run.get("workflow_id") for run in body["runs"]] == [
        "echo",
        "echo",
        "blog",
    ]


async def test_a_trace_is_the_span_tree_of_the_run(tmp_path):
    async with serving(make_os(tmp_path)) as client:
        agent_run = (
            await client.post("/agents/echo/runs", data={"message": "t", "stream": "false"})
        ).json()
        wf_run = (
            await client.post("/workflows/blog/runs", data={"message": "t", "stream": "false"})
        ).json()
        agent_trace = (await client.get(f"/traces/{agent_run['run_id']}")).json()
        wf_trace = (await client.get(f"/traces/{wf_run['run_id']}")).json()
    (root,) = agent_trace["spans"]
    assert root["kind"] == "workflow" and root["status"] == "ok"
    (step,) = root["children"]
    (call,) = step["children"]
    assert (step["kind"], call["kind"], call["name"]) == ("step", "agent", "echo agent")
    assert call["start"] and call["end"] and call["duration"] >= 0
    assert call["children"] == [] and call["attributes"]["attempt"] == 1
    (wf_root,) = wf_trace["spans"]
    assert [c["name"] for c in wf_root["children"]] == ["upper", "review"]


# -- cancel --------------------------------------------------------------------------------------


async def test_cancel_of_a_slow_run_ends_it_cancelled(tmp_path):
    agent_os = make_os(tmp_path)
    async with serving(agent_os) as client:
        started = await start(client, "/agents/gated/runs", message="slow")
        await agent_of(agent_os, "gated").entered.wait()
        r = await client.post(
            f"/agents/gated/runs/{started['run_id']}/cancel",
            params={"session_id": started["session_id"]},
        )
        assert r.status_code == 200 and r.json() == {}
        await settle(agent_os)
        polled = await poll(client, "/agents/gated/runs", started)
        again = await client.post(f"/agents/gated/runs/{started['run_id']}/cancel")
        unknown = await client.post("/agents/gated/runs/nope/cancel")
        elsewhere = await client.post(f"/workflows/blog/runs/{started['run_id']}/cancel")
    assert polled["status"] == "CANCELLED"
    assert polled["content"] == f"Run {started['run_id']} was cancelled"
    assert again.status_code == 200 and again.json() == {}
    assert unknown.status_code == 404 and unknown.json() == {"detail": "Run not found"}
    assert elsewhere.status_code == 404


async def test_cancel_before_the_run_began_still_saves_it_cancelled(tmp_path):
    agent_os = make_os(tmp_path)
    async with serving(agent_os) as client:
        # Cancelled in the same step of the loop as it was submitted: its task has not begun.
        live = agent_os.ctx.runs.submit(_component(agent_os, "gated"), _request("early"))
        assert not live.started
        assert await agent_os.ctx.runs.cancel(live.run_id)
        await settle(agent_os)
        polled = await poll(
            client, "/agents/gated/runs", {"run_id": live.run_id, "session_id": live.session_id}
        )
    assert polled["status"] == "CANCELLED"


def _component(agent_os: AgentOS, agent_id: str):
    from leasecron.adapters.fastapi.executor import Component

    return Component("agents", agent_id, agent_of(agent_os, agent_id))


def _request(message: str):
    from leasecron.adapters.fastapi.executor import RunRequest

    return RunRequest(message=message, stream=False, background=True)


async def test_shutdown_cancels_runs_in_flight_and_saves_them_cancelled(tmp_path):
    agent_os = make_os(tmp_path)
    async with serving(agent_os) as client:
        started = await start(client, "/agents/gated/runs", message="left running")
        await agent_of(agent_os, "gated").entered.wait()
    store = SqliteStore(str(tmp_path / "os.db"))
    try:
        run = await store.get_workflow_run(started["run_id"])
    finally:
        await store.close()
    assert run is not None and run.status == "CANCELLED"
    assert agent_os.ctx.runs is None
    # The app's store was lent to the workflows for the lifespan only.
    assert all(wf.db is None for wf in agent_os.ctx.workflows.values())


# -- auth, open routes, lists --------------------------------------------------------------------


async def test_auth_none_wrong_right_and_open_routes(tmp_path):
    agent_os = make_os(tmp_path, token=TOKEN)
    async with serving(agent_os) as client:
        run = await client.post(
            "/agents/echo/runs",
            data={"message": "m", "stream": "false"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert run.status_code == 200
        rid, sid = run.json()["run_id"], run.json()["session_id"]
        guarded = [
            ("POST", "/agents/echo/runs"),
            ("POST", "/workflows/blog/runs"),
            ("GET", f"/agents/echo/runs/{rid}?session_id={sid}"),
            ("GET", f"/agents/echo/runs?session_id={sid}"),
            ("POST", f"/agents/echo/runs/{rid}/cancel"),
            ("GET", f"/sessions/{sid}"),
            ("GET", f"/traces/{rid}"),
            ("GET", "/agents"),
            ("GET", "/teams"),
            ("GET", "/workflows"),
        ]
        for method, path in guarded:
            none = await client.request(method, path, data={"message": "m"})
            assert none.status_code == 401, path
            assert none.json() == {"detail": "Authorization header required"}
            for header in (f"Bearer wrong-{TOKEN}", f"Basic {TOKEN}", "Bearer"):
                wrong = await client.request(
                    method, path, data={"message": "m"}, headers={"Authorization": header}
                )
                assert wrong.status_code == 401, (path, header)
                assert wrong.json() == {"detail": "Invalid authentication token"}
            right = await client.request(
                method,
                path,
                data={"message": "m", "stream": "false"},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert right.status_code == 200, (path, right.text)
        health = await client.get("/health")
        info = await client.get("/info")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["instantiated_at"].endswith("Z")
    assert info.status_code == 200
    body = info.json()
    assert body["auth_mode"] == "security_key"
    assert (body["agent_count"], body["team_count"], body["workflow_count"]) == (4, 1, 2)
    assert body["scheduler"] == {"running": False, "replica_id": None}
    assert body["os_id"] and body["name"] and body["version"]


async def test_without_a_token_every_route_is_open_and_lists_components(tmp_path):
    async with serving(make_os(tmp_path)) as client:
        agents = await client.get("/agents", headers={"Authorization": "Bearer anything"})
        one = await client.get("/agents/echo")
        workflows = await client.get("/workflows")
        info = await client.get("/info")
    assert [a["id"] for a in agents.json()] == ["echo", "gated", "boom", "sync"]
    assert one.json() == {"id": "echo", "name": "echo agent", "description": "says it back"}
    assert [w["id"] for w in workflows.json()] == ["blog", "fragile"]
    assert info.json()["auth_mode"] == "none"


def test_bad_components_are_refused_naming_the_field(tmp_path):
    with pytest.raises(ValidationError, match="agents"):
        AgentOS(db=str(tmp_path / "x.db"), agents=[object()])
    with pytest.raises(ValidationError, match="workflows"):
        AgentOS(db=str(tmp_path / "x.db"), workflows=[EchoAgent("wf")])
    with pytest.raises(ValidationError, match="must not contain '/'"):
        AgentOS(db=str(tmp_path / "x.db"), agents=[EchoAgent("a/b")])


# -- agno ----------------------------------------------------------------------------------------


def echo_model():
    from agno.models.base import Model
    from agno.models.response import ModelResponse

    @dataclass
    class EchoModel(Model):
        """A local model: answers "ECHO: <the last user message>", no network."""

        id: str = "echo-model"
        name: str = "EchoModel"
        provider: str = "local"

        def _reply(self, messages):
            last = next(m for m in reversed(messages) if m.role == "user")
            return ModelResponse(role="assistant", content=f"ECHO: {last.content}")

        def invoke(self, messages=None, **kwargs):
            return self._reply(messages)

        async def ainvoke(self, messages=None, **kwargs):
            return self._reply(messages)

        def invoke_stream(self, messages=None, **kwargs):
            yield self._reply(messages)

        async def ainvoke_stream(self, messages=None, **kwargs):
            yield self._reply(messages)

        def _parse_provider_response(self, response, **kwargs):
            return response

        def _parse_provider_response_delta(self, response):
            return response

    return EchoModel()


async def test_an_agno_agent_with_a_local_model_is_served_as_it_is(tmp_path):
    agent_mod = pytest.importorskip("agno.agent")
    agent = agent_mod.Agent(id="echo-agent", name="Echo", model=echo_model(), telemetry=False)
    agent_os = make_os(tmp_path, agents=[agent])
    async with serving(agent_os) as client:
        sync = await client.post(
            "/agents/echo-agent/runs", data={"message": "hello", "stream": "false"}
        )
        started = await start(client, "/agents/echo-agent/runs", message="again")
        await settle(agent_os)
        polled = await poll(client, "/agents/echo-agent/runs", started)
    assert sync.status_code == 200, sync.text
    assert sync.json()["status"] == "COMPLETED" and sync.json()["content"] == "ECHO: hello"
    assert sync.json()["agent_name"] == "Echo"
    assert polled["status"] == "COMPLETED" and polled["content"] == "ECHO: again"


# -- OpenAPI -------------------------------------------------------------------------------------


def test_openapi_documents_bodies_and_errors(tmp_path):
    doc = make_os(tmp_path, token=TOKEN).get_app().openapi()
    paths = doc["paths"]
    post = paths["/agents/{component_id}/runs"]["post"]
    content = post["requestBody"]["content"]
    for media in ("application/x-www-form-urlencoded", "multipart/form-data", "application/json"):
        assert content[media]["schema"]["required"] == ["message"]
        assert "message" in content[media]["schema"]["properties"]
    assert {"200", "202", "401", "404", "415", "422"} <= set(post["responses"])
    poll_op = paths["/workflows/{component_id}/runs/{run_id}"]["get"]
    assert {"200", "401", "404", "422"} <= set(poll_op["responses"])
    for path, ops in paths.items():
        for method, op in ops.items():
            if path not in ("/health", "/info") and not path.startswith("/schedules"):
                assert "401" in op["responses"], (method, path)
    for path in ("/sessions/{session_id}", "/traces/{run_id}", "/teams/{component_id}/runs"):
        assert path in paths


# -- the scheduler's loop ------------------------------------------------------------------------


async def wait_for(condition, what: str, attempts: int = 400):
    """Wait for a condition of the real-clock app: short sleeps, bounded; never timed."""
    for _ in range(attempts):
        found = await condition()
        if found:
            return found
        await asyncio.sleep(0.025)
    raise AssertionError(f"gave up waiting for {what}")


async def first_success(manager: ScheduleManager, schedule_id: str):
    async def check():
        rows = await manager.runs(schedule_id, limit=50)
        return next((row for row in rows if row.status == "success"), None)

    return check


async def test_the_apps_own_scheduler_fires_through_its_routes(tmp_path):
    agent_os = make_os(tmp_path, token=TOKEN, scheduler=True, scheduler_poll_interval=0.05)
    async with serving(agent_os, token=TOKEN) as client:
        manager = agent_os.ctx.manager
        schedule = await manager.create(
            "echo-every",
            endpoint="/agents/echo/runs",
            interval_seconds=0.2,
            payload={"message": "hi"},
        )
        row = await wait_for(await first_success(manager, schedule.id), "a successful fire")
        assert row.run_id and row.session_id
        run = await client.get(
            f"/agents/echo/runs/{row.run_id}", params={"session_id": row.session_id}
        )
        session = await client.get(f"/sessions/{row.session_id}")
        trace = await client.get(f"/traces/{row.run_id}")
        info = await client.get("/info")
        await manager.disable(schedule.id)
    assert run.status_code == 200 and run.json()["status"] == "COMPLETED"
    assert run.json()["content"] == "echo: hi"
    assert row.run_id in [r["run_id"] for r in session.json()["runs"]]
    assert trace.json()["spans"][0]["kind"] == "workflow"
    assert info.json()["scheduler"]["running"] is True
    assert info.json()["scheduler"]["replica_id"]
    call = agent_of(agent_os, "echo").calls[0]
    assert call["message"] == "hi"


# -- one real uvicorn server ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def uvicorn_server(app, port: int):
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(400):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.025)
        assert server.started, "uvicorn did not start"
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive()


async def test_over_a_real_socket_with_a_token_end_to_end(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    created: list[str] = []

    async def declare(manager: ScheduleManager) -> None:
        s = await manager.create(
            "echo-loopback",
            endpoint="/agents/echo/runs",
            interval_seconds=0.2,
            payload={"message": "over the wire"},
        )
        created.append(s.id)

    served = make_os(
        tmp_path,
        token=TOKEN,
        scheduler=True,
        scheduler_poll_interval=0.05,
        scheduler_base_url=base,
        on_startup=declare,
    )
    with uvicorn_server(served.get_app(), port):
        store = SqliteStore(str(tmp_path / "os.db"))
        try:
            manager = ScheduleManager(store)
            row = await wait_for(await first_success(manager, created[0]), "a fire over loopback")
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient(base_url=base, headers=headers) as client:
                run = await client.get(
                    f"/agents/echo/runs/{row.run_id}", params={"session_id": row.session_id}
                )
                session = await client.get(f"/sessions/{row.session_id}")
                trace = await client.get(f"/traces/{row.run_id}")
                denied = await client.get(
                    f"/sessions/{row.session_id}", headers={"Authorization": "Bearer no"}
                )
                await manager.disable(created[0])

            # A second server whose scheduler fires at the first with the wrong token.
            caller = AgentOS(
                db=str(tmp_path / "caller.db"),
                token="not-the-token",
                scheduler_poll_interval=0.05,
                scheduler_base_url=base,
            )
            async with serving(caller):
                cm = caller.ctx.manager
                s = await cm.create(
                    "wrong-token",
                    endpoint="/agents/echo/runs",
                    interval_seconds=0.2,
                    payload={"message": "x"},
                    max_retries=0,
                )

                async def refused():
                    rows = await cm.runs(s.id, limit=10)
                    return next((r for r in rows if r.status == "failed"), None)

                failed = await wait_for(refused, "a refused fire")
                await cm.disable(s.id)
        finally:
            await store.close()
    assert run.status_code == 200 and run.json()["content"] == "echo: over the wire"
    assert row.run_id in [r["run_id"] for r in session.json()["runs"]]
    assert trace.json()["spans"][0]["children"][0]["kind"] == "step"
    assert denied.status_code == 401
    assert "401" in (failed.error or "") and failed.status_code == 401


# -- Postgres ------------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_runs_sessions_and_traces_on_postgres(pg_dsn):
    agent_os = AgentOS(db=pg_dsn, scheduler=False, **components())
    async with serving(agent_os) as client:
        sync = await client.post(
            "/agents/echo/runs", data={"message": "pg", "stream": "false", "session_id": "pg-s"}
        )
        started = await start(client, "/workflows/blog/runs", message="pg", session_id="pg-s")
        await settle(agent_os)
        polled = await poll(client, "/workflows/blog/runs", started)
        cross = await client.get(
            f"/agents/echo/runs/{started['run_id']}", params={"session_id": "pg-s"}
        )
        session = await client.get("/sessions/pg-s")
        trace = await client.get(f"/traces/{sync.json()['run_id']}")
    assert sync.json()["status"] == "COMPLETED" and sync.json()["content"] == "echo: pg"
    assert polled["status"] == "COMPLETED" and polled["content"] == "PG - reviewed"
    assert cross.status_code == 404
    assert [r["status"] for r in session.json()["runs"]] == ["COMPLETED", "COMPLETED"]
    assert trace.json()["spans"][0]["children"][0]["children"][0]["kind"] == "agent"


async def test_a_waiting_caller_that_goes_away_cancels_its_run(tmp_path):
    agent_os = make_os(tmp_path)
    async with serving(agent_os) as client:
        executor = agent_os.ctx.runs
        live = executor.submit(_component(agent_os, "gated"), _request("inline"))
        waiter = asyncio.create_task(executor.wait(live))
        await agent_of(agent_os, "gated").entered.wait()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await settle(agent_os)
        polled = await poll(
            client, "/agents/gated/runs", {"run_id": live.run_id, "session_id": live.session_id}
        )
    assert polled["status"] == "CANCELLED"


async def test_cancel_of_a_run_stored_running_by_another_process_is_409(tmp_path):
    from leasecron.kernel import RunStatus, WorkflowRunOutput

    agent_os = make_os(tmp_path)
    async with serving(agent_os) as client:
        orphan = WorkflowRunOutput(
            run_id="elsewhere",
            workflow_id="agents/echo",
            workflow_name="echo agent",
            session_id="s-x",
            status=RunStatus.RUNNING,
            started_at=1_780_000_000.0,
        )
        await agent_os.ctx.store.save_run(orphan, create=True)
        r = await client.post("/agents/echo/runs/elsewhere/cancel", params={"session_id": "s-x"})
        polled = await poll(
            client, "/agents/echo/runs", {"run_id": "elsewhere", "session_id": "s-x"}
        )
    assert r.status_code == 409 and "not running in this server process" in r.json()["detail"]
    assert polled["status"] == "RUNNING" and "content" not in polled


async def test_shutdown_mid_fire_hands_the_lease_back_and_the_run_ends_cancelled(tmp_path):
    agent_os = make_os(tmp_path, scheduler=True, scheduler_poll_interval=0.05)
    async with serving(agent_os):
        manager = agent_os.ctx.manager
        schedule = await manager.create(
            "slow", endpoint="/agents/gated/runs", interval_seconds=3600, payload={"message": "z"}
        )
        await manager.trigger(schedule.id)
        entered = agent_of(agent_os, "gated").entered

        async def is_running():
            return entered.is_set()

        await wait_for(is_running, "the fired run to start")

        async def started_row():
            rows = await manager.runs(schedule.id, limit=10)
            return next((r for r in rows if r.run_id), None)

        row = await wait_for(started_row, "the run id on the schedule's run row")
    store = SqliteStore(str(tmp_path / "os.db"))
    try:
        run = await store.get_workflow_run(row.run_id)
        # Handed back: another replica claims it at once rather than waiting out the lease.
        claims = await store.claim("next-replica", time.time(), 30.0, 10)
    finally:
        await store.close()
    assert run is not None and run.status == "CANCELLED"
    assert [c.schedule.id for c in claims] == [schedule.id]
