"""SchedulerTools on a real SQLite file under a SimClock: every tool, every refusal (bad JSON,
unknown tool or argument, wrong types, validation naming the field, not found, another user's
schedule, the endpoint allow-list), the tool definitions as valid JSON Schema in both formats,
and the agno Toolkit built from them."""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3

import jsonschema
import pytest

from leasecron.kernel import (
    ScheduleManager,
    SchedulerTools,
    SimClock,
    SqliteStore,
    ValidationError,
)
from leasecron.kernel.tools import TOOLS
from support import T0  # 2026-05-28T20:26:40Z, a Thursday

RUN = "/agents/reminder/runs"
NAMES = [
    "create_schedule",
    "update_schedule",
    "list_schedules",
    "get_schedule",
    "enable_schedule",
    "disable_schedule",
    "trigger_schedule",
    "delete_schedule",
    "get_schedule_runs",
]


class Env:
    def __init__(self, path: str):
        self.clock = SimClock(start=T0)
        self.store = SqliteStore(path, inline=True)
        ids = itertools.count(1)
        self.manager = ScheduleManager(
            self.store, clock=self.clock, new_id=lambda: f"id{next(ids):03d}"
        )

    def tools(self, **kwargs) -> SchedulerTools:
        kwargs.setdefault("default_endpoint", RUN)
        return SchedulerTools(self.manager, **kwargs)


@pytest.fixture
def env(tmp_path):
    e = Env(str(tmp_path / "tools.db"))
    yield e
    asyncio.run(e.store.close())


async def call(tools: SchedulerTools, name: str, arguments=None) -> dict:
    answer = await tools.call(name, arguments)
    assert isinstance(answer, str)
    return json.loads(answer)


async def refused(tools: SchedulerTools, name: str, arguments, field: str | None) -> str:
    """The call's error, after checking it blames `field` (None: no field)."""
    answer = await call(tools, name, arguments)
    assert set(answer) == ({"error", "field"} if field else {"error"}), answer
    assert answer.get("field") == field, answer
    return answer["error"]


REMINDER = {
    "name": "standup",
    "cron": "0 9 * * 1-5",
    "timezone": "Europe/Berlin",
    "payload": {"message": "Time for stand-up"},
}


# -- the definitions -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["openai", "anthropic"])
def test_specs_are_valid_json_schema_in_both_formats(env, fmt):
    specs = env.tools().specs(fmt)
    if fmt == "openai":
        assert all(set(s) == {"type", "function"} and s["type"] == "function" for s in specs)
        specs = [s["function"] for s in specs]
        key = "parameters"
    else:
        key = "input_schema"
    assert [s["name"] for s in specs] == NAMES
    for spec in specs:
        assert set(spec) == {"name", "description", key}
        assert spec["description"]
        jsonschema.Draft202012Validator.check_schema(spec[key])
        assert spec[key]["type"] == "object" and spec[key]["additionalProperties"] is False
    json.dumps(specs)  # plain JSON all through
    schemas = {s["name"]: jsonschema.Draft202012Validator(s[key]) for s in specs}
    good = {
        "create_schedule": [REMINDER, {"name": "n", "cron": "* * * * *", "endpoint": None}],
        "update_schedule": [{"schedule_id": "x", "cron": "0 8 * * *", "payload": None}],
        "list_schedules": [{}, {"enabled_only": True, "limit": 5, "offset": 10}],
        "get_schedule": [{"schedule_id": "x"}],
        "get_schedule_runs": [{"schedule_id": "x", "limit": 3}],
    }
    for name, samples in good.items():
        for sample in samples:
            schemas[name].validate(sample)
    bad = [
        ("create_schedule", {"name": "n"}),  # no cron
        ("create_schedule", {"name": "n", "cron": "* * * * *", "colour": "red"}),
        ("list_schedules", {"limit": "5"}),
        ("get_schedule", {}),
        ("update_schedule", {"schedule_id": "x", "payload": [1]}),
    ]
    for name, sample in bad:
        assert not schemas[name].is_valid(sample), (name, sample)


def test_specs_refuse_an_unknown_format(env):
    with pytest.raises(ValidationError) as err:
        env.tools().specs("gemini")
    assert err.value.field == "format"


