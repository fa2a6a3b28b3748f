"""The `leasecron` command line: run a replica, manage schedules in a SQLite file, inspect runs,
and a self-contained demo (a local HTTP target, several replicas on one file, an exactly-once
report checked against what the target actually received).

    leasecron run   --db PATH --base-url URL [--token-file F] [--log-fires] [--quiet] ...
    leasecron add   NAME --endpoint /agents/x/runs (--cron EXPR | --interval S | --run-at T) ...
    leasecron list  [--enabled | --disabled]
    leasecron show  NAME_OR_ID | --run RUN_ID
    leasecron pause | resume | trigger | rm  NAME_OR_ID
    leasecron runs  [NAME_OR_ID] [--limit 20]
    leasecron demo  [--seconds 20] [--replicas 2] [--db PATH]
    leasecron sim   [--seed S] [--seeds N] [--hours H] [--faults ...] [--store URL] ...
    leasecron serve [--app module:attr | path.py:attr] [--db PATH_OR_URL] [--port 7777] ...

Bad input (a ValidationError, a duplicate name, an unknown schedule) prints the flag and the
rule on stderr and exits 2; a storage failure exits 1; Ctrl-C exits 130, a closed output pipe
ends quietly. `list`, `show` and `runs` only read: they open a SQLite file read-only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import re
import signal
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from ..clock import SystemClock
from ..cron import load_timezone
from ..errors import (
    LeasecronError,
    ScheduleExistsError,
    ScheduleNotFoundError,
    StoreError,
    ValidationError,
)
from ..fmt import (
    fmt_duration,
    iso_local,
    iso_utc,
    kind_of,
    runs_table,
    short_id,
    table,
)
from ..http.dispatch import HttpDispatcher
from ..manager import ScheduleManager
from ..model import IF_EXISTS, MISFIRE_POLICIES, OVERLAP_POLICIES, Schedule
from ..observe.eventlog import JsonEventLog, JsonFormatter, ReplicaLog, chain
from ..observe.status import cluster_status, render_status
from ..open_store import open_store
from ..scheduler import Scheduler
from ..sim.simulation import ALL_FAULTS, FAULTS, SimConfig, simulate
from .demo import cmd_demo
from .process import stop_on_signals
from .serve import DEFAULT_APP, asgi_runner, bound_url, is_agent_os, listen, load_target

PROG = "leasecron"
DEFAULT_DB = "leasecron.db"
TOKEN_ENV = "LEASECRON_TOKEN"

# Commands that only read: a SQLite file is opened read-only (never created or migrated).
_READ_ONLY = frozenset({"list", "show", "runs", "status"})
# Commands that act on existing schedules: a SQLite path that does not exist is an error.
_NEED_FILE = _READ_ONLY | {"pause", "resume", "trigger", "rm", "prune"}

# Kernel field names whose flag is named differently (the rest are the flag's dest).
_FIELD_DEST = {
    "interval_seconds": "interval",
    "retry_delay_seconds": "retry_delay",
    "timeout_seconds": "timeout",
    "jitter_seconds": "jitter",
    "cron_expr": "cron",
}

# Schedule fields holding epoch seconds: shown as ISO 8601 by `show`.
_TIME_FIELDS = frozenset(
    {
        "run_at",
        "start_at",
        "next_run_at",
        "due_at",
        "locked_at",
        "lease_expires_at",
        "last_run_at",
        "created_at",
        "updated_at",
    }
)


# -- input parsing -------------------------------------------------------------------------------


def parse_run_at(text: str, tz: str | None) -> float:
    """Epoch seconds, or ISO 8601; a naive ISO time is read in `tz` (default UTC)."""
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ValidationError("run_at", f"{text!r} must be finite")
        return value
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            "run_at", f"{text!r} is neither epoch seconds nor ISO 8601 (2030-01-31T09:00:00Z)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=load_timezone(tz or "UTC"))
    return dt.timestamp()


def parse_payload(text: str) -> Any:
    """JSON text, or @PATH: the JSON in that file."""
    where = ""
    if text.startswith("@"):
        path = text[1:]
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationError("payload", f"cannot read {path}: {_reason(exc)}") from None
        where = f"{path}: "
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValidationError("payload", f"{where}not valid JSON: {exc}") from None


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def read_token(args: argparse.Namespace) -> str | None:
    """The bearer token: --token-file (its trailing newline stripped), --token, or the
    LEASECRON_TOKEN environment variable; a file or variable keeps the secret out of `ps`."""
    if args.token_file is not None:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationError(
                "--token-file", f"cannot read {args.token_file}: {_reason(exc)}"
            ) from None
        source = "--token-file"
        if not token.strip():
            raise ValidationError("--token-file", f"{args.token_file} is empty")
    elif args.token is not None:
        token, source = args.token, "--token"
    else:
        token, source = os.environ.get(TOKEN_ENV) or None, TOKEN_ENV
    if token is not None and ("\n" in token or "\r" in token):
        raise ValidationError(source, "the token must be one line")
    return token


async def resolve(manager: ScheduleManager, key: str) -> Schedule:
    """A schedule by id, by name, or by a unique id prefix (the short id of `list`)."""
    schedule = await manager.get(key) or await manager.get_by_name(key)
    if schedule is not None:
        return schedule
    if len(key) >= 4:
        matches = [s for s in await manager.list() if s.id.startswith(key)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(s.name for s in matches)
            raise ValidationError("schedule", f"id prefix {key!r} is ambiguous: {names}")
    raise ScheduleNotFoundError(key)


# -- commands on the schedule table --------------------------------------------------------------


async def cmd_add(args: argparse.Namespace, manager: ScheduleManager) -> int:
    fields_: dict[str, Any] = {}
    if args.cron is not None:
        fields_["cron"] = args.cron
    if args.interval is not None:
        fields_["interval_seconds"] = args.interval
    if args.run_at is not None:
        fields_["run_at"] = parse_run_at(args.run_at, args.timezone)
    if args.payload is not None:
        fields_["payload"] = parse_payload(args.payload)
    optional = {
        "timezone": args.timezone,
        "max_retries": args.max_retries,
        "retry_delay_seconds": args.retry_delay,
        "timeout_seconds": args.timeout,
        "overlap": args.overlap,
        "misfire": args.misfire,
        "jitter_seconds": args.jitter,
        "method": args.method,
        "description": args.description,
    }
    fields_.update({k: v for k, v in optional.items() if v is not None})
    before = await manager.get_by_name(args.name)
    schedule = await manager.create(
        args.name, endpoint=args.endpoint, if_exists=args.if_exists, **fields_
    )
    if before is None:
        verb = "created"
    elif args.if_exists == "skip":
        verb = "exists, skipped"
    else:
        verb = "updated" if schedule.updated_at != before.updated_at else "unchanged"
    print(f"{verb}: {schedule.name} (id {schedule.id})")
    print(f"  {kind_of(schedule)}  ->  {schedule.method} {schedule.endpoint}")
    print(
        f"  next run: {iso_utc(schedule.next_run_at)}"
        f"  ({iso_local(schedule.next_run_at, schedule.timezone)} {schedule.timezone})"
    )
    return 0


async def cmd_list(args: argparse.Namespace, manager: ScheduleManager) -> int:
    enabled = True if args.enabled else False if args.disabled else None
    schedules = await manager.list(enabled)
    if not schedules:
        print("no schedules")
        return 0
    rows = [
        (
            s.name,
            short_id(s.id),
            kind_of(s),
            s.timezone,
            "yes" if s.enabled else "no (quarantined)" if s.disabled_reason else "no",
            iso_utc(s.next_run_at) if s.enabled else "(disabled)",
            iso_local(s.next_run_at, s.timezone) if s.enabled else "(disabled)",
            s.last_status or "-",
            s.consecutive_failures,
        )
        for s in schedules
    ]
    headers = ("NAME", "ID", "KIND", "TZ", "ENABLED", "NEXT RUN (UTC)", "NEXT RUN (TZ)")
    headers = (*headers, "LAST STATUS", "FAILURES")
    if any(s.user_id is not None for s in schedules):  # a multi-user server's file: who owns it
        headers = (*headers, "OWNER")
        rows = [(*row, s.user_id or "-") for row, s in zip(rows, schedules, strict=True)]
    print(table(headers, rows))
    for s in schedules:  # rows the kernel took out of the pool, and why, in full
        if s.disabled_reason:
            print(f"{s.name}: disabled by leasecron: {s.disabled_reason}")
    return 0


def _show_value(s: Schedule, name: str, value: Any) -> str:
    if value is None:
        return "-"
    if name in _TIME_FIELDS:
        return f"{iso_utc(value, ms=True)}  ({iso_local(value, s.timezone)})  [{value:.3f}]"
    if name == "payload":
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


async def cmd_show(args: argparse.Namespace, manager: ScheduleManager) -> int:
    if (args.schedule is None) == (args.run is None):
        raise ValidationError("--run", "give a schedule NAME_OR_ID or --run RUN_ID (one of them)")
    if args.run is not None:
        return await show_run(args.run, manager)
    s = await resolve(manager, args.schedule)
    width = max(len(f.name) for f in fields(Schedule))
    print(f"{'kind':<{width}}  {kind_of(s)}")
    for f in fields(Schedule):
        print(f"{f.name:<{width}}  {_show_value(s, f.name, getattr(s, f.name))}")
    runs = await manager.runs(s.id, 5)
    print()
    print("last 5 runs (oldest first):" if runs else "no runs yet")
    if runs:
        print(runs_table(runs[::-1], {s.id: s.name}))
    return 0


_RUN_TIME_FIELDS = frozenset(
    {"scheduled_for", "due_at", "triggered_at", "completed_at", "created_at"}
)


async def show_run(key: str, manager: ScheduleManager) -> int:
    """One run row whole: every field, the error and the output in full."""
    run = await manager.store.get_run(key)
    if run is None and len(key) >= 4:
        # the short id of `runs`: a unique prefix among the newest rows
        matches = [r for r in await manager.store.list_runs(None, 100_000) if r.id.startswith(key)]
        if len(matches) > 1:
            raise ValidationError("--run", f"run id prefix {key!r} is ambiguous")
        run = matches[0] if matches else None
    if run is None:
        raise ValidationError("--run", f"no run with id {key!r}")
    schedule = await manager.get(run.schedule_id)
    width = max(len(f.name) for f in fields(run))
    print(f"{'schedule':<{width}}  {schedule.name if schedule else '(deleted)'}")
    for f in fields(run):
        value = getattr(run, f.name)
        if value is None:
            text = "-"
        elif f.name in _RUN_TIME_FIELDS:
            text = f"{iso_utc(value, ms=True)}  [{value:.3f}]"
        elif f.name in ("error", "output", "input") or not isinstance(value, str | int | float):
            text = value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True)
            text = text.replace("\n", "\n" + " " * (width + 2))
        else:
            text = f"{value:g}" if isinstance(value, float) else str(value)
        print(f"{f.name:<{width}}  {text}")
    return 0


async def cmd_pause(args: argparse.Namespace, manager: ScheduleManager) -> int:
    s = await resolve(manager, args.schedule)
    was = s.enabled
    s = await manager.disable(s.id)
    print(f"{'paused' if was else 'already paused'}: {s.name} (id {s.id})")
    return 0


async def cmd_resume(args: argparse.Namespace, manager: ScheduleManager) -> int:
    s = await resolve(manager, args.schedule)
    was = s.enabled
    s = await manager.enable(s.id)
    print(
        f"{'already enabled' if was else 'resumed'}: {s.name} (id {s.id}); "
        f"next run {iso_utc(s.next_run_at)}"
    )
    return 0


async def cmd_trigger(args: argparse.Namespace, manager: ScheduleManager) -> int:
    s = await resolve(manager, args.schedule)
    print(await manager.trigger(s.id))
    return 0


async def cmd_rm(args: argparse.Namespace, manager: ScheduleManager) -> int:
    s = await resolve(manager, args.schedule)
    if not await manager.delete(s.id):
        raise ScheduleNotFoundError(args.schedule)
    print(f"deleted: {s.name} (id {s.id})")
    return 0


async def cmd_status(args: argparse.Namespace, manager: ScheduleManager) -> int:
    status = await cluster_status(manager, await manager.now(), window=args.window_minutes * 60)
    if args.json:
        print(json.dumps(status.as_dict(), indent=2))
    else:
        print(render_status(status))
    return 0


async def cmd_runs(args: argparse.Namespace, manager: ScheduleManager) -> int:
    if args.limit < 1:
        raise ValidationError("limit", f"{args.limit!r} must be >= 1")
    names = {s.id: s.name for s in await manager.list()}
    if args.schedule is None:
        runs = await manager.store.list_runs(None, args.limit)
    else:
        try:
            schedule_id = (await resolve(manager, args.schedule)).id
        except ScheduleNotFoundError:
            # A deleted schedule's history stays: accept its full id if it has runs.
            if not await manager.runs(args.schedule, 1):
                raise
            schedule_id = args.schedule
        runs = await manager.runs(schedule_id, args.limit)
    if not runs:
        print("no runs")
        return 0
    print(runs_table(runs[::-1], names))  # the newest N, oldest first: read like a log
    return 0


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


async def cmd_prune(args: argparse.Namespace, manager: ScheduleManager) -> int:
    if not args.older_than_days >= 0:
        raise ValidationError("older_than_days", f"{args.older_than_days!r} must be >= 0")
    progress = Progress()
    deleted = await manager.prune_runs(
        args.older_than_days * 86_400,
        on_progress=lambda n: progress(f"{n} run rows deleted so far"),
    )
    print(f"deleted {deleted} finished run(s) older than {args.older_than_days:g} day(s)")
    return 0


def _sim_store(url: str, path: str, **options: Any) -> Any:
    # the simulation's file path is for SQLite; a URL store is opened on the URL instead
    return open_store(url, **options)


async def cmd_sim(args: argparse.Namespace) -> int:
    if args.faults == "all":
        faults = ALL_FAULTS
    elif args.faults == "none":
        faults = frozenset()
    else:
        faults = frozenset(f.strip() for f in args.faults.split(",") if f.strip())
        unknown = sorted(faults - ALL_FAULTS)
        if unknown:
            raise ValidationError("faults", f"unknown {unknown}; choose from {', '.join(FAULTS)}")
    for name in ("replicas", "schedules", "seeds"):
        if getattr(args, name) < 1:
            raise ValidationError(name, f"{getattr(args, name)!r} must be >= 1")
    failed = 0
    for seed in range(args.seed, args.seed + args.seeds):
        config = SimConfig(
            seed=seed,
            replicas=args.replicas,
            schedules=args.schedules,
            hours=args.hours,
            faults=faults,
            fault_rate=args.fault_rate,
            min_interval=args.min_interval,
        )
        progress = Progress()
        config.on_progress = lambda hours, sent, seed=seed, progress=progress: progress(
            f"seed {seed}: {hours:g} of {args.hours:g} simulated hours, {sent} requests sent"
        )
        if args.store:
            schema = f"sim_{seed}_{uuid.uuid4().hex[:8]}"
            # The simulated clock drives every statement: the store must not use its own.
            config.store_factory = functools.partial(
                _sim_store, args.store, schema=schema, time_authority="local"
            )
            print(f"store: {args.store} schema {schema}", flush=True)
        result = await simulate(config)
        print(result.report(), flush=True)
        if result.violations:
            failed += 1
            # the earliest violating slot is the one to replay first
            first = min(result.violations, key=lambda v: (v.slot is None, v.slot or 0.0))
            print(
                f"replay: leasecron sim --seed {seed} --replicas {args.replicas} "
                f"--schedules {args.schedules} --hours {args.hours:g} --faults {args.faults} "
                f"--fault-rate {args.fault_rate:g} --min-interval {args.min_interval:g}"
                f"  (first violating slot: {first})"
            )
    return 1 if failed else 0


# -- run: one replica until a signal -----------------------------------------------------------


class FireLog:
    """`--log-fires`: one line on stdout per fire and per finish (warnings go to the log)."""

    def __init__(self, out: Callable[[str], None]):
        self.out = out
        self.fires: dict[str, dict[str, Any]] = {}

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event == "fire":
            self.fires[data["run_row_id"]] = data
            slot = iso_utc(data["scheduled_for"], ms=True) if data["scheduled_for"] else "-"
            self.out(
                f"{iso_utc(data['at'], ms=True)}  fire    {data['name']}  "
                f"attempt={data['attempt']} trigger={data['trigger']} slot={slot} "
                f"run={short_id(data['run_row_id'])} replica={data['replica']}"
            )
        elif event == "finish":
            fire = self.fires.pop(data["run_row_id"], {})
            took = (data["at"] - fire["at"]) * 1000 if "at" in fire else None
            extra = f" retry_at={iso_utc(data['retry_at'], ms=True)}" if data["retry_at"] else ""
            if not data["recorded"]:
                extra += " (not recorded: lease lost)"
            self.out(
                f"{iso_utc(data['at'], ms=True)}  finish  {fire.get('name', data['schedule_id'])}  "
                f"status={data['status']} took={fmt_duration(took)} "
                f"run={short_id(data['run_row_id'])}{extra}"
            )


def _print_flush(line: str) -> None:
    print(line, flush=True)


class _UtcFormatter(logging.Formatter):
    """Record times as ISO 8601 UTC with milliseconds, like every other time the CLI prints."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


