"""The values a workflow run passes around: what a step gets (`StepInput`), what it gives back
(`StepOutput`), the media that ride along (`Media`), and the run's result (`WorkflowRunOutput`).
Plain dataclasses and the rule that turns whatever an executor or agent returned into a
`StepOutput`; no execution here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ValidationError
from .trace import Span

MEDIA_KINDS = ("audio", "image", "video", "file")


class RunStatus(enum.StrEnum):
    """A workflow run's status, as the AgentOS run protocol spells it. PAUSED is reserved for
    runs waiting on a person; this engine never pauses on its own."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"
    PAUSED = "PAUSED"


@dataclass(frozen=True, slots=True)
class Media:
    """One piece of audio, image, video or file: inline `content` bytes or a `url`, and its MIME
    type. Build with `Media.image(url=..., mime_type="image/png")` and its siblings."""

    kind: str
    mime_type: str
    content: bytes | None = None
    url: str | None = None
    name: str | None = None

    def __post_init__(self):
        if self.kind not in MEDIA_KINDS:
            raise ValidationError("kind", f"{self.kind!r} must be one of {', '.join(MEDIA_KINDS)}")
        if (self.content is None) == (self.url is None):
            raise ValidationError("content", "give exactly one of content (bytes) or url")
        if self.content is not None and not isinstance(self.content, bytes):
            raise ValidationError("content", f"must be bytes, got {type(self.content).__name__}")
        if not isinstance(self.mime_type, str) or "/" not in self.mime_type:
            raise ValidationError("mime_type", f"{self.mime_type!r} must look like 'image/png'")

    @classmethod
    def audio(cls, mime_type: str = "audio/mpeg", **where: Any) -> Media:
        return cls("audio", mime_type, **where)

    @classmethod
    def image(cls, mime_type: str = "image/png", **where: Any) -> Media:
        return cls("image", mime_type, **where)

    @classmethod
    def video(cls, mime_type: str = "video/mp4", **where: Any) -> Media:
        return cls("video", mime_type, **where)

    @classmethod
    def file(cls, mime_type: str = "application/octet-stream", **where: Any) -> Media:
        return cls("file", mime_type, **where)


class _MediaViews:
    """`images`, `audio`, `videos`, `files`: the `media` list filtered by kind."""

    __slots__ = ()
    media: list[Media]

    @property
    def images(self) -> list[Media]:
        return [m for m in self.media if m.kind == "image"]

    @property
    def audio(self) -> list[Media]:
        return [m for m in self.media if m.kind == "audio"]

    @property
    def videos(self) -> list[Media]:
        return [m for m in self.media if m.kind == "video"]

    @property
    def files(self) -> list[Media]:
        return [m for m in self.media if m.kind == "file"]


@dataclass(slots=True, eq=False)
class StepOutput(_MediaViews):
    """What a step produced. `skipped`: the step did not contribute (a Condition with no branch to
    run, a failure under skip_on_failure), so the step after it is chained to the one before.
    `stop`: end the enclosing Loop (outside any Loop: the workflow) after this step.
    Composite steps list their children's outputs in `steps`."""

    content: Any = None
    step_name: str | None = None
    step_type: str = "step"
    success: bool = True
    error: str | None = None
    stop: bool = False
    skipped: bool = False
    media: list[Media] = field(default_factory=list)
    steps: list[StepOutput] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    ended_at: float | None = None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    @property
    def failed(self) -> bool:
        """Failed and not excused by skip_on_failure: stops the sequence it is in."""
        return not self.success and not self.skipped


@dataclass(slots=True, eq=False)
class StepInput(_MediaViews):
    """What a step gets. `input` is the workflow's input throughout; `previous_step_content` and
    `media` come from the step before (the chain); `previous_step_outputs` holds every output
    recorded so far in this run, by step name (a later one of the same name replaces it).
    `session_state` is live: changes made here are the run's (a Parallel branch has its own copy,
    merged back when the Parallel ends)."""

    input: Any = None
    previous_step_content: Any = None
    previous_step_outputs: dict[str, StepOutput] = field(default_factory=dict)
    additional_data: dict[str, Any] = field(default_factory=dict)
    session_state: dict[str, Any] = field(default_factory=dict)
    media: list[Media] = field(default_factory=list)
    workflow_id: str | None = None
    run_id: str | None = None
    session_id: str | None = None

    def get_step_output(self, name: str) -> StepOutput | None:
        return self.previous_step_outputs.get(name)

    def get_step_content(self, name: str) -> Any:
        out = self.previous_step_outputs.get(name)
        return None if out is None else out.content


