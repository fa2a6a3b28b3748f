"""Blocking work off the event loop: one dedicated worker thread per store connection.

Storage calls must never stall the loop, so a store runs its statements on its own thread. The
count of calls in flight is visible to `SimClock.settle`, which waits for them, so a simulated
test with a threaded store still settles before time moves.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_in_flight = 0


def offloads_in_flight() -> int:
    """How many offloaded calls (of any worker) have not yet returned to their loop."""
    return _in_flight


class tracked:
    """Count work that leaves the event loop (a query on a socket) as in flight, so
    `SimClock.settle` waits for it as it waits for a worker thread's calls."""

    def __enter__(self) -> None:
        global _in_flight
        with _lock:
            _in_flight += 1

    def __exit__(self, *exc: object) -> None:
        global _in_flight
        with _lock:
            _in_flight -= 1


class Worker:
    """A single thread that runs blocking calls in submission order."""

    def __init__(self, name: str):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        global _in_flight
        with _lock:
            _in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            with _lock:
                _in_flight -= 1

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue on the worker thread without waiting (the caller tracks its own result)."""
        return self._executor.submit(fn, *args)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run on the worker thread and wait, from synchronous code (set-up, the CLI)."""
        return self._executor.submit(fn, *args).result()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)
