"""Progress of long commands (`prune`, `sim`) on stderr."""

from __future__ import annotations

import sys
import time


class Progress:
    """Progress of long work on stderr, at most one line every `every` seconds of real time
    (and none for work that ends before the first): stdout keeps only the result."""

    def __init__(self, every: float = 2.0):
        self.every = every
        self.started = self.last = time.monotonic()

    def __call__(self, text: str) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            print(f"... {text} ({now - self.started:.0f}s)", file=sys.stderr, flush=True)