@contextlib.contextmanager
def log_to_stderr(level: int, log_format: str = "text") -> Iterator[None]:
    """The "leasecron" loggers' records at `level` and up, one line each on stderr (a JSON
    object each with log_format="json")."""
    logger = logging.getLogger("leasecron")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_UtcFormatter("%(asctime)s %(levelname)s %(message)s"))
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _fire_log(args: argparse.Namespace, clock: SystemClock, fires: bool) -> Any:
    """The fire/finish lines of `run --log-fires` and `serve`: text, or JSON objects."""
    if args.log_format == "json":
        return JsonEventLog(_print_flush, clock, fires=fires)
    return FireLog(_print_flush) if fires else None


def _say(args: argparse.Namespace, event: str, text: str, **fields: Any) -> None:
    """A status line on stdout: the text, or a JSON object under --log-format json."""
    if args.log_format == "json":
        print(json.dumps({"event": event, "message": text, **fields}), flush=True)
    else:
        print(text, flush=True)


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
        on_event=chain(replica_log, _fire_log(args, clock, args.log_fires)),
        retention_seconds=args.retention_days * 86_400,
    )
    stop = asyncio.Event()
    try:
        with stop_on_signals(asyncio.get_running_loop(), stop) as received:
            await sched.start()
            _say(
                args,
                "started",
                f"leasecron replica {sched.replica_id} running on {args.db} -> {args.base_url} "
                f"(Ctrl-C or SIGTERM to stop)",
                replica=sched.replica_id,
                db=args.db,
                base_url=args.base_url,
            )
            await stop.wait()
            _say(args, "stopping", "stopping: waiting for attempts in flight...")
            await sched.stop()
    finally:
        await sched.stop()
        await dispatcher.aclose()
        await store.close()
        replica_log.flush()
    _say(
        args,
        "stopped",
        f"stopped; {sched.fired} attempt(s) sent by this replica",
        attempts_sent=sched.fired,
    )
    return 130 if signal.SIGINT in received else 0


