"""SchedulerTools: a model's tools for managing schedules, framework-neutral. The tool definitions
(JSON Schema, in OpenAI's or Anthropic's shape), the text that teaches a model cron and time
zones, and `call(name, arguments)`, which answers every call with a JSON string, errors included:
a model is never handed an exception. The rules a model cannot talk its way past live here: the
endpoint allow-list, one user's schedules only, a message for every run endpoint. Everything else
(what a valid schedule is) is the manager's. agno is imported only by `as_agno_toolkit`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from .cron import load_timezone
from .errors import (
    ScheduleExistsError,
    ScheduleNotFoundError,
    StoreError,
    ValidationError,
)
from .fmt import iso_local, iso_utc, kind_of
from .http.dispatch import RUN_ENDPOINT_RE
from .manager import ScheduleManager
from .model import Schedule, ScheduleRun
from .spec import validate_endpoint, validate_user_id

log = logging.getLogger("leasecron.tools")

FORMATS = ("openai", "anthropic")
MAX_LIST = 200  # the most schedules one list_schedules answer holds
MAX_RUNS = 100  # the most runs one get_schedule_runs answer holds


def _opt(kind: str | list[str], description: str) -> dict[str, Any]:
    """An optional argument: null is accepted and means "not given" (models often send it)."""
    kinds = [kind] if isinstance(kind, str) else kind
    return {"type": [*kinds, "null"], "description": description}


_SCHEDULE_ID = {"type": "string", "description": "The schedule's id, as create or list gave it."}
_FIELDS = {
    "description": _opt("string", "What the schedule is for, in a sentence."),
    "endpoint": _opt(
        "string",
        "The path called when it fires, e.g. /agents/<agent_id>/runs. "
        "Defaults to the configured default endpoint.",
    ),
    "method": _opt("string", "HTTP method: POST (default), GET, PUT, PATCH or DELETE."),
    "payload": _opt(
        "object",
        'The JSON body sent when it fires. Run endpoints need a "message": '
        '{"message": "Summarise the news"}.',
    ),
    "timezone": _opt("string", "IANA time zone the cron is read in, e.g. Europe/Berlin (not CET)."),
}
_CRON = "A 5-field cron expression: minute hour day-of-month month day-of-week, e.g. 0 9 * * 1-5."

# name -> (description, properties, required)
TOOLS: dict[str, tuple[str, dict[str, Any], tuple[str, ...]]] = {
    "create_schedule": (
        "Create a recurring schedule that calls an endpoint on a cron expression. If you already "
        "have a schedule of that name it is updated with the arguments given.",
        {
            "name": {
                "type": "string",
                "description": "A unique name, e.g. daily-weather-report (letters, digits, "
                "space and ._:/-).",
            },
            "cron": {"type": "string", "description": _CRON},
            **_FIELDS,
        },
        ("name", "cron"),
    ),
    "update_schedule": (
        "Change a schedule: give its id and only the arguments to change.",
        {
            "schedule_id": _SCHEDULE_ID,
            "name": _opt("string", "A new unique name."),
            "cron": _opt("string", _CRON),
            **_FIELDS,
        },
        ("schedule_id",),
    ),
    "list_schedules": (
        "List your schedules by name, with their ids and next run times.",
        {
            "enabled_only": _opt("boolean", "Only enabled schedules (default false)."),
            "limit": _opt("integer", f"How many to return (default 50, at most {MAX_LIST})."),
            "offset": _opt("integer", "How many to skip first, to page (default 0)."),
        },
        (),
    ),
    "get_schedule": (
        "Get one schedule's details.",
        {"schedule_id": _SCHEDULE_ID},
        ("schedule_id",),
    ),
    "enable_schedule": (
        "Enable a disabled schedule; it resumes at its next time (missed ones are not run).",
        {"schedule_id": _SCHEDULE_ID},
        ("schedule_id",),
    ),
    "disable_schedule": (
        "Disable a schedule so it stops running (it can be enabled again).",
        {"schedule_id": _SCHEDULE_ID},
        ("schedule_id",),
    ),
    "trigger_schedule": (
        "Run an enabled schedule once now, besides its regular times; returns the queued run's "
        "id (run_row_id), to look for in get_schedule_runs.",
        {"schedule_id": _SCHEDULE_ID},
        ("schedule_id",),
    ),
    "delete_schedule": (
        "Delete a schedule for good (its run history stays).",
        {"schedule_id": _SCHEDULE_ID},
        ("schedule_id",),
    ),
    "get_schedule_runs": (
        "A schedule's recent runs, newest first: status, times, errors.",
        {
            "schedule_id": _SCHEDULE_ID,
            "limit": _opt("integer", f"How many runs (default 10, at most {MAX_RUNS})."),
        },
        ("schedule_id",),
    ),
}

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
}


_KIND_WORDS = {
    "string": "a string",
    "integer": "a whole number",
    "boolean": "true or false",
    "object": "a JSON object",
}


class ToolError(Exception):
    """A refusal for the model: the message, and the argument to blame when there is one."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def _parameters(properties: dict[str, Any], required: tuple[str, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def _check_arguments(name: str, arguments: Any) -> dict[str, Any]:
    """The arguments as a dict checked against the tool's schema; null optionals dropped."""
    if isinstance(arguments, str | bytes):
        try:
            arguments = json.loads(arguments or "{}")
        except (ValueError, RecursionError) as exc:
            raise ToolError(f"arguments are not valid JSON: {exc}", "arguments") from None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise ToolError(
            f"arguments must be a JSON object, not {type(arguments).__name__}", "arguments"
        )
    _, properties, required = TOOLS[name]
    for key in arguments:
        if key not in properties:
            raise ToolError(
                f"{name} has no argument {key!r}; its arguments: {', '.join(properties)}", key
            )
    out: dict[str, Any] = {}
    for key, value in arguments.items():
        kinds = properties[key]["type"]
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if value is None and "null" in kinds:
            continue
        if key == "payload" and isinstance(value, str):  # a JSON text of the object, as some send
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):
                raise ToolError(
                    "payload must be a JSON object (got text that is not JSON)", key
                ) from None
        ok = any(
            isinstance(value, _JSON_TYPES[k]) and not (k == "integer" and isinstance(value, bool))
            for k in kinds
            if k in _JSON_TYPES
        )
        if not ok:
            wanted = " or ".join(_KIND_WORDS[k] for k in kinds if k != "null")
            got = json.dumps(value, default=repr)[:80]
            raise ToolError(f"{key} must be {wanted}, not {got}", key)
        out[key] = value
    for key in required:
        if key not in out:
            raise ToolError(f"{name} needs the argument {key!r}", key)
    return out


