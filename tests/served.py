"""A `leasecron serve` process for tests: started on a loopback port, its stdout read as it
comes (both pipes drained, so a chatty server never blocks), stopped by a signal."""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

DEADLINE = 60.0  # seconds any awaited event may take on a loaded box


def free_port() -> int:
    """A port free a moment ago (for a server whose address must be known before it starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LEASECRON_TOKEN", "LEASECRON_DB")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Served:
    """`leasecron serve ARGS` in a subprocess; its stdout lines collected as they come."""

    def __init__(
        self,
        *args: str,
        cwd: Path,
        port: int = 0,
        env: dict[str, str] | None = None,
        banner_end: str | None = r"^  token: ",
    ):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "leasecron.kernel.cli", "serve", "--port", str(port), *args],
            cwd=cwd,
            env={**clean_env(), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._err: list[str] = []
        # Both pipes are drained all along: a full stderr pipe would block the server.
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=lambda: self._err.extend(self.proc.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        banner = self.wait_for(r" on (http://\S+) \(Ctrl-C")
        self.url = banner.group(1)
        if banner_end is not None:  # an AgentOS's banner goes on with where to look
            self.wait_for(banner_end)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first stdout line (already seen or still to come) matching `pattern`."""
        for line in self.lines:
            if found := re.search(pattern, line):
                return found
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                line = self._new.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                break
            if line is None:
                self.proc.wait(timeout=DEADLINE)
                self._readers[1].join(timeout=DEADLINE)
                err = "".join(self._err)
                raise AssertionError(f"serve ended before {pattern!r}:\n{self.out()}\n{err}")
            self.lines.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(f"no line matching {pattern!r} within {DEADLINE}s:\n{self.out()}")

    def out(self) -> str:
        return "\n".join(self.lines)

    def stop(self, sig: int) -> tuple[int, str]:
        """Send `sig`; the exit code and stderr."""
        self.proc.send_signal(sig)
        self.proc.wait(timeout=DEADLINE)
        while (line := self._new.get(timeout=DEADLINE)) is not None:
            self.lines.append(line)
        self._readers[1].join(timeout=DEADLINE)
        return self.proc.returncode, "".join(self._err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def until(what: str, probe):
    """Call `probe` until it returns something truthy; fail after DEADLINE seconds."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {DEADLINE}s")
