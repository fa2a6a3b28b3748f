"""Workflow persistence, run against every store as the store contract is: `Workflow(db=store)`
keeps each run, its session and its spans in the store that holds the schedules, and the store
reads them back (a run by id, a session with its runs, a run's spans as a tree). Also: a database
of schema version 1 migrates to 2 with its schedule data intact, and a scheduled fire's `run_id`
leads to the workflow run it started, its session and its trace.

`open_store` is the contract suite's fixture (store_builders.stores_for): SQLite always, Postgres
when a server is there (tests/pgserver.py; skipped without one, failed in CI).
"""

from __future__ import annotations

import asyncio
import itertools
import re

import httpx
import pytest

from leasecron.kernel import (
    Condition,
    HttpDispatcher,
    Loop,
    Media,
    Parallel,
    Router,
    RunStatus,
    ScheduleManager,
    Scheduler,
    SimClock,
    Span,
    Step,
    StepOutput,
    StoreError,
    ValidationError,
    Workflow,
    WorkflowRunOutput,
)
from leasecron.kernel.sqlite import store as sqlite_mod
from leasecron.kernel.workflow.sessions import span_tree
from store_builders import (
    LEASE,
    claim_one,
    closes_stores,
    finish_plan,
    pending,
    running,
    sched,
    start_plan,
)
from support import T0, form

store_test = closes_stores


def counter(prefix: str):
    numbers = itertools.count(1)
    return lambda: f"{prefix}{next(numbers):03d}"


async def run_on(clock: SimClock, run, seconds: float = 60.0) -> WorkflowRunOutput:
    """Await `run` (an arun coroutine) while virtual time moves `seconds` on."""
    task = asyncio.create_task(run)
    await clock.advance(seconds)
    return await task


def shape(outputs: list[StepOutput]) -> list[tuple]:
    return [
        (
            o.step_name,
            o.step_type,
            o.content,
            o.success,
            o.error,
            o.skipped,
            o.media,
            o.metadata,
            o.started_at,
            o.ended_at,
            shape(o.steps),
        )
        for o in outputs
    ]


RUN_FIELDS = (
    "run_id",
    "session_id",
    "workflow_id",
    "workflow_name",
    "user_id",
    "status",
    "input",
    "content",
    "media",
    "session_state",
    "additional_data",
    "started_at",
    "ended_at",
    "error",
)


def assert_same_run(got: WorkflowRunOutput | None, out: WorkflowRunOutput) -> None:
    assert got is not None
    for name in RUN_FIELDS:
        assert getattr(got, name) == getattr(out, name), name
    assert shape(got.step_outputs) == shape(out.step_outputs)
    assert got.spans == []  # a run is read without its spans: get_trace has them


def tree_of(roots) -> list[tuple]:
    return [
        (depth, n.span.kind, n.span.name, n.span.status)
        for root in roots
        for depth, n in root.walk()
    ]


def span_fields(span: Span) -> tuple:
    return (
        span.trace_id,
        span.span_id,
        span.parent_span_id,
        span.name,
        span.kind,
        span.status,
        span.start,
        span.end,
        span.attributes,
        span.error,
    )


# -- a run, its status, its session ------------------------------------------------------------


@store_test
async def test_a_run_round_trips_with_its_outputs_media_and_state(open_store):
    store = open_store()
    clock = SimClock(start=T0)

    async def research(si):
        await clock.sleep(2)
        return StepOutput(
            content={"notes": ["leases", "fencing"], "score": 0.5},
            metadata={"source": "library"},
            media=[Media.image(content=b"\x89PNG\x00\xff", name="fig.png")],
        )

    def remember(si):
        si.session_state.setdefault("topics", []).append(si.input["topic"])
        return f"{len(si.images)} image, {si.previous_step_content['notes'][0]}"

    def speak(si):
        return StepOutput(
            content="draft",
            media=[Media.audio(url="https://example.org/a.mp3"), Media.file(content=b"%PDF")],
        )

    wf = Workflow(
        id="blog",
        name="Blog post",
        steps=[
            Step("research", executor=research),
            Parallel(Step("remember", executor=remember), Step("speak", executor=speak)),
            speak,
        ],
        db=store,
        clock=clock,
        new_id=counter("id"),
    )
    out = await run_on(
        clock,
        wf.arun(
            {"topic": "leases", "words": 800},
            user_id="ann",
            additional_data={"channel": "web", "tags": ["a", "b"]},
            session_state={"topics": ["clocks"]},
        ),
    )
    assert out.status is RunStatus.COMPLETED and out.persist_error is None
    assert (out.started_at, out.ended_at) == (T0, T0 + 2)
    assert out.session_state == {"topics": ["clocks", "leases"]}
    assert len(out.media) == 2 and out.media[1].content == b"%PDF"

    got = await store.get_workflow_run(out.run_id)
    assert_same_run(got, out)
    assert got.status is RunStatus.COMPLETED and got.duration == 2.0
    assert got.get_step_output("research").media[0].content == b"\x89PNG\x00\xff"
    assert got.get_step_output("remember").content == "1 image, leases"
    assert [o.step_name for o in got.step_outputs[1].steps] == ["remember", "speak"]
    # another object each time: what is read back is a copy, not the engine's
    assert got is not out and (await store.get_workflow_run(out.run_id)) is not got

    assert await store.get_workflow_run("no-such-run") is None
    assert await store.get_session("no-such-session") is None
    assert await store.get_trace("no-such-run") == []


