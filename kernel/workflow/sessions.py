"""Workflow runs and their traces as the SQL stores keep them, shared by SqliteStore and
PostgresStore: the values the read-back methods return (`WorkflowSession`, `TraceNode`, and the
engine's own `WorkflowRunOutput` and `Span`), and the mapping of a run and its spans to row
parameters and back. No SQL and no I/O here.

Tables (names follow the store's prefix, default `agno_`):
  sessions  one row per session: its type, workflow (or agent), user and current session_state
  runs      one row per run (`{prefix}workflow_runs`): found by run id in one primary-key lookup,
            a session's runs by one index range
  traces    one row per span; trace id = run id, so a run's spans are one key range

Everything a run carried is stored as JSON and comes back as JSON gives it back: a tuple as a list,
an object the encoder does not know as its `str()`, dict keys as strings, a non-finite float as
the string "NaN", "Infinity" or "-Infinity". Text and JSON are cleaned the same way for both stores
before they are written (NUL and lone surrogates become U+FFFD: Postgres refuses them), so the two
stores give back the same values; ids are cleaned the same way when they are looked up. Media
keep their bytes (base64 in the row). Each store passes `load`, its way of decoding a JSON column:
SQLite keeps text, while psycopg hands Postgres JSONB back already decoded.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ValidationError
from .trace import Span
from .types import Media, RunStatus, StepOutput, WorkflowRunOutput

SESSION_TYPE = "workflow"

Row = Mapping[str, Any]
Load = Callable[[Any], Any]


@dataclass(slots=True, eq=False)
class WorkflowSession:
    """A session as stored: `session_state` as the last finished run left it, and its runs in the
    order they started (each a `WorkflowRunOutput` without spans: read those with `get_trace`)."""

    session_id: str
    session_type: str
    workflow_id: str | None
    agent_id: str | None
    user_id: str | None
    session_state: dict[str, Any]
    created_at: float
    updated_at: float
    runs: list[WorkflowRunOutput] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class TraceNode:
    """One span of a stored trace and the spans it parents, in start order."""

    span: Span
    children: list[TraceNode] = field(default_factory=list)

    def walk(self, depth: int = 0) -> Iterator[tuple[int, TraceNode]]:
        """This node and every node below it, depth first, with their depth below this one."""
        yield depth, self
        for child in self.children:
            yield from child.walk(depth + 1)


def span_tree(spans: Iterable[Span]) -> list[TraceNode]:
    """Spans as a forest: roots first, every list in start order. Span ids count up in start
    order within a trace, so they break ties between spans started in the same instant. A span
    whose parent is not in the trace (a partial save) is a root rather than lost."""
    nodes = {span.span_id: TraceNode(span) for span in spans}
    roots: list[TraceNode] = []
    for node in sorted(nodes.values(), key=lambda n: (n.span.start, n.span.span_id)):
        parent = nodes.get(node.span.parent_span_id or "")
        (roots if parent is None or parent is node else parent.children).append(node)
    return roots


# -- values -> row parameters ------------------------------------------------------------------
#
# Both stores get the same text. Postgres refuses what SQLite takes: a NUL character in text or
# JSONB, a lone surrogate in JSONB, and NaN or ±Infinity in JSONB. So every value is cleaned here,
# before either store sees it: NUL and lone surrogates become U+FFFD (a surrogate pair becomes the
# one character it encodes), and a non-finite float becomes the string "NaN", "Infinity" or
# "-Infinity". What is read back is then the same on SQLite and on Postgres.

REPLACEMENT = "\ufffd"

# A JSON string (kept, its escapes checked) or a non-finite number token outside any string.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|-?Infinity|NaN')
# Inside a JSON string: a surrogate pair (kept), a NUL or lone surrogate escape (replaced), or any
# other escape (kept whole, so that the text after an escaped backslash is never misread).
_JSON_ESCAPE = re.compile(
    r"(?P<pair>\\ud[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2})"
    r"|(?P<bad>\\u(?:0000|d[89a-f][0-9a-f]{2}))"
    r"|\\."
)


def clean_text(text: str) -> str:
    """`text` as both stores can hold it: NUL and lone surrogates replaced by U+FFFD."""
    if text.isascii():
        return text.replace("\x00", REPLACEMENT) if "\x00" in text else text
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # surrogates: pairs become their character, lone ones U+FFFD
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _escape(match: re.Match[str]) -> str:
    return "\\ufffd" if match.group("bad") is not None else match.group()


def _token(match: re.Match[str]) -> str:
    token = match.group()
    if token[0] != '"':  # NaN, Infinity, -Infinity: JSONB has no such number
        return f'"{token}"'
    if "\\u0000" not in token and "\\ud" not in token:
        return token
    return _JSON_ESCAPE.sub(_escape, token)


def _clean_json(text: str) -> str:
    """JSON text from json.dumps (ASCII only: every other character is an escape) cleaned as
    `clean_text` cleans text, with non-finite numbers turned into strings."""
    if "NaN" in text or "Infinity" in text or "\\u0000" in text or "\\ud" in text:
        return _JSON_TOKEN.sub(_token, text)
    return text


def _dumps(value: Any) -> str:
    return _clean_json(json.dumps(value, separators=(",", ":"), default=str))


def _repr(value: Any) -> str:
    try:
        return repr(value)[:65_536]
    except Exception:  # a __repr__ that raises
        return f"<{type(value).__name__}>"


def _json(value: Any) -> str | None:
    """JSON text for a column; a value the encoder cannot take (a cycle, a key that is not a
    string, a str() that raises) is kept as its repr, so one odd value never costs the run its
    record."""
    if value is None:
        return None
    try:
        return _dumps(value)
    except Exception:
        return _dumps(_repr(value))


def _state_json(state: dict[str, Any]) -> str:
    """The session's state is read back into the next run, so it must be JSON as it is: a repr
    in its place would lose it. A state JSON cannot hold (a key that is not a string, a cycle)
    fails the save instead; a non-finite float is stored as a string (see above)."""
    try:
        return _dumps(state)
    except Exception as exc:
        raise ValueError(f"session_state cannot be stored as JSON: {exc}") from exc


def _cleaned(params: dict[str, Any]) -> dict[str, Any]:
    return {k: clean_text(v) if isinstance(v, str) else v for k, v in params.items()}


def check_limit(limit: Any) -> int | None:
    """get_session's `limit`: None (every run) or an integer ≥ 0."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValidationError("limit", f"{limit!r} must be None or an integer ≥ 0")
    return limit


