"""`leasecron serve`'s plumbing: find the app it names (`module:attr` or `path.py:attr`; an
AgentOS, recognised by its get_app(), or any ASGI app), listen on the address, and find the ASGI
server that runs it until a signal.

The kernel imports neither uvicorn nor FastAPI (nor ever the adapters by name): the app comes
through importlib, the server runner through the `leasecron.servers` entry point.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from ..errors import LeasecronError, ValidationError

DEFAULT_APP = "examples/agentos_app.py:agent_os"
SERVER_EXTRA = "pip install 'leasecron[server]'"
# Packages of the `server` extra: an app that fails to import one of them needs the extra.
SERVER_PACKAGES = frozenset({"fastapi", "starlette", "uvicorn", "multipart", "python_multipart"})


class ServeError(LeasecronError):
    """The app could not be loaded or run (not a bad flag: exit 1)."""


def project_root() -> Path:
    """The folder holding the kernel's folder: where `examples/` is in a checkout."""
    return Path(__file__).resolve().parents[2]  # kernel/cli/serve.py


def is_agent_os(target: Any) -> bool:
    return callable(getattr(target, "get_app", None))


def load_target(spec: str | None) -> Any:
    """The object `spec` names: `module:attr` (imported with the current directory on the
    path, as `python -m` would) or `path.py:attr` (the file imported under its stem, its folder
    on the path). None: DEFAULT_APP, relative to the project root."""
    default = spec is None
    spec = DEFAULT_APP if default else spec
    ref, sep, attr = spec.rpartition(":")
    if not sep or not ref or not attr.isidentifier():
        raise ValidationError("--app", f"{spec!r} must be module:attr or path.py:attr")
    if ref.endswith(".py") or "/" in ref or os.sep in ref:
        path = (project_root() / ref) if default else Path(ref)
        if not path.is_file():
            if default:
                raise ValidationError(
                    "--app",
                    f"the default app {ref} is not at {path} (no examples/ folder next "
                    "to the kernel): give --app module:attr or path.py:attr",
                )
            raise ValidationError("--app", f"no such file: {ref}")
        module = _import_file(path, spec)
    else:
        module = _import_module(ref, spec)
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise ValidationError("--app", f"{ref} has no attribute {attr!r}") from None
    if not is_agent_os(target) and not callable(target):
        raise ValidationError(
            "--app",
            f"{spec} is a {type(target).__name__}, not an AgentOS (an object with get_app()) "
            "or an ASGI app",
        )
    return target


def _import_file(path: Path, spec: str) -> Any:
    path = path.resolve()
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # its sibling modules import as they do under `python file`
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) != str(path):
        name = f"_leasecron_app_{name}"  # never shadow a module of that name (a json.py)
    found = importlib.util.spec_from_file_location(name, path)
    if found is None or found.loader is None:
        raise ValidationError("--app", f"{path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module
    try:
        _run_import(lambda: found.loader.exec_module(module), spec, None)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _import_module(name: str, spec: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    return _run_import(lambda: importlib.import_module(name), spec, name)


def _run_import(load: Callable[[], Any], spec: str, name: str | None) -> Any:
    try:
        return load()
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if name is not None and (name == missing or name.startswith(missing + ".")):
            raise ValidationError("--app", f"no module named {missing!r}") from None
        if missing.split(".")[0] in SERVER_PACKAGES:
            raise ServeError(
                f"{spec} needs {missing}, which is not installed: {SERVER_EXTRA}"
            ) from None
        raise ServeError(f"importing {spec} failed: {exc}") from exc


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port), bound before the app starts so
    the address is known, and taken, at once."""
    if not 0 <= port <= 65_535:
        raise ValidationError("--port", f"{port!r} must be 0-65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ValidationError("--host", f"{host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    # The protocol is given (IPPROTO_TCP, not 0): asyncio sets TCP_NODELAY only on accepted
    # sockets that say they are TCP. Without it a response written in two parts waits for the
    # client's delayed ACK, about 40 ms a request.
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise ValidationError("--port", f"cannot listen on {host}:{port}: {reason}") from None
    return sock


def bound_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def asgi_runner() -> Callable[..., Awaitable[bool]]:
    """The installed ASGI server runner (the `leasecron.servers` entry point the server extra's
    adapter registers, as stores are found by scheme): called as
    `await run(app, sock, stop, lifespan=..., on_started=..., log_format=...)`, True once the app
    ran and stopped, False when it failed to start."""
    found = entry_points(group="leasecron.servers", name="uvicorn")
    if not found:
        raise ServeError(f"no ASGI server is installed: {SERVER_EXTRA}")
    try:
        return next(iter(found)).load()
    except ImportError as exc:
        raise ServeError(f"{exc.name or 'the server'} is not installed: {SERVER_EXTRA}") from None
