"""The in-memory workflow engine: every step type alone and nested, the chain between steps,
session state across Parallel branches, retries, timeouts and cancellation on a SimClock, media,
spans, the persistence seam, build-time validation, and the reference system's known defects
(each named in its test). CEL decisions are covered in test_cel.py."""

from __future__ import annotations

import asyncio
import threading
import weakref
from dataclasses import dataclass, field

import pytest

from leasecron.kernel import (
    Condition,
    Loop,
    Media,
    Parallel,
    Router,
    RunStatus,
    SimClock,
    SqliteStore,
    Step,
    StepInput,
    StepOutput,
    Steps,
    ValidationError,
    Workflow,
    WorkflowRunOutput,
)

T0 = 1_780_000_000.0


async def drive(clock: SimClock, work, *, step: float = 1.0, limit: int = 10_000):
    """Run `work` while moving virtual time forward `step` seconds at a time until it is done."""
    task = asyncio.ensure_future(work)
    for _ in range(limit):
        if task.done():
            break
        await clock.advance(step)
    assert task.done(), "the run did not finish within the virtual time allowed"
    return await task


def const(value):
    def executor(step_input: StepInput):
        return value

    return executor


def echo(prefix: str):
    """An executor whose output shows what it was chained to."""

    def executor(step_input: StepInput):
        return f"{prefix}({step_input.previous_step_content})"

    executor.__name__ = prefix
    return executor


@dataclass
class FakeAgent:
    """An agent: an object with an async arun(input)."""

    name: str
    reply: str = "ok"
    seen: list = field(default_factory=list)

    async def arun(self, input):
        self.seen.append(input)
        await asyncio.sleep(0)
        return f"{self.reply}:{input}"


@dataclass
class RunResult:
    """What an agent framework's arun returns: content plus media attributes and a status."""

    content: object
    images: list = field(default_factory=list)
    status: str = "COMPLETED"


def no_running_spans(out: WorkflowRunOutput):
    assert out.spans, "a run always has spans"
    assert all(s.status != "running" and s.end is not None for s in out.spans)
    ids = {s.span_id for s in out.spans}
    assert all(s.parent_span_id is None or s.parent_span_id in ids for s in out.spans)
    assert all(s.trace_id == out.run_id for s in out.spans)


# --- basics ---------------------------------------------------------------------------------


async def test_blog_example_from_the_issue_runs_every_step_type():
    calls = []

    def research(si):
        calls.append("research")
        return f"notes on {si.input}"

    async def draft(si):
        calls.append("draft")
        return f"draft {len(calls)}"

    def review(si):
        calls.append("review")
        return "APPROVED" if calls.count("review") == 2 else "more"

    wf = Workflow(
        id="blog",
        name="Blog post",
        db=None,
        steps=[
            Step("research", executor=research),
            Parallel(
                Step("facts", agent=FakeAgent("facts", "F")),
                Step("quotes", agent=FakeAgent("quotes", "Q")),
                name="gather",
            ),
            Loop(
                steps=[Step("draft", executor=draft), Step("review", executor=review)],
                max_iterations=3,
                end_condition='last_step_content.contains("APPROVED")',
            ),
            Router(
                choices=[Step("thread", executor=const("T")), Step("article", executor=const("A"))],
                selector='input.contains("short") ? "thread" : "article"',
            ),
            Condition(
                evaluator="previous_step_content.size() > 2000",
                steps=[Step("trim", executor=const("trimmed"))],
                else_steps=[Step("pad", executor=echo("pad"))],
            ),
        ],
    )
    out = await wf.arun(input="topic", session_id=None, additional_data={}, session_state={})
    assert out.status is RunStatus.COMPLETED and out.error is None
    assert out.content == "pad(A)"
    assert calls == ["research", "draft", "review", "draft", "review"]
    names = [o.step_name for o in out.step_outputs]
    assert names == ["research", "gather", "loop", "router", "condition"]
    assert out.get_step_output("loop").metadata == {"iterations": 2, "ended_by": "end_condition"}
    assert out.get_step_output("router").metadata["selected"] == ["article"]
    assert out.get_step_output("condition").metadata == {"result": False, "branch": "else_steps"}
    assert out.workflow_id == "blog" and out.workflow_name == "Blog post" and out.session_id
    assert out.started_at is not None and out.ended_at >= out.started_at
    no_running_spans(out)


async def test_callables_and_agents_in_a_step_list_are_wrapped_in_steps():
    agent = FakeAgent("writer", "W")

    def first(si):
        return "one"

    async def second(si):
        return f"{si.previous_step_content}+two"

    wf = Workflow(id="w", steps=[first, second, agent, lambda si: "last"])
    out = await wf.arun("in")
    assert [o.step_name for o in out.step_outputs] == ["first", "second", "writer", "<lambda>"]
    assert all(isinstance(s, Step) for s in wf.steps)
    assert agent.seen == ["one+two"]
    assert out.step_outputs[2].content == "W:one+two"
    assert out.content == "last"


async def test_an_agent_gets_the_chained_content_and_the_first_step_gets_the_input():
    agent = FakeAgent("a")
    plain_calls = []

    def plain_agent(message):  # "an agent is ... (or a callable)": it gets the message
        plain_calls.append(message)
        return message.upper()

    wf = Workflow(id="w", steps=[Step("a", agent=agent), Step("b", agent=plain_agent)])
    out = await wf.arun("hello")
    assert agent.seen == ["hello"]
    assert plain_calls == ["ok:hello"]
    assert out.content == "OK:HELLO"


