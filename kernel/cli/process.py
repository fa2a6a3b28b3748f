"""Process plumbing shared by long-running commands (`run`, `demo`): stop on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator


@contextlib.contextmanager
def stop_on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Iterator[list[int]]:
    """Set `stop` on SIGINT/SIGTERM for the duration of the block (main thread only). Yields the
    list of signals received, so the caller can exit 130 after a Ctrl-C."""
    installed = []
    received: list[int] = []

    def on_signal(sig: int) -> None:
        received.append(sig)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread, or no signal support: Ctrl-C still interrupts
    try:
        yield received
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