@store_test
async def test_saves_replace_the_run_row_as_its_status_moves_on(open_store):
    store = open_store()
    run = WorkflowRunOutput(
        run_id="r1", workflow_id="w", workflow_name="W", session_id="s1", input="go"
    )
    await store.save_run(run)  # PENDING: nothing has started yet
    got = await store.get_workflow_run("r1")
    assert (got.status, got.started_at, got.ended_at, got.content) == (
        RunStatus.PENDING,
        None,
        None,
        None,
    )
    for status, started, ended, content, error in [
        (RunStatus.RUNNING, T0, None, None, None),
        (RunStatus.PAUSED, T0, None, "waiting for approval", None),
        (RunStatus.RUNNING, T0, None, None, None),
        (RunStatus.ERROR, T0, T0 + 5, None, "write: ValueError: no"),
    ]:
        run.status, run.started_at, run.ended_at = status, started, ended
        run.content, run.error = content, error
        await store.save_run(run)
        got = await store.get_workflow_run("r1")
        assert (got.status, got.started_at, got.ended_at, got.content, got.error) == (
            status,
            started,
            ended,
            content,
            error,
        )
    session = await store.get_session("s1")
    assert [r.run_id for r in session.runs] == ["r1"]  # one row, saved five times


@store_test
async def test_a_run_is_running_in_the_store_while_it_runs_then_completed_error_or_cancelled(
    open_store,
):
    store = open_store()
    clock = SimClock(start=T0)
    started, release = asyncio.Event(), asyncio.Event()

    async def wait(si):
        si.session_state["touched"] = True
        started.set()
        await release.wait()
        return "done"

    def fail(si):
        raise ValueError("no")

    wf = Workflow(id="w", steps=[Step("wait", executor=wait)], db=store, clock=clock)
    task = asyncio.create_task(wf.arun("x", session_id="s", session_state={"n": 1}))
    await started.wait()
    run_id = wf.running[0]
    mid = await store.get_workflow_run(run_id)
    assert (mid.status, mid.ended_at, mid.content, mid.error) == (
        RunStatus.RUNNING,
        None,
        None,
        None,
    )
    assert mid.started_at == T0 and mid.session_id == "s"
    # The session exists from the run's start, with the state the run started from.
    assert (await store.get_session("s")).session_state == {"n": 1}
    await clock.advance(3)
    release.set()
    out = await task
    got = await store.get_workflow_run(run_id)
    assert (got.status, got.content, got.ended_at) == (RunStatus.COMPLETED, "done", T0 + 3)
    assert (await store.get_session("s")).session_state == {"n": 1, "touched": True}

    failing = Workflow(id="w", steps=[Step("write", executor=fail)], db=store, clock=clock)
    bad = await failing.arun("y")
    got = await store.get_workflow_run(bad.run_id)
    assert (got.status, got.error) == (RunStatus.ERROR, "write: ValueError: no")
    assert got.step_outputs[0].success is False
    trace = await store.get_trace(bad.run_id)
    assert [(n.span.kind, n.span.status) for _, n in trace[0].walk()] == [
        ("workflow", "error"),
        ("step", "error"),
        ("executor", "error"),
    ]

    started.clear()
    release.clear()
    task = asyncio.create_task(wf.arun("z"))
    await started.wait()
    cancelled_id = wf.running[0]
    assert (await store.get_workflow_run(cancelled_id)).status is RunStatus.RUNNING
    assert wf.cancel(cancelled_id)
    out = await task
    assert out.status is RunStatus.CANCELLED
    got = await store.get_workflow_run(cancelled_id)
    assert (got.status, got.error, got.ended_at) == (RunStatus.CANCELLED, "cancelled", T0 + 3)
    trace = await store.get_trace(cancelled_id)
    assert {n.span.status for _, n in trace[0].walk()} == {"cancelled"}