def _matches(endpoint: str, rule: str) -> bool:
    return endpoint.startswith(rule[:-1]) if rule.endswith("*") else endpoint == rule


def _is_run_endpoint(endpoint: str, method: str) -> bool:
    return method.upper() == "POST" and RUN_ENDPOINT_RE.match(urlsplit(endpoint).path) is not None


def _schedule_json(s: Schedule) -> dict[str, Any]:
    return {
        "id": s.id,
        "name": s.name,
        "description": s.description,
        "cron": s.cron_expr,
        "timezone": s.timezone,
        "timing": f"{kind_of(s)} ({s.timezone})",
        "endpoint": s.endpoint,
        "method": s.method,
        "payload": s.payload,
        "enabled": s.enabled,
        "next_run_at": (
            iso_local(s.next_run_at, s.timezone) if s.enabled and s.next_run_at else None
        ),
        "last_run_at": iso_local(s.last_run_at, s.timezone) if s.last_run_at else None,
        "last_status": s.last_status,
        "consecutive_failures": s.consecutive_failures,
        "disabled_reason": s.disabled_reason,
        "user_id": s.user_id,
    }


def _run_json(r: ScheduleRun) -> dict[str, Any]:
    def at(ts: float | None) -> str | None:
        return iso_utc(ts) if ts is not None else None

    return {
        "id": r.id,
        "status": r.status,
        "trigger": r.trigger,
        "attempt": r.attempt,
        "scheduled_for": at(r.scheduled_for),
        "triggered_at": at(r.triggered_at),
        "completed_at": at(r.completed_at),
        "status_code": r.status_code,
        "error": r.error,
        "run_id": r.run_id,
        "session_id": r.session_id,
    }


