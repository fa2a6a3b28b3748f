"""`leasecron serve`: configure the app it names (an AgentOS gets the store, the token and the
fire log), print the banner, and run it until a signal (the plumbing is in `serve.py`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from typing import Any
from urllib.parse import urlsplit

from ..clock import SystemClock
from ..errors import LeasecronError, ValidationError
from ..observe.eventlog import ReplicaLog, chain
from .inputs import TOKEN_ENV, read_token
from .logs import fire_log, log_to_stderr, say
from .process import stop_on_signals
from .serve import DEFAULT_APP, asgi_runner, bound_url, is_agent_os, listen, load_target


def _shown_db(db: Any) -> str:
    """The store as the banner shows it: a URL without its password."""
    if not isinstance(db, str):
        return type(db).__name__
    parts = urlsplit(db) if "://" in db else None
    if parts is None or parts.password is None:
        return db
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _token_source(args: argparse.Namespace, target: Any) -> str:
    if args.token_file is not None:
        return f"required, from --token-file {args.token_file}"
    token = getattr(target, "token", None)
    if token is None:
        return f"none: every request is accepted (set {TOKEN_ENV} or --token-file to require one)"
    if token == os.environ.get(TOKEN_ENV):
        return f"required, from {TOKEN_ENV} (send Authorization: Bearer ${TOKEN_ENV})"
    return "required, set by the app"


def _serve_banner(args: argparse.Namespace, target: Any, url: str) -> list[str]:
    lines = [f"leasecron serve: {args.app_shown} on {url} (Ctrl-C or SIGTERM to stop)"]
    if not is_agent_os(target):
        return lines
    base = getattr(target, "scheduler_base_url", None)
    scheduler = (
        "off (--no-scheduler)"
        if not getattr(target, "run_scheduler", True)
        else f"on, firing through {base}; one line per fire and finish below"
        if base
        else "on, firing in-process through the app's own routes; one line per fire and "
        "finish below"
    )
    db = _shown_db(getattr(target, "db", "?"))
    lines += [
        f"  docs:       {url}/docs",
        f"  schedules:  {url}/schedules  (each one's runs: {url}/schedules/<id>/runs)",
        f"  db:         {db}  (leasecron list | runs --db {db})",
        f"  scheduler:  {scheduler}",
        f"  token:      {_token_source(args, target)}",
    ]
    return lines


async def cmd_serve(args: argparse.Namespace) -> int:
    args.app_shown = args.app or DEFAULT_APP
    # Signals are ours from the start: a Ctrl-C while the app imports or starts stops it cleanly.
    stop = asyncio.Event()
    with stop_on_signals(asyncio.get_running_loop(), stop) as received:
        ok = await _serve(args, stop)
    if not ok:
        raise LeasecronError(f"{args.app_shown} did not start (the reason is logged above)")
    say(args, "stopped", "stopped")
    return 130 if signal.SIGINT in received else 0


async def _serve(args: argparse.Namespace, stop: asyncio.Event) -> bool:
    token = read_token(args) if args.token_file is not None else None
    target = load_target(args.app)
    clock = SystemClock()
    replica_log = ReplicaLog(clock)
    if is_agent_os(target):
        fires = fire_log(args, clock, True)
        overrides = {
            "db": args.db,
            "scheduler": False if args.no_scheduler else None,
            "token": token,
            "on_event": chain(getattr(target, "on_event", None), replica_log, fires),
        }
        configure = getattr(target, "configure", None)
        if configure is None:
            raise ValidationError("--app", f"{args.app_shown} has get_app() but no configure()")
        configure(**overrides)
        app, lifespan = target.get_app(), "on"  # a failed start-up must stop the command
    else:
        given = {"--db": args.db, "--no-scheduler": args.no_scheduler, "--token-file": token}
        for flag, value in given.items():
            if value:
                raise ValidationError(
                    flag,
                    f"applies to an AgentOS; {args.app_shown} is a plain ASGI app "
                    "(point --app at the AgentOS object instead)",
                )
        app, lifespan = target, "auto"
    if stop.is_set():  # interrupted while the app was imported
        return True
    sock = listen(args.host, args.port)
    url = bound_url(sock)

    def started() -> None:
        lines = _serve_banner(args, target, url)
        if args.log_format == "json":
            say(args, "serving", lines[0], url=url, docs=f"{url}/docs")
            return
        for line in lines:
            print(line, flush=True)

    try:
        with log_to_stderr(logging.WARNING, args.log_format):
            run = asgi_runner()
            return await run(
                app, sock, stop, lifespan=lifespan, on_started=started, log_format=args.log_format
            )
    finally:
        sock.close()
        replica_log.flush()


# -- the parser ----------------------------------------------------------------------------------