@store_test
async def test_a_session_keeps_its_runs_in_order_and_the_state_they_leave(open_store):
    store = open_store()
    clock = SimClock(start=T0)

    def count(si):
        state = si.session_state
        state["count"] = state.get("count", 0) + 1
        state.setdefault("inputs", []).append(si.input)
        return f"run {state['count']}"

    wf = Workflow(id="counter", steps=[count], db=store, clock=clock, new_id=counter("c"))
    first = await wf.arun("a", session_id="sess", user_id="ann")
    await clock.advance(60)
    # No session_state given: each run continues from the state the session keeps.
    second = await wf.arun("b", session_id="sess")
    third = await wf.arun("c", session_id="sess")  # the same instant: saved order decides
    elsewhere = await wf.arun("x")
    assert [o.content for o in (first, second, third, elsewhere)] == [
        "run 1",
        "run 2",
        "run 3",
        "run 1",
    ]

    session = await store.get_session("sess")
    assert (session.session_type, session.workflow_id, session.agent_id) == (
        "workflow",
        "counter",
        None,
    )
    assert session.user_id == "ann"  # later runs that name no user keep it
    assert session.session_state == {"count": 3, "inputs": ["a", "b", "c"]}
    assert (session.created_at, session.updated_at) == (T0, T0 + 60)
    assert [r.run_id for r in session.runs] == [first.run_id, second.run_id, third.run_id]
    for got, out in zip(session.runs, (first, second, third), strict=True):
        assert_same_run(got, out)
    # each run keeps the state as it left it
    assert [r.session_state["count"] for r in session.runs] == [1, 2, 3]
    assert [r.user_id for r in session.runs] == ["ann", None, None]

    bare = await store.get_session("sess", with_runs=False)
    assert bare.runs == [] and bare.session_state == session.session_state
    other = await store.get_session(elsewhere.session_id)
    assert other.session_id == elsewhere.session_id != "sess"
    assert [r.run_id for r in other.runs] == [elsewhere.run_id]
    assert other.session_state == {"count": 1, "inputs": ["x"]}


@store_test
async def test_a_run_in_flight_takes_the_session_state_only_when_it_ends(open_store):
    store = open_store()
    clock = SimClock(start=T0)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(si):
        started.set()
        await release.wait()
        si.session_state["slow"] = "done"
        return "slow"

    def fast(si):
        si.session_state["fast"] = "done"
        return "fast"

    slow_wf = Workflow(id="slow", steps=[Step("slow", executor=slow)], db=store, clock=clock)
    fast_wf = Workflow(id="fast", steps=[fast], db=store, clock=clock)
    await fast_wf.arun("first", session_id="s")
    # Started with a state of its own: its start does not replace what the session keeps.
    task = asyncio.create_task(slow_wf.arun("x", session_id="s", session_state={"mine": 1}))
    await started.wait()
    assert (await store.get_session("s")).session_state == {"fast": "done"}
    release.set()
    await task
    session = await store.get_session("s")
    assert session.session_state == {"mine": 1, "slow": "done"}  # the last run to end wins
    assert session.workflow_id == "fast"  # the workflow that opened the session keeps it
    assert [r.workflow_id for r in session.runs] == ["fast", "slow"]


@store_test
async def test_a_session_state_that_cannot_be_read_leaves_the_run_unsaved(open_store):
    store = open_store()

    class Unreadable:
        """The store, with session reads failing (a server gone, say)."""

        async def get_session(self, session_id, *, with_runs=True):
            raise StoreError("get_session", OSError("connection reset"))

        def __getattr__(self, name):
            return getattr(store, name)

    def step(si):
        si.session_state["seen"] = True
        return "ok"

    await Workflow(id="w", steps=[step], db=store).arun("a", session_id="s")
    out = await Workflow(id="w", steps=[step], db=Unreadable()).arun("b", session_id="s")
    assert out.status is RunStatus.COMPLETED and out.session_state == {"seen": True}
    assert out.persist_error.startswith("session state not read, run not saved: StoreError")
    assert await store.get_workflow_run(out.run_id) is None
    assert len((await store.get_session("s")).runs) == 1