@dataclass(slots=True, eq=False)
class WorkflowRunOutput:
    """The result of one `Workflow.arun`. `step_outputs`: the top-level steps' outputs in order
    (nested ones under each composite's `steps`); `spans`: the run's trace, in start order."""

    run_id: str
    workflow_id: str
    workflow_name: str
    session_id: str
    status: RunStatus = RunStatus.PENDING
    user_id: str | None = None
    input: Any = None
    content: Any = None
    media: list[Media] = field(default_factory=list)
    step_outputs: list[StepOutput] = field(default_factory=list)
    session_state: dict[str, Any] = field(default_factory=dict)
    additional_data: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    spans: list[Span] = field(default_factory=list)
    persist_error: str | None = None  # the store refused the run or its spans (the run stands)

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    def get_step_output(self, name: str) -> StepOutput | None:
        """The last output of that name anywhere in the run (nested steps included)."""
        found = None
        stack = list(reversed(self.step_outputs))
        while stack:
            out = stack.pop()
            if out.step_name == name:
                found = out
            stack.extend(reversed(out.steps))
        return found


def check_media(items: Any, where: str) -> list[Media]:
    """`items` as a list of `Media` (None: none; one Media: a list of it). Anything else is a
    ValidationError naming `media`, raised where it was produced rather than when a store
    tries to save it."""
    if items is None:
        return []
    if isinstance(items, Media):
        return [items]
    if not isinstance(items, list | tuple):
        raise ValidationError(
            "media", f"{where}: must be a list of Media, got {type(items).__name__}"
        )
    for i, item in enumerate(items):
        if not isinstance(item, Media):
            raise ValidationError(
                "media",
                f"{where}[{i}] is a {type(item).__name__}, not a Media: build it with "
                "Media(kind, mime_type, content=... or url=...) or Media.image(url=...)",
            )
    return list(items)


_MEDIA_ATTRS = {"images": "image", "audio": "audio", "videos": "video", "files": "file"}


def to_step_output(result: Any, name: str) -> StepOutput:
    """What an executor or agent returned, as a StepOutput: a StepOutput as is (a copy, named); a
    str, a dict or any plain value as the content; an agent's run result (an object with
    `.content`) as its content plus the media it carries (`images`, `audio`, `videos`, `files`),
    failed when its `status` is ERROR or CANCELLED. A StepOutput whose `media` holds anything
    but `Media` is a ValidationError naming `media` (the step fails, saying so)."""
    if isinstance(result, StepOutput):
        # A copy: an executor may hand back one object many times (a constant, a Loop), and
        # the engine stamps each output with its own name, times and attempts.
        return replace(
            result,
            step_name=name,
            media=check_media(result.media, f"step {name!r}: StepOutput.media"),
            steps=list(result.steps),
            metadata=dict(result.metadata),
        )
    if isinstance(result, str | dict | list | int | float | bool | bytes) or result is None:
        return StepOutput(content=result, step_name=name)
    if hasattr(result, "content"):
        media: list[Media] = []
        for attr in _MEDIA_ATTRS:
            items = getattr(result, attr, None)
            if isinstance(items, Media):
                items = [items]
            media.extend(m for m in items or () if isinstance(m, Media))
        out = StepOutput(content=result.content, step_name=name, media=media)
        status = getattr(result, "status", None)
        status = str(getattr(status, "value", status) or "").upper()
        if status in ("ERROR", "CANCELLED"):  # an agent run that ended badly is a failure
            out.success, out.error = False, f"agent run ended {status}: {result.content}"
        return out
    return StepOutput(content=result, step_name=name)