async def test_executor_results_str_dict_stepoutput_and_agent_run_result_become_outputs():
    image = Media.image(url="https://example.org/a.png")
    wf = Workflow(
        id="w",
        steps=[
            Step("s", executor=const("text")),
            Step("d", executor=const({"k": [1, 2]})),
            Step("o", executor=const(StepOutput(content="typed", metadata={"m": 1}))),
            Step("r", agent=lambda message: RunResult(content="from agent", images=[image])),
            Step("n", executor=const(None)),
        ],
    )
    out = await wf.arun()
    by = {o.step_name: o for o in out.step_outputs}
    assert by["s"].content == "text"
    assert by["d"].content == {"k": [1, 2]}
    assert by["o"].content == "typed" and by["o"].metadata["m"] == 1
    assert by["r"].content == "from agent" and by["r"].images == [image]
    assert by["n"].content is None and by["n"].success


async def test_an_agent_run_that_ended_in_error_fails_the_step():
    results = iter([RunResult("model overloaded", status="ERROR"), RunResult("fine")])
    step = Step("a", agent=lambda message: next(results), max_retries=1, retry_delay_seconds=0)
    out = await Workflow(id="w", steps=[step]).arun()
    assert out.status is RunStatus.COMPLETED and out.content == "fine"
    first_call = next(s for s in out.spans if s.kind == "agent")
    assert first_call.error == "agent run ended ERROR: model overloaded"


async def test_a_returned_stepoutput_is_copied_so_each_use_is_its_own_output():
    shared = StepOutput(content="same", metadata={"k": 1})
    out = await Workflow(id="w", steps=[Loop(steps=[const(shared)], max_iterations=2)]).arun()
    first, second = out.step_outputs[0].steps
    assert first is not second and first is not shared
    assert shared.step_name is None and shared.metadata == {"k": 1}
    assert first.metadata == {"k": 1, "attempts": 1}


async def test_step_input_carries_input_chain_outputs_by_name_additional_data_and_state():
    seen: list[StepInput] = []

    def look(si):
        seen.append(si)
        si.session_state["visits"] = si.session_state.get("visits", 0) + 1
        return f"out{len(seen)}"

    state = {"user": "ada"}
    wf = Workflow(id="w", steps=[Step("a", executor=look), Step("b", executor=look)])
    out = await wf.arun(
        {"topic": "x"}, session_id="s1", additional_data={"k": 1}, session_state=state
    )
    first, second = seen
    assert first.input == second.input == {"topic": "x"}
    assert first.previous_step_content is None and first.previous_step_outputs == {}
    assert second.previous_step_content == "out1"
    assert second.get_step_content("a") == "out1"
    assert second.get_step_output("a").success
    assert second.additional_data == {"k": 1}
    assert second.run_id == out.run_id and second.session_id == "s1"
    assert second.workflow_id == "w"
    assert state == {"user": "ada", "visits": 2}, "session_state is changed in place"
    assert out.session_state is state


async def test_steps_runs_a_sequence_chaining_each_output_into_the_next():
    wf = Workflow(
        id="w",
        steps=[
            echo("a"),
            Steps(echo("b"), echo("c"), name="inner"),
            [echo("d"), echo("e")],  # a nested list is a Steps too
        ],
    )
    out = await wf.arun()
    assert out.content == "e(d(c(b(a(None)))))"
    inner = out.step_outputs[1]
    assert inner.step_type == "steps" and [o.step_name for o in inner.steps] == ["b", "c"]
    assert inner.content == "c(b(a(None)))"


async def test_a_failing_step_ends_the_run_in_error_and_later_steps_do_not_run():
    ran = []

    def boom(si):
        raise ValueError("no luck")

    wf = Workflow(id="w", steps=[echo("a"), Steps(boom, name="group"), lambda si: ran.append(1)])
    out = await wf.arun()
    assert out.status is RunStatus.ERROR
    assert out.error == "group: boom: ValueError: no luck"
    assert ran == []
    assert [o.step_name for o in out.step_outputs] == ["a", "group"]
    failed = [s for s in out.spans if s.status == "error"]
    assert {s.kind for s in failed} == {"workflow", "steps", "step", "executor"}


async def test_stop_outside_a_loop_ends_the_workflow_completed():
    ran = []
    wf = Workflow(
        id="w",
        steps=[const(StepOutput(content="enough", stop=True)), lambda si: ran.append(1)],
    )
    out = await wf.arun()
    assert out.status is RunStatus.COMPLETED and out.content == "enough"
    assert ran == []


# --- Parallel -------------------------------------------------------------------------------


async def test_parallel_branches_run_concurrently():
    log = []

    def branch(name):
        async def run(si):
            log.append(f"start {name}")
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            log.append(f"end {name}")
            return name

        run.__name__ = name
        return run

    out = await Workflow(id="w", steps=[Parallel(branch("a"), branch("b"))]).arun()
    assert out.status is RunStatus.COMPLETED
    assert log[:2] == ["start a", "start b"], log


async def test_parallel_max_concurrency_bounds_branches_in_flight():
    active, peak = 0, 0

    def branch(name):
        async def run(si):
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            for _ in range(3):
                await asyncio.sleep(0)
            active -= 1
            return name

        run.__name__ = name
        return run

    names = ["a", "b", "c", "d", "e"]
    for limit, expected in ((1, 1), (2, 2), (None, 5)):
        peak = 0
        par = Parallel(*[branch(n) for n in names], max_concurrency=limit)
        out = await Workflow(id="w", steps=[par]).arun()
        assert out.status is RunStatus.COMPLETED
        assert peak == expected, (limit, peak)


async def test_parallel_aggregates_every_branch_content_in_declared_order():
    """Reference defect: Parallel not aggregating (only one branch reached the next step)."""

    async def slow(si):
        for _ in range(5):
            await asyncio.sleep(0)
        return "slow result"

    seen = []

    def after(si):
        seen.append(si)
        return "done"

    wf = Workflow(
        id="w",
        steps=[
            Parallel(Step("slow", executor=slow), Step("fast", executor=const("fast result"))),
            Step("after", executor=after),
        ],
    )
    out = await wf.arun()
    par = out.step_outputs[0]
    assert par.content == "## slow\n\nslow result\n\n## fast\n\nfast result"
    assert [o.step_name for o in par.steps] == ["slow", "fast"]
    (si,) = seen
    assert si.previous_step_content == par.content
    assert si.get_step_content("slow") == "slow result"
    assert si.get_step_content("fast") == "fast result"
    assert si.get_step_content("parallel") == par.content


