"""SchedulerTools: a model's tools for managing schedules, framework-neutral. The tool definitions
and the text that teaches a model cron and time zones are in `tool_specs.py`; this file holds
`call(name, arguments)`, which answers every call with a JSON string, errors included:
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
from .http.agentos import RUN_ENDPOINT_RE
from .manager import ScheduleManager
from .model import Schedule, ScheduleRun
from .spec import validate_endpoint, validate_user_id
from .tool_specs import (
    MAX_LIST,
    MAX_RUNS,
    TOOLS,
    ToolError,
    check_arguments,
    instructions,
    parameters,
    tool_specs,
)

log = logging.getLogger("leasecron.tools")


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
        return instructions(self.allowed_endpoints, self.default_endpoint, self.default_timezone)

    def specs(self, format: str = "openai") -> list[dict[str, Any]]:
        """The tool definitions: openai {"type": "function", "function": {name, description,
        parameters}}; anthropic {name, description, input_schema}."""
        return tool_specs(format)

    # -- calls ---------------------------------------------------------------------------------

    async def call(self, name: str, arguments: dict[str, Any] | str | None = None) -> str:
        """Run tool `name` with `arguments` (a dict or a JSON string); always a JSON string
        answer: the result, or {"error": ..., "field": ...} (field when an argument is to blame)."""
        try:
            if name not in TOOLS:
                raise ToolError(f"no tool {name!r}; tools: {', '.join(TOOLS)}", "tool")
            args = check_arguments(name, arguments)
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
                "parameters": parameters(properties, required),
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
