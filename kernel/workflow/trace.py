"""Spans of a workflow run: one record per workflow, step, agent or executor call and decision.

A `Tracer` belongs to one run (trace id = run id). It keeps every span in memory, in start order,
so the run output carries its whole trace with no store at all, and hands each finished span to
an optional `SpanRecorder` (an exporter, a live view). Span ids count up within the trace, so the
same run gives the same ids. Nothing here does I/O or knows what a workflow is.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..clock import Clock

log = logging.getLogger("leasecron")

SPAN_STATUSES = ("running", "ok", "error", "cancelled")


@dataclass(slots=True, eq=False)
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str  # workflow | step | steps | parallel | loop | iteration | router | condition |
    # agent | executor | cel | decision
    start: float
    end: float | None = None
    status: str = "running"
    attributes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start


class SpanRecorder(Protocol):
    def record(self, span: Span) -> None:
        """Called once per span, when it ends. Must not block: it runs on the event loop."""


class Tracer:
    """Opens and closes the spans of one run. `with tracer.span(...)` closes a span as `ok`, or as
    `cancelled` / `error` when the block ends by cancellation / an exception, unless the block
    already closed it with `tracer.end`."""

    def __init__(self, trace_id: str, clock: Clock, recorder: SpanRecorder | None = None):
        self.trace_id = trace_id
        self.clock = clock
        self.recorder = recorder
        self.spans: list[Span] = []

    def start(self, name: str, kind: str, parent: Span | None, **attributes: Any) -> Span:
        span = Span(
            trace_id=self.trace_id,
            span_id=f"{len(self.spans) + 1:016x}",
            parent_span_id=parent.span_id if parent is not None else None,
            name=name,
            kind=kind,
            start=self.clock.now(),
            attributes=attributes,
        )
        self.spans.append(span)
        return span

    def end(self, span: Span, status: str = "ok", error: str | None = None, **attributes: Any):
        if span.end is not None:
            return
        span.end = self.clock.now()
        span.status = status
        span.error = error
        span.attributes.update(attributes)
        if self.recorder is not None:
            try:
                self.recorder.record(span)
            except Exception:  # a broken exporter must not break the run it observes
                log.exception("span recorder failed on span %s", span.name)

    def span(self, name: str, kind: str, parent: Span | None, **attributes: Any) -> _Scope:
        return _Scope(self, self.start(name, kind, parent, **attributes))


class _Scope:
    __slots__ = ("span", "tracer")

    def __init__(self, tracer: Tracer, span: Span):
        self.tracer = tracer
        self.span = span

    def __enter__(self) -> Span:
        return self.span

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.tracer.end(self.span)
        elif issubclass(kind, asyncio.CancelledError):
            self.tracer.end(self.span, "cancelled", "cancelled")
        else:
            self.tracer.end(self.span, "error", f"{kind.__name__}: {exc}")