async def test_parallel_failing_branch_gives_a_failed_output_while_the_others_finish():
    finished = []

    async def good(si):
        await asyncio.sleep(0)
        finished.append("good")
        return "fine"

    def bad(si):
        raise RuntimeError("branch broke")

    wf = Workflow(
        id="w",
        steps=[Parallel(Step("good", executor=good), Step("bad", executor=bad)), echo("next")],
    )
    out = await wf.arun()
    par = out.step_outputs[0]
    assert finished == ["good"]
    good_out, bad_out = par.steps
    assert good_out.success and good_out.content == "fine"
    assert not bad_out.success and bad_out.error == "RuntimeError: branch broke"
    assert not par.success and par.error == "bad: RuntimeError: branch broke"
    assert "## bad\n\n(failed: RuntimeError: branch broke)" in par.content
    assert out.status is RunStatus.ERROR
    assert [o.step_name for o in out.step_outputs] == ["parallel"]


async def test_parallel_skipped_failure_does_not_fail_the_parallel():
    def bad(si):
        raise RuntimeError("x")

    par = Parallel(Step("bad", executor=bad, skip_on_failure=True), Step("ok", executor=const("y")))
    out = await Workflow(id="w", steps=[par]).arun()
    assert out.status is RunStatus.COMPLETED
    assert out.content == "## ok\n\ny"


async def test_parallel_branches_have_their_own_session_state_merged_in_declared_order():
    """Reference defect: shared session_state races between branches."""
    observed = {}

    def branch(name, rounds):
        async def run(si):
            state = si.session_state
            state[f"mine_{name}"] = True
            state["winner"] = name
            state["counts"][name] = rounds
            if name == "a":
                del state["drop_me"]
            for _ in range(rounds):
                await asyncio.sleep(0)
            observed[name] = dict(state)
            return name

        run.__name__ = name
        return run

    state = {"counts": {"seed": 0}, "drop_me": 1, "keep": "k"}
    # a finishes last, b first: a "last writer wins" merge would leave winner == "a"
    wf = Workflow(id="w", steps=[Parallel(branch("a", 6), branch("b", 1))])
    out = await wf.arun(session_state=state)
    assert out.status is RunStatus.COMPLETED
    assert "mine_b" not in observed["a"] and "mine_a" not in observed["b"]
    assert observed["a"]["winner"] == "a" and observed["b"]["winner"] == "b"
    assert "drop_me" in observed["b"], "a's delete is not visible to b"
    assert state == {
        "counts": {"seed": 0, "a": 6, "b": 1},
        "keep": "k",
        "mine_a": True,
        "mine_b": True,
        "winner": "b",
    }


async def test_parallel_state_that_cannot_be_copied_is_shared_not_an_error():
    lock = threading.Lock()  # deepcopy refuses it

    def use(si):
        assert si.session_state["lock"] is lock
        si.session_state["n"] = 1
        return "ok"

    state = {"lock": lock}
    out = await Workflow(id="w", steps=[Parallel(use, Step("again", executor=use))]).arun(
        session_state=state
    )
    assert out.status is RunStatus.COMPLETED and state["n"] == 1


async def test_parallel_branches_filling_a_dict_none_of_them_found_all_land():
    def fill(name):
        def run(si):
            by = si.session_state.setdefault("results", {}).setdefault("by", {})
            by[name] = name.upper()
            return name

        run.__name__ = name
        return run

    state = {}
    out = await Workflow(id="w", steps=[Parallel(fill("a"), fill("b"), fill("c"))]).arun(
        session_state=state
    )
    assert out.status is RunStatus.COMPLETED
    assert state == {"results": {"by": {"a": "A", "b": "B", "c": "C"}}}


async def test_a_parallel_branch_changing_a_value_to_an_equal_one_of_another_type_changes_it():
    def flip(si):
        si.session_state.update(flag=True, n=1.0, items=[True, 2], nested={"k": [1.0]})
        return "flip"

    state = {"flag": 1, "n": 1, "items": [1, 2], "nested": {"k": [1]}}
    out = await Workflow(id="w", steps=[Parallel(flip, const("idle"))]).arun(session_state=state)
    assert out.status is RunStatus.COMPLETED
    assert state == {"flag": True, "n": 1.0, "items": [True, 2], "nested": {"k": [1.0]}}
    assert state["flag"] is True and type(state["n"]) is float  # 1 == True == 1.0 in Python
    assert state["items"][0] is True and type(state["nested"]["k"][0]) is float


async def test_parallel_copies_the_state_for_each_branch_as_it_starts_not_all_up_front():
    live = []  # copies of the state's one value alive when each branch runs

    class Copied:
        copies = 0

        def __eq__(self, other):
            return type(other) is Copied

        __hash__ = object.__hash__

        def __deepcopy__(self, memo):
            Copied.copies += 1
            copy = Copied()
            weakref.finalize(copy, lambda: setattr(Copied, "copies", Copied.copies - 1))
            return copy

    def branch(i):
        async def run(si):
            live.append(Copied.copies)
            await asyncio.sleep(0)
            return i

        return Step(f"b{i}", executor=run)

    state = {"big": Copied()}
    par = Parallel(*(branch(i) for i in range(20)), max_concurrency=1)
    out = await Workflow(id="w", steps=[par]).arun(session_state=state)
    assert out.status is RunStatus.COMPLETED and len(live) == 20
    # the Parallel's snapshot plus the running branch's copy; not one copy per branch
    assert max(live) == 2, live
    assert type(state["big"]) is Copied


# --- Loop -----------------------------------------------------------------------------------


