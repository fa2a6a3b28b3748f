"""CEL (Common Expression Language) for workflow decisions: compile once, check variables at build
time, evaluate against plain Python values.

cel-python (`pip install 'leasecron[cel]'`) is imported lazily, inside this module only, so the
kernel imports and runs without it; only a CEL string then fails, with `CelNotInstalledError`
saying how to install it. Compiling (parse and program) costs about as much again as an
evaluation (tests/bench/bench_workflow.py), so a compiled program is cached by its source text
and shared by every workflow that uses the same expression. The free variables of an expression
are read off its syntax tree when it is compiled: a name the decision does not provide is a
`ValidationError` when the workflow is built, not a surprise in the middle of a run. This module
knows nothing of workflows beyond the variable names each decision offers.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import LeasecronError, ValidationError

INSTALL_HINT = "pip install 'leasecron[cel]' (or: pip install cel-python)"

LOOP_VARIABLES = (
    "current_iteration",
    "max_iterations",
    "all_success",
    "last_step_content",
    "step_outputs",
)
CONDITION_VARIABLES = (
    "input",
    "previous_step_content",
    "previous_step_outputs",
    "additional_data",
    "session_state",
)
ROUTER_VARIABLES = (*CONDITION_VARIABLES, "step_choices")

# Names CEL resolves itself (type names for `type(x) == string`); never a missing variable.
_BUILTIN_NAMES = frozenset(
    ("int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type")
)
# Macros that bind their first argument as a loop variable: `list.all(x, x > 0)`.
_MACROS = frozenset(("all", "exists", "exists_one", "map", "filter"))


class CelNotInstalledError(LeasecronError, ImportError):
    """A CEL string was given but cel-python is not installed; `field` names where."""

    def __init__(self, field: str, source: str):
        self.field = field
        super().__init__(
            f"{field}: {source!r} is a CEL expression, which needs cel-python: {INSTALL_HINT}; "
            "or pass a Python callable instead"
        )


class CelEvaluationError(LeasecronError):
    """A CEL expression failed at run time (a missing key, a type mismatch, a wrong result type)."""

    def __init__(self, source: str, message: str):
        self.source = source
        self.message = message
        super().__init__(f"CEL {source!r}: {message}")


def cel_available() -> bool:
    try:
        import celpy  # noqa: F401
    except ImportError:
        return False
    return True


def _import_celpy(field: str, source: str):
    try:
        import celpy
    except ImportError as exc:
        raise CelNotInstalledError(field, source) from exc
    return celpy


@functools.cache
def _environment():
    import celpy

    return celpy.Environment()


@functools.lru_cache(maxsize=1024)
def _compile(source: str) -> tuple[Any, frozenset[str]]:
    """Parse and prepare `source` once; raises celpy's parse error (not cached)."""
    env = _environment()
    tree = env.compile(source)
    return env.program(tree), frozenset(_free_names(tree, frozenset()))


def cache_info():
    """Hits and misses of the compiled-program cache (functools.lru_cache statistics)."""
    return _compile.cache_info()


def clear_cache() -> None:
    _compile.cache_clear()


@dataclass(frozen=True, slots=True)
class CelExpression:
    """A compiled expression, ready to evaluate many times. `names`: the variables it reads."""

    source: str
    field: str
    names: frozenset[str]
    _program: Any

    def evaluate(self, variables: Mapping[str, Any]) -> Any:
        """Evaluate with `variables` (plain Python values, converted here; only the names the
        expression reads are converted). Returns plain Python values; raises CelEvaluationError."""
        import celpy

        try:
            activation = {name: to_cel(variables[name]) for name in self.names}
            result = self._program.evaluate(activation)
        except celpy.CELEvalError as exc:
            raise CelEvaluationError(self.source, _eval_message(exc)) from exc
        except Exception as exc:  # cel-python lets some type errors through as Python errors
            raise CelEvaluationError(self.source, f"{type(exc).__name__}: {exc}") from exc
        if isinstance(result, celpy.CELEvalError):
            raise CelEvaluationError(self.source, _eval_message(result))
        return from_cel(result)