@store_test
async def test_a_run_whose_full_save_fails_is_kept_as_a_summary_with_its_trace(open_store):
    store = open_store()
    wf = Workflow(id="w", steps=[Step("ok", executor=lambda si: "ok")], db=store)
    first = await wf.arun("first", session_id="s", session_state={"keep": 1})
    # A state JSON cannot hold (a tuple key) fails the start save and the full end save...
    out = await wf.arun("second", session_id="s", session_state={("a", 1): "tuple key"})
    assert out.status is RunStatus.COMPLETED and out.content == "ok"
    failed = "ValueError: session_state cannot be stored as JSON: keys must be str"
    assert out.persist_error.startswith(failed)
    assert out.persist_error.endswith("(a summary row was saved instead)")
    # ...so the run is kept as a summary: finished, not RUNNING, saying why it is one
    got = await store.get_workflow_run(out.run_id)
    assert (got.status, got.input, got.content) == (RunStatus.COMPLETED, "second", "ok")
    assert (got.started_at, got.ended_at) == (out.started_at, out.ended_at)
    assert got.error.startswith(
        "run saved without its step outputs and media: the full save failed: " + failed
    )
    assert got.step_outputs == [] and got.media == []
    # the session keeps the state it had rather than a copy that is not the run's state
    session = await store.get_session("s")
    assert session.session_state == {"keep": 1}
    assert [r.run_id for r in session.runs] == [first.run_id, out.run_id]
    assert tree_of(await store.get_trace(out.run_id)) == [
        (0, "workflow", "w", "ok"),
        (1, "step", "ok", "ok"),
        (2, "executor", "<lambda>", "ok"),
    ]

    # Non-finite floats do not fail a save: they are kept as strings, on every store.
    state = {"nan": float("nan"), "top": float("inf"), "low": float("-inf"), "x": 0.5}
    out = await wf.arun("third", session_id="s", session_state=state)
    assert out.persist_error is None
    stored = {"nan": "NaN", "top": "Infinity", "low": "-Infinity", "x": 0.5}
    assert (await store.get_session("s")).session_state == stored
    assert (await store.get_workflow_run(out.run_id)).session_state == stored

    # Values JSON does not know are kept as text, so the run itself is still recorded.
    marker = object()
    out = await Workflow(id="w", steps=[lambda si: marker], db=store).arun(input={1, 2})
    assert out.persist_error is None
    got = await store.get_workflow_run(out.run_id)
    assert (got.content, got.input) == (str(marker), str({1, 2}))

    # A media item that is not a Media is refused by name, not an AttributeError deep down.
    bad = WorkflowRunOutput(run_id="bad", workflow_id="w", workflow_name="w", session_id="s")
    bad.media = [{"kind": "image", "url": "https://example.org"}]
    with pytest.raises(ValidationError) as err:
        await store.save_run(bad)
    assert err.value.field == "media" and "a dict ({'kind': 'image'" in str(err.value)
    assert "is not a Media" in str(err.value)
    assert await store.get_workflow_run("bad") is None


@store_test
async def test_nul_and_lone_surrogates_are_stored_alike_on_every_store(open_store):
    """Postgres refuses NUL in text and JSONB and lone surrogates in JSONB, which SQLite keeps:
    both stores write the same cleaned values (U+FFFD in their place), and find a run by the
    id it was given."""
    store = open_store()
    odd, clean = "a\x00b\ud800c\udfff", "a\ufffdb\ufffdc\ufffd"
    pair = "\ud83d\ude00"  # two code points that make one character: kept, as that character

    def write(si):
        si.session_state[odd] = [odd, pair, {odd: 1}]
        return StepOutput(content={odd: odd}, metadata={"note": odd})

    def fail(si):
        raise ValueError(odd)

    wf = Workflow(
        id=f"w{odd}",
        steps=[
            Step(f"write{odd}", executor=write),
            Step("fail", executor=fail, skip_on_failure=True),
        ],
        db=store,
    )
    out = await wf.arun(
        odd,
        run_id=f"r{odd}",
        session_id=f"s{odd}",
        user_id=odd,
        additional_data={odd: odd},
    )
    assert out.status is RunStatus.COMPLETED and out.persist_error is None

    got = await store.get_workflow_run(f"r{odd}")  # found by the id the run was given
    state = {clean: [clean, "\U0001f600", {clean: 1}]}
    assert (got.run_id, got.session_id, got.workflow_id, got.user_id) == (
        f"r{clean}",
        f"s{clean}",
        f"w{clean}",
        clean,
    )
    assert (got.input, got.content, got.session_state) == (clean, {clean: clean}, state)
    assert got.additional_data == {clean: clean}
    written, failed = got.step_outputs
    assert (written.step_name, written.metadata["note"]) == (f"write{clean}", clean)
    assert failed.error == f"ValueError: {clean}"
    session = await store.get_session(f"s{odd}")
    assert (session.session_id, session.session_state) == (f"s{clean}", state)
    assert [r.run_id for r in session.runs] == [f"r{clean}"]
    spans = [n.span for root in await store.get_trace(f"r{odd}") for _, n in root.walk()]
    assert [(s.trace_id, s.name) for s in spans] == [
        (f"r{clean}", f"w{clean}"),
        (f"r{clean}", f"write{clean}"),
        (f"r{clean}", "write"),
        (f"r{clean}", "fail"),
        (f"r{clean}", "fail"),
    ]
    assert spans[-1].error == f"ValueError: {clean}"
    assert spans[0].attributes["session_id"] == f"s{clean}"