def _media(media: Any) -> dict[str, Any]:
    if not isinstance(media, Media):
        raise ValidationError(
            "media",
            f"a {type(media).__name__} ({_repr(media)[:80]}) is not a Media: "
            "build it with Media(kind, mime_type, content=... or url=...)",
        )
    content = None if media.content is None else base64.b64encode(media.content).decode()
    return {
        "kind": media.kind,
        "mime_type": media.mime_type,
        "url": media.url,
        "name": media.name,
        "content_base64": content,
    }


def _step(out: StepOutput) -> dict[str, Any]:
    return {
        "step_name": out.step_name,
        "step_type": out.step_type,
        "content": out.content,
        "success": out.success,
        "error": out.error,
        "stop": out.stop,
        "skipped": out.skipped,
        "media": [_media(m) for m in out.media],
        "metadata": out.metadata,
        "started_at": out.started_at,
        "ended_at": out.ended_at,
        "steps": [_step(child) for child in out.steps],
    }


def run_ended(run: WorkflowRunOutput) -> bool:
    """Whether the run is over (or paused): only then does its session_state become the
    session's. The save at the start leaves a stored session's state alone, so a run that
    starts while another is finishing cannot put back the state that run replaced."""
    return RunStatus(run.status) not in (RunStatus.PENDING, RunStatus.RUNNING)


def session_params(run: WorkflowRunOutput, *, summary: bool = False) -> dict[str, Any]:
    """The session row a run writes: created with the run's start, touched at its end. A state
    JSON cannot hold fails the save; in a `summary` save (the engine's second try, see
    `run_params`) it is left out instead: the session keeps the state it had (a new session
    starts from {})."""
    at = run.ended_at if run.ended_at is not None else run.started_at
    if at is None:  # a run saved before it started (PENDING) carries no time of its own
        at = time.time()
    ended = run_ended(run)
    try:
        state = _state_json(run.session_state)
    except ValueError:
        if not summary:
            raise
        state, ended = "{}", False
    return _cleaned(
        {
            "session_id": run.session_id,
            "session_type": SESSION_TYPE,
            "workflow_id": run.workflow_id,
            "user_id": run.user_id,
            "session_state": state,
            "created_at": run.started_at if run.started_at is not None else at,
            "updated_at": at,
            "ended": ended,
        }
    )