def test_instructions_teach_cron_zones_run_payloads_and_the_endpoints(env):
    text = env.tools(allowed_endpoints=[RUN, "/hooks/*"]).instructions
    for needle in [
        "0 9 * * 1-5",
        "weekdays at 9:00",
        "Europe/Berlin",
        "CET",
        "/agents/<id>/runs",
        "/teams/<id>/runs",
        "/workflows/<id>/runs",
        '"message"',
        f"{RUN}, /hooks/*",
        f"Without an endpoint, {RUN} is used",
    ]:
        assert needle in text, needle
    assert "Any endpoint path" in SchedulerTools(env.manager).instructions


# -- every tool ------------------------------------------------------------------------------


async def test_create_returns_the_schedule_with_its_id_and_local_next_run(env):
    tools = env.tools(user_id="ann")
    made = await call(tools, "create_schedule", {**REMINDER, "description": "daily stand-up"})
    assert made["status"] == "created"
    assert (made["id"], made["name"], made["cron"], made["timezone"]) == (
        "id001",
        "standup",
        "0 9 * * 1-5",
        "Europe/Berlin",
    )
    assert made["next_run_at"] == "2026-05-29T09:00:00+02:00"  # Friday, Berlin summer time
    assert (made["endpoint"], made["method"], made["enabled"]) == (RUN, "POST", True)
    assert made["payload"] == {"message": "Time for stand-up"}
    assert made["timing"] == "cron 0 9 * * 1-5 (Europe/Berlin)"
    stored = await env.manager.get("id001")
    assert (stored.user_id, stored.description, stored.endpoint) == ("ann", "daily stand-up", RUN)
    assert stored.next_run_at == T0 + 10 * 3600 + 33 * 60 + 20  # 07:00Z the next day


async def test_arguments_may_come_as_a_json_string_and_nulls_mean_not_given(env):
    tools = env.tools(default_timezone="Asia/Tokyo")
    text = json.dumps({"name": "a", "cron": "0 8 * * *", "payload": '{"message": "hi"}'})
    made = await call(tools, "create_schedule", text)
    assert (made["timezone"], made["payload"]) == ("Asia/Tokyo", {"message": "hi"})
    got = await call(tools, "get_schedule", json.dumps({"schedule_id": made["id"]}))
    assert got["id"] == made["id"]
    same = await call(
        tools, "update_schedule", {"schedule_id": made["id"], "timezone": None, "cron": None}
    )
    assert (same["timezone"], same["cron"]) == ("Asia/Tokyo", "0 8 * * *")
    assert (await call(tools, "list_schedules", ""))["count"] == 1
    assert (await call(tools, "list_schedules", None))["count"] == 1


async def test_create_of_an_existing_name_updates_it_only_for_its_owner(env):
    ann, bob, operator = env.tools(user_id="ann"), env.tools(user_id="bob"), env.tools()
    made = await call(ann, "create_schedule", REMINDER)
    again = await call(ann, "create_schedule", {"name": "standup", "cron": "30 9 * * 1-5"})
    assert (again["status"], again["id"], again["cron"]) == ("updated", made["id"], "30 9 * * 1-5")
    assert again["timezone"] == "Europe/Berlin"  # what was not given keeps its value
    error = await refused(bob, "create_schedule", {**REMINDER, "cron": "* * * * *"}, "name")
    assert "taken" in error and "ann" not in error
    assert (await env.manager.get(made["id"])).cron_expr == "30 9 * * 1-5"
    # the operator may change anyone's; the owner stays
    op = await call(operator, "create_schedule", {"name": "standup", "cron": "0 10 * * 1-5"})
    assert (op["status"], op["user_id"]) == ("updated", "ann")


