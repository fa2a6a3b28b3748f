"""An AgentOS gives its agents schedule tools (`AgentOS.scheduler_tools`): the same endpoint rule
as the REST routes, one user's schedules only, and the app's own scheduler (on the clock given to
the AgentOS) firing what they create through the app's own routes."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx

from leasecron.adapters.fastapi import AgentOS
from leasecron.kernel import SimClock

TOKEN = "tools-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Echo:
    id = "echo"

    def __init__(self):
        self.received: list[str] = []

    async def arun(self, message, **kwargs):
        self.received.append(message)
        return f"echo: {message}"


@contextlib.asynccontextmanager
async def started(agent_os: AgentOS):
    app = agent_os.get_app()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://os") as client:
            yield client


def test_tools_before_the_app_starts_answer_an_error_not_an_exception(tmp_path):
    agent_os = AgentOS(db=str(tmp_path / "os.db"), agents=[Echo()], scheduler=False)
    tools = agent_os.scheduler_tools(user_id="ann")
    answer = json.loads(asyncio.run(tools.call("list_schedules", {})))
    assert answer == {"error": "the schedule store is unavailable; try again later"}


def test_tools_follow_the_apps_endpoint_rule_and_owners(tmp_path):
    agent_os = AgentOS(
        db=str(tmp_path / "os.db"),
        agents=[Echo()],
        token=TOKEN,
        scheduler=False,
        allowed_endpoints=["/hooks/*"],
    )
    ann = agent_os.scheduler_tools(user_id="ann")
    bob = agent_os.scheduler_tools(user_id="bob")
    assert ann.allowed_endpoints == ["/agents/echo/runs", "/hooks/*"]

    async def main():
        async with started(agent_os) as client:
            made = json.loads(
                await ann.call(
                    "create_schedule",
                    {
                        "name": "daily",
                        "cron": "0 9 * * *",
                        "endpoint": "/agents/echo/runs",
                        "payload": {"message": "hi"},
                    },
                )
            )
            refused = [
                json.loads(
                    await ann.call(
                        "create_schedule",
                        {"name": f"x{i}", "cron": "0 9 * * *", "endpoint": endpoint,
                         "payload": {"message": "hi"}},
                    )
                )
                for i, endpoint in enumerate(("/admin", "/agents/nope/runs"))
            ]  # fmt: skip
            hook = json.loads(
                await ann.call(
                    "create_schedule",
                    {"name": "hook", "cron": "0 9 * * *", "endpoint": "/hooks/a"},
                )
            )
            seen_by_bob = json.loads(await bob.call("get_schedule", {"schedule_id": made["id"]}))
            rest_ann = await client.get("/schedules", params={"user_id": "ann"}, headers=AUTH)
            rest_bob = await client.get("/schedules", params={"user_id": "bob"}, headers=AUTH)
            return made, refused, hook, seen_by_bob, rest_ann.json(), rest_bob.json()

    made, refused, hook, seen_by_bob, rest_ann, rest_bob = asyncio.run(main())
    assert made["user_id"] == "ann" and made["endpoint"] == "/agents/echo/runs"
    assert [r["field"] for r in refused] == ["endpoint", "endpoint"]
    assert "error" not in hook
    assert seen_by_bob["field"] == "schedule_id"
    assert sorted(s["name"] for s in rest_ann["data"]) == ["daily", "hook"]
    assert rest_bob["data"] == []


def test_a_tool_trigger_fires_through_the_apps_own_route_on_the_given_clock(tmp_path):
    clock = SimClock()
    echo = Echo()
    agent_os = AgentOS(
        db=str(tmp_path / "os.db"),
        agents=[echo],
        token=TOKEN,
        clock=clock,
        scheduler_poll_interval=30,
    )
    tools = agent_os.scheduler_tools(user_id="ann")

    async def main():
        async with started(agent_os) as client:
            made = json.loads(
                await tools.call(
                    "create_schedule",
                    {"name": "later", "cron": "0 9 * * *", "endpoint": "/agents/echo/runs",
                     "payload": {"message": "wake up"}},
                )
            )  # fmt: skip
            await tools.call("trigger_schedule", {"schedule_id": made["id"]})
            await clock.advance(30)
            runs = json.loads(await tools.call("get_schedule_runs", {"schedule_id": made["id"]}))
            (row,) = runs["runs"]
            run = await client.get(
                f"/agents/echo/runs/{row['run_id']}",
                params={"session_id": row["session_id"]},
                headers=AUTH,
            )
            return row, run.json()

    row, run = asyncio.run(main())
    assert (row["trigger"], row["status"]) == ("manual", "success")
    assert echo.received == ["wake up"]
    assert (run["status"], run["content"]) == ("COMPLETED", "echo: wake up")
