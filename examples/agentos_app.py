"""The demo AgentOS: deterministic agents and a workflow (no model, no network), and schedules
registered in code at start-up, so a fresh database shows fires within seconds.

    leasecron serve                                  # this file is the default --app
    LEASECRON_DB=demo.db uvicorn examples.agentos_app:app --port 7777   # or any ASGI server

Agents: `echo` answers with the message it got; `reminder` turns a message into a reminder
line. Workflow `blog`: research -> draft -> review, where review is a Loop that revises the draft
until its CEL end condition sees the reviewer's approval. Schedules (created with
`if_exists="update"`, so every restart and every replica may run this): `echo-every-2s`,
`weekday-reminder` (cron, 09:00 Europe/Paris, Monday to Friday) and `blog-every-minute` (cron, the
workflow). The database is $LEASECRON_DB (default leasecron.db), the token $LEASECRON_TOKEN
(none: every request is accepted).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from leasecron.adapters.fastapi import AgentOS
from leasecron.kernel import Loop, ScheduleManager, Step, StepInput, Workflow, cel_available


@dataclass
class EchoAgent:
    """Answers with what it was sent."""

    id: str = "echo"
    name: str = "Echo"

    async def arun(self, message, *, session_id=None, user_id=None, **kwargs) -> str:
        return f"echo: {message}"


@dataclass
class ReminderAgent:
    """Turns a message into a reminder, numbered per session (state kept in memory)."""

    id: str = "reminder"
    name: str = "Reminder"

    def __post_init__(self) -> None:
        self.sent: dict[str | None, int] = {}

    async def arun(self, message, *, session_id=None, user_id=None, **kwargs) -> str:
        n = self.sent[session_id] = self.sent.get(session_id, 0) + 1
        who = f" for {user_id}" if user_id else ""
        return f"Reminder #{n}{who}: {message or 'stand up and stretch'}"


# -- the blog workflow: research -> draft -> review (a Loop until approved) -------------------

APPROVED = "APPROVED"
REVISIONS_BEFORE_APPROVAL = 2


def research(step_input: StepInput) -> str:
    topic = str(step_input.input or "leases")
    return "\n".join(
        f"- {fact}"
        for fact in (
            f"{topic}: a row lease names one holder and an expiry",
            "a holder renews while it works; a stale holder's writes are fenced out",
            "no leader election: any replica may take any due row",
        )
    )


def draft(step_input: StepInput) -> str:
    facts = str(step_input.previous_step_content or "")
    body = " ".join(line.removeprefix("- ") + "." for line in facts.splitlines() if line)
    return f"Draft: {body}"


def review(step_input: StepInput) -> str:
    """The reviewer asks for revisions until the draft has had enough, then approves it."""
    text = str(step_input.previous_step_content or "")
    done = text.count("[revised")
    if done >= REVISIONS_BEFORE_APPROVAL:
        return f"{APPROVED} after {done} revisions\n{text}"
    return f"{text} [revised {done + 1}]"


# CEL when cel-python is installed (the `cel` extra); the same rule as a callable otherwise.
END_CONDITION = (
    f'last_step_content.startsWith("{APPROVED}")'
    if cel_available()
    else (lambda outputs: str(outputs[-1].content).startswith(APPROVED))
)

blog = Workflow(
    id="blog",
    name="Blog post",
    description="research -> draft -> review until approved",
    steps=[
        Step("research", executor=research),
        Step("draft", executor=draft),
        Loop(
            [Step("review", executor=review)],
            name="review-loop",
            max_iterations=5,
            end_condition=END_CONDITION,
            forward_iteration_output=True,
        ),
    ],
)


# -- schedules, registered at every start (idempotent) ----------------------------------------


async def register_schedules(manager: ScheduleManager) -> None:
    await manager.create(
        "echo-every-2s",
        interval_seconds=2,
        endpoint="/agents/echo/runs",
        payload={"message": "tick"},
        description="fires at once, so a fresh server shows runs within seconds",
        if_exists="update",
    )
    await manager.create(
        "weekday-reminder",
        cron="0 9 * * 1-5",
        timezone="Europe/Paris",
        endpoint="/agents/reminder/runs",
        payload={"message": "stand-up in 15 minutes"},
        max_retries=2,
        retry_delay_seconds=60,
        if_exists="update",
    )
    await manager.create(
        "blog-every-minute",
        cron="* * * * *",
        endpoint="/workflows/blog/runs",
        payload={"message": "leases"},
        overlap="skip",
        timeout_seconds=120,
        if_exists="update",
    )


agent_os = AgentOS(
    db=os.environ.get("LEASECRON_DB") or "leasecron.db",
    agents=[EchoAgent(), ReminderAgent()],
    workflows=[blog],
    on_startup=register_schedules,
    name="leasecron demo AgentOS",
)
app = agent_os.get_app()
