"""`leasecron run`: one scheduler replica on a store until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from urllib.parse import urlsplit

from ..clock import SystemClock
from ..errors import ValidationError
from ..http.dispatch import HttpDispatcher
from ..observe.eventlog import ReplicaLog, chain
from ..open_store import open_store
from ..scheduler import Scheduler
from .inputs import read_token
from .logs import fire_log, log_to_stderr, say
from .process import stop_on_signals


async def cmd_run(args: argparse.Namespace) -> int:
    for name, value, minimum in (
        ("poll_interval", args.poll_interval, 0.0),
        ("lease_seconds", args.lease_seconds, 0.0),
    ):
        if not value > minimum:
            raise ValidationError(name, f"{value!r} must be > 0")
    if args.max_concurrent < 1:
        raise ValidationError("max_concurrent", f"{args.max_concurrent!r} must be >= 1")
    if not args.retention_days >= 0:
        raise ValidationError("retention_days", f"{args.retention_days!r} must be >= 0")
    base = urlsplit(args.base_url)
    if base.scheme not in ("http", "https") or not base.netloc:
        raise ValidationError("base_url", f"{args.base_url!r} must be an http(s) URL")
    token = read_token(args)
    with log_to_stderr(logging.ERROR if args.quiet else logging.WARNING, args.log_format):
        return await _run_replica(args, token)


async def _run_replica(args: argparse.Namespace, token: str | None) -> int:
    store = open_store(args.db)
    dispatcher = HttpDispatcher(args.base_url, token=token, allowed_hosts=args.allow_host or ())
    clock = SystemClock()
    replica_log = ReplicaLog(clock)
    sched = Scheduler(
        store,
        dispatcher,
        clock=clock,
        replica_id=args.replica_id,
        poll_interval=args.poll_interval,
        lease_seconds=args.lease_seconds,
        max_concurrent=args.max_concurrent,
        on_event=chain(replica_log, fire_log(args, clock, args.log_fires)),
        retention_seconds=args.retention_days * 86_400,
    )
    stop = asyncio.Event()
    try:
        with stop_on_signals(asyncio.get_running_loop(), stop) as received:
            await sched.start()
            say(
                args,
                "started",
                f"leasecron replica {sched.replica_id} running on {args.db} -> {args.base_url} "
                f"(Ctrl-C or SIGTERM to stop)",
                replica=sched.replica_id,
                db=args.db,
                base_url=args.base_url,
            )
            await stop.wait()
            say(args, "stopping", "stopping: waiting for attempts in flight...")
            await sched.stop()
    finally:
        await sched.stop()
        await dispatcher.aclose()
        await store.close()
        replica_log.flush()
    say(
        args,
        "stopped",
        f"stopped; {sched.fired} attempt(s) sent by this replica",
        attempts_sent=sched.fired,
    )
    return 130 if signal.SIGINT in received else 0


# -- serve: an AgentOS (or any ASGI app) under uvicorn -------------------------------------------