async def test_loop_runs_max_iterations_by_default_three():
    calls = []
    wf = Workflow(id="w", steps=[Loop(steps=[lambda si: calls.append(1) or "x"])])
    out = await wf.arun()
    assert len(calls) == 3
    assert out.step_outputs[0].metadata == {"iterations": 3, "ended_by": "max_iterations"}
    iterations = [s for s in out.spans if s.kind == "iteration"]
    assert [s.name for s in iterations] == ["loop[1]", "loop[2]", "loop[3]"]


async def test_loop_end_condition_callable_gets_the_iteration_outputs():
    got = []
    counter = iter(range(100))

    def step(si):
        return f"n{next(counter)}"

    def done(outputs):
        got.append([(o.step_name, o.content) for o in outputs])
        return outputs[-1].content == "n3"

    wf = Workflow(
        id="w",
        steps=[
            Loop(
                steps=[Step("x", executor=step), Step("y", executor=step)],
                end_condition=done,
                max_iterations=5,
            )
        ],
    )
    out = await wf.arun()
    assert got == [[("x", "n0"), ("y", "n1")], [("x", "n2"), ("y", "n3")]]
    assert out.step_outputs[0].metadata["iterations"] == 2
    assert out.content == "n3"
    decisions = [s for s in out.spans if s.kind == "decision"]
    assert [s.attributes["result"] for s in decisions] == [False, True]


async def test_loop_async_end_condition():
    async def done(outputs):
        await asyncio.sleep(0)
        return True

    wf = Workflow(id="w", steps=[Loop(steps=[const("x")], end_condition=done)])
    out = await wf.arun()
    assert out.step_outputs[0].metadata["iterations"] == 1


async def test_loop_forward_iteration_output_feeds_each_iteration_the_last_output():
    """Reference defect: Loop not forwarding output between iterations."""
    steps = [echo("draft"), echo("review")]
    forwarded = Workflow(
        id="w",
        steps=[const("seed"), Loop(steps=steps, max_iterations=3, forward_iteration_output=True)],
    )
    out = await forwarded.arun()
    assert out.content == "review(draft(review(draft(review(draft(seed))))))"
    fresh = Workflow(id="w", steps=[const("seed"), Loop(steps=steps, max_iterations=3)])
    out = await fresh.arun()
    assert out.content == "review(draft(seed))"
    drafts = [o for o in out.step_outputs[1].steps if o.step_name == "draft"]
    assert [o.content for o in drafts] == ["draft(seed)"] * 3


async def test_a_step_returning_stop_ends_the_loop_but_not_the_workflow():
    count = 0

    def step(si):
        nonlocal count
        count += 1
        return StepOutput(content=f"it{count}", stop=count == 2)

    skipped_after_stop = []
    wf = Workflow(
        id="w",
        steps=[
            Loop(steps=[step, lambda si: skipped_after_stop.append(count)], max_iterations=5),
            echo("after"),
        ],
    )
    out = await wf.arun()
    assert count == 2
    assert skipped_after_stop == [1], "the rest of the stopping iteration does not run"
    loop = out.step_outputs[0]
    assert loop.metadata == {"iterations": 2, "ended_by": "stop"} and not loop.stop
    assert out.status is RunStatus.COMPLETED and out.content == "after(it2)"


async def test_a_failure_inside_a_loop_fails_the_loop_and_the_run():
    count = 0

    def flaky(si):
        nonlocal count
        count += 1
        if count == 2:
            raise KeyError("k")
        return "ok"

    out = await Workflow(id="w", steps=[Loop(steps=[flaky], max_iterations=4)]).arun()
    assert out.status is RunStatus.ERROR
    assert out.error == "loop: iteration 2: flaky: KeyError: 'k'"
    assert out.step_outputs[0].metadata == {"iterations": 2, "ended_by": "failure"}


# --- Condition ------------------------------------------------------------------------------


async def test_condition_runs_else_steps_when_false():
    """Reference defect: Condition else_steps ignored."""
    wf = Workflow(
        id="w",
        steps=[
            const("small"),
            Condition(
                evaluator=lambda si: len(si.previous_step_content) > 100,
                steps=[echo("trim")],
                else_steps=[echo("pad"), echo("pad2")],
            ),
        ],
    )
    out = await wf.arun()
    assert out.content == "pad2(pad(small))"
    cond = out.step_outputs[1]
    assert cond.metadata == {"result": False, "branch": "else_steps"}
    assert [o.step_name for o in cond.steps] == ["pad", "pad2"]


async def test_condition_true_runs_steps_and_false_without_else_passes_the_chain_through():
    async def yes(si):
        return True

    wf = Workflow(
        id="w",
        steps=[
            const("x"),
            Condition(yes, steps=[echo("then")], name="c1"),
            Condition(False, steps=[echo("never")], name="c2"),
            echo("after"),
        ],
    )
    out = await wf.arun()
    assert out.content == "after(then(x))"
    c2 = out.step_outputs[2]
    assert c2.skipped and c2.success and c2.metadata == {"result": False, "branch": None}
    assert c2.content == "then(x)"


async def test_a_failing_evaluator_callable_fails_the_condition():
    def broken(si):
        raise ZeroDivisionError("division by zero")

    out = await Workflow(id="w", steps=[Condition(broken, steps=[const("x")])]).arun()
    assert out.status is RunStatus.ERROR
    assert "evaluator" in out.error and "ZeroDivisionError" in out.error
    (decision,) = [s for s in out.spans if s.kind == "decision"]
    assert decision.status == "error"


# --- Router ---------------------------------------------------------------------------------


def pick(picked):
    def selector(step_input):
        return picked

    return selector