async def test_update_changes_only_what_is_given(env):
    tools = env.tools(user_id="ann")
    made = await call(tools, "create_schedule", REMINDER)
    changed = await call(
        tools,
        "update_schedule",
        {
            "schedule_id": made["id"],
            "cron": "0 18 * * 5",
            "timezone": "America/New_York",
            "description": "weekly wrap-up",
            "payload": {"message": "Wrap up the week"},
            "name": "wrap-up",
        },
    )
    assert changed["status"] == "updated"
    assert (changed["id"], changed["name"], changed["cron"]) == (
        made["id"],
        "wrap-up",
        "0 18 * * 5",
    )
    assert changed["next_run_at"] == "2026-05-29T18:00:00-04:00"
    assert changed["description"] == "weekly wrap-up"
    cleared = await call(tools, "update_schedule", {"schedule_id": made["id"], "description": ""})
    assert cleared["description"] is None
    same = await call(tools, "update_schedule", {"schedule_id": made["id"]})
    assert same["name"] == "wrap-up"
    await call(tools, "create_schedule", {**REMINDER, "name": "other"})
    await refused(tools, "update_schedule", {"schedule_id": made["id"], "name": "other"}, "name")


async def test_a_cron_given_by_the_tools_replaces_an_interval(env):
    """An operator's interval schedule, given a cron through the tools, becomes a cron one."""
    s = await env.manager.create("tick", interval_seconds=60, endpoint="/hooks/tick")
    changed = await call(env.tools(), "update_schedule", {"schedule_id": s.id, "cron": "0 * * * *"})
    assert changed["cron"] == "0 * * * *"
    assert (await env.manager.get(s.id)).interval_seconds is None


async def test_list_shows_only_ones_own_schedules_and_pages(env):
    ann, bob, operator = env.tools(user_id="ann"), env.tools(user_id="bob"), env.tools()
    for name in ["c", "a", "b"]:
        await call(ann, "create_schedule", {**REMINDER, "name": f"ann-{name}"})
    await call(bob, "create_schedule", {**REMINDER, "name": "bob-a"})
    listed = await call(ann, "list_schedules")
    assert [s["name"] for s in listed["schedules"]] == ["ann-a", "ann-b", "ann-c"]
    assert (listed["count"], listed["total"]) == (3, 3)
    assert all(s["user_id"] == "ann" and s["id"] for s in listed["schedules"])
    page = await call(ann, "list_schedules", {"limit": 2, "offset": 1})
    assert ([s["name"] for s in page["schedules"]], page["count"], page["total"]) == (
        ["ann-b", "ann-c"],
        2,
        3,
    )
    ids = {s["name"]: s["id"] for s in listed["schedules"]}
    await call(ann, "disable_schedule", {"schedule_id": ids["ann-b"]})
    enabled = await call(ann, "list_schedules", {"enabled_only": True})
    assert [s["name"] for s in enabled["schedules"]] == ["ann-a", "ann-c"]
    assert [s["name"] for s in (await call(bob, "list_schedules"))["schedules"]] == ["bob-a"]
    assert (await call(operator, "list_schedules"))["total"] == 4
    await refused(ann, "list_schedules", {"limit": 0}, "limit")
    await refused(ann, "list_schedules", {"limit": 201}, "limit")
    await refused(ann, "list_schedules", {"offset": -1}, "offset")


