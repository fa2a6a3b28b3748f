"""The body of `POST /agents|teams|workflows/{id}/runs`, parsed and checked into a RunRequest.

Form data (`application/x-www-form-urlencoded`, `multipart/form-data`) as the reference AgentOS
takes it, and JSON as well. Booleans as pydantic reads them (`true/false/1/0/yes/no/on/off`);
`stream` defaults to true when omitted, as in the reference (the kernel's dispatcher always sends
`stream=false, background=true`). `metadata` and `session_state` are JSON objects (as JSON text
in a form). Other keys are passed on to the run. Every fault is a 422 naming the field in
FastAPI's shape (`{"detail": [{"type", "loc", "msg", "input"}]}`), or a 415 for a body type
this route does not read; never a 500.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote_plus

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile

from .executor import RunRequest

URLENCODED = "application/x-www-form-urlencoded"
PLAIN_FORM_BYTES, PLAIN_FORM_PAIRS = 16 * 1024, 64
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})
FALSE = frozenset({"false", "0", "no", "off", "f", "n"})
KNOWN = (
    "message",
    "session_id",
    "user_id",
    "stream",
    "background",
    "metadata",
    "session_state",
    "run_id",
)
# A client-chosen run id: short, and safe in a URL path and a log line.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

# The body as the OpenAPI document describes it (the route reads the request itself, so that
# one route takes form data and JSON alike).
_PROPERTIES: dict[str, Any] = {
    "message": {"type": "string", "description": "the run's input"},
    "stream": {"type": "boolean", "default": True, "description": "answer with SSE events"},
    "background": {
        "type": "boolean",
        "default": False,
        "description": "answer 202 at once and run on (poll the run)",
    },
    "session_id": {"type": "string", "description": "continue this session (default: new)"},
    "run_id": {
        "type": "string",
        "pattern": RUN_ID.pattern,
        "description": "the run's id, chosen by the client (default: a new one); a POST naming "
        "a run this component already has answers with that run instead of starting another",
    },
    "user_id": {"type": "string"},
}
_FORM_SCHEMA = {
    "type": "object",
    "required": ["message"],
    "properties": {
        **_PROPERTIES,
        "metadata": {"type": "string", "description": "a JSON object, returned on the run"},
        "session_state": {"type": "string", "description": "a JSON object"},
    },
    "additionalProperties": {"type": "string"},
}
_JSON_SCHEMA = {
    "type": "object",
    "required": ["message"],
    "properties": {
        **_PROPERTIES,
        "metadata": {"type": "object", "description": "returned verbatim on the run"},
        "session_state": {"type": "object"},
    },
    "additionalProperties": True,
}
OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {"schema": _FORM_SCHEMA},
            "multipart/form-data": {"schema": _FORM_SCHEMA},
            "application/json": {"schema": _JSON_SCHEMA},
        },
    }
}


def invalid(field: str | None, kind: str, msg: str, value: Any = None) -> HTTPException:
    loc = ["body"] if field is None else ["body", field]
    return HTTPException(422, [{"type": kind, "loc": loc, "msg": msg, "input": value}])


async def read_run_request(request: Request) -> RunRequest:
    """The run request in the body, or an HTTPException (422, 415) naming what is wrong."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == URLENCODED and (quick := plain_form(await request.body())) is not None:
        fields, from_form = quick, True
    elif media_type in FORM_TYPES:
        fields = await _form(request)
        from_form = True
    elif media_type == "application/json" or media_type.endswith("+json"):
        fields = await _json_body(request)
        from_form = False
    elif not media_type and not await request.body():
        fields, from_form = {}, True  # no body at all: the message is missing
    else:
        raise HTTPException(
            415,
            f"unsupported content type {media_type or '(none)'!r}: send form data "
            "(application/x-www-form-urlencoded or multipart/form-data) or application/json",
        )
    return _build(fields, from_form)


def plain_form(body: bytes) -> dict[str, str] | None:
    """A small urlencoded body of `name=value` pairs, decoded as Starlette's form parser
    decodes them (latin-1, then unquote_plus; a name given twice: its last value); None for
    anything else (no `=` in a pair, an empty name, many pairs, a big body), which the form
    parser reads. The parser's machinery costs more than the rest of a fire's request."""
    if len(body) > PLAIN_FORM_BYTES or body.count(b"&") >= PLAIN_FORM_PAIRS:
        return None
    fields: dict[str, str] = {}
    for pair in body.split(b"&"):
        name, eq, value = pair.partition(b"=")
        if not eq or not name:
            return None
        fields[unquote_plus(name.decode("latin-1"))] = unquote_plus(value.decode("latin-1"))
    return fields


async def _form(request: Request) -> dict[str, Any]:
    try:
        form = await request.form()
    except Exception as exc:  # a malformed body: the client's fault, said as such
        raise invalid(None, "value_error", f"the form body cannot be read: {exc}") from exc
    fields: dict[str, Any] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            raise invalid(key, "value_error", "file uploads are not accepted here")
        fields[key] = value  # a key given twice: the last value, as pydantic reads a form
    return fields


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(None, "json_invalid", f"JSON decode error: {exc}") from exc
    if not isinstance(body, dict):
        raise invalid(None, "dict_type", "the JSON body must be an object", body)
    return body


def _build(fields: dict[str, Any], from_form: bool) -> RunRequest:
    message = fields.get("message")
    if message is None:
        raise HTTPException(
            422,
            [
                {
                    "type": "missing",
                    "loc": ["body", "message"],
                    "msg": "Field required",
                    "input": None,
                }
            ],
        )
    return RunRequest(
        message=_string("message", message, allow_empty=True),
        session_id=_optional_string("session_id", fields.get("session_id")),
        run_id=_run_id(fields.get("run_id")),
        user_id=_optional_string("user_id", fields.get("user_id")),
        stream=_bool("stream", fields.get("stream"), default=True),
        background=_bool("background", fields.get("background"), default=False),
        metadata=_object("metadata", fields.get("metadata"), from_form),
        session_state=_object("session_state", fields.get("session_state"), from_form),
        extra={k: v for k, v in fields.items() if k not in KNOWN},
    )


def _string(field: str, value: Any, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise invalid(field, "string_type", "Input should be a valid string", value)
    if not allow_empty and not value.strip():
        raise invalid(field, "string_too_short", "must not be empty", value)
    return value


def _optional_string(field: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    return _string(field, value)


def _run_id(value: Any) -> str | None:
    run_id = _optional_string("run_id", value)
    if run_id is not None and not RUN_ID.fullmatch(run_id):
        raise invalid(
            "run_id",
            "string_pattern_mismatch",
            "must be 1-128 letters, digits or ._:- (starting with a letter or digit)",
            run_id,
        )
    return run_id


def _bool(field: str, value: Any, *, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE:
            return True
        if word in FALSE:
            return False
    raise invalid(field, "bool_parsing", "Input should be a valid boolean (true/false, 1/0)", value)


def _object(field: str, value: Any, from_form: bool) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise invalid(field, "json_invalid", f"must be a JSON object: {exc}", value) from exc
    elif from_form:  # unreachable for real forms: every form value is a string
        raise invalid(field, "string_type", "must be a JSON object as text", value)
    if not isinstance(value, dict):
        raise invalid(field, "dict_type", "must be a JSON object", value)
    return value