async def test_router_selector_return_forms():
    def thread(si):
        return "T"

    article = Step("article", executor=const("A"))
    for picked, expected in (
        ("article", ["article"]),
        (article, ["article"]),
        (thread, ["thread"]),  # the function a choice wraps
        (["thread", article], ["thread", "article"]),
    ):
        router = Router(selector=pick(picked), choices=[thread, article])
        out = await Workflow(id="w", steps=[router]).arun()
        assert out.status is RunStatus.COMPLETED, out.error
        assert out.step_outputs[0].metadata["selected"] == expected


async def test_router_selector_gets_the_full_context():
    """Reference defect: Router selector called without context."""
    seen = {}

    def selector(si, choices):
        seen["choices"] = [c.name for c in choices]
        seen["classify"] = si.get_step_content("classify")
        seen["state"] = dict(si.session_state)
        seen["extra"] = si.additional_data
        seen["previous"] = si.previous_step_content
        return "b" if si.session_state["prefer"] == "b" else "a"

    wf = Workflow(
        id="w",
        steps=[
            Step("classify", executor=const("urgent")),
            Router(
                selector, choices=[Step("a", executor=const("A")), Step("b", executor=echo("B"))]
            ),
        ],
    )
    out = await wf.arun("in", additional_data={"x": 1}, session_state={"prefer": "b"})
    assert out.content == "B(urgent)"
    assert seen == {
        "choices": ["a", "b"],
        "classify": "urgent",
        "state": {"prefer": "b"},
        "extra": {"x": 1},
        "previous": "urgent",
    }


@pytest.mark.parametrize("picked", ["nope", None, [], ["a", "nope"], 42])
async def test_a_router_selector_naming_no_choice_is_an_error(picked):
    ran = []
    router = Router(lambda si: picked, choices=[Step("a", executor=lambda si: ran.append(1))])
    out = await Workflow(id="w", steps=[router]).arun()
    assert out.status is RunStatus.ERROR
    assert "selector" in out.error
    assert ran == []
    if picked == "nope":
        assert out.error == "router: selector: 'nope' names no choice (choices: a)"


async def test_nested_loop_in_parallel_in_router_with_condition():
    counter = {"n": 0}

    def tick(si):
        counter["n"] += 1
        si.session_state.setdefault("ticks", []).append(counter["n"])
        return f"tick{counter['n']}"

    inner = Parallel(
        Loop(steps=[Step("tick", executor=tick)], max_iterations=2, name="ticker"),
        Steps(
            Condition(lambda si: si.input == "deep", steps=[echo("deep")], name="check"),
            name="side",
        ),
        name="fan",
    )
    router = Router(lambda si: "fan", choices=[inner, Step("plain", executor=const("p"))])
    wf = Workflow(id="w", steps=[const("start"), router, echo("end")])
    out = await wf.arun("deep", session_state={})
    assert out.status is RunStatus.COMPLETED, out.error
    assert out.session_state == {"ticks": [1, 2]}
    assert out.content == "end(## ticker\n\ntick2\n\n## side\n\ndeep(start))"
    fan = out.get_step_output("fan")
    assert [o.step_name for o in fan.steps] == ["ticker", "side"]
    # the trace nests as the steps do
    by_id = {s.span_id: s for s in out.spans}

    def path(span):
        names = []
        while span is not None:
            names.append(span.name)
            span = by_id.get(span.parent_span_id)
        return list(reversed(names))

    (deep_call,) = [s for s in out.spans if s.kind == "executor" and s.name == "deep"]
    assert path(deep_call) == ["w", "router", "fan", "side", "check", "deep", "deep"]
    tick_calls = [path(s) for s in out.spans if s.kind == "executor" and s.name == "tick"]
    assert tick_calls == [
        ["w", "router", "fan", "ticker", "ticker[1]", "tick", "tick"],
        ["w", "router", "fan", "ticker", "ticker[2]", "tick", "tick"],
    ]


# --- retries, skip_on_failure, timeouts -----------------------------------------------------


async def test_retries_back_off_on_the_run_clock():
    clock = SimClock(start=T0)
    attempts = []

    def flaky(si):
        attempts.append(clock.now())
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "finally"

    step = Step("flaky", executor=flaky, max_retries=3, retry_delay_seconds=2, retry_backoff=3)
    wf = Workflow(id="w", steps=[step], clock=clock)
    out = await drive(clock, wf.arun())
    assert out.status is RunStatus.COMPLETED and out.content == "finally"
    assert [t - T0 for t in attempts] == [0, 2, 8]  # waits of 2 and 2·3 virtual seconds
    assert out.step_outputs[0].metadata["attempts"] == 3
    calls = [s for s in out.spans if s.kind == "executor"]
    assert [(s.attributes["attempt"], s.status) for s in calls] == [
        (1, "error"),
        (2, "error"),
        (3, "ok"),
    ]
    assert calls[0].error == "ConnectionError: try again"


async def test_retries_exhausted_fail_the_step_and_a_returned_failure_is_retried_too():
    calls = 0

    def refuses(si):
        nonlocal calls
        calls += 1
        return StepOutput(content="partial", success=False, error="not good enough")

    step = Step("r", executor=refuses, max_retries=2, retry_delay_seconds=0)
    out = await Workflow(id="w", steps=[step]).arun()
    assert calls == 3
    assert out.status is RunStatus.ERROR and out.error == "r: not good enough"
    failed = out.step_outputs[0]
    assert failed.metadata["attempts"] == 3 and failed.content == "partial"


async def test_skip_on_failure_records_the_failure_and_chains_past_it():
    def bad(si):
        raise ValueError("bad input")

    wf = Workflow(
        id="w",
        steps=[const("kept"), Step("bad", executor=bad, skip_on_failure=True), echo("next")],
    )
    out = await wf.arun()
    assert out.status is RunStatus.COMPLETED
    assert out.content == "next(kept)"
    skipped = out.step_outputs[1]
    assert skipped.skipped and not skipped.success and skipped.error == "ValueError: bad input"
    assert out.spans[[s.name for s in out.spans].index("bad")].attributes["skipped"] is True