def compile_cel(
    source: str, *, field: str, variables: Collection[str], where: str
) -> CelExpression:
    """Compile `source` for a decision offering `variables`. `field` names the parameter for
    errors, `where` the step it belongs to. Raises CelNotInstalledError or ValidationError."""
    celpy = _import_celpy(field, source)  # before the cache: its absence must always be reported
    if not source.strip():
        raise ValidationError(field, f"{where}: a CEL expression must not be empty")
    try:
        program, names = _compile(source)
    except celpy.CELParseError as exc:
        column = getattr(exc, "column", None)
        at = f" at column {column}" if column else ""
        raise ValidationError(field, f"{where}: CEL syntax error{at} in {source!r}") from exc
    unknown = sorted(names - set(variables))
    if unknown:
        known = ", ".join(variables)
        raise ValidationError(
            field,
            f"{where}: {source!r} uses unknown variable {unknown[0]!r}; "
            f"this expression may use: {known}",
        )
    return CelExpression(source, field, names, program)


def _eval_message(exc: Any) -> str:
    args = getattr(exc, "args", ())
    return str(args[0]) if args else str(exc)


# --- free variables -------------------------------------------------------------------------


def _free_names(node: Any, bound: frozenset[str]) -> set[str]:
    """Identifiers `node` reads that are neither bound by an enclosing macro nor CEL's own."""
    from lark import Token, Tree

    if not isinstance(node, Tree):
        return set()
    rule = node.data
    if rule in ("ident", "dot_ident"):
        name = str(node.children[-1])
        return set() if name in bound or name in _BUILTIN_NAMES else {name}
    if rule == "ident_arg" or rule == "dot_ident_arg":  # a function call: its name is no variable
        return _free_children([c for c in node.children if not isinstance(c, Token)], bound)
    if rule == "member_dot_arg":
        receiver, method, *rest = node.children
        args = rest[0].children if rest and rest[0] is not None else []
        found = _free_names(receiver, bound)
        var = _bare_ident(args[0]) if str(method) in _MACROS and len(args) >= 2 else None
        if var is not None:
            inner = bound | {var}
            for arg in args[1:]:
                found |= _free_names(arg, inner)
            return found
        return found | _free_children(args, bound)
    if rule == "member_object":  # `Type{field: value}`: field names are not variables
        return _free_children(node.children[1:], bound)
    return _free_children(node.children, bound)


def _free_children(children: list[Any], bound: frozenset[str]) -> set[str]:
    found: set[str] = set()
    for child in children:
        found |= _free_names(child, bound)
    return found


def _bare_ident(node: Any) -> str | None:
    from lark import Tree

    while isinstance(node, Tree):
        if node.data == "ident":
            return str(node.children[0])
        subtrees = [c for c in node.children if isinstance(c, Tree)]
        if len(subtrees) != 1 or len(node.children) != 1:
            return None
        node = subtrees[0]
    return None


# --- values across the boundary -------------------------------------------------------------


def to_cel(value: Any) -> Any:
    """A Python value as CEL sees it: JSON-like values map one to one; objects with a `content`
    (a step's output) stand for their content; anything else becomes its string form."""
    from celpy import celtypes

    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, bytes | bytearray):
        return celtypes.BytesType(bytes(value))
    if isinstance(value, Mapping):
        return celtypes.MapType({celtypes.StringType(str(k)): to_cel(v) for k, v in value.items()})
    if isinstance(value, list | tuple | set | frozenset):
        return celtypes.ListType([to_cel(v) for v in value])
    dump = getattr(value, "model_dump", None)  # a pydantic model: its fields
    if callable(dump):
        return to_cel(dump())
    return celtypes.StringType(str(value))


def from_cel(value: Any) -> Any:
    """A CEL result as plain Python (bool before int: CEL's bool is an int subclass)."""
    from celpy import celtypes

    if value is None:
        return None
    if isinstance(value, celtypes.BoolType | bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, Mapping):
        return {from_cel(k): from_cel(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [from_cel(v) for v in value]
    return value