@store_test
async def test_a_run_id_already_stored_is_refused_and_the_stored_run_kept(open_store):
    store = open_store()
    ran = []
    first = Workflow(id="a", steps=[lambda si: 1, lambda si: 2], db=store)
    out = await first.arun("x", run_id="same", session_id="s1")
    trace = tree_of(await store.get_trace("same"))
    second = Workflow(id="b", steps=[lambda si: ran.append(1)], db=store)
    with pytest.raises(ValidationError) as err:
        await second.arun("y", run_id="same", session_id="s2")
    assert err.value.field == "run_id" and "'same' is already stored" in str(err.value)
    with pytest.raises(ValidationError):  # the same workflow too, once the run is over
        await first.arun("z", run_id="same", session_id="s1")
    assert ran == [] and second.running == [] and first.running == []
    assert_same_run(await store.get_workflow_run("same"), out)
    assert tree_of(await store.get_trace("same")) == trace
    assert await store.get_session("s2") is None
    assert [r.run_id for r in (await store.get_session("s1")).runs] == ["same"]
    # the store's side: a save that creates a run refuses a taken id and writes nothing
    other = WorkflowRunOutput(run_id="same", workflow_id="c", workflow_name="c", session_id="s3")
    with pytest.raises(ValidationError):
        await store.save_run(other, create=True)
    assert await store.get_session("s3") is None
    await store.save_run(other)  # the upsert still replaces (a run saved again as it moves on)
    assert (await store.get_workflow_run("same")).workflow_id == "c"


@store_test
async def test_a_caller_cancelled_while_the_start_save_is_in_flight_leaves_a_cancelled_run(
    open_store,
):
    store = open_store()

    class Gated:
        """The store, with the start save held until the test lets it go on."""

        def __init__(self):
            self.entered, self.gate = asyncio.Event(), asyncio.Event()

        async def save_run(self, run, **options):
            if run.status is RunStatus.RUNNING:
                self.entered.set()
                await self.gate.wait()
            await store.save_run(run, **options)

        def __getattr__(self, name):
            return getattr(store, name)

    ran = []
    db = Gated()
    wf = Workflow(id="w", steps=[lambda si: ran.append(1)], db=db)
    task = asyncio.create_task(wf.arun("x", run_id="r1", session_id="s"))
    await db.entered.wait()
    task.cancel()
    await asyncio.sleep(0)
    db.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    got = await store.get_workflow_run("r1")
    assert (got.status, got.error, ran) == (RunStatus.CANCELLED, "cancelled", [])
    assert tree_of(await store.get_trace("r1")) == [(0, "workflow", "w", "cancelled")]

    db.entered.clear()
    db.gate.clear()
    task = asyncio.create_task(wf.arun("y", run_id="r2", session_id="s"))
    await db.entered.wait()
    assert wf.cancel("r2")  # a run still saving its start: cancelled before its first step
    db.gate.set()
    assert (await task).status is RunStatus.CANCELLED
    assert (await store.get_workflow_run("r2")).status is RunStatus.CANCELLED and ran == []


@store_test
async def test_get_session_limit_gives_the_newest_runs_in_the_order_they_started(open_store):
    store = open_store()
    clock = SimClock(start=T0)
    wf = Workflow(id="w", steps=[lambda si: si.input], db=store, clock=clock, new_id=counter("r"))
    ids = []
    for i in range(5):
        ids.append((await wf.arun(f"run {i}", session_id="s")).run_id)
        if i != 2:  # runs 2 and 3 start in the same instant: saved order breaks the tie
            await clock.advance(10)
    for limit, want in [(None, ids), (2, ids[3:]), (3, ids[2:]), (1, ids[4:]), (9, ids), (0, [])]:
        session = await store.get_session("s", limit=limit)
        assert [r.run_id for r in session.runs] == want, limit
    assert [r.content for r in (await store.get_session("s", limit=2)).runs] == ["run 3", "run 4"]
    assert (await store.get_session("s", with_runs=False, limit=2)).runs == []
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValidationError) as err:
            await store.get_session("s", limit=bad)
        assert err.value.field == "limit"


# -- traces ----------------------------------------------------------------------------------------