async def test_timeout_cancels_the_attempt_and_fails_the_step():
    clock = SimClock(start=T0)
    cleaned = []

    async def slow(si):
        try:
            await clock.sleep(100)
            return "too late"
        finally:
            cleaned.append(clock.now() - T0)

    step = Step("slow", executor=slow, timeout_seconds=5, max_retries=1, retry_delay_seconds=1)
    out = await drive(clock, Workflow(id="w", steps=[step], clock=clock).arun())
    assert out.status is RunStatus.ERROR
    assert out.error == "slow: StepTimeoutError: timed out after 5 s"
    assert cleaned == [5, 11], "each attempt was cancelled at its deadline"
    calls = [s for s in out.spans if s.kind == "executor"]
    assert [s.end - s.start for s in calls] == [5, 5]


async def test_a_step_within_its_timeout_completes():
    clock = SimClock(start=T0)

    async def quick(si):
        await clock.sleep(3)
        return "in time"

    step = Step("quick", executor=quick, timeout_seconds=5)
    out = await drive(clock, Workflow(id="w", steps=[step], clock=clock).arun())
    assert out.status is RunStatus.COMPLETED and out.content == "in time"
    assert out.step_outputs[0].duration == 3
    assert out.duration == 3


async def test_a_sync_executor_or_agent_runs_in_a_thread_so_its_timeout_applies():
    started, release = threading.Event(), threading.Event()

    def blocking(si):
        started.set()
        release.wait(5)  # held until the test ends: only a thread lets the timeout fire first
        return "late"

    class SyncAgent:
        name = "sync agent"

        def arun(self, input):
            release.wait(5)
            return "late"

    try:
        step = Step("blocking", executor=blocking, timeout_seconds=0.05)
        out = await Workflow(id="w", steps=[step]).arun()
        step = Step("agent", agent=SyncAgent(), timeout_seconds=0.05)
        agent_out = await Workflow(id="w", steps=[step]).arun()
    finally:
        release.set()  # the abandoned threads end
    assert started.is_set()
    assert out.status is RunStatus.ERROR
    assert out.error == "blocking: StepTimeoutError: timed out after 0.05 s"
    assert agent_out.error == "agent: StepTimeoutError: timed out after 0.05 s"


async def test_sync_parallel_branches_run_at_the_same_time():
    a_in, b_in = threading.Event(), threading.Event()

    def a(si):
        a_in.set()
        return b_in.wait(5)  # True only if b runs meanwhile

    def b(si):
        b_in.set()
        return a_in.wait(5)

    out = await Workflow(id="w", steps=[Parallel(a, b)]).arun()
    assert out.status is RunStatus.COMPLETED
    assert [(o.step_name, o.content) for o in out.step_outputs[0].steps] == [
        ("a", True),
        ("b", True),
    ]


# --- cancellation ---------------------------------------------------------------------------


def _blocking_branches(started: list, cleaned: list, want: int):
    all_started = asyncio.Event()

    def make(name):
        async def run(si):
            started.append(name)
            if len(started) == want:
                all_started.set()
            try:
                await asyncio.Event().wait()
            finally:
                cleaned.append(name)

        run.__name__ = name
        return run

    return make, all_started


async def test_cancel_stops_the_running_steps_and_ends_the_run_cancelled():
    started, cleaned, after = [], [], []
    make, all_started = _blocking_branches(started, cleaned, 2)
    wf = Workflow(
        id="w",
        steps=[
            Step("first", executor=const(1)),
            Parallel(make("a"), make("b")),
            lambda si: after.append(1),
        ],
    )
    task = asyncio.create_task(wf.arun("x", run_id="run-1"))
    await all_started.wait()
    assert wf.running == ["run-1"]
    assert wf.cancel("run-1")
    out = await task
    assert out.status is RunStatus.CANCELLED and out.error == "cancelled"
    assert sorted(cleaned) == ["a", "b"] and after == []
    assert [o.step_name for o in out.step_outputs] == ["first"]
    no_running_spans(out)
    cancelled = {s.name for s in out.spans if s.status == "cancelled"}
    assert cancelled == {"w", "parallel", "a", "b"}
    assert wf.running == [] and not wf.cancel("run-1")


async def test_cancelling_the_caller_cancels_the_run_saves_it_and_propagates():
    started, cleaned = [], []
    make, all_started = _blocking_branches(started, cleaned, 1)
    db = FakeDb()
    wf = Workflow(id="w", steps=[make("only")], db=db)
    task = asyncio.create_task(wf.arun(run_id="r"))
    await all_started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["only"]
    assert db.statuses == [RunStatus.RUNNING, RunStatus.CANCELLED]
    assert {s.status for s in db.spans if s.name == "only"} == {"cancelled"}


async def test_a_run_id_cannot_run_twice_at_once():
    gate = asyncio.Event()

    async def wait(si):
        await gate.wait()

    wf = Workflow(id="w", steps=[wait])
    task = asyncio.create_task(wf.arun(run_id="same"))
    await asyncio.sleep(0)
    with pytest.raises(ValidationError) as err:
        await wf.arun(run_id="same")
    assert err.value.field == "run_id"
    gate.set()
    assert (await task).status is RunStatus.COMPLETED


class GatedDb:
    """Holds each save_run of a run in one of the `hold` statuses until `gate` opens; `entered`
    is set when one is held. `statuses` lists the saves that completed."""

    def __init__(self, *hold: RunStatus):
        self.hold = set(hold)
        self.entered, self.gate = asyncio.Event(), asyncio.Event()
        self.statuses, self.spans = [], []

    async def save_run(self, run):
        if run.status in self.hold:
            self.entered.set()
            await self.gate.wait()
        self.statuses.append(run.status)

    async def save_spans(self, spans):
        self.spans.extend(spans)


