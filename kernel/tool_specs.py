"""What a model is told about the scheduler tools: their definitions (JSON Schema, in OpenAI's
or Anthropic's shape), the text that teaches cron and time zones, and the check of a call's
arguments against its tool's schema. `tools.py` answers the calls."""

from __future__ import annotations

import json
from typing import Any

from .errors import ValidationError

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


def parameters(properties: dict[str, Any], required: tuple[str, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def check_arguments(name: str, arguments: Any) -> dict[str, Any]:
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


def instructions(
    allowed_endpoints: tuple[str, ...] | None, default_endpoint: str | None, default_timezone: str
) -> str:
    """Text for the model's system prompt: cron, time zones, run payloads, the endpoints."""
    if allowed_endpoints is None:
        endpoints = "Any endpoint path of the service may be used."
    else:
        listed = ", ".join(allowed_endpoints) or "(none)"
        endpoints = f"Only these endpoints may be used ('*' at the end matches any rest): {listed}."
    default = (
        f" Without an endpoint, {default_endpoint} is used."
        if default_endpoint
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
        f"Without a time zone, {default_timezone} is used.\n"
        "Run endpoints (/agents/<id>/runs, /teams/<id>/runs, /workflows/<id>/runs) start a "
        'run and need a payload with the prompt as "message", e.g. '
        '{"message": "Remind me to water the plants"}. '
        f"{endpoints}{default}\n"
        'Every answer is JSON; an answer with an "error" names the argument to fix in '
        '"field". Use the ids that create_schedule and list_schedules return.'
    )


def tool_specs(format: str = "openai") -> list[dict[str, Any]]:
    """The tool definitions: openai {"type": "function", "function": {name, description,
    parameters}}; anthropic {name, description, input_schema}."""
    if format not in FORMATS:
        raise ValidationError("format", f"{format!r} must be one of {', '.join(FORMATS)}")
    out = []
    for name, (description, properties, required) in TOOLS.items():
        schema = parameters(properties, required)
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