async def test_get_enable_disable_trigger_runs_and_delete(env):
    tools = env.tools(user_id="ann")
    sid = (await call(tools, "create_schedule", REMINDER))["id"]
    got = await call(tools, "get_schedule", {"schedule_id": sid})
    assert (got["id"], got["name"], got["last_status"]) == (sid, "standup", None)

    off = await call(tools, "disable_schedule", {"schedule_id": sid})
    assert (off["status"], off["enabled"], off["next_run_at"]) == ("disabled", False, None)
    error = await refused(tools, "trigger_schedule", {"schedule_id": sid}, "schedule_id")
    assert "disabled" in error and "enable_schedule" in error
    await env.clock.advance(3 * 86_400)  # Sunday evening: the next weekday 9:00 is Monday's
    on = await call(tools, "enable_schedule", {"schedule_id": sid})
    assert (on["status"], on["enabled"]) == ("enabled", True)
    assert on["next_run_at"] == "2026-06-01T09:00:00+02:00"

    triggered = await call(tools, "trigger_schedule", {"schedule_id": sid})
    assert (triggered["status"], triggered["id"], triggered["name"]) == (
        "triggered",
        sid,
        "standup",
    )
    run = await env.manager.get_run(triggered["run_row_id"])
    assert (run.schedule_id, run.status, run.trigger) == (sid, "pending", "manual")
    second = (await call(tools, "trigger_schedule", {"schedule_id": sid}))["run_row_id"]
    runs = await call(tools, "get_schedule_runs", {"schedule_id": sid})
    assert (runs["schedule_id"], runs["count"]) == (sid, 2)
    assert [r["id"] for r in runs["runs"]] == [second, triggered["run_row_id"]]  # newest first
    assert runs["runs"][0]["status"] == "pending" and runs["runs"][0]["trigger"] == "manual"
    one = await call(tools, "get_schedule_runs", {"schedule_id": sid, "limit": 1})
    assert [r["id"] for r in one["runs"]] == [second]
    await refused(tools, "get_schedule_runs", {"schedule_id": sid, "limit": 0}, "limit")
    await refused(tools, "get_schedule_runs", {"schedule_id": sid, "limit": 101}, "limit")

    gone = await call(tools, "delete_schedule", {"schedule_id": sid})
    assert (gone["status"], gone["id"], gone["name"]) == ("deleted", sid, "standup")
    assert await env.manager.get(sid) is None
    await refused(tools, "get_schedule", {"schedule_id": sid}, "schedule_id")
    await refused(tools, "delete_schedule", {"schedule_id": sid}, "schedule_id")


async def test_runs_list_more_than_ten_only_when_asked(env):
    tools = env.tools()
    sid = (await call(tools, "create_schedule", REMINDER))["id"]
    for _ in range(12):
        await call(tools, "trigger_schedule", {"schedule_id": sid})
    assert (await call(tools, "get_schedule_runs", {"schedule_id": sid}))["count"] == 10
    assert (await call(tools, "get_schedule_runs", {"schedule_id": sid, "limit": 50}))[
        "count"
    ] == 12


# -- ownership -------------------------------------------------------------------------------


async def test_another_users_schedule_is_not_found_for_every_tool(env):
    ann, bob = env.tools(user_id="ann"), env.tools(user_id="bob")
    sid = (await call(ann, "create_schedule", REMINDER))["id"]
    missing = await refused(bob, "get_schedule", {"schedule_id": "no-such-id"}, "schedule_id")
    for name in NAMES:
        if name in ("create_schedule", "list_schedules"):
            continue
        args = {"schedule_id": sid, **({"cron": "* * * * *"} if name == "update_schedule" else {})}
        error = await refused(bob, name, args, "schedule_id")
        assert error == missing.replace("no-such-id", sid)  # the same as an id that is not there
    after = await env.manager.get(sid)
    assert (after.enabled, after.cron_expr, after.user_id) == (True, "0 9 * * 1-5", "ann")
    assert await env.manager.runs(sid) == []
    assert (await call(bob, "list_schedules"))["total"] == 0
    # the operator sees and changes every user's
    operator = env.tools()
    assert (await call(operator, "get_schedule", {"schedule_id": sid}))["user_id"] == "ann"
    assert (await call(operator, "disable_schedule", {"schedule_id": sid}))["enabled"] is False


async def test_the_tools_cannot_move_a_schedule_to_another_owner(env):
    ann = env.tools(user_id="ann")
    sid = (await call(ann, "create_schedule", REMINDER))["id"]
    await refused(ann, "update_schedule", {"schedule_id": sid, "user_id": "bob"}, "user_id")
    await refused(ann, "create_schedule", {**REMINDER, "user_id": "bob"}, "user_id")
    assert (await env.manager.get(sid)).user_id == "ann"


# -- the allow-list --------------------------------------------------------------------------