async def test_a_caller_cancelled_during_the_start_save_leaves_the_run_saved_cancelled():
    ran = []
    db = GatedDb(RunStatus.RUNNING)
    wf = Workflow(id="w", steps=[lambda si: ran.append(1)], db=db)
    task = asyncio.create_task(wf.arun(run_id="r"))
    await db.entered.wait()
    assert wf.running == ["r"]
    task.cancel()
    await asyncio.sleep(0)  # the cancellation lands while the save is held
    db.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert db.statuses == [RunStatus.RUNNING, RunStatus.CANCELLED] and ran == []
    assert [(s.kind, s.status) for s in db.spans] == [("workflow", "cancelled")]
    assert wf.running == []


async def test_cancel_during_the_start_save_ends_the_run_before_its_first_step():
    ran = []
    db = GatedDb(RunStatus.RUNNING)
    wf = Workflow(id="w", steps=[lambda si: ran.append(1)], db=db)
    task = asyncio.create_task(wf.arun(run_id="r"))
    await db.entered.wait()
    assert wf.cancel("r")
    db.gate.set()
    out = await task
    assert out.status is RunStatus.CANCELLED and out.error == "cancelled" and ran == []
    assert db.statuses == [RunStatus.RUNNING, RunStatus.CANCELLED]
    no_running_spans(out)
    assert not wf.cancel("r")


async def test_a_caller_cancelled_during_the_end_save_lets_it_finish_then_propagates():
    db = GatedDb(RunStatus.COMPLETED)
    wf = Workflow(id="w", steps=[const("done")], db=db)
    task = asyncio.create_task(wf.arun(run_id="r"))
    await db.entered.wait()
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()  # twice: the save still runs to its end
    await asyncio.sleep(0)
    db.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert db.statuses == [RunStatus.RUNNING, RunStatus.COMPLETED]
    assert [s.kind for s in db.spans] == ["workflow", "step", "executor"]


# --- media ----------------------------------------------------------------------------------


async def test_media_chains_to_the_next_step_only():
    audio = Media.audio(content=b"\x00\x01", mime_type="audio/wav")
    picture = Media.image(url="https://example.org/p.png")
    seen = {}

    def transcribe(si):
        seen["transcribe"] = (si.audio, si.images)
        return StepOutput(content="words", media=[picture])

    class Painter:
        name = "painter"

        async def arun(self, input, images=None):
            seen["painter"] = (input, images)
            return RunResult(content="described", images=[])

    def last(si):
        seen["last"] = si.media
        return "end"

    wf = Workflow(id="w", steps=[transcribe, Painter(), last])
    out = await wf.arun("speech", media=[audio])
    assert out.status is RunStatus.COMPLETED
    assert seen["transcribe"] == ([audio], [])
    assert seen["painter"] == ("words", [picture])
    assert seen["last"] == [], "media comes from the step before, not from further back"
    assert out.step_outputs[0].images == [picture]


async def test_an_agent_without_media_parameters_is_called_without_them():
    agent = FakeAgent("plain")
    picture = Media.image(content=b"png")
    wf = Workflow(id="w", steps=[const(StepOutput(content="c", media=[picture])), agent])
    out = await wf.arun()
    assert out.status is RunStatus.COMPLETED and agent.seen == ["c"]


def test_media_is_validated():
    with pytest.raises(ValidationError) as err:
        Media("hologram", "x/y", url="u")
    assert err.value.field == "kind"
    with pytest.raises(ValidationError) as err:
        Media.image(content=b"x", url="https://example.org")
    assert err.value.field == "content"
    with pytest.raises(ValidationError) as err:
        Media.video(mime_type="mp4", url="https://example.org/v")
    assert err.value.field == "mime_type"
    assert Media.file(url="https://example.org/f.pdf").mime_type == "application/octet-stream"


async def test_media_that_are_not_media_fail_the_step_naming_the_field():
    returned = StepOutput(content="x", media=[{"kind": "image", "url": "https://example.org"}])
    wf = Workflow(id="w", steps=[Step("pic", executor=const(returned))])
    out = await wf.arun()
    assert out.status is RunStatus.ERROR
    assert out.error == (
        "pic: ValidationError: media: step 'pic': StepOutput.media[0] is a dict, not a Media: "
        "build it with Media(kind, mime_type, content=... or url=...) or Media.image(url=...)"
    )
    with pytest.raises(ValidationError) as err:
        await wf.arun(media=["https://example.org/a.png"])
    assert err.value.field == "media"
    assert wf.running == []


# --- spans, recorder, persistence seam ------------------------------------------------------


class FakeDb:
    def __init__(self, fail: bool = False):
        self.fail = fail
        self.statuses = []
        self.spans = []

    async def save_run(self, run):
        self.statuses.append(run.status)
        if self.fail:
            raise OSError("disk full")

    async def save_spans(self, spans):
        self.spans.extend(spans)


class ListRecorder:
    def __init__(self):
        self.ended = []

    def record(self, span):
        assert span.end is not None
        self.ended.append(span)


async def test_every_workflow_step_agent_and_decision_has_a_span():
    recorder = ListRecorder()
    wf = Workflow(
        id="w",
        steps=[
            Step("agent step", agent=FakeAgent("bot")),
            Condition(lambda si: True, steps=[echo("x")]),
        ],
        recorder=recorder,
        new_id=iter(f"id{n}" for n in range(10)).__next__,
    )
    out = await wf.arun("hi")
    assert out.run_id == "id0" and out.session_id == "id1"
    kinds = [(s.kind, s.name) for s in out.spans]
    assert kinds == [
        ("workflow", "w"),
        ("step", "agent step"),
        ("agent", "bot"),
        ("condition", "condition"),
        ("decision", "condition.evaluator"),
        ("step", "x"),
        ("executor", "x"),
    ]
    no_running_spans(out)
    assert [s.span_id for s in out.spans] == [f"{n:016x}" for n in range(1, 8)]
    assert sorted(s.span_id for s in recorder.ended) == [s.span_id for s in out.spans]
    assert recorder.ended[-1].kind == "workflow", "a span is recorded when it ends"