def run_taken(run_id: str) -> str:
    """Why a run's first save is refused (ValidationError on `run_id`)."""
    return (
        f"{run_id!r} is already stored, as another run: a run id names one run "
        "(give a new one, or none for a generated id)"
    )


def run_params(run: WorkflowRunOutput) -> dict[str, Any]:
    """The run row. Built on the caller's thread at the moment of the call: the output object
    goes on changing while the run lasts, so this is the copy the store keeps. A media item that
    is not a `Media` is a ValidationError naming `media`; every other value is stored one way or
    another (see `_json`). The engine's `summary` row is a run like any other, with its step
    outputs and media left out and the reason in its error."""
    return _cleaned(
        {
            "run_id": run.run_id,
            "session_id": run.session_id,
            "workflow_id": run.workflow_id,
            "workflow_name": run.workflow_name,
            "user_id": run.user_id,
            "status": RunStatus(run.status).value,
            "input": _json(run.input),
            "content": _json(run.content),
            "media": _json([_media(m) for m in run.media]),
            "step_outputs": _json([_step(out) for out in run.step_outputs]),
            "session_state": _json(run.session_state),
            "additional_data": _json(run.additional_data),
            "error": run.error,
            "started_at": run.started_at,
            "ended_at": run.ended_at,
        }
    )


def span_params(span: Span) -> dict[str, Any]:
    return _cleaned(
        {
            "trace_id": span.trace_id,
            "span_id": span.span_id,
            "parent_span_id": span.parent_span_id,
            "name": span.name,
            "kind": span.kind,
            "status": span.status,
            "started_at": span.start,
            "ended_at": span.end,
            "attributes": _json(span.attributes),
            "error": span.error,
        }
    )


# -- rows -> values ------------------------------------------------------------------------------


def _media_from(item: Any) -> Media | None:
    if not isinstance(item, dict):
        return None
    content = item.get("content_base64")
    return Media(
        item["kind"],
        item["mime_type"],
        content=None if content is None else base64.b64decode(content),
        url=item.get("url"),
        name=item.get("name"),
    )


def _media_list(items: Any) -> list[Media]:
    found = (_media_from(item) for item in items) if isinstance(items, list) else ()
    return [m for m in found if m is not None]


def _step_from(item: dict[str, Any]) -> StepOutput:
    return StepOutput(
        content=item.get("content"),
        step_name=item.get("step_name"),
        step_type=item.get("step_type") or "step",
        success=bool(item.get("success", True)),
        error=item.get("error"),
        stop=bool(item.get("stop")),
        skipped=bool(item.get("skipped")),
        media=_media_list(item.get("media")),
        steps=[_step_from(child) for child in item.get("steps") or () if isinstance(child, dict)],
        metadata=item.get("metadata") or {},
        started_at=item.get("started_at"),
        ended_at=item.get("ended_at"),
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def run_from_row(row: Row, load: Load) -> WorkflowRunOutput:
    steps = load(row["step_outputs"])
    return WorkflowRunOutput(
        run_id=row["run_id"],
        workflow_id=row["workflow_id"],
        workflow_name=row["workflow_name"] or row["workflow_id"],
        session_id=row["session_id"],
        user_id=row["user_id"],
        status=RunStatus(row["status"]),
        input=load(row["input"]),
        content=load(row["content"]),
        media=_media_list(load(row["media"])),
        step_outputs=[_step_from(s) for s in steps if isinstance(s, dict)]
        if isinstance(steps, list)
        else [],
        session_state=_dict(load(row["session_state"])),
        additional_data=_dict(load(row["additional_data"])),
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        error=row["error"],
    )


def session_from_row(row: Row, load: Load, runs: list[WorkflowRunOutput]) -> WorkflowSession:
    return WorkflowSession(
        session_id=row["session_id"],
        session_type=row["session_type"],
        workflow_id=row["workflow_id"],
        agent_id=row["agent_id"],
        user_id=row["user_id"],
        session_state=_dict(load(row["session_state"])),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        runs=runs,
    )


def span_from_row(row: Row, load: Load) -> Span:
    return Span(
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        parent_span_id=row["parent_span_id"],
        name=row["name"],
        kind=row["kind"],
        start=row["started_at"],
        end=row["ended_at"],
        status=row["status"],
        attributes=_dict(load(row["attributes"])),
        error=row["error"],
    )