async def test_endpoints_outside_the_allow_list_are_refused_everywhere(env):
    allowed = [RUN, "/hooks/*"]
    tools = env.tools(allowed_endpoints=allowed, user_id="ann")
    ok = await call(
        tools, "create_schedule", {"name": "a", "cron": "* * * * *", "endpoint": "/hooks/x/y"}
    )
    assert ok["endpoint"] == "/hooks/x/y"
    for endpoint in ["/agents/admin/runs", "/hooks", "/hook/x", "/agents/reminder/runs/x"]:
        error = await refused(
            tools,
            "create_schedule",
            {"name": "b", "cron": "* * * * *", "endpoint": endpoint},
            "endpoint",
        )
        assert "not allowed" in error and "/hooks/*" in error
        await refused(
            tools, "update_schedule", {"schedule_id": ok["id"], "endpoint": endpoint}, "endpoint"
        )
    assert await env.manager.get_by_name("b") is None
    assert (await env.manager.get(ok["id"])).endpoint == "/hooks/x/y"
    # the manager's own rules come first: a dot segment is refused even under an allowed prefix
    await refused(
        tools,
        "update_schedule",
        {"schedule_id": ok["id"], "endpoint": "/hooks/../admin"},
        "endpoint",
    )
    # a schedule whose endpoint is no longer allowed cannot be enabled or triggered
    narrower = env.tools(allowed_endpoints=[RUN], user_id="ann")
    await refused(narrower, "trigger_schedule", {"schedule_id": ok["id"]}, "endpoint")
    await call(narrower, "disable_schedule", {"schedule_id": ok["id"]})  # stopping is always fine
    await refused(narrower, "enable_schedule", {"schedule_id": ok["id"]}, "endpoint")
    assert (await env.manager.get(ok["id"])).enabled is False
    assert await env.manager.runs(ok["id"]) == []
    # an empty list allows nothing
    none = SchedulerTools(env.manager, allowed_endpoints=[])
    await refused(none, "create_schedule", {**REMINDER, "name": "c", "endpoint": RUN}, "endpoint")


async def test_the_default_endpoint_is_used_and_must_be_allowed(env):
    made = await call(env.tools(), "create_schedule", REMINDER)
    assert made["endpoint"] == RUN
    bare = SchedulerTools(env.manager)
    error = await refused(bare, "create_schedule", {"name": "x", "cron": "* * * * *"}, "endpoint")
    assert "give an endpoint" in error
    with pytest.raises(ValidationError) as err:
        SchedulerTools(env.manager, allowed_endpoints=["/hooks/*"], default_endpoint=RUN)
    assert err.value.field == "default_endpoint"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"allowed_endpoints": ["/agents/*/runs"]}, "allowed_endpoints"),
        ({"allowed_endpoints": "/hooks/*"}, "allowed_endpoints"),
        ({"allowed_endpoints": [""]}, "allowed_endpoints"),
        ({"allowed_endpoints": [3]}, "allowed_endpoints"),
        ({"default_endpoint": "no-slash"}, "default_endpoint"),
        ({"default_timezone": "Mars/Olympus"}, "timezone"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "a\nb"}, "user_id"),
    ],
)
def test_bad_configuration_is_refused_naming_the_field(env, kwargs, field):
    with pytest.raises(ValidationError) as err:
        SchedulerTools(env.manager, **kwargs)
    assert err.value.field == field


def test_the_manager_must_be_a_schedule_manager(env):
    with pytest.raises(ValidationError) as err:
        SchedulerTools(env.store)
    assert err.value.field == "manager"


# -- run endpoints need a message ------------------------------------------------------------


async def test_a_run_endpoint_without_a_message_is_refused_naming_payload(env):
    tools = env.tools()
    base = {"name": "r", "cron": "0 9 * * *"}
    for payload in [None, {}, {"message": ""}, {"message": 5}, {"prompt": "hi"}]:
        args = {**base, **({"payload": payload} if payload is not None else {})}
        error = await refused(tools, "create_schedule", args, "payload")
        assert '"message"' in error
    for endpoint in ["/teams/t/runs", "/workflows/w/runs/"]:
        await refused(tools, "create_schedule", {**base, "endpoint": endpoint}, "payload")
    # a plain endpoint needs none, nor does a GET of a run path
    plain = await call(tools, "create_schedule", {**base, "endpoint": "/hooks/ping"})
    assert plain["payload"] is None
    await call(tools, "create_schedule", {**base, "name": "g", "method": "get", "endpoint": RUN})
    # moving a schedule onto a run endpoint, or dropping the message, is refused too
    await refused(
        tools, "update_schedule", {"schedule_id": plain["id"], "endpoint": RUN}, "payload"
    )
    made = await call(tools, "create_schedule", REMINDER)
    await refused(tools, "update_schedule", {"schedule_id": made["id"], "payload": {}}, "payload")
    assert (await env.manager.get(made["id"])).payload == REMINDER["payload"]