@store_test
async def test_the_trace_of_parallel_loop_router_and_condition_comes_back_as_a_tree(open_store):
    store = open_store()
    clock = SimClock(start=T0)

    async def research(si):
        await clock.sleep(1)
        return f"notes on {si.input}"

    async def branch(si):
        await clock.sleep(2 if si.previous_step_content else 1)
        return "branch"

    wf = Workflow(
        id="tree",
        steps=[
            Step("research", executor=research),
            Parallel(
                Step("facts", executor=branch), Step("quotes", executor=branch), name="gather"
            ),
            Loop(
                steps=[Step("draft", executor=lambda si: "draft")],
                max_iterations=3,
                end_condition="current_iteration >= 2",
                name="revise",
            ),
            Router(
                selector='input.contains("short") ? "thread" : "article"',
                choices=[
                    Step("thread", executor=lambda si: "thread"),
                    Step("article", executor=lambda si: "article"),
                ],
                name="route",
            ),
            Condition(
                "previous_step_content.size() > 0",
                steps=[Step("trim", executor=lambda si: si.previous_step_content[:3])],
                name="check",
            ),
        ],
        db=store,
        clock=clock,
    )
    out = await run_on(clock, wf.arun("a short post"))
    assert out.status is RunStatus.COMPLETED and out.content == "thr"

    roots = await store.get_trace(out.run_id)
    assert tree_of(roots) == [
        (0, "workflow", "tree", "ok"),
        (1, "step", "research", "ok"),
        (2, "executor", "research", "ok"),
        (1, "parallel", "gather", "ok"),
        (2, "step", "facts", "ok"),
        (3, "executor", "branch", "ok"),
        (2, "step", "quotes", "ok"),
        (3, "executor", "branch", "ok"),
        (1, "loop", "revise", "ok"),
        (2, "iteration", "revise[1]", "ok"),
        (3, "step", "draft", "ok"),
        (4, "executor", "<lambda>", "ok"),
        (3, "cel", "revise.end_condition", "ok"),
        (2, "iteration", "revise[2]", "ok"),
        (3, "step", "draft", "ok"),
        (4, "executor", "<lambda>", "ok"),
        (3, "cel", "revise.end_condition", "ok"),
        (1, "router", "route", "ok"),
        (2, "cel", "route.selector", "ok"),
        (2, "step", "thread", "ok"),
        (3, "executor", "<lambda>", "ok"),
        (1, "condition", "check", "ok"),
        (2, "cel", "check.evaluator", "ok"),
        (2, "step", "trim", "ok"),
        (3, "executor", "<lambda>", "ok"),
    ]
    # Every span is stored whole, and the tree is the one the run's own spans make.
    stored = [n.span for root in roots for _, n in root.walk()]
    assert sorted(map(span_fields, stored)) == sorted(map(span_fields, out.spans))
    assert tree_of(roots) == tree_of(span_tree(out.spans))
    assert {s.trace_id for s in stored} == {out.run_id}
    # Children in start order: the Parallel's branches started together (span id decides),
    # then the workflow's steps one after the other.
    workflow = roots[0]
    assert [c.span.start for c in workflow.children] == [T0, T0 + 1, T0 + 3, T0 + 3, T0 + 3]
    assert (workflow.span.start, workflow.span.end) == (T0, T0 + 3)
    gather = workflow.children[1]
    assert [(c.span.name, c.span.start, c.span.end) for c in gather.children] == [
        ("facts", T0 + 1, T0 + 3),
        ("quotes", T0 + 1, T0 + 3),
    ]
    # The CEL decisions keep their expression and result.
    decisions = [n.span for _, n in workflow.walk() if n.span.kind == "cel"]
    assert [(s.name, s.attributes["expression"], s.attributes["result"]) for s in decisions] == [
        ("revise.end_condition", "current_iteration >= 2", False),
        ("revise.end_condition", "current_iteration >= 2", True),
        ("route.selector", 'input.contains("short") ? "thread" : "article"', "thread"),
        ("check.evaluator", "previous_step_content.size() > 0", True),
    ]
    assert workflow.span.attributes == {"workflow_id": "tree", "session_id": out.session_id}


@store_test
async def test_spans_saved_again_replace_their_copies_and_orphans_are_roots(open_store):
    store = open_store()

    def span(sid: str, parent: str | None, start: float, **kw) -> Span:
        return Span("t1", sid, parent, f"s{sid}", "step", start, start + 1, "ok", **kw)

    await store.save_spans([span("02", "01", T0 + 1), span("03", "01", T0 + 1)])
    # Without their parent, both are roots, in start order, span id breaking the tie.
    assert [n.span.span_id for n in await store.get_trace("t1")] == ["02", "03"]
    await store.save_spans(
        [span("01", None, T0), span("03", "01", T0 + 1, attributes={"attempt": 2}, error="x")]
    )
    roots = await store.get_trace("t1")
    assert [(d, n.span.span_id) for d, n in roots[0].walk()] == [(0, "01"), (1, "02"), (1, "03")]
    assert len(roots) == 1
    late = roots[0].children[1].span
    assert (late.attributes, late.error) == ({"attempt": 2}, "x")
    await store.save_spans([])  # nothing to save is not an error
    assert await store.get_trace("t2") == []


