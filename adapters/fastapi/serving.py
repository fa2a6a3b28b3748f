"""Running an ASGI app under uvicorn for `leasecron serve` (registered as the
`leasecron.servers` entry point `uvicorn`, so the kernel's command finds it without importing
an adapter): on a socket already bound, until asked to stop, with uvicorn's own log lines as JSON
when the command logs JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any

from leasecron.kernel.cli.serve import SERVER_EXTRA, ServeError
from leasecron.kernel.observe.eventlog import JsonFormatter


async def run_uvicorn(
    app: Any,
    sock: socket.socket,
    stop: asyncio.Event,
    *,
    lifespan: str,
    on_started: Callable[[], None],
    log_format: str = "text",
) -> bool:
    """Serve `app` on `sock` until `stop` is set; then shut down (connections, then the app's
    lifespan: an AgentOS's scheduler lets its attempts in flight finish). False when the app
    failed to start (uvicorn has logged why)."""
    try:
        import uvicorn
    except ImportError:
        raise ServeError(f"uvicorn is not installed: {SERVER_EXTRA}") from None

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            # The command handles SIGINT and SIGTERM itself (and exits 130 after a Ctrl-C):
            # uvicorn would re-raise the signal at the end instead.
            yield

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                on_started()

    options: dict[str, Any] = {}
    if log_format == "json":  # uvicorn's own lines as JSON objects too
        options["log_config"] = uvicorn_json_logging()
    server = Server(uvicorn.Config(app, lifespan=lifespan, log_level="info", **options))

    async def stop_when_asked() -> None:
        await stop.wait()
        server.should_exit = True

    # serve() is awaited here, not in a task: a failed startup raises SystemExit, which a task
    # would pass on through the event loop itself.
    watcher = asyncio.ensure_future(stop_when_asked())
    try:
        await server.serve(sockets=[sock])
    except SystemExit:  # uvicorn's answer to a failed startup, logged by it
        return False
    finally:
        watcher.cancel()
    return server.started


def uvicorn_json_logging() -> dict[str, Any]:
    """A logging.config dict sending uvicorn's records to stderr as JSON objects, one a line."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"json": handler},
        "loggers": {
            name: {"handlers": ["json"], "level": "INFO", "propagate": False}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