# -- bad calls -------------------------------------------------------------------------------


async def test_unknown_tools_bad_json_and_unknown_or_missing_arguments_name_the_field(env):
    tools = env.tools()
    assert "create_schedule" in await refused(tools, "make_schedule", {}, "tool")
    await refused(tools, "create_schedule", "{not json", "arguments")
    await refused(tools, "create_schedule", "[1, 2]", "arguments")
    await refused(tools, "create_schedule", ["name"], "arguments")
    error = await refused(tools, "create_schedule", {**REMINDER, "when": "9am"}, "when")
    assert "cron" in error  # names the arguments there are
    await refused(tools, "create_schedule", {"cron": "* * * * *"}, "name")
    await refused(tools, "create_schedule", {"name": "x", "cron": None}, "cron")
    await refused(tools, "get_schedule", {}, "schedule_id")
    await refused(tools, "update_schedule", {"cron": "* * * * *"}, "schedule_id")
    assert await env.manager.list() == []


@pytest.mark.parametrize(
    ("name", "arguments", "field"),
    [
        ("create_schedule", {**REMINDER, "cron": 9}, "cron"),
        ("create_schedule", {**REMINDER, "name": ["a"]}, "name"),
        ("create_schedule", {**REMINDER, "payload": [1, 2]}, "payload"),
        ("create_schedule", {**REMINDER, "payload": "not json"}, "payload"),
        ("create_schedule", {**REMINDER, "payload": "[1]"}, "payload"),
        ("create_schedule", {**REMINDER, "timezone": 1}, "timezone"),
        ("list_schedules", {"enabled_only": "yes"}, "enabled_only"),
        ("list_schedules", {"limit": True}, "limit"),
        ("list_schedules", {"limit": "10"}, "limit"),
        ("list_schedules", {"limit": 2.5}, "limit"),
        ("get_schedule", {"schedule_id": 7}, "schedule_id"),
        ("get_schedule_runs", {"schedule_id": "x", "limit": "all"}, "limit"),
    ],
)
async def test_wrong_types_name_the_argument(env, name, arguments, field):
    error = await refused(env.tools(), name, arguments, field)
    assert error.startswith(f"{field} must be") or field == "payload"


@pytest.mark.parametrize(
    ("arguments", "field", "says"),
    [
        ({"cron": "61 * * * *"}, "cron", "minute"),
        ({"cron": "* * *"}, "cron", ""),
        ({"timezone": "Mars/Olympus"}, "timezone", "IANA"),
        ({"name": "no\nnewlines"}, "name", ""),
        ({"name": ""}, "name", ""),
        ({"method": "FETCH"}, "method", "POST"),
        ({"endpoint": "no-slash"}, "endpoint", ""),
        ({"endpoint": "/hooks/../admin"}, "endpoint", "dot segments"),
        ({"endpoint": "http://evil.example/x"}, "endpoint", "allowed host"),
        ({"description": 5}, "description", ""),
    ],
)
async def test_validation_errors_name_the_field_and_write_nothing(env, arguments, field, says):
    error = await refused(env.tools(), "create_schedule", {**REMINDER, **arguments}, field)
    assert says in error
    assert await env.manager.list() == []


async def test_a_store_failure_is_an_answer_not_an_exception(env):
    tools = env.tools()
    await call(tools, "create_schedule", REMINDER)
    conn = sqlite3.connect(env.store.path)
    conn.execute("DROP TABLE agno_schedules")  # behind the store's back
    conn.commit()
    conn.close()
    for name, args in [("list_schedules", {}), ("create_schedule", {**REMINDER, "name": "n"})]:
        error = await refused(tools, name, args, None)
        assert "store is unavailable" in error and "Traceback" not in error


# -- agno ------------------------------------------------------------------------------------