async def test_a_broken_recorder_does_not_break_the_run():
    class Broken:
        def record(self, span):
            raise RuntimeError("exporter down")

    out = await Workflow(id="w", steps=[const("x")], recorder=Broken()).arun()
    assert out.status is RunStatus.COMPLETED


async def test_db_seam_saves_the_run_at_start_and_end_and_the_spans():
    db = FakeDb()
    out = await Workflow(id="w", steps=[const("x")], db=db).arun()
    assert db.statuses == [RunStatus.RUNNING, RunStatus.COMPLETED]
    assert db.spans == out.spans and out.persist_error is None


async def test_a_failing_or_partial_db_does_not_undo_the_run():
    db = FakeDb(fail=True)
    out = await Workflow(id="w", steps=[const("x")], db=db).arun()
    assert out.status is RunStatus.COMPLETED and out.content == "x"
    assert db.spans == out.spans, "the spans are saved even though the run row was not"
    # the end save failed, and so did the summary row tried after it
    assert out.persist_error == "OSError: disk full; the summary row failed too: OSError: disk full"
    out = await Workflow(id="w", steps=[const("x")], db=object()).arun()  # no seam methods
    assert out.status is RunStatus.COMPLETED and out.persist_error is None


async def test_an_end_save_that_fails_is_followed_by_a_summary_of_the_run():
    class PickyDb(FakeDb):
        """Refuses a run with step outputs; takes summary= like the SQL stores."""

        def __init__(self):
            super().__init__()
            self.saved = []

        async def save_run(self, run, *, create=False, summary=False):
            if run.step_outputs:
                raise ValueError("cannot store this")
            self.saved.append((run.status, create, summary, run.content, run.error))

    db = PickyDb()
    out = await Workflow(id="w", steps=[const("x")], db=db).arun()
    assert out.status is RunStatus.COMPLETED and out.content == "x"
    assert out.persist_error == "ValueError: cannot store this (a summary row was saved instead)"
    why = "run saved without its step outputs and media: the full save failed: ValueError: "
    assert db.saved == [
        (RunStatus.RUNNING, True, False, None, None),
        (RunStatus.COMPLETED, False, True, "x", why + "cannot store this"),
    ]
    assert db.spans == out.spans
    assert out.error is None  # the run's own record is untouched


async def test_a_sqlite_store_as_db_persists_the_run(tmp_path):
    # The stores' side of the seam is tests/test_workflow_store.py, on SQLite and Postgres.
    store = SqliteStore(str(tmp_path / "wf.db"), inline=True)
    out = await Workflow(id="w", steps=[const("x")], db=store).arun()
    assert out.status is RunStatus.COMPLETED and out.persist_error is None
    assert (await store.get_workflow_run(out.run_id)).content == "x"
    await store.close()


async def test_an_engine_fault_ends_the_run_in_error_and_spares_parallel_siblings(monkeypatch):
    async def broken(self, ctx, scope, carry, span):
        raise RuntimeError("engine bug")

    monkeypatch.setattr(Steps, "_run", broken)
    wf = Workflow(
        id="w", steps=[Parallel(Steps(const(1), name="bad"), Step("ok", executor=const(2)))]
    )
    out = await wf.arun()
    par = out.step_outputs[0]
    assert [(o.step_name, o.success) for o in par.steps] == [("bad", False), ("ok", True)]
    assert par.steps[0].error == "RuntimeError: engine bug"
    out = await Workflow(id="w", steps=[Steps(const(1), name="top")]).arun()
    assert out.status is RunStatus.ERROR and out.error == "RuntimeError: engine bug"
    no_running_spans(out)
    assert {s.name: s.status for s in out.spans} == {"w": "error", "top": "error"}


# --- build-time validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Step("s"), "executor"),
        (lambda: Step("s", executor=const(1), agent=FakeAgent("a")), "executor"),
        (lambda: Step("s", executor="not callable"), "executor"),
        (lambda: Step("s", agent=42), "agent"),
        (lambda: Step("", executor=const(1)), "name"),
        (lambda: Step("s", executor=const(1), max_retries=-1), "max_retries"),
        (lambda: Step("s", executor=const(1), max_retries=1.5), "max_retries"),
        (lambda: Step("s", executor=const(1), timeout_seconds=0), "timeout_seconds"),
        (lambda: Step("s", executor=const(1), retry_delay_seconds=-1), "retry_delay_seconds"),
        (lambda: Step("s", executor=const(1), retry_backoff=0.5), "retry_backoff"),
        (lambda: Loop(steps=[const(1)], max_iterations=0), "max_iterations"),
        (lambda: Loop(steps=[]), "steps"),
        (lambda: Loop(steps=[const(1)], end_condition=3), "end_condition"),
        (lambda: Parallel(const(1), max_concurrency=0), "max_concurrency"),
        (lambda: Parallel(const(1), steps=[const(2)]), "steps"),
        (lambda: Steps("not a step"), "steps"),
        (lambda: Router(lambda si: "a", choices=[const(1), const(2)]), "choices"),
        (lambda: Router(None, choices=[const(1)]), "selector"),
        (lambda: Condition(3, steps=[const(1)]), "evaluator"),
        (lambda: Condition(True, steps=[const(1)], cel_errors="maybe"), "cel_errors"),
        (lambda: Workflow(id="", steps=[const(1)]), "id"),
        (lambda: Workflow(id="w", steps=[]), "steps"),
        (lambda: Workflow(id="w", steps=const(1)), "steps"),
        (lambda: Workflow(id="w", steps=[const(1)], cel_errors="ignore"), "cel_errors"),
    ],
)
def test_bad_definitions_are_validation_errors_naming_the_field(build, field):
    with pytest.raises(ValidationError) as err:
        build()
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")
