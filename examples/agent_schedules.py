"""An AgentOS agent manages its user's schedules through SchedulerTools, and the app's own
scheduler fires them at another agent of the app, through the app's own routes.

    python examples/agent_schedules.py

A user asks the `assistant` agent (POST /agents/assistant/runs, user "ann") to "remind me every
weekday at 9 in Berlin". Its "model" is scripted: it answers with tool calls exactly as an LLM's
tool-call JSON comes back (OpenAI's shape: a function name and its arguments as a JSON string),
reading each tool's answer before its next call, so the loop below is the loop a real model
would drive. The schedule it creates is ann's, and fires at the `reminder` agent. No network
(the app is called in-process through httpx.ASGITransport) and time is a SimClock given to the
AgentOS, so a weekday 9:00 comes in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from leasecron.adapters.fastapi import AgentOS
from leasecron.kernel import SchedulerTools, SimClock

START = 1_780_000_000.0  # Thursday 2026-05-28, 22:26 in Berlin
TOKEN = "example-token"


class ScriptedModel:
    """Stands in for an LLM: for the reminder request it creates a schedule, lists the user's
    schedules, triggers the new one once to show it works, then answers in words."""

    def __init__(self) -> None:
        self.calls = 0

    def reply(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict:
        assert {t["function"]["name"] for t in tools} >= {"create_schedule", "trigger_schedule"}
        last = messages[-1]
        seen = json.loads(last["content"]) if last["role"] == "tool" else None
        step = self.calls
        self.calls += 1
        if step == 0:
            return self._call(
                "create_schedule",
                {
                    "name": "weekday-reminder",
                    "cron": "0 9 * * 1-5",
                    "timezone": "Europe/Berlin",
                    "endpoint": "/agents/reminder/runs",
                    "payload": {"message": "Good morning! Time to review today's plan."},
                    "description": "Remind the user every weekday at 9:00 Berlin time",
                },
            )
        if step == 1:
            return self._call("list_schedules", {})
        if step == 2:
            mine = next(s for s in seen["schedules"] if s["name"] == "weekday-reminder")
            return self._call("trigger_schedule", {"schedule_id": mine["id"]})
        return {
            "role": "assistant",
            "content": "Done: I will remind you every weekday at 9:00 (Berlin); "
            "I sent the first reminder now so you can see it.",
        }

    def _call(self, name: str, arguments: dict[str, Any]) -> dict:
        call_id = f"call_{self.calls}"
        function = {"name": name, "arguments": json.dumps(arguments)}
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": function}],
        }


async def converse(tools: SchedulerTools, model: ScriptedModel, user_message: str) -> str:
    """The usual tool loop: the model's tool calls are run, their answers go back to it."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": tools.instructions},
        {"role": "user", "content": user_message},
    ]
    specs = tools.specs("openai")
    while True:
        reply = model.reply(messages, specs)
        messages.append(reply)
        if not reply.get("tool_calls"):
            return reply["content"]
        for call in reply["tool_calls"]:
            fn = call["function"]
            answer = await tools.call(fn["name"], fn["arguments"])
            print(f"tool  {fn['name']}({fn['arguments']})\n   -> {answer[:160]}")
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": answer})


class ReminderAgent:
    """The agent the schedule calls: an AgentOS agent that records each message it is sent."""

    id = "reminder"

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.received: list[tuple[float, str]] = []  # (when, the message)

    async def arun(self, message: str, **_: Any) -> str:
        self.received.append((self.clock.now(), message))
        return f"reminded: {message}"


class Assistant:
    """The agent a user talks to: each run is one conversation of the scripted model with the
    app's schedule tools, acting for the user the run was started for."""

    id = "assistant"

    def __init__(self) -> None:
        self.agent_os: AgentOS | None = None

    async def arun(self, message: str, *, user_id: str | None = None, **_: Any) -> str:
        assert self.agent_os is not None
        tools = self.agent_os.scheduler_tools(user_id=user_id, default_timezone="Europe/Berlin")
        return await converse(tools, ScriptedModel(), message)


@contextlib.asynccontextmanager
async def started(app: Any):
    """The app with its lifespan run (the store opened, the scheduler started), and a client
    that calls it in-process, as a browser or another service would over HTTP."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agentos") as client:
            yield client


async def main() -> None:
    path = os.path.join(tempfile.mkdtemp(), "agent-schedules.db")
    clock = SimClock(start=START)
    reminder, assistant = ReminderAgent(clock), Assistant()
    agent_os = AgentOS(
        db=path, agents=[assistant, reminder], token=TOKEN, clock=clock, scheduler_poll_interval=60
    )
    assistant.agent_os = agent_os
    app = agent_os.get_app()
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async with started(app) as client:
        # The user's request, as a chat front end sends it: a synchronous run for user "ann".
        form = {"message": "remind me every weekday at 9 in Berlin", "user_id": "ann"}
        reply = await client.post(
            "/agents/assistant/runs", data={**form, "stream": "false"}, headers=auth
        )
        reply.raise_for_status()
        print(f"model {reply.json()['content']}")

        # The app's own scheduler fires through the app's own route, token included.
        await clock.advance(60)  # the trigger fires at once
        listed = await client.get("/schedules", params={"user_id": "ann"}, headers=auth)
        (schedule,) = listed.json()["data"]
        await clock.advance_to(schedule["next_run_at"] + 60)  # Friday 9:00 in Berlin

        berlin = ZoneInfo("Europe/Berlin")
        for at, message in reminder.received:
            when = datetime.fromtimestamp(at, berlin).isoformat()
            print(f"agent received {message!r} at {when}")
        runs = await client.get(
            f"/schedules/{schedule['id']}/runs", params={"user_id": "ann"}, headers=auth
        )
        rows = runs.json()["data"]
        print("runs  " + ", ".join(f"{r['trigger']}:{r['status']}" for r in reversed(rows)))
        shown = await client.get(
            f"/schedules/{schedule['id']}", params={"user_id": "ann"}, headers=auth
        )
        print(f"next  {shown.json()['next_run_at_iso']}")
        other = await client.get(
            f"/schedules/{schedule['id']}", params={"user_id": "bob"}, headers=auth
        )
        print(f"bob   {other.status_code}")


if __name__ == "__main__":
    asyncio.run(main())
