"""A poll of a run this process ran is answered from what it saved (adapters/fastapi/
run_cache.py), not read from the store: the answer must be the store read's, for runs in flight
and ended, of every kind and with values the store cleans, and a run pushed out of the bounded
cache is read from the store again."""

from __future__ import annotations

import asyncio
import json

from test_agentos_server import agent_of, make_os, poll, serving, settle, start

from leasecron.adapters.fastapi.run_cache import SavedRuns
from leasecron.adapters.fastapi.views import run_view
from leasecron.kernel import WorkflowRunOutput


class OddAgent:
    """Answers values a store keeps its own way: NaN, a tuple, NUL, a non-str key."""

    id = "odd"

    async def arun(self, message, **kwargs):
        return {"nan": float("nan"), "pair": (1, 2), "nul": "a\x00b", 3: "int key"}


def stored_view(run) -> dict:
    return json.loads(json.dumps(run_view(run)))


async def same_as_store(agent_os, client, path: str, started: dict) -> dict:
    executor = agent_os.ctx.runs
    assert executor.saved.get(started["run_id"]) is not None  # answered from memory
    answered = await poll(client, path, started)
    stored = await agent_os.ctx.store.get_workflow_run(started["run_id"])
    assert answered == stored_view(stored)
    return answered


async def test_polls_from_memory_answer_what_the_store_holds(tmp_path):
    agent_os = make_os(tmp_path)
    agent_os.ctx.agents["odd"] = OddAgent()
    async with serving(agent_os) as client:
        gated = agent_of(agent_os, "gated")
        running = await start(client, "/agents/gated/runs", message="hi", session_id="s1")
        await gated.entered.wait()
        await settle_start(agent_os, running["run_id"])
        view = await same_as_store(agent_os, client, "/agents/gated/runs", running)
        assert view["status"] == "RUNNING" and "content" not in view

        cases = [
            ("/agents/odd/runs", {"message": "x", "metadata": '{"k": [1, 2]}'}),
            ("/agents/boom/runs", {"message": "x"}),
            ("/agents/echo/runs", {"message": "hello", "tone": "dry"}),
            ("/teams/crew/runs", {"message": "go"}),
            ("/workflows/blog/runs", {"message": "post", "tone": "kind"}),
            ("/workflows/fragile/runs", {"message": "post"}),
        ]
        runs = [(path, await start(client, path, **form)) for path, form in cases]
        gated.gate.set()
        await settle(agent_os)
        seen = {}
        for path, started in [*runs, ("/agents/gated/runs", running)]:
            seen[path] = await same_as_store(agent_os, client, path, started)
    assert seen["/agents/odd/runs"]["content"] == {
        "nan": "NaN",
        "pair": [1, 2],
        "nul": "a\ufffdb",
        "3": "int key",
    }
    assert seen["/agents/boom/runs"]["status"] == "ERROR"
    assert seen["/workflows/fragile/runs"]["status"] == "ERROR"
    assert [s["step_name"] for s in seen["/workflows/blog/runs"]["step_results"]] == [
        "upper",
        "review",
    ]
    assert seen["/agents/gated/runs"]["status"] == "COMPLETED"


async def settle_start(agent_os, run_id: str) -> None:
    """Wait until the run's start save is done (it is in the cache then)."""
    for _ in range(1000):
        if agent_os.ctx.runs.saved.get(run_id) is not None:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"run {run_id} never saved its start")


async def test_a_run_pushed_out_of_the_cache_is_read_from_the_store(tmp_path):
    agent_os = make_os(tmp_path)
    async with serving(agent_os) as client:
        agent_os.ctx.runs.saved.limit = 2
        runs = [await start(client, "/agents/echo/runs", message=f"m{i}") for i in range(4)]
        await settle(agent_os)
        saved = agent_os.ctx.runs.saved
        assert len(saved) == 2 and saved.get(runs[0]["run_id"]) is None
        first = await poll(client, "/agents/echo/runs", runs[0])
        last = await same_as_store(agent_os, client, "/agents/echo/runs", runs[3])
    assert (first["status"], first["content"]) == ("COMPLETED", "echo: m0")
    assert (last["status"], last["content"]) == ("COMPLETED", "echo: m3")


def test_saved_runs_keep_the_newest_and_refresh_a_run_saved_again():
    saved = SavedRuns(limit=2)
    a, b, c = (
        WorkflowRunOutput(run_id=n, workflow_id="w", workflow_name="w", session_id="s")
        for n in "abc"
    )
    saved.put(a)
    saved.put(b)
    saved.put(a)  # saved again (its end): now the newest
    saved.put(c)
    assert saved.get("b") is None and saved.get("a") is a and saved.get("c") is c
    saved.forget("a")
    assert saved.get("a") is None and len(saved) == 1


async def test_a_plain_form_reads_as_the_form_parser_reads_it():
    from starlette.requests import Request

    from leasecron.adapters.fastapi.run_request import plain_form

    bodies = [
        b"message=go&stream=false&background=true",
        b"message=a+b%20c%26d%3D&x=%C3%A9t%C3%A9&x=last&empty=&eq=a=b",
        "message=caf\u00e9".encode("latin-1"),
        b"message=%FF%00",
    ]
    for body in bodies:
        sent = False

        async def receive(body=body):
            nonlocal sent
            done, sent = sent, True
            return {"type": "http.disconnect"} if done else {"type": "http.request", "body": body}

        scope = {
            "type": "http",
            "method": "POST",
            "headers": [(b"content-type", b"application/x-www-form-urlencoded")],
        }
        form = await Request(scope, receive).form()
        assert plain_form(body) == dict(form.items()), body
    for other in (b"", b"flag", b"=x", b"a=1&&b=2", b"a=1&" * 70):
        assert plain_form(other) is None, other
