"""Session state across `Parallel` branches: each branch gets a deep copy, and their changes
are merged back in branch order (a value no branch changed stays as it was)."""

from __future__ import annotations

import copy
from typing import Any


def copy_state(state: dict[str, Any]) -> dict[str, Any]:
    """A deep copy; a value that cannot be copied (a client, a lock) is shared, not copied."""
    try:
        return copy.deepcopy(state)
    except Exception:
        out = {}
        for key, value in state.items():
            try:
                out[key] = copy.deepcopy(value)
            except Exception:
                out[key] = value
        return out


def merge_state(target: dict[str, Any], base: dict[str, Any], branch: dict[str, Any]) -> None:
    """Apply to `target` what `branch` changed relative to `base`: keys set or changed, keys
    removed, and nested dicts merged key by key (so two branches filling different keys of one
    dict both land, whether that dict was there before the Parallel or a branch created it)."""
    for key, value in branch.items():
        if key in base:
            old = base[key]
            if isinstance(old, dict) and isinstance(value, dict):
                inner = target.get(key)
                if isinstance(inner, dict):
                    merge_state(inner, old, value)
                    continue
            elif _same(old, value):
                continue
        elif isinstance(value, dict):
            inner = target.get(key)
            if isinstance(inner, dict):  # created by an earlier branch too: merge, not replace
                merge_state(inner, {}, value)
                continue
        target[key] = value
    for key in base:
        if key not in branch:
            target.pop(key, None)


def _same(a: Any, b: Any) -> bool:
    """Unchanged: equal and of the same type, all the way down (1 == True == 1.0 in Python, but
    a branch that turned a 1 into True changed it)."""
    if a is b:
        return True
    try:
        return _alike(a, b)
    except Exception:  # an __eq__ that refuses (arrays), a structure too deep: treat as changed
        return False


def _alike(a: Any, b: Any) -> bool:
    if type(a) is not type(b) or not bool(a == b):
        return False
    if isinstance(a, list | tuple):
        return all(x is y or _alike(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return all(a[k] is b[k] or _alike(a[k], b[k]) for k in a)
    return True