async def test_the_agno_toolkit_calls_the_same_tools(env):
    pytest.importorskip("agno.agent", reason="agno is not installed (the test extra has it)")
    from agno.agent import Agent
    from agno.tools.function import FunctionCall
    from agno.tools.toolkit import Toolkit

    tools = env.tools(user_id="ann", allowed_endpoints=[RUN])
    toolkit = tools.as_agno_toolkit()
    assert isinstance(toolkit, Toolkit)
    agent = Agent(tools=[toolkit])
    assert agent.tools == [toolkit]
    assert list(toolkit.functions) == NAMES
    assert list(toolkit.get_async_functions()) == NAMES
    assert toolkit.instructions == tools.instructions
    create = toolkit.get_async_functions()["create_schedule"]
    assert create.to_dict()["parameters"] == tools.specs()[0]["function"]["parameters"]

    # as the agent runs a model's tool call (async run): the schedule is in the store
    result = await FunctionCall(function=create, arguments=REMINDER).aexecute()
    assert result.status == "success"
    made = json.loads(result.result)
    stored = await env.manager.get(made["id"])
    assert (stored.name, stored.user_id, stored.cron_expr) == ("standup", "ann", "0 9 * * 1-5")
    # the sync twin (Agent.run), here called with this test's loop running
    listed = FunctionCall(function=toolkit.functions["list_schedules"], arguments={}).execute()
    assert [s["id"] for s in json.loads(listed.result)["schedules"]] == [made["id"]]
    # refusals come back as answers through agno too
    bad = await toolkit.get_async_functions()["create_schedule"].entrypoint(
        name="x", cron="* * * * *", endpoint="/hooks/x"
    )
    assert json.loads(bad)["field"] == "endpoint"


def test_the_sync_entrypoints_work_without_a_running_loop(env):
    pytest.importorskip("agno.agent", reason="agno is not installed (the test extra has it)")
    toolkit = env.tools().as_agno_toolkit()
    made = json.loads(toolkit.functions["create_schedule"].entrypoint(**REMINDER))
    assert made["status"] == "created"
    got = json.loads(toolkit.functions["get_schedule"].entrypoint(schedule_id=made["id"]))
    assert got["name"] == "standup"


def test_every_tool_has_a_schema_and_a_method():
    assert list(TOOLS) == NAMES
    for name in TOOLS:
        assert callable(getattr(SchedulerTools, f"_{name}"))


class LateStore(SqliteStore):
    """A real store whose next look-up by name misses a row another call is committing: the
    tools' check passes, then the create finds the name taken."""

    hide_once = False

    async def get_schedule_by_name(self, name):
        if self.hide_once:
            self.hide_once = False
            return None
        return await super().get_schedule_by_name(name)


async def test_a_name_taken_between_look_up_and_create_is_settled_by_owner(tmp_path):
    store = LateStore(str(tmp_path / "late.db"), inline=True)
    try:
        manager = ScheduleManager(store, clock=SimClock(start=T0))
        ann = SchedulerTools(manager, default_endpoint=RUN, user_id="ann")
        bob = SchedulerTools(manager, default_endpoint=RUN, user_id="bob")
        made = await call(ann, "create_schedule", REMINDER)
        store.hide_once = True
        again = await call(ann, "create_schedule", {**REMINDER, "cron": "0 7 * * *"})
        assert (again["status"], again["id"], again["cron"]) == ("updated", made["id"], "0 7 * * *")
        store.hide_once = True
        await refused(bob, "create_schedule", REMINDER, "name")
        assert (await manager.get(made["id"])).user_id == "ann"
    finally:
        await store.close()


async def test_a_cron_the_kernel_cannot_honour_names_the_construct_under_field_cron(env):
    tools = env.tools()
    error = await refused(tools, "create_schedule", {**REMINDER, "cron": "R 9 * * *"}, "cron")
    assert "'R' (a random value)" in error
    created = await call(tools, "create_schedule", {**REMINDER, "cron": "0 9 ? * MON#1"})
    update = {"schedule_id": created["id"], "cron": "0 9 1 * MON#1"}
    error = await refused(tools, "update_schedule", update, "cron")
    assert "'MON#1' (d#k or Ld) with a restricted day-of-month" in error