@store_test
async def test_save_end_keeps_the_run_its_session_and_its_spans_all_or_nothing(open_store):
    store = open_store()
    out = await Workflow(id="w", steps=[Step("ok", executor=lambda si: "ok")]).arun(
        "go", session_id="s", session_state={"n": 1}
    )
    assert out.persist_error is None and len(out.spans) == 3
    await store.save_end(out, list(out.spans))
    assert_same_run(await store.get_workflow_run(out.run_id), out)
    session = await store.get_session("s")
    assert session.session_state == {"n": 1} and [r.run_id for r in session.runs] == [out.run_id]
    assert [n.span.name for _, n in (await store.get_trace(out.run_id))[0].walk()] == [
        "w",
        "ok",
        "<lambda>",
    ]

    # A span the database refuses (no span id: NOT NULL), written after the run row in the same
    # transaction, fails the whole save: neither the row nor any span is kept.
    bad = await Workflow(id="w", steps=[Step("ok", executor=lambda si: "ok")]).arun("again")
    broken = Span(bad.run_id, None, None, "x", "step", T0, T0 + 1, "ok")
    with pytest.raises(StoreError):
        await store.save_end(bad, [*bad.spans, broken])
    assert await store.get_workflow_run(bad.run_id) is None
    assert await store.get_trace(bad.run_id) == []


@store_test
async def test_a_store_save_end_that_fails_falls_back_to_the_two_saves(open_store):
    store = open_store()

    class NoSaveEnd:
        async def save_end(self, run, spans):
            raise StoreError("save_end", RuntimeError("refused"))

        def __getattr__(self, name):
            return getattr(store, name)

    out = await Workflow(id="w", steps=[Step("ok", executor=lambda si: "ok")], db=NoSaveEnd()).arun(
        "go"
    )
    assert out.persist_error is None
    assert (await store.get_workflow_run(out.run_id)).status is RunStatus.COMPLETED
    assert tree_of(await store.get_trace(out.run_id)) == [
        (0, "workflow", "w", "ok"),
        (1, "step", "ok", "ok"),
        (2, "executor", "<lambda>", "ok"),
    ]


# -- migrations ------------------------------------------------------------------------------------


def migrations_module(kind: str):
    if kind == "sqlite":
        return sqlite_mod
    from leasecron.adapters.postgres import sql as postgres_sql

    return postgres_sql


async def version(store) -> int:
    return await store.schema_version()


@store_test
async def test_a_version_1_database_moves_to_the_latest_keeping_every_schedule_and_run(
    open_store, monkeypatch
):
    module = migrations_module(open_store.kind)
    monkeypatch.setattr(module, "MIGRATIONS", module.MIGRATIONS[:1])
    old = open_store()
    assert await version(old) == 1
    await old.create_schedule(sched("a", T0))
    await old.create_schedule(sched("b", T0 + 600, enabled=False))
    await old.add_pending_run(pending("p", "a", T0 + 30), T0)
    claim = await claim_one(old, "r1", T0)
    await old.start(
        "r1", T0, LEASE, [start_plan(claim, T0 + 60, insert_runs=[running("x", claim, "r1", T0)])]
    )
    await old.finish(
        "r1", T0 + 1, [finish_plan(claim, "x", T0 + 1, run_id="wf-run", session_id="wf-s")]
    )
    schedules = await old.list_schedules()
    runs = await old.list_runs(None, 100)
    assert {r.id for r in runs} == {"p", "x"}
    with pytest.raises(StoreError, match="workflow_runs"):  # no such table yet
        await old.get_workflow_run("wf-run")
    await old.close()

    monkeypatch.undo()
    new = open_store()
    assert await version(new) == len(module.MIGRATIONS)
    assert await new.list_schedules() == schedules
    assert await new.list_runs(None, 100) == runs
    assert await new.next_due() == T0 + 30  # the pending trigger, as before
    # The new tables work, and a schedule run's run id finds its workflow run.
    await Workflow(id="w", steps=[lambda si: "ok"], db=new).arun(run_id="wf-run", session_id="wf-s")
    ran = await new.get_run("x")
    assert (await new.get_workflow_run(ran.run_id)).session_id == ran.session_id == "wf-s"
    await new.close()
    again = open_store()  # a second open finds the latest version and leaves it so
    assert await version(again) == len(module.MIGRATIONS)
    assert await again.list_schedules() == schedules


