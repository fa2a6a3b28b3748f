"""Calling what a user gave a step: sync or async (a sync function runs in a thread), with only
the keyword arguments it accepts, and bounded by a timeout on the injected clock."""

from __future__ import annotations

import asyncio
import functools
import inspect
import weakref
from collections.abc import Callable
from typing import Any

from ..clock import Clock
from ..errors import LeasecronError
from ..offload import tracked


class StepTimeoutError(LeasecronError, TimeoutError):
    def __init__(self, seconds: float):
        self.seconds = seconds
        super().__init__(f"timed out after {seconds:g} s")


def is_async(fn: Any) -> bool:
    """Whether calling `fn` gives a coroutine: an async function, a partial of one, or an object
    with an async __call__. Anything else is called in a worker thread."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = inspect.getattr_static(type(fn), "__call__", None)
    return inspect.iscoroutinefunction(call)


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)` in a worker thread. Counted as work in flight while awaited, so a
    SimClock settles after it (a sync call takes no simulated time); once the await is
    cancelled (a timeout, a cancelled run) the thread is abandoned and no longer counted."""
    with tracked():
        return await asyncio.to_thread(fn, *args, **kwargs)


# function -> its parameter names, or ANY (it takes **kwargs), or () (no signature): reading a
# signature costs more than most steps, and the engine asks before every save.
_PARAMS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_ANY = object()


def _param_names(fn: Any) -> Any:
    # A bound method's names are its function's (plus self): cached on the function, so no
    # bound method (nor the object it is bound to) is kept alive by the cache.
    key = getattr(fn, "__func__", fn)
    if inspect.isfunction(key):
        found = _PARAMS.get(key)
        if found is not None:
            return found
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        found = ()
    else:
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            found = _ANY
        else:
            found = frozenset(params)
    if inspect.isfunction(key):
        _PARAMS[key] = found
    return found


def accepted_kwargs(fn: Any, names: tuple[str, ...]) -> tuple[str, ...]:
    params = _param_names(fn)
    if params is _ANY:
        return names
    return tuple(n for n in names if n in params)


async def with_timeout(clock: Clock, seconds: float, work: Any) -> Any:
    """Await `work`, cancelling it if `seconds` of `clock` time pass first (StepTimeoutError).
    Measured on the run's clock rather than the loop's, so a simulated clock decides it."""
    task = asyncio.ensure_future(work)
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        done, _ = await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        timer.cancel()
        await _unwind(task)
        raise
    timer.cancel()
    if task in done:
        return task.result()
    await _unwind(task)
    raise StepTimeoutError(seconds)


async def _unwind(task: asyncio.Future) -> None:
    """Cancel `task` and wait until it has finished, so its spans close before its parent's."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: it failed while being cancelled; the timeout is the error
