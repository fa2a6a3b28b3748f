"""Running agents, teams and workflows for the run routes: every run is an asyncio task kept in
a registry until it ends, so a background run outlives its request, a cancel reaches it, and
shutdown can end what is still in flight.

Every run is a kernel `Workflow` run saved in the app's store (a run row, its session, its
trace). A workflow runs as itself (the app gives it its store when it has none). An agent or a
team runs as a one-step Workflow around it, stored under the id `agents/<id>` or `teams/<id>`:
a route path segment cannot hold "/", so a run's kind is recoverable from its row and an agent's
run id asked for under /workflows (or another agent) is not found.

This module owns the runs' lifecycle and their live events; it knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
import uuid
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from leasecron.kernel import (
    Clock,
    RunStatus,
    Span,
    Step,
    SystemClock,
    ValidationError,
    Workflow,
    WorkflowRunOutput,
)

from .run_cache import RecordingStore, SavedRuns
from .server_stamp import KEY as STAMP_KEY
from .server_stamp import this_process

log = logging.getLogger("leasecron")

KINDS = ("agents", "teams", "workflows")
SINGULAR = {"agents": "agent", "teams": "team", "workflows": "workflow"}
# Run arguments the server sets itself; a client's extra keys never override them.
RESERVED = frozenset({"input", "message", "run_id", "session_id", "user_id", "stream"})
END = object()  # the last item of a live run's event queue


class _Ids:
    """uuid4 strings from random bytes read 4 KiB at a time: os.urandom releases the GIL, and
    on a loaded loop each release can wait for the store's thread to hand it back (two ids per
    run). Read again in a forked child, so parent and child never share ids."""

    def __init__(self) -> None:
        self._pool, self._at, self._pid = b"", 0, 0

    def __call__(self) -> str:
        if self._at >= len(self._pool) or self._pid != os.getpid():
            self._pool, self._at, self._pid = os.urandom(4096), 0, os.getpid()
        chunk = self._pool[self._at : self._at + 16]
        self._at += 16
        return str(uuid.UUID(bytes=chunk, version=4))


new_id = _Ids()


def stored_id(kind: str, component_id: str) -> str:
    """The id a run of this component is stored under (its row's workflow_id)."""
    return component_id if kind == "workflows" else f"{kind}/{component_id}"


def parse_stored_id(value: str | None) -> tuple[str, str]:
    """(kind, component id) of a stored run's workflow_id."""
    value = value or ""
    kind, sep, rest = value.partition("/")
    if sep and kind in ("agents", "teams"):
        return kind, rest
    return "workflows", value


def call_target(obj: Any) -> Any:
    """What runs an agent or team: its `arun`, else its `run`, else the object if callable."""
    return (
        getattr(obj, "arun", None) or getattr(obj, "run", None) or (obj if callable(obj) else None)
    )


def check_component(kind: str, obj: Any) -> None:
    """Raise ValidationError(kind) unless `obj` can serve runs of that kind."""
    if kind == "workflows":
        if not isinstance(obj, Workflow):
            raise ValidationError(kind, f"{obj!r} is not a leasecron.kernel.Workflow")
    elif call_target(obj) is None:
        raise ValidationError(kind, f"{obj!r} has no arun or run method and is not callable")


def display_name(obj: Any, fallback: str) -> str:
    name = getattr(obj, "name", None)
    return name if isinstance(name, str) and name.strip() else fallback


# function -> (its parameter names, takes **kwargs), None if it has no signature; read once
# per agent function, not on every run.
_PARAMS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _params(fn: Any) -> tuple[frozenset[str], bool] | None:
    key = getattr(fn, "__func__", fn)  # a bound method: its function (keeps no object alive)
    cacheable = inspect.isfunction(key)
    if cacheable and key in _PARAMS:
        return _PARAMS[key]
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        found = None
    else:
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        found = (frozenset(params), var_kw)
    if cacheable:
        _PARAMS[key] = found
    return found


def _accepted(fn: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments `fn` takes (all of them if it takes **kwargs)."""
    params = _params(fn)
    if params is None or params[1]:
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params[0]}


def _named(fn: Any, name: str) -> bool:
    params = _params(fn)
    return params is not None and name in params[0]


class AgentCall:
    """One run's call of an agent or team, as a kernel agent step: `arun(message)` calls the
    agent with the run's session, user and extra arguments (those it accepts). A sync `arun` or
    `run` runs in a worker thread, so it never blocks the event loop."""

    def __init__(self, obj: Any, name: str, kwargs: dict[str, Any]):
        self.obj = obj
        self.name = name
        self.kwargs = kwargs

    async def arun(self, message: Any) -> Any:
        fn = call_target(self.obj)
        kwargs = _accepted(fn, self.kwargs)
        if _named(fn, "stream"):  # an agno agent streams when its own settings say so
            kwargs["stream"] = False
        if inspect.iscoroutinefunction(fn):
            result = await fn(message, **kwargs)
        else:
            result = await asyncio.to_thread(fn, message, **kwargs)
        if inspect.isawaitable(result):  # agno's arun is a plain def returning a coroutine
            result = await result
        return result


@dataclass(slots=True)
class Component:
    kind: str  # agents | teams | workflows
    id: str
    obj: Any

    @property
    def stored_id(self) -> str:
        return stored_id(self.kind, self.id)

    @property
    def name(self) -> str:
        return display_name(self.obj, self.id)


@dataclass(slots=True)
class RunRequest:
    """What a client asked for: the run's input and options, parsed and checked."""

    message: str
    session_id: str | None = None
    run_id: str | None = None  # the client's choice; None: a new one
    user_id: str | None = None
    stream: bool = True
    background: bool = False
    metadata: dict[str, Any] | None = None
    session_state: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class LiveRun:
    """A run in the registry, from its submission until its task ends."""

    run_id: str
    session_id: str
    component: Component
    request: RunRequest
    workflow: Workflow
    created_at: float
    task: asyncio.Task | None = None
    started: bool = False  # its task has begun (the Workflow run is registered)
    cancel_requested: bool = False  # cancelled before its task began
    output: WorkflowRunOutput | None = None
    events: asyncio.Queue | None = None  # live events for a streamed run
    # Why the store refused the run at its start (its client-chosen id is another run's):
    # nothing ran and nothing was saved under that id.
    refused: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)  # set as its task ends
    begun: asyncio.Event = field(default_factory=asyncio.Event)  # its start is saved (or done)


class RunExecutor:
    """The registry of runs in flight, and the recorder every run's spans go through (live
    step events for streamed runs)."""

    def __init__(self, store: Any, workflows: Iterable[Workflow] = (), clock: Clock | None = None):
        self.store = store
        self.clock: Clock = clock if clock is not None else SystemClock()
        # What this process's runs last saved, so their polls need no store read; the runs save
        # through `db`, the store noting each save there.
        self.saved = SavedRuns()
        self.saved.on_saved = self._start_saved
        self.db = RecordingStore(store, self.saved)
        self.runs: dict[str, LiveRun] = {}
        self.stamp = this_process()  # which process runs them (server_stamp.py)
        self._adopted: list[tuple[Workflow, bool, Any]] = []
        for wf in workflows:
            self._adopt(wf)

    # -- set-up ------------------------------------------------------------------------------

    def _adopt(self, wf: Workflow) -> None:
        """Give the workflow the app's store (unless it has a store of its own) and route its
        spans through this registry as well as to its own recorder; undone by `release`."""
        own_db = wf.db
        if own_db is None or own_db is self.store:
            wf.db = self.db
        self._adopted.append((wf, own_db, wf.recorder))
        wf.recorder = _Fanout(self, wf.recorder)

    def release(self) -> None:
        for wf, own_db, recorder in self._adopted:
            if wf.db is self.db:
                wf.db = own_db
            wf.recorder = recorder
        self._adopted.clear()

    # -- runs --------------------------------------------------------------------------------

    def submit(self, component: Component, request: RunRequest, *, stream: bool = False) -> LiveRun:
        """Start a run in a task of its own and return it at once."""
        run_id = request.run_id or new_id()
        session_id = request.session_id or new_id()
        if component.kind == "workflows":
            workflow = component.obj
        else:
            workflow = self._wrap(component, request, run_id, session_id)
        live = LiveRun(
            run_id=run_id,
            session_id=session_id,
            component=component,
            request=request,
            workflow=workflow,
            created_at=time.time(),
            events=asyncio.Queue() if stream else None,
        )
        self.runs[run_id] = live
        self.saved.submitted(run_id)
        live.task = asyncio.create_task(self._drive(live), name=f"leasecron-run-{run_id}")
        return live

    def _wrap(
        self, component: Component, request: RunRequest, run_id: str, session_id: str
    ) -> Workflow:
        """An agent or team run as a one-step Workflow saved in the store."""
        kwargs: dict[str, Any] = dict(request.extra)
        kwargs.update(session_id=session_id, user_id=request.user_id, run_id=run_id)
        if request.metadata is not None:
            kwargs["metadata"] = request.metadata
        if request.session_state is not None:
            kwargs["session_state"] = request.session_state
        call = AgentCall(component.obj, component.name, kwargs)
        return Workflow(
            id=component.stored_id,
            name=component.name,
            description=getattr(component.obj, "description", None),
            steps=[Step(component.name, agent=call)],
            db=self.db,
            recorder=_Fanout(self, None),
        )

    async def _drive(self, live: LiveRun) -> None:
        live.started = True
        request = live.request
        state = request.session_state if live.component.kind == "workflows" else None
        if state is None and request.session_id is None:
            state = {}  # a session this run has just made up: no stored state to read
        try:
            if live.cancel_requested:
                live.output = await self._save_cancelled(live)
            else:
                live.output = await live.workflow.arun(
                    request.message,
                    session_id=live.session_id,
                    run_id=live.run_id,
                    user_id=request.user_id,
                    additional_data=additional_data(request, self.stamp),
                    session_state=state,
                )
        except asyncio.CancelledError:
            # Cancelled by shutdown: the Workflow saved the run CANCELLED on its way out.
            self._finish(live, None)
            raise
        except ValidationError as exc:
            if exc.field == "run_id":
                # The id is taken (by a run of another process, in the same instant): saving
                # an ERROR under it would overwrite that run. The POST answers 409.
                live.refused = str(exc)
            else:
                live.output = await self._save_failed(live, exc)
        except Exception as exc:  # a fault outside the steps: the run still ends ERROR
            log.exception("run %s failed to start", live.run_id)
            live.output = await self._save_failed(live, exc)
        self._finish(live, live.output)

    def _finish(self, live: LiveRun, output: WorkflowRunOutput | None) -> None:
        if live.events is not None:
            live.events.put_nowait(("end", output))
            live.events.put_nowait(END)
        self.runs.pop(live.run_id, None)
        self.saved.ended(live.run_id)
        live.begun.set()
        live.done.set()

    def _record(self, span: Span) -> None:
        """A span of some run ended: a streamed run hears of its steps."""
        live = self.runs.get(span.trace_id)
        if live is not None and live.events is not None and span.kind == "step":
            live.events.put_nowait(("step", span))

    async def cancel(self, run_id: str) -> bool:
        """Cancel a run in flight (it ends CANCELLED, and is saved so); False if none."""
        live = self.runs.get(run_id)
        if live is None:
            return False
        if not live.started:
            live.cancel_requested = True
            return True
        return live.workflow.cancel(run_id)

    async def wait(self, live: LiveRun) -> WorkflowRunOutput | None:
        """The run's output once it ends. If the waiting caller is cancelled (its client went
        away), the run is cancelled too, as the reference does for a run it serves inline."""
        assert live.task is not None
        try:
            await asyncio.shield(live.task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                await self.cancel(live.run_id)
                raise
        return live.output

    async def settle(self, live: LiveRun, seconds: float) -> bool:
        """Wait up to `seconds` of the server's clock for the run to end (it runs on if not);
        True if it ended."""
        return await self.clock.wait(live.done, seconds)

    def _start_saved(self, run_id: str) -> None:
        live = self.runs.get(run_id)
        if live is not None:
            live.begun.set()

    async def shutdown(self) -> None:
        """Cancel every run still in flight and wait until each is saved CANCELLED: a run
        outliving the app would write to a closed store."""
        pending = [live for live in self.runs.values() if live.task is not None]
        for live in pending:
            if not live.started:
                live.cancel_requested = True
            elif not live.workflow.cancel(live.run_id) and not live.task.done():
                live.task.cancel()  # between its steps and its save: cancel the arun itself
        if pending:
            await asyncio.wait({live.task for live in pending if live.task is not None})

    # -- records the Workflow did not write --------------------------------------------------

    def _blank(self, live: LiveRun, status: RunStatus, error: str) -> WorkflowRunOutput:
        now = time.time()
        return WorkflowRunOutput(
            run_id=live.run_id,
            workflow_id=live.component.stored_id,
            workflow_name=live.component.name,
            session_id=live.session_id,
            status=status,
            user_id=live.request.user_id,
            input=live.request.message,
            additional_data=additional_data(live.request, self.stamp),
            started_at=live.created_at,
            ended_at=now,
            error=error,
        )

    async def _save_cancelled(self, live: LiveRun) -> WorkflowRunOutput:
        out = self._blank(live, RunStatus.CANCELLED, "cancelled")
        await self._save(out)
        return out

    async def _save_failed(self, live: LiveRun, exc: Exception) -> WorkflowRunOutput:
        out = self._blank(live, RunStatus.ERROR, f"{type(exc).__name__}: {exc}")
        await self._save(out)
        return out

    async def _save(self, out: WorkflowRunOutput) -> None:
        try:
            await self.db.save_run(out)
        except Exception as exc:
            out.persist_error = f"{type(exc).__name__}: {exc}"
            log.warning("run %s not saved: %s", out.run_id, exc)


def additional_data(request: RunRequest, stamp: dict[str, Any]) -> dict[str, Any]:
    """What a run keeps beside its input: the client's extra keys, its `metadata` (returned
    verbatim on the run), whether it ran in the background (the reference words an ERROR
    run's content after it) and the process serving it (server_stamp.py; not shown on the
    run)."""
    data = {k: v for k, v in request.extra.items() if k not in RESERVED and k != STAMP_KEY}
    data[STAMP_KEY] = stamp
    if request.metadata is not None:
        data["metadata"] = request.metadata
    data["background"] = request.background
    return data


class _Fanout:
    """A workflow's recorder: its own (if any), then the registry's live events."""

    __slots__ = ("executor", "inner")

    def __init__(self, executor: RunExecutor, inner: Any):
        self.executor = executor
        self.inner = inner

    def record(self, span: Span) -> None:
        if self.inner is not None:
            self.inner.record(span)
        self.executor._record(span)
