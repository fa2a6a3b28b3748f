"""An agent manages its user's schedules through SchedulerTools, and a replica fires them.

    python examples/agent_schedules.py

The "model" is scripted: it answers with tool calls exactly as an LLM's tool-call JSON comes back
(OpenAI's shape: a function name and its arguments as a JSON string), reading each tool's answer
before its next call, so the loop below is the loop a real model would drive. No network: the
agent the schedule calls is an in-process AgentOS stand-in on an httpx.MockTransport, and time is
a SimClock, so a weekday 9:00 comes in milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import httpx

from leasecron.kernel import (
    HttpDispatcher,
    ScheduleManager,
    Scheduler,
    SchedulerTools,
    SimClock,
    SqliteStore,
)

START = 1_780_000_000.0  # Thursday 2026-05-28, 22:26 in Berlin


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
    """An AgentOS stand-in: POST /agents/reminder/runs starts a background run (202), and a poll
    of it answers COMPLETED. Records each message it was sent."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.received: list[tuple[float, str]] = []  # (when, the message)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/agents/reminder/runs":
            form = parse_qs(request.content.decode())  # AgentOS takes form data, not JSON
            self.received.append((self.clock.now(), form["message"][0]))
            n = len(self.received)
            return httpx.Response(
                202, json={"run_id": f"run-{n}", "session_id": f"s-{n}", "status": "PENDING"}
            )
        if request.method == "GET" and request.url.path.startswith("/agents/reminder/runs/"):
            run_id = request.url.path.rsplit("/", 1)[1]
            body = {"run_id": run_id, "session_id": request.url.params["session_id"]}
            return httpx.Response(200, json={**body, "status": "COMPLETED", "content": "sent"})
        return httpx.Response(404, json={"detail": "Not found"})


async def main() -> None:
    path = os.path.join(tempfile.mkdtemp(), "agent-schedules.db")
    clock = SimClock(start=START)
    store = SqliteStore(path, inline=True)
    manager = ScheduleManager(store, clock=clock)
    tools = SchedulerTools(manager, allowed_endpoints=["/agents/reminder/runs"], user_id="ann")

    answer = await converse(tools, ScriptedModel(), "remind me every weekday at 9 in Berlin")
    print(f"model {answer}")

    agent = ReminderAgent(clock)
    dispatcher = HttpDispatcher(
        "http://agentos", transport=httpx.MockTransport(agent.handle), clock=clock
    )
    scheduler = Scheduler(store, dispatcher, clock=clock, poll_interval=60)
    await scheduler.start()
    await clock.advance(60)  # the trigger fires at once
    (schedule,) = await manager.list(user_id="ann")
    await clock.advance_to(schedule.next_run_at + 60)  # Friday 9:00 in Berlin
    await scheduler.stop(timeout=0)

    berlin = ZoneInfo("Europe/Berlin")
    for at, message in agent.received:
        print(f"agent received {message!r} at {datetime.fromtimestamp(at, berlin).isoformat()}")
    runs = json.loads(await tools.call("get_schedule_runs", {"schedule_id": schedule.id}))
    print("runs  " + ", ".join(f"{r['trigger']}:{r['status']}" for r in reversed(runs["runs"])))
    shown = json.loads(await tools.call("get_schedule", {"schedule_id": schedule.id}))
    print(f"next  {shown['next_run_at']}")
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
