"""CEL decisions in workflows: each variable of Loop, Condition and Router, compile-once caching,
build-time errors naming the field, evaluation errors in the trace, cel_errors="false", the
Router selector that names no choice, and the error when cel-python is not installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import celpy
import pytest

from leasecron.kernel import (
    CelNotInstalledError,
    Condition,
    Loop,
    Router,
    RunStatus,
    Step,
    StepOutput,
    ValidationError,
    Workflow,
    cel_available,
)
from leasecron.kernel.workflow import cel as kcel


def const(value, name="const"):
    def executor(step_input):
        return value

    executor.__name__ = name
    return executor


def counter(name="count"):
    """An executor returning n1, n2, ... on successive calls."""
    calls = []

    def executor(step_input):
        calls.append(1)
        return f"n{len(calls)}"

    executor.__name__ = name
    executor.calls = calls
    return executor


async def run_condition(expression, *, input=None, previous="", state=None, extra=None):
    """Which branch a Condition with `expression` takes after a step that returns `previous`."""
    wf = Workflow(
        id="c",
        steps=[
            Step("classify", executor=const(previous)),
            Condition(expression, steps=[const("yes")], else_steps=[const("no")]),
        ],
    )
    out = await wf.arun(input, session_state=state or {}, additional_data=extra or {})
    assert out.status is RunStatus.COMPLETED, out.error
    return out.content


def test_cel_is_available_here():
    assert cel_available()


# --- Loop variables -------------------------------------------------------------------------


async def loop_iterations(expression, steps=None, max_iterations=5):
    loop = Loop(steps=steps or [counter()], max_iterations=max_iterations, end_condition=expression)
    out = await Workflow(id="l", steps=[loop]).arun()
    assert out.status is RunStatus.COMPLETED, out.error
    return out.step_outputs[0].metadata["iterations"]


async def test_loop_current_iteration_is_one_based():
    assert await loop_iterations("current_iteration == 1") == 1
    assert await loop_iterations("current_iteration >= 3") == 3


async def test_loop_max_iterations():
    assert await loop_iterations("current_iteration == max_iterations - 1", max_iterations=4) == 3


async def test_loop_last_step_content():
    assert await loop_iterations('last_step_content == "n2"') == 2
    assert await loop_iterations('last_step_content.endsWith("4")') == 4


async def test_loop_step_outputs_by_name():
    steps = [counter("draft"), const("fine", "review")]
    assert await loop_iterations('step_outputs.draft == "n3"', steps) == 3
    assert await loop_iterations('step_outputs["review"].contains("fine")', steps) == 1


async def test_loop_all_success():
    state = {"n": 0}

    def sometimes(step_input):
        state["n"] += 1
        if state["n"] < 3:
            raise ValueError("not yet")
        return "ok"

    steps = [Step("s", executor=sometimes, skip_on_failure=True), const("after")]
    assert await loop_iterations("all_success", steps) == 3


# --- Condition and Router variables ---------------------------------------------------------


async def test_condition_input():
    assert await run_condition('input.contains("urgent")', input="urgent: help") == "yes"
    assert await run_condition('input.contains("urgent")', input="later") == "no"
    assert await run_condition('input.topic == "cel"', input={"topic": "cel"}) == "yes"
    assert await run_condition('input == ""', input=None) == "yes"


async def test_condition_previous_step_content():
    assert await run_condition("previous_step_content.size() > 3", previous="long") == "yes"
    assert await run_condition("previous_step_content.size() > 3", previous="abc") == "no"


async def test_condition_previous_step_outputs_by_name():
    expr = 'previous_step_outputs.classify == "billing"'
    assert await run_condition(expr, previous="billing") == "yes"
    assert await run_condition(expr, previous="tech") == "no"


async def test_condition_additional_data():
    expr = "additional_data.priority > 3"
    assert await run_condition(expr, extra={"priority": 5}) == "yes"
    assert await run_condition(expr, extra={"priority": 1}) == "no"


async def test_condition_session_state():
    expr = 'has(session_state.mode) && session_state.mode == "fast"'
    assert await run_condition(expr, state={"mode": "fast"}) == "yes"
    assert await run_condition(expr, state={}) == "no"
    assert await run_condition("session_state.scores.all(s, s > 1)", state={"scores": [2, 3]}) == (
        "yes"
    )


async def test_condition_first_step_sees_empty_previous_content():
    wf = Workflow(
        id="c",
        steps=[Condition("previous_step_content.size() == 0", steps=[const("first")])],
    )
    out = await wf.arun()
    assert out.content == "first"


async def test_router_variables_and_step_choices():
    choices = [Step("thread", executor=const("T")), Step("article", executor=const("A"))]
    for selector, state, expected in (
        ('input.contains("short") ? "thread" : "article"', {}, "T"),
        ("step_choices[1]", {}, "A"),
        ("session_state.handler", {"handler": "thread"}, "T"),
        ('additional_data.route == "a" ? "article" : "thread"', {}, "A"),
        ('previous_step_outputs.pre == "x" ? step_choices[0] : "article"', {}, "T"),
        ('previous_step_content == "x" ? "thread" : "article"', {}, "T"),
    ):
        wf = Workflow(
            id="r",
            steps=[Step("pre", executor=const("x")), Router(selector=selector, choices=choices)],
        )
        out = await wf.arun("a short post", session_state=state, additional_data={"route": "a"})
        assert out.status is RunStatus.COMPLETED, (selector, out.error)
        assert out.content == expected, selector


async def test_router_cel_list_runs_each_named_choice_in_order():
    choices = [
        Step("a", executor=lambda si: f"a({si.previous_step_content})"),
        Step("b", executor=lambda si: f"b({si.previous_step_content})"),
    ]
    out = await Workflow(id="r", steps=[Router('["b", "a"]', choices)]).arun()
    assert out.content == "a(b(None))"
    assert out.step_outputs[0].metadata["selected"] == ["b", "a"]


# --- compile once ---------------------------------------------------------------------------


async def test_expressions_are_compiled_once_not_per_evaluation(monkeypatch):
    compiled = []
    real = celpy.Environment.compile

    def counting(self, text):
        compiled.append(text)
        return real(self, text)

    monkeypatch.setattr(celpy.Environment, "compile", counting)
    expr = 'current_iteration == 4 && last_step_content != "" && "compile-once" != ""'
    loop = Loop(steps=[counter()], max_iterations=6, end_condition=expr)
    wf = Workflow(id="l", steps=[loop])
    # a second workflow with the same text shares the compiled program
    Workflow(id="l2", steps=[Loop(steps=[counter()], end_condition=expr)])
    assert compiled.count(expr) == 1
    for _ in range(3):
        out = await wf.arun()
        assert out.step_outputs[0].metadata["iterations"] == 4
    cel_spans = [s for s in out.spans if s.kind == "cel"]
    assert len(cel_spans) == 4
    assert compiled.count(expr) == 1, "evaluating never compiles again"
    assert kcel.cache_info().hits >= 1


# --- build-time errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "field", "needle"),
    [
        (lambda e: Condition(e, steps=[const(1)]), "evaluator", "syntax error"),
        (lambda e: Loop(steps=[const(1)], end_condition=e), "end_condition", "syntax error"),
        (lambda e: Router(e, choices=[const(1)]), "selector", "syntax error"),
    ],
)
def test_a_syntax_error_is_a_validation_error_naming_the_field(build, field, needle):
    with pytest.raises(ValidationError) as err:
        Workflow(id="w", steps=[build('input.contains("x"')])
    assert err.value.field == field
    assert needle in str(err.value) and 'input.contains("x"' in str(err.value)


@pytest.mark.parametrize(
    ("build", "field", "unknown"),
    [
        (lambda: Condition("inputs.size() > 1", steps=[const(1)]), "evaluator", "inputs"),
        (
            lambda: Condition("step_choices.size() > 1", steps=[const(1)]),
            "evaluator",
            "step_choices",
        ),
        (lambda: Loop(steps=[const(1)], end_condition='input == "x"'), "end_condition", "input"),
        (
            lambda: Loop(steps=[const(1)], end_condition="iteration > 2"),
            "end_condition",
            "iteration",
        ),
        (lambda: Router("current_iteration", choices=[const(1)]), "selector", "current_iteration"),
        (lambda: Condition("session_state.xs.all(x, x > y)", steps=[const(1)]), "evaluator", "y"),
    ],
)
def test_an_unknown_variable_is_a_validation_error_naming_field_and_variable(build, field, unknown):
    with pytest.raises(ValidationError) as err:
        build()
    assert err.value.field == field
    assert f"unknown variable {unknown!r}" in str(err.value)


def test_macro_variables_type_names_and_field_names_are_not_unknown():
    Condition("session_state.xs.exists(x, x == input)", steps=[const(1)])
    Condition("session_state.m.map(k, k + 1).filter(v, v > 0).size() > 0", steps=[const(1)])
    Condition("type(input) == string && previous_step_outputs.foo.bar == 1", steps=[const(1)])


def test_an_empty_expression_and_a_constant_selector_naming_no_choice_fail_at_build():
    with pytest.raises(ValidationError) as err:
        Condition("  ", steps=[const(1)])
    assert err.value.field == "evaluator"
    with pytest.raises(ValidationError) as err:
        Router('"nowhere"', choices=[Step("a", executor=const(1))])
    assert err.value.field == "selector" and "'nowhere' names no choice" in str(err.value)
    Router('"a"', choices=[Step("a", executor=const(1))])  # a constant naming a choice is fine


# --- evaluation errors ----------------------------------------------------------------------


async def test_an_evaluation_error_fails_the_step_with_expression_and_error_in_the_trace():
    expr = "session_state.missing > 1"
    ran = []
    wf = Workflow(
        id="w",
        steps=[Condition(expr, steps=[lambda si: ran.append(1)], name="gate"), const("after")],
    )
    out = await wf.arun(session_state={})
    assert out.status is RunStatus.ERROR and ran == []
    assert out.error.startswith(f"gate: evaluator: CEL {expr!r}: ")
    assert "missing" in out.error
    (span,) = [s for s in out.spans if s.kind == "cel"]
    assert span.status == "error" and span.attributes["expression"] == expr
    assert expr in span.error and "missing" in span.error
    assert [o.step_name for o in out.step_outputs] == ["gate"]


async def test_a_condition_that_does_not_give_a_bool_fails():
    out = await Workflow(
        id="w", steps=[Condition("previous_step_content.size()", steps=[const(1)])]
    ).arun()
    assert out.status is RunStatus.ERROR and "must give a bool, gave int 0" in out.error


async def test_a_router_cel_selector_naming_no_choice_is_an_error():
    choices = [Step("thread", executor=const("T")), Step("article", executor=const("A"))]
    wf = Workflow(id="w", steps=[Router("input", choices=choices)])
    out = await wf.arun("podcast")
    assert out.status is RunStatus.ERROR
    assert out.error == "router: selector: 'podcast' names no choice (choices: thread, article)"
    out = await wf.arun("thread")
    assert out.status is RunStatus.COMPLETED and out.content == "T"
    out = await Workflow(id="w", steps=[Router("input.size()", choices=choices)]).arun("x")
    assert out.status is RunStatus.ERROR and "must give a step name" in out.error


async def test_cel_errors_false_treats_a_failed_evaluation_as_false():
    bad = "session_state.missing == true"
    cond = Condition(bad, steps=[const("then")], else_steps=[const("else")])
    out = await Workflow(id="w", steps=[cond], cel_errors="false").arun()
    assert out.status is RunStatus.COMPLETED and out.content == "else"
    (span,) = [s for s in out.spans if s.kind == "cel"]
    assert span.status == "error" and span.attributes["treated_as"] is False

    loop = Loop(
        steps=[counter()],
        end_condition="step_outputs.missing == true",
        max_iterations=3,
        cel_errors="false",
    )
    out = await Workflow(id="w", steps=[loop]).arun()
    assert out.status is RunStatus.COMPLETED
    assert out.step_outputs[0].metadata == {"iterations": 3, "ended_by": "max_iterations"}

    router = Router("session_state.missing", choices=[const("x")], cel_errors="false")
    out = await Workflow(id="w", steps=[const("before"), router]).arun()
    assert out.status is RunStatus.COMPLETED and out.content == "before"
    assert out.step_outputs[1].skipped

    # a step's own setting overrides the workflow's
    strict = Condition(bad, steps=[const("then")], cel_errors="fail")
    out = await Workflow(id="w", steps=[strict], cel_errors="false").arun()
    assert out.status is RunStatus.ERROR


# --- values across the boundary -------------------------------------------------------------


def test_values_convert_both_ways():
    expr = kcel.compile_cel(
        "x.n + 1 == 3 && x.f > 1.0 && x.b && x.s == 'é' && size(x.l) == 2 && x.raw == b'\\x00'"
        " && x.none == null && x.obj.startsWith('StepOutput')",
        field="f",
        variables=["x"],
        where="test",
    )
    value = {"n": 2, "f": 1.5, "b": True, "s": "é", "l": (1, 2), "raw": b"\x00", "none": None}
    value["obj"] = StepOutput(content="c")
    assert expr.evaluate({"x": value}) is True
    back = kcel.compile_cel("[1, 'a', {'k': [true]}]", field="f", variables=[], where="t")
    assert back.evaluate({}) == [1, "a", {"k": [True]}]


# --- not installed --------------------------------------------------------------------------


async def test_without_cel_python_a_cel_string_says_how_to_install_and_callables_work(monkeypatch):
    monkeypatch.setitem(sys.modules, "celpy", None)  # `import celpy` now fails
    assert not cel_available()
    for build, field in (
        (lambda: Condition("input == 'x'", steps=[const(1)]), "evaluator"),
        (lambda: Loop(steps=[const(1)], end_condition="current_iteration > 1"), "end_condition"),
        (lambda: Router('"a"', choices=[Step("a", executor=const(1))]), "selector"),
    ):
        with pytest.raises(CelNotInstalledError) as err:
            build()
        assert err.value.field == field
        assert "pip install 'leasecron[cel]'" in str(err.value)
        assert isinstance(err.value, ImportError)
    wf = Workflow(
        id="w",
        steps=[
            Condition(lambda si: True, steps=[const("c")]),
            Loop(steps=[const("l")], end_condition=lambda outs: True),
            Router(lambda si: "r", choices=[Step("r", executor=const("routed"))]),
        ],
    )
    out = await wf.arun()
    assert out.status is RunStatus.COMPLETED and out.content == "routed"


def test_the_kernel_imports_and_runs_workflows_without_cel_python():
    script = textwrap.dedent(
        """
        import asyncio, sys
        sys.modules["celpy"] = None
        from leasecron.kernel import Condition, Workflow, CelNotInstalledError
        wf = Workflow(id="w", steps=[Condition(lambda si: False, steps=[lambda si: 1],
                                               else_steps=[lambda si: "no cel needed"])])
        print(asyncio.run(wf.arun()).content)
        try:
            Condition("input == 'x'", steps=[lambda si: 1])
        except CelNotInstalledError as exc:
            print(exc)
        print(sorted(m for m in sys.modules if m == "lark" or m.startswith("celpy.")))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert out[0] == "no cel needed"
    assert out[1].startswith("evaluator: ") and "input == 'x'" in out[1]
    assert "pip install 'leasecron[cel]'" in out[1]
    assert out[2] == "[]"