# -- a scheduled fire, end to end ----------------------------------------------------------------


class WorkflowService:
    """An agent service's workflow run endpoints, in process (the AgentOS run protocol): a POST
    starts a background run of the workflow and answers its run and session ids at once; a GET
    of the run answers it as the store has it (404 until its first save)."""

    def __init__(self, wf: Workflow, store, new_id):
        self.wf = wf
        self.store = store
        self.new_id = new_id
        self.tasks: list[asyncio.Task] = []

    async def handler(self, request: httpx.Request) -> httpx.Response:
        m = re.fullmatch(r"/workflows/([^/]+)/runs(?:/([^/]+))?", request.url.path)
        if m is None or m.group(1) != self.wf.id:
            return httpx.Response(404, json={"detail": "no such workflow"})
        if request.method == "POST":
            fields = form(request.content)
            run_id = self.new_id()
            session_id = fields.get("session_id") or self.new_id()
            run = self.wf.arun(
                fields.get("message"),
                run_id=run_id,
                session_id=session_id,
                user_id=fields.get("user_id"),
            )
            self.tasks.append(asyncio.create_task(run))
            return httpx.Response(
                200, json={"run_id": run_id, "session_id": session_id, "status": "RUNNING"}
            )
        run = await self.store.get_workflow_run(m.group(2))
        if run is None:
            return httpx.Response(404, json={"detail": "no such run"})
        return httpx.Response(
            200, json={"run_id": run.run_id, "status": run.status.value, "content": run.content}
        )


@store_test
async def test_a_scheduled_fire_leads_by_run_id_to_its_workflow_run_session_and_trace(open_store):
    store = open_store()
    clock = SimClock(start=T0)

    async def gather(si):
        await clock.sleep(3)
        return f"news for {si.input}"

    def tally(si):
        si.session_state["digests"] = si.session_state.get("digests", 0) + 1
        return f"digest {si.session_state['digests']}: {si.previous_step_content}"

    wf = Workflow(
        id="digest",
        steps=[
            Step("gather", executor=gather),
            Condition('input.contains("digest")', steps=[Step("tally", executor=tally)]),
        ],
        db=store,
        clock=clock,
        new_id=counter("wf"),
    )
    service = WorkflowService(wf, store, counter("run"))
    dispatcher = HttpDispatcher(
        "http://service",
        transport=httpx.MockTransport(service.handler),
        clock=clock,
        poll_initial=1.0,
        poll_max=1.0,
    )
    manager = ScheduleManager(store, clock=clock, new_id=counter("sched"))
    schedule = await manager.create(
        "digest",
        interval_seconds=60,
        endpoint="/workflows/digest/runs",
        payload={"message": "daily digest", "session_id": "digest-feed", "user_id": "ops"},
    )
    replica = Scheduler(
        store, dispatcher, clock=clock, replica_id="r1", poll_interval=1.0, new_id=counter("id")
    )
    try:
        await replica.start()
        await clock.advance(150)  # slots at T0+60 and T0+120, each run 3 s
    finally:
        await replica.stop(timeout=0)
        await dispatcher.aclose()
    await asyncio.gather(*service.tasks)

    fired = list(reversed(await manager.runs(schedule.id)))
    assert [(r.status, r.scheduled_for) for r in fired] == [
        ("success", T0 + 60),
        ("success", T0 + 120),
    ]
    for n, row in enumerate(fired, start=1):
        assert row.session_id == "digest-feed"
        run = await store.get_workflow_run(row.run_id)
        assert (run.status, run.session_id, run.user_id) == (
            RunStatus.COMPLETED,
            "digest-feed",
            "ops",
        )
        assert (run.input, run.content) == ("daily digest", f"digest {n}: news for daily digest")
        # what the poll answered is what the store keeps
        assert row.output == {"content": run.content, "content_type": "str"}
        assert (run.started_at, run.ended_at) == (row.scheduled_for, row.scheduled_for + 3)
        trace = await store.get_trace(row.run_id)
        assert tree_of(trace) == [
            (0, "workflow", "digest", "ok"),
            (1, "step", "gather", "ok"),
            (2, "executor", "gather", "ok"),
            (1, "condition", "condition", "ok"),
            (2, "cel", "condition.evaluator", "ok"),
            (2, "step", "tally", "ok"),
            (3, "executor", "tally", "ok"),
        ]
    session = await store.get_session("digest-feed")
    assert [r.run_id for r in session.runs] == [row.run_id for row in fired]
    assert (session.user_id, session.session_state) == ("ops", {"digests": 2})