class SchedulerTools:
    """Schedule tools for a model, acting through `manager`: a ScheduleManager, or a callable
    returning one when a tool is called (a server whose store opens after its agents are built).

    allowed_endpoints: None (any endpoint the manager accepts) or the endpoints a schedule may
        call: an entry is an exact endpoint, or ends in `*` and allows every endpoint starting
        with what precedes it (`/agents/*`). Checked on create, update, enable and trigger.
    default_endpoint: the endpoint of a create that names none (must be allowed).
    default_timezone: the zone of a create that names none.
    user_id: the user the tools act for: they see and change that user's schedules only, and
        creates are theirs. None: the operator, every schedule.
    """

    def __init__(
        self,
        manager: ScheduleManager | Callable[[], ScheduleManager],
        *,
        allowed_endpoints: Iterable[str] | None = None,
        default_endpoint: str | None = None,
        default_timezone: str = "UTC",
        user_id: str | None = None,
    ):
        if not isinstance(manager, ScheduleManager) and not callable(manager):
            raise ValidationError(
                "manager", f"{manager!r} must be a ScheduleManager or a callable returning one"
            )
        self._manager = manager
        self.user_id = validate_user_id(user_id)
        load_timezone(default_timezone)
        self.default_timezone = default_timezone
        if isinstance(allowed_endpoints, str):
            raise ValidationError("allowed_endpoints", "must be a list of endpoints, not one")
        self.allowed_endpoints = None if allowed_endpoints is None else list(allowed_endpoints)
        for rule in self.allowed_endpoints or ():
            if not isinstance(rule, str) or not rule:
                raise ValidationError("allowed_endpoints", f"{rule!r} must be a non-empty string")
            if "*" in rule[:-1]:
                raise ValidationError(
                    "allowed_endpoints", f"{rule!r}: '*' is allowed only at the end (a prefix)"
                )
        self.default_endpoint = None
        if default_endpoint is not None:
            # A manager still to come has no hosts yet: the default must then be a path.
            hosts = None if isinstance(manager, ScheduleManager) else ()
            try:
                self._check_endpoint(default_endpoint, hosts)
            except (ToolError, ValidationError) as exc:
                raise ValidationError("default_endpoint", str(exc)) from None
            self.default_endpoint = default_endpoint

    @property
    def manager(self) -> ScheduleManager:
        manager = self._manager
        if isinstance(manager, ScheduleManager):
            return manager
        resolved = manager()
        if not isinstance(resolved, ScheduleManager):
            raise ValidationError("manager", f"the manager callable gave {resolved!r}")
        return resolved

    # -- what the model is given ---------------------------------------------------------------

    @property
    def instructions(self) -> str:
        """Text for the model's system prompt: cron, time zones, run payloads, the endpoints."""
        if self.allowed_endpoints is None:
            endpoints = "Any endpoint path of the service may be used."
        else:
            listed = ", ".join(self.allowed_endpoints) or "(none)"
            endpoints = (
                f"Only these endpoints may be used ('*' at the end matches any rest): {listed}."
            )
        default = (
            f" Without an endpoint, {self.default_endpoint} is used."
            if self.default_endpoint
            else " Every schedule needs an endpoint."
        )
        return (
            "You can create and manage recurring schedules with the scheduler tools. Turn a "
            "request like 'every weekday at 9' into a 5-field cron expression: minute hour "
            "day-of-month month day-of-week. Examples: '0 9 * * 1-5' weekdays at 9:00; "
            "'0 9 * * *' every day at 9:00; '30 8 * * 1' Mondays at 8:30; '0 */6 * * *' every 6 "
            "hours; '0 0 1 * *' the first of each month at midnight; '*/15 * * * *' every 15 "
            "minutes. Day-of-week 0 and 7 are Sunday.\n"
            "The cron is read in the schedule's time zone: give an IANA name such as "
            "Europe/Berlin, America/New_York or Asia/Tokyo (not an abbreviation like CET or EST, "
            "which ignore daylight saving); when the user names a city or country, use its zone. "
            f"Without a time zone, {self.default_timezone} is used.\n"
            "Run endpoints (/agents/<id>/runs, /teams/<id>/runs, /workflows/<id>/runs) start a "
            'run and need a payload with the prompt as "message", e.g. '
            '{"message": "Remind me to water the plants"}. '
            f"{endpoints}{default}\n"
            'Every answer is JSON; an answer with an "error" names the argument to fix in '
            '"field". Use the ids that create_schedule and list_schedules return.'
        )

    def specs(self, format: str = "openai") -> list[dict[str, Any]]:
        """The tool definitions: openai {"type": "function", "function": {name, description,
        parameters}}; anthropic {name, description, input_schema}."""
        if format not in FORMATS:
            raise ValidationError("format", f"{format!r} must be one of {', '.join(FORMATS)}")
        out = []
        for name, (description, properties, required) in TOOLS.items():
            schema = _parameters(properties, required)
            if format == "openai":
                out.append(
                    {
                        "type": "function",
                        "function": {
                            "name": name,
                            "description": description,
                            "parameters": schema,
                        },
                    }
                )
            else:
                out.append({"name": name, "description": description, "input_schema": schema})
        return out

    # -- calls ---------------------------------------------------------------------------------

    async def call(self, name: str, arguments: dict[str, Any] | str | None = None) -> str:
        """Run tool `name` with `arguments` (a dict or a JSON string); always a JSON string
        answer: the result, or {"error": ..., "field": ...} (field when an argument is to blame)."""
        try:
            if name not in TOOLS:
                raise ToolError(f"no tool {name!r}; tools: {', '.join(TOOLS)}", "tool")
            args = _check_arguments(name, arguments)
            result = await getattr(self, f"_{name}")(**args)
        except ToolError as exc:
            result = {"error": str(exc), "field": exc.field}
        except ValidationError as exc:
            result = {"error": str(exc), "field": exc.field}
        except ScheduleExistsError as exc:
            result = {
                "error": f"a schedule named {exc.name!r} exists; choose another name",
                "field": "name",
            }
        except ScheduleNotFoundError as exc:
            result = self._not_found(exc.key)
        except StoreError as exc:
            log.warning("scheduler tool %s: %s", name, exc)
            result = {"error": "the schedule store is unavailable; try again later"}
        except Exception as exc:  # a model gets an answer, never a traceback
            log.exception("scheduler tool %s failed", name)
            result = {"error": f"the tool failed: {type(exc).__name__}"}
        if "error" in result and result.get("field") is None:
            result.pop("field", None)
        return json.dumps(result, ensure_ascii=False)

    @staticmethod
    def _not_found(schedule_id: str) -> dict[str, Any]:
        return {"error": f"no schedule with id {schedule_id!r}", "field": "schedule_id"}

    def _mine(self, schedule: Schedule | None) -> bool:
        return schedule is not None and (self.user_id is None or schedule.user_id == self.user_id)

    async def _owned(self, schedule_id: str) -> Schedule:
        """The schedule, if these tools may see it; another user's is "not found" too."""
        schedule = await self.manager.get(schedule_id)
        if not self._mine(schedule):
            raise ToolError(f"no schedule with id {schedule_id!r}", "schedule_id")
        return schedule

    def _check_endpoint(self, endpoint: str, hosts: tuple[str, ...] | None = None) -> None:
        """The manager's rules (a path, allowed hosts, no dot segments), then the allow-list.
        `hosts`: the hosts an absolute URL may name (None: the manager's)."""
        validate_endpoint(endpoint, self.manager.allowed_hosts if hosts is None else hosts)
        rules = self.allowed_endpoints
        if rules is not None and not any(_matches(endpoint, rule) for rule in rules):
            raise ToolError(
                f"endpoint {endpoint!r} is not allowed; allowed: {', '.join(rules) or '(none)'}",
                "endpoint",
            )

    @staticmethod
    def _check_run_payload(endpoint: str, method: str, payload: Any) -> None:
        if not _is_run_endpoint(endpoint, method):
            return
        message = payload.get("message") if isinstance(payload, dict) else None
        if not isinstance(message, str) or not message.strip():
            raise ToolError(
                f"{endpoint} starts a run and needs the prompt in the payload: "
                '{"message": "..."}',
                "payload",
            )

    @staticmethod
    def _fields(args: dict[str, Any]) -> dict[str, Any]:
        """Tool arguments as manager fields: the method in capitals, an empty description
        none."""
        fields = dict(args)
        if "method" in fields:
            fields["method"] = str(fields["method"]).upper()
        if fields.get("description") == "":
            fields["description"] = None
        return fields

    async def _write(self, current: Schedule, fields: dict[str, Any]) -> Schedule:
        """Update `current` with `fields` after the tools' own checks of the merged result."""
        endpoint = fields.get("endpoint", current.endpoint)
        method = fields.get("method", current.method)
        if "endpoint" in fields:
            self._check_endpoint(endpoint)
        if {"endpoint", "method", "payload"} & fields.keys():
            self._check_run_payload(endpoint, method, fields.get("payload", current.payload))
        if "cron" in fields:  # a schedule the tools give a cron is a cron schedule from now on
            for other in ("interval_seconds", "run_at", "start_at"):
                if getattr(current, other) is not None:
                    fields[other] = None
        return await self.manager.update(current.id, **fields)

    async def _create_schedule(self, name: str, cron: str, **args: Any) -> dict[str, Any]:
        fields = self._fields({"cron": cron, **args})
        existing = await self.manager.get_by_name(name)
        if existing is not None:
            if not self._mine(existing):  # names are unique across users; the owner stays hidden
                raise ToolError(f"the name {name!r} is taken; choose another name", "name")
            updated = await self._write(existing, fields)
            return {"status": "updated", **_schedule_json(updated)}
        endpoint = fields.pop("endpoint", None) or self.default_endpoint
        if endpoint is None:
            raise ToolError("give an endpoint (no default endpoint is configured)", "endpoint")
        self._check_endpoint(endpoint)
        fields.setdefault("timezone", self.default_timezone)
        self._check_run_payload(endpoint, fields.get("method", "POST"), fields.get("payload"))
        try:
            created = await self.manager.create(
                name, endpoint=endpoint, user_id=self.user_id, **fields
            )
        except ScheduleExistsError:  # created meanwhile (another call, another replica)
            existing = await self.manager.get_by_name(name)
            if not self._mine(existing):
                raise ToolError(
                    f"the name {name!r} is taken; choose another name", "name"
                ) from None
            return await self._create_schedule(name, cron, **args)  # ours now: an update
        return {"status": "created", **_schedule_json(created)}

    async def _update_schedule(self, schedule_id: str, **args: Any) -> dict[str, Any]:
        current = await self._owned(schedule_id)
        updated = await self._write(current, self._fields(args)) if args else current
        return {"status": "updated", **_schedule_json(updated)}

    async def _list_schedules(
        self, enabled_only: bool = False, limit: int = 50, offset: int = 0
    ) -> dict[str, Any]:
        if not 1 <= limit <= MAX_LIST:
            raise ToolError(f"limit must be 1-{MAX_LIST}, not {limit}", "limit")
        if offset < 0:
            raise ToolError(f"offset must be >= 0, not {offset}", "offset")
        enabled = True if enabled_only else None
        page = await self.manager.list(enabled, user_id=self.user_id, limit=limit, offset=offset)
        total = await self.manager.count(enabled, user_id=self.user_id)
        return {
            "schedules": [_schedule_json(s) for s in page],
            "count": len(page),
            "total": total,
            "offset": offset,
        }

    async def _get_schedule(self, schedule_id: str) -> dict[str, Any]:
        return _schedule_json(await self._owned(schedule_id))

    async def _enable_schedule(self, schedule_id: str) -> dict[str, Any]:
        current = await self._owned(schedule_id)
        self._check_endpoint(current.endpoint)  # the allow-list may have shrunk since
        enabled = await self.manager.enable(current.id)
        return {"status": "enabled", **_schedule_json(enabled)}

    async def _disable_schedule(self, schedule_id: str) -> dict[str, Any]:
        current = await self._owned(schedule_id)
        disabled = await self.manager.disable(current.id)
        return {"status": "disabled", **_schedule_json(disabled)}

    async def _trigger_schedule(self, schedule_id: str) -> dict[str, Any]:
        current = await self._owned(schedule_id)
        self._check_endpoint(current.endpoint)
        if not current.enabled:
            raise ToolError(
                f"schedule {current.name!r} is disabled; enable_schedule it first", "schedule_id"
            )
        run_row_id = await self.manager.trigger(current.id)
        return {
            "status": "triggered",
            "id": current.id,
            "name": current.name,
            "run_row_id": run_row_id,
        }

    async def _delete_schedule(self, schedule_id: str) -> dict[str, Any]:
        current = await self._owned(schedule_id)
        if not await self.manager.delete(current.id):
            return self._not_found(schedule_id)
        return {"status": "deleted", "id": current.id, "name": current.name}

    async def _get_schedule_runs(self, schedule_id: str, limit: int = 10) -> dict[str, Any]:
        if not 1 <= limit <= MAX_RUNS:
            raise ToolError(f"limit must be 1-{MAX_RUNS}, not {limit}", "limit")
        current = await self._owned(schedule_id)
        runs = await self.manager.runs(current.id, limit)
        return {"schedule_id": current.id, "runs": [_run_json(r) for r in runs], "count": len(runs)}

    # -- agno ----------------------------------------------------------------------------------

    def as_agno_toolkit(self) -> Any:
        """These tools as an `agno.tools.Toolkit` (agno imported here, not before): each tool a
        Function with this schema, calling `call`; async for `Agent.arun`, and a sync twin for
        `Agent.run` that runs the call on its own event loop."""
        try:
            from agno.tools.function import Function
            from agno.tools.toolkit import Toolkit
        except ImportError as exc:
            raise ImportError(
                "SchedulerTools.as_agno_toolkit needs agno (pip install agno)"
            ) from exc
        toolkit = Toolkit(
            name="scheduler",
            instructions=self.instructions,
            add_instructions=True,
            auto_register=False,
        )
        for name, (description, properties, required) in TOOLS.items():
            common = {
                "name": name,
                "description": description,
                "parameters": _parameters(properties, required),
                "skip_entrypoint_processing": True,
            }
            toolkit.async_functions[name] = Function(entrypoint=self._async_entry(name), **common)
            toolkit.functions[name] = Function(entrypoint=self._sync_entry(name), **common)
        return toolkit

    def _async_entry(self, name: str):
        async def entry(**arguments: Any) -> str:
            return await self.call(name, arguments)

        entry.__name__ = name
        return entry

    def _sync_entry(self, name: str):
        def entry(**arguments: Any) -> str:
            return run_sync(self.call(name, arguments))

        entry.__name__ = name
        return entry


def run_sync(coro: Any) -> Any:
    """Run a coroutine to its end from synchronous code: on this thread when no loop runs here,
    else on a thread of its own (a sync tool called from inside a running loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # handed back to the caller below
            box["error"] = exc

    thread = threading.Thread(target=target, name="leasecron-tools-call")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