# -- serve: an AgentOS (or any ASGI app) under uvicorn -------------------------------------------


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
    _say(args, "stopped", "stopped")
    return 130 if signal.SIGINT in received else 0


async def _serve(args: argparse.Namespace, stop: asyncio.Event) -> bool:
    token = read_token(args) if args.token_file is not None else None
    target = load_target(args.app)
    clock = SystemClock()
    replica_log = ReplicaLog(clock)
    if is_agent_os(target):
        fire_log = _fire_log(args, clock, True)
        overrides = {
            "db": args.db,
            "scheduler": False if args.no_scheduler else None,
            "token": token,
            "on_event": chain(getattr(target, "on_event", None), replica_log, fire_log),
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
            _say(args, "serving", lines[0], url=url, docs=f"{url}/docs")
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


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="leasecron: a lease-based scheduler for agent services."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        default=DEFAULT_DB,
        metavar="PATH_OR_URL",
        help=f"a SQLite file, or a store URL such as postgresql://user@host/db "
        f"(default: {DEFAULT_DB})",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", parents=[common], help="run one scheduler replica until a signal")
    p.add_argument("--base-url", required=True, help="where endpoints are called, e.g. AgentOS")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument(
        "--token-file",
        metavar="PATH",
        help=f"file holding the bearer token sent with every call (or set {TOKEN_ENV})",
    )
    secret.add_argument(
        "--token", help=f"bearer token (visible in ps: prefer --token-file or {TOKEN_ENV})"
    )
    p.add_argument("--replica-id", help="this replica's name (default: host-pid-random)")
    p.add_argument("--poll-interval", type=_number, default=1.0)
    p.add_argument("--lease-seconds", type=_number, default=30.0)
    p.add_argument("--max-concurrent", type=int, default=10)
    p.add_argument(
        "--allow-host",
        action="append",
        metavar="HOST",
        help="host (or host:port) absolute endpoint URLs may call; repeatable",
    )
    p.add_argument("--log-fires", action="store_true", help="print one line per fire and finish")
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text lines, or one JSON object per line (fires, finishes, warnings, status)",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="log errors only (default: also warnings: failed attempts, lost leases)",
    )
    p.add_argument("--retention-days", type=_number, default=30.0, help="0 keeps all run rows")

    p = sub.add_parser("add", parents=[common], help="create a schedule")
    p.add_argument("name")
    p.add_argument("--endpoint", required=True, help="path like /agents/x/runs, or an http URL")
    timing = p.add_mutually_exclusive_group()
    timing.add_argument("--cron", metavar="EXPR", help='cron expression, e.g. "*/5 * * * *"')
    timing.add_argument("--interval", type=_number, metavar="SECONDS")
    timing.add_argument(
        "--run-at", metavar="WHEN", help="one-off: epoch seconds or ISO 8601 (naive: --timezone)"
    )
    p.add_argument(
        "--payload", metavar="JSON", help="JSON object sent with every call, or @FILE to read it"
    )
    p.add_argument("--timezone", metavar="TZ", help="IANA zone for cron (default UTC)")
    p.add_argument("--max-retries", type=int, metavar="N")
    p.add_argument("--retry-delay", type=_number, metavar="S")
    p.add_argument("--timeout", type=_number, metavar="S")
    p.add_argument("--overlap", choices=OVERLAP_POLICIES)
    p.add_argument("--misfire", choices=MISFIRE_POLICIES)
    p.add_argument("--jitter", type=_number, metavar="S")
    p.add_argument("--method", help="HTTP method (default POST)")
    p.add_argument("--description", metavar="TEXT")
    p.add_argument("--if-exists", choices=IF_EXISTS, default="raise")
    p.add_argument(
        "--allow-host",
        action="append",
        metavar="HOST",
        help="host (or host:port) an absolute --endpoint URL may name; repeatable "
        "(the replicas' `run --allow-host` must allow it too)",
    )

    p = sub.add_parser("list", parents=[common], help="list schedules")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--enabled", action="store_true", help="only enabled schedules")
    which.add_argument("--disabled", action="store_true", help="only disabled schedules")

    p = sub.add_parser(
        "show", parents=[common], help="all fields of a schedule and its last 5 runs, or of a run"
    )
    p.add_argument("schedule", metavar="NAME_OR_ID", nargs="?")
    p.add_argument("--run", metavar="RUN_ID", help="one run row whole (id or the short id of runs)")

    for name, text in (
        ("pause", "disable a schedule (pending triggers and retries are cancelled)"),
        ("resume", "enable a schedule from its next slot"),
        ("trigger", "queue a run now; prints the pending run id"),
        ("rm", "delete a schedule (its run history stays)"),
    ):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("schedule", metavar="NAME_OR_ID")

    p = sub.add_parser(
        "status", parents=[common], help="replicas, leases, overdue schedules, recent failures"
    )
    p.add_argument("--window-minutes", type=_number, default=60, help="history summarised")
    p.add_argument("--json", action="store_true", help="the same as one JSON object")

    p = sub.add_parser("runs", parents=[common], help="the newest runs, oldest first")
    p.add_argument("schedule", metavar="NAME_OR_ID", nargs="?")
    p.add_argument("--limit", type=int, default=20)

    p = sub.add_parser("prune", parents=[common], help="delete finished runs older than N days")
    p.add_argument("--older-than-days", type=_number, required=True, metavar="DAYS")

    p = sub.add_parser("sim", help="deterministic simulation with faults and an invariant check")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--schedules", type=int, default=24)
    p.add_argument("--hours", type=_number, default=2.0, help="simulated hours of faults")
    p.add_argument("--faults", default="all", help=f"all, none, or a list of: {','.join(FAULTS)}")
    p.add_argument("--fault-rate", type=_number, default=1.0)
    p.add_argument(
        "--min-interval",
        type=_number,
        default=20.0,
        help="the densest interval schedule, seconds (lower fires more)",
    )
    p.add_argument("--seeds", type=int, default=1, help="run this many seeds from --seed on")
    p.add_argument(
        "--store",
        metavar="URL",
        help="run on this store instead of a temporary SQLite file, e.g. postgresql://... "
        "(each run gets a new schema, kept for inspection)",
    )

    p = sub.add_parser("demo", help="local target + replicas + an exactly-once report")
    p.add_argument("--seconds", type=_number, default=20.0)
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--db", default=None, help="SQLite file (default: a new temporary file)")
    p.add_argument(
        "--grace",
        type=_number,
        default=None,
        help="seconds attempts in flight may finish at stop (default: min(2, seconds/10))",
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the flaky target")
    p = sub.add_parser("serve", help="serve an AgentOS (default: the demo app) with its scheduler")
    p.add_argument(
        "--app",
        metavar="TARGET",
        help="module:attr or path.py:attr naming an AgentOS or an ASGI app "
        "(default: examples/agentos_app.py:agent_os in the project)",
    )
    p.add_argument(
        "--db",
        metavar="PATH_OR_URL",
        help="the AgentOS's store, instead of the one the app names (a SQLite file or a URL)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7777, help="0 picks a free port")
    p.add_argument(
        "--no-scheduler", action="store_true", help="serve the routes only; fire nothing"
    )
    p.add_argument(
        "--token-file",
        metavar="PATH",
        help=f"file holding the bearer token every request must carry (or set {TOKEN_ENV})",
    )
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text lines, or one JSON object per line (fires, finishes, warnings, status)",
    )
    p.set_defaults(token=None)
    return parser


_CRUD = {
    "add": cmd_add,
    "list": cmd_list,
    "show": cmd_show,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "trigger": cmd_trigger,
    "rm": cmd_rm,
    "runs": cmd_runs,
    "prune": cmd_prune,
    "status": cmd_status,
}


class NoSuchDatabase(LeasecronError):
    def __init__(self, path: str):
        super().__init__(f"no such database: {path}")


async def _crud(args: argparse.Namespace) -> int:
    if "://" not in args.db and args.command in _NEED_FILE and not os.path.exists(args.db):
        raise NoSuchDatabase(args.db)  # rather than create an empty file to find nothing in
    store = open_store(args.db, inline=True, readonly=args.command in _READ_ONLY)
    try:
        manager = ScheduleManager(store, allowed_hosts=getattr(args, "allow_host", None) or ())
        return await _CRUD[args.command](args, manager)
    finally:
        await store.close()


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _flags(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """dest -> the long flag that sets it, for `command`'s options."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        a.dest: max(a.option_strings, key=len)
        for a in sub.choices[command]._actions
        if a.option_strings
    }


_PAST = re.compile(r"^(-?\d+(?:\.\d+)?) is in the past \(now (\d+(?:\.\d+)?)\)$")


def flag_message(parser: argparse.ArgumentParser, command: str, exc: ValidationError) -> str:
    """A ValidationError as the user typed it: the flag, not the kernel's field name, and
    epoch times as ISO 8601 UTC."""
    field = exc.field
    message = str(exc)[len(field) + 2 :]
    flag = _flags(parser, command).get(_FIELD_DEST.get(field, field), field)
    past = _PAST.match(message)
    if past:
        message = f"{iso_utc(float(past[1]))} is in the past (now {iso_utc(float(past[2]))})"
    return f"{flag}: {message}"


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null, so the interpreter's last flush at exit
    does not fail again and print a traceback of its own."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):
        return  # not a real file (captured in-process): nothing will flush to the pipe
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `leasecron runs | head`: the reader has all it wanted
        _quiet_stdout()
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.command == "run":
            return asyncio.run(cmd_run(args))
        if args.command == "sim":
            return asyncio.run(cmd_sim(args))
        if args.command == "demo":
            return asyncio.run(cmd_demo(args))
        if args.command == "serve":
            return asyncio.run(cmd_serve(args))
        return asyncio.run(_crud(args))
    except ValidationError as exc:
        _error(flag_message(parser, args.command, exc))
        return 2
    except ScheduleExistsError as exc:
        _error(f"{exc} (use --if-exists update or skip)")
        return 2
    except ScheduleNotFoundError as exc:
        _error(f"schedule: no schedule with id or name {exc.key!r}")
        return 2
    except (StoreError, sqlite3.Error) as exc:
        where = getattr(args, "db", None) or getattr(args, "store", None)
        _error(f"db: {exc}" if not where or where in str(exc) else f"db: {where}: {exc}")
        return 1
    except LeasecronError as exc:
        _error(str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
