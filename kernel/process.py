"""Process plumbing shared by long-running commands (`run`, `demo`): stop on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal


@contextlib.contextmanager
def stop_on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event):
    """Set `stop` on SIGINT/SIGTERM for the duration of the block (main thread only)."""
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread, or no signal support: Ctrl-C still interrupts
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
