"""The `leasecron` command line: run a replica, manage schedules in a SQLite file, inspect runs,
and a self-contained demo (a local HTTP target, several replicas on one file, an exactly-once
report checked against what the target actually received).

    leasecron run   --db PATH --base-url URL [--token T] [--log-fires] ...
    leasecron add   NAME --endpoint /agents/x/runs (--cron EXPR | --interval S | --run-at T) ...
    leasecron list  [--enabled | --disabled]
    leasecron show | pause | resume | trigger | rm  NAME_OR_ID
    leasecron runs  [NAME_OR_ID] [--limit 20]
    leasecron demo  [--seconds 20] [--replicas 2] [--db PATH]

Bad input (a ValidationError, a duplicate name, an unknown schedule) prints the field and the
rule on stderr and exits 2; a storage failure exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .clock import SystemClock
from .cron import load_timezone
from .dispatch import HttpDispatcher
from .errors import (
    LeasecronError,
    ScheduleExistsError,
    ScheduleNotFoundError,
    StoreError,
    ValidationError,
)
from .manager import ScheduleManager
from .model import IF_EXISTS, MISFIRE_POLICIES, OVERLAP_POLICIES, Schedule, ScheduleRun
from .scheduler import Scheduler
from .slots import slot_after
from .sqlite import SqliteStore

PROG = "leasecron"
DEFAULT_DB = "leasecron.db"
ERROR_WIDTH = 60  # the error column of run tables is cut to this

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


# -- formatting --------------------------------------------------------------------------------


def iso_utc(ts: float | None, *, ms: bool = False) -> str:
    if ts is None:
        return "-"
    dt = datetime.fromtimestamp(ts, UTC)
    if ms:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_local(ts: float | None, tz: str) -> str:
    if ts is None:
        return "-"
    try:
        zone = load_timezone(tz)
    except ValidationError:
        return "?"
    return datetime.fromtimestamp(ts, zone).isoformat(timespec="seconds")


def clock_utc(ts: float | None) -> str:
    """HH:MM:SS.mmm in UTC, for the demo's live lines."""
    if ts is None:
        return "-"
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%H:%M:%S.") + f"{dt.microsecond // 1000:03d}"


def short_id(value: str | None, n: int = 8) -> str:
    return value[:n] if value else "-"


def cut(text: str | None, limit: int = ERROR_WIDTH) -> str:
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fmt_seconds(value: float) -> str:
    return f"{value:g}s"


def fmt_duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.0f}ms" if ms < 10_000 else f"{ms / 1000:.1f}s"


def kind_of(s: Schedule) -> str:
    if s.cron_expr:
        return f"cron {s.cron_expr}"
    if s.interval_seconds:
        return f"every {fmt_seconds(s.interval_seconds)}"
    if s.run_at is not None:
        return f"once at {iso_utc(s.run_at)}"
    return "on demand"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain left-aligned text table."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()

    out = [line(cells[0]), line(["-" * w for w in widths])]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def runs_table(runs: Sequence[ScheduleRun], names: dict[str, str]) -> str:
    rows = [
        (
            iso_utc(r.triggered_at or r.completed_at or r.created_at, ms=True),
            names.get(r.schedule_id, short_id(r.schedule_id)),
            r.attempt,
            r.trigger,
            r.status,
            r.status_code,
            fmt_duration(r.duration_ms),
            r.run_id or "-",
            cut(r.error),
        )
        for r in runs
    ]
    headers = ("TIME", "SCHEDULE", "ATTEMPT", "TRIGGER", "STATUS", "CODE", "DURATION", "RUN_ID")
    return table((*headers, "ERROR"), rows)


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
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValidationError("payload", f"not valid JSON: {exc}") from None


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
            "yes" if s.enabled else "no",
            iso_utc(s.next_run_at) if s.enabled else "(disabled)",
            iso_local(s.next_run_at, s.timezone) if s.enabled else "(disabled)",
            s.last_status or "-",
            s.consecutive_failures,
        )
        for s in schedules
    ]
    headers = ("NAME", "ID", "KIND", "TZ", "ENABLED", "NEXT RUN (UTC)", "NEXT RUN (TZ)")
    print(table((*headers, "LAST STATUS", "FAILURES"), rows))
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
    s = await resolve(manager, args.schedule)
    width = max(len(f.name) for f in fields(Schedule))
    print(f"{'kind':<{width}}  {kind_of(s)}")
    for f in fields(Schedule):
        print(f"{f.name:<{width}}  {_show_value(s, f.name, getattr(s, f.name))}")
    runs = await manager.runs(s.id, 5)
    print()
    print("last 5 runs:" if runs else "no runs yet")
    if runs:
        print(runs_table(runs, {s.id: s.name}))
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
    print(runs_table(runs, names))
    return 0


# -- run: one replica until a signal -----------------------------------------------------------


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


class FireLog:
    """Turns the Scheduler's on_event hook into one printed line per fire and per finish."""

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
        elif event == "lease_lost":
            self.out(
                f"{iso_utc(time.time(), ms=True)}  lease_lost  schedule={data['schedule_id']} "
                f"reason={data['reason']}"
            )
        elif event == "store_error":
            self.out(
                f"{iso_utc(time.time(), ms=True)}  store_error  {data['operation']}: "
                f"{data['error']}"
            )


def _print_flush(line: str) -> None:
    print(line, flush=True)


async def cmd_run(args: argparse.Namespace) -> int:
    for name, value, minimum in (
        ("poll_interval", args.poll_interval, 0.0),
        ("lease_seconds", args.lease_seconds, 0.0),
    ):
        if not value > minimum:
            raise ValidationError(name, f"{value!r} must be > 0")
    if args.max_concurrent < 1:
        raise ValidationError("max_concurrent", f"{args.max_concurrent!r} must be >= 1")
    base = urlsplit(args.base_url)
    if base.scheme not in ("http", "https") or not base.netloc:
        raise ValidationError("base_url", f"{args.base_url!r} must be an http(s) URL")
    store = SqliteStore(args.db)
    dispatcher = HttpDispatcher(
        args.base_url, token=args.token, allowed_hosts=args.allow_host or ()
    )
    on_event = FireLog(_print_flush) if args.log_fires else None
    sched = Scheduler(
        store,
        dispatcher,
        clock=SystemClock(),
        replica_id=args.replica_id,
        poll_interval=args.poll_interval,
        lease_seconds=args.lease_seconds,
        max_concurrent=args.max_concurrent,
        on_event=on_event,
    )
    stop = asyncio.Event()
    try:
        with stop_on_signals(asyncio.get_running_loop(), stop):
            await sched.start()
            print(
                f"leasecron replica {sched.replica_id} running on {args.db} -> {args.base_url} "
                f"(Ctrl-C or SIGTERM to stop)",
                flush=True,
            )
            await stop.wait()
            print("stopping: waiting for attempts in flight...", flush=True)
            await sched.stop()
    finally:
        await sched.stop()
        await dispatcher.aclose()
        await store.close()
    print(f"stopped; {sched.fired} attempt(s) sent by this replica", flush=True)
    return 0


# -- demo: a local target, several replicas, an exactly-once report ----------------------------


@dataclass(slots=True)
class Delivery:
    """One request the demo target received that starts work (not a status poll)."""

    at: float
    path: str
    schedule_id: str
    key: str
    attempt: int
    code: int


@dataclass(slots=True)
class _AgentRun:
    agent: str
    session_id: str
    started: float
    duration: float


@dataclass
class DemoTarget:
    """An HTTP target on 127.0.0.1 (a port of its own), served by a thread.

    POST /hooks/<name>                    JSON; 200 {"ok": true}, or 500 at rate fail_rates[name]
    POST /agents/<id>/runs                form; 200 {run_id, session_id, status: RUNNING}
    GET  /agents/<id>/runs/<run_id>?session_id=...   RUNNING until durations[id] passed, then
                                          COMPLETED
    Every work-starting request is logged in `deliveries` with its Idempotency-Key and
    X-Schedule-Attempt headers.
    """

    durations: dict[str, float] = field(default_factory=dict)  # agent id -> run seconds
    fail_rates: dict[str, float] = field(default_factory=dict)  # hook name -> 500 probability
    default_duration: float = 0.3
    rng: random.Random = field(default_factory=random.Random)
    deliveries: list[Delivery] = field(default_factory=list)
    polls: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, _AgentRun] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def do_POST(self) -> None:
                self._body()
                code, body = target._post(self.path, self.headers)
                self._reply(code, body)

            def do_GET(self) -> None:
                code, body = target._get(self.path)
                self._reply(code, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="leasecron-demo-target",
            daemon=True,
        )
        self._thread.start()
        return self.url

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _log(self, path: str, headers: Any, code: int) -> None:
        try:
            attempt = int(headers.get("X-Schedule-Attempt") or 0)
        except ValueError:
            attempt = -1
        self.deliveries.append(
            Delivery(
                at=time.time(),
                path=path,
                schedule_id=headers.get("X-Schedule-Id") or "",
                key=headers.get("Idempotency-Key") or "",
                attempt=attempt,
                code=code,
            )
        )

    def _post(self, raw_path: str, headers: Any) -> tuple[int, dict[str, Any]]:
        parts = [p for p in urlsplit(raw_path).path.split("/") if p]
        with self._lock:
            if len(parts) == 2 and parts[0] == "hooks":
                name = parts[1]
                code = 500 if self.rng.random() < self.fail_rates.get(name, 0.0) else 200
                self._log(raw_path, headers, code)
                if code == 500:
                    return code, {"error": f"{name}: simulated failure"}
                return code, {"ok": True, "hook": name}
            if len(parts) == 3 and parts[0] == "agents" and parts[2] == "runs":
                agent = parts[1]
                run_id, session_id = uuid.uuid4().hex, uuid.uuid4().hex
                duration = self.durations.get(agent, self.default_duration)
                self._runs[run_id] = _AgentRun(agent, session_id, time.monotonic(), duration)
                self._log(raw_path, headers, 200)
                return 200, {"run_id": run_id, "session_id": session_id, "status": "RUNNING"}
        return 404, {"error": f"no such endpoint: POST {raw_path}"}

    def _get(self, raw_path: str) -> tuple[int, dict[str, Any]]:
        split = urlsplit(raw_path)
        parts = [p for p in split.path.split("/") if p]
        session = (parse_qs(split.query).get("session_id") or [None])[0]
        with self._lock:
            self.polls += 1
            if len(parts) == 4 and parts[0] == "agents" and parts[2] == "runs":
                run = self._runs.get(parts[3])
                if run is None or run.agent != parts[1] or run.session_id != session:
                    return 404, {"error": "run not found"}
                if time.monotonic() - run.started < run.duration:
                    return 200, {"run_id": parts[3], "status": "RUNNING"}
                return 200, {
                    "run_id": parts[3],
                    "status": "COMPLETED",
                    "content": f"{run.agent} done in {run.duration:g}s",
                }
        return 404, {"error": f"no such endpoint: GET {raw_path}"}


# The demo's schedules: (name, endpoint, fields).
DEMO_SCHEDULES: list[tuple[str, str, dict[str, Any]]] = [
    ("every-2s", "/hooks/every-2s", {"interval_seconds": 2.0}),
    ("every-3s", "/hooks/every-3s", {"interval_seconds": 3.0}),
    (
        "flaky",
        "/hooks/flaky",
        {"interval_seconds": 2.0, "max_retries": 2, "retry_delay_seconds": 0.5},
    ),
    ("slow-agent", "/agents/slow/runs", {"interval_seconds": 2.0, "overlap": "skip"}),
    ("cron-minute", "/agents/reporter/runs", {"cron": "* * * * *"}),
]
DEMO_DURATIONS = {"slow": 2.5, "reporter": 0.3}
DEMO_FAIL_RATES = {"flaky": 1 / 3}
DEMO_NOTES = {
    "flaky": "target answers 500 ~1 in 3; max_retries=2, retry_delay=0.5s",
    "slow-agent": "AgentOS run taking 2.5s; overlap=skip",
    "cron-minute": "AgentOS run taking 0.3s",
}
_DELIVERED_OFF = ("pending", "skipped")  # statuses of rows whose attempt was never sent


@dataclass(slots=True)
class ScheduleReport:
    name: str
    slots: int = 0
    attempts_target: int = 0
    attempts_db: int = 0
    success: int = 0
    failed: int = 0
    retries: int = 0
    skipped: int = 0
    cut: int = 0  # still running when the replicas stopped
    dup_target: int = 0
    dup_db: int = 0


def demo_report(
    schedules: Sequence[Schedule],
    runs: dict[str, list[ScheduleRun]],
    deliveries: Sequence[Delivery],
) -> tuple[list[ScheduleReport], list[str]]:
    """Per-schedule counts and the list of exactly-once violations (empty when all is well),
    cross-checking the target's own request log against the runs table."""
    problems: list[str] = []
    reports: list[ScheduleReport] = []
    by_schedule: dict[str, list[Delivery]] = defaultdict(list)
    known = {s.id for s in schedules}
    for d in deliveries:
        by_schedule[d.schedule_id].append(d)
        if d.schedule_id not in known:
            problems.append(f"{d.key}: target received a request for unknown schedule")
    for s in schedules:
        rep = ScheduleReport(s.name)
        got = by_schedule.get(s.id, [])
        rows = runs.get(s.id, [])
        sent = [r for r in rows if r.status not in _DELIVERED_OFF and r.triggered_at is not None]
        target_count = Counter((d.key, d.attempt) for d in got)
        db_count = Counter((r.idempotency_key, r.attempt) for r in sent)
        rep.slots = len({d.key for d in got})
        rep.attempts_target = len(got)
        rep.attempts_db = len(sent)
        rep.success = sum(r.status == "success" for r in sent)
        rep.failed = sum(r.status in ("failed", "timeout") for r in sent)
        rep.retries = sum(r.attempt > 1 for r in sent)
        rep.skipped = sum(r.status == "skipped" for r in rows)
        rep.cut = sum(r.status == "running" for r in sent)
        for (key, attempt), n in sorted(target_count.items()):
            if n > 1:
                rep.dup_target += n - 1
                problems.append(f"{key} attempt {attempt}: target received it {n} times")
            if (key, attempt) not in db_count:
                problems.append(f"{key} attempt {attempt}: target received it, no run row says so")
        for (key, attempt), n in sorted(db_count.items()):
            if n > 1:
                rep.dup_db += n - 1
                problems.append(f"{key} attempt {attempt}: {n} run rows sent it")
        for r in sent:
            if r.status != "running" and (r.idempotency_key, r.attempt) not in target_count:
                problems.append(
                    f"{r.idempotency_key} attempt {r.attempt}: run row {r.status}, "
                    "but the target never received it"
                )
        # Attempts of one slot are 1..n without a gap.
        attempts: dict[str, set[int]] = defaultdict(set)
        for key, attempt in target_count:
            attempts[key].add(attempt)
        for key, seen in sorted(attempts.items()):
            if seen != set(range(1, max(seen) + 1)):
                problems.append(f"{key}: attempts {sorted(seen)} have a gap")
        # Outcomes agree: a hook the target answered 500 must not be recorded as a success.
        codes = {(d.key, d.attempt): d.code for d in got if d.path.startswith("/hooks/")}
        for r in sent:
            code = codes.get((r.idempotency_key, r.attempt))
            if (
                code is not None
                and r.status != "running"
                and (code < 300) != (r.status == "success")
            ):
                problems.append(
                    f"{r.idempotency_key} attempt {r.attempt}: target answered {code}, "
                    f"run row says {r.status}"
                )
        # Every slot between the first and the last seen was either fired or skipped, not both.
        fired = {round(r.scheduled_for, 3) for r in sent if r.scheduled_for is not None}
        skipped = {
            round(r.scheduled_for, 3)
            for r in rows
            if r.status == "skipped" and r.scheduled_for is not None
        }
        for slot in sorted(fired & skipped):
            problems.append(f"{s.name} slot {iso_utc(slot, ms=True)}: both fired and skipped")
        seen_slots = fired | skipped
        if seen_slots:
            slot: float | None = min(seen_slots)
            last = max(seen_slots)
            while slot is not None and round(slot, 3) <= last:
                if round(slot, 3) not in seen_slots:
                    problems.append(
                        f"{s.name} slot {iso_utc(slot, ms=True)}: neither fired nor skipped"
                    )
                slot = slot_after(s, slot)
        reports.append(rep)
    return reports, problems


def demo_table(reports: Sequence[ScheduleReport]) -> str:
    headers = ("SCHEDULE", "SLOTS", "ATTEMPTS target/db", "SUCCESS", "FAILED", "RETRIES")
    rows = [
        (
            r.name,
            r.slots,
            f"{r.attempts_target}/{r.attempts_db}",
            r.success,
            r.failed,
            r.retries,
            r.skipped,
            r.cut,
            f"{r.dup_target}/{r.dup_db}",
        )
        for r in reports
    ]
    return table((*headers, "SKIPPED", "CUT", "DUPLICATES target/db"), rows)


async def cmd_demo(args: argparse.Namespace) -> int:
    if not args.seconds > 0:
        raise ValidationError("seconds", f"{args.seconds!r} must be > 0")
    if args.replicas < 1:
        raise ValidationError("replicas", f"{args.replicas!r} must be >= 1")
    grace = args.grace if args.grace is not None else min(2.0, args.seconds / 10)
    if grace < 0:
        raise ValidationError("grace", f"{grace!r} must be >= 0")
    db = args.db or os.path.join(tempfile.mkdtemp(prefix="leasecron-demo-"), "demo.db")
    target = DemoTarget(
        durations=dict(DEMO_DURATIONS),
        fail_rates=dict(DEMO_FAIL_RATES),
        rng=random.Random(args.seed),
    )
    base_url = target.start()
    admin = SqliteStore(db)
    stores: list[SqliteStore] = []
    dispatchers: list[HttpDispatcher] = []
    replicas: list[Scheduler] = []
    try:
        manager = ScheduleManager(admin)
        schedules: list[Schedule] = []
        for name, endpoint, spec in DEMO_SCHEDULES:
            old = await manager.get_by_name(name)
            if old is not None:  # a reused --db: start this schedule's series afresh
                await manager.delete(old.id)
            schedules.append(
                await manager.create(name, endpoint=endpoint, timeout_seconds=30.0, **spec)
            )
        print(f"demo target: {base_url}   db: {db}")
        print(
            f"{args.replicas} replica(s), {args.seconds:g}s, poll_interval=1.0, "
            f"{len(schedules)} schedules:"
        )
        for s in schedules:
            note = DEMO_NOTES.get(s.name, "")
            print(f"  {s.name:<12} {kind_of(s):<16} -> {s.endpoint:<22} {note}".rstrip())
        print()
        print("one line per attempt when it ends; times are UTC")
        print(
            f"{'FIRED AT':<12}  {'REPLICA':<7}  {'SCHEDULE':<12}  {'SLOT':<12}  {'ATTEMPT':<7}  "
            f"{'TOOK':<7}  STATUS"
        )

        fires: dict[str, dict[str, Any]] = {}

        def hook(replica: str) -> Callable[[str, dict[str, Any]], None]:
            def on_event(event: str, data: dict[str, Any]) -> None:
                if event == "fire":
                    fires[data["run_row_id"]] = data
                elif event == "finish":
                    fire = fires.pop(data["run_row_id"], None)
                    if fire is None:
                        return
                    status = data["status"]
                    if data["retry_at"]:
                        status += f" (retry in {data['retry_at'] - data['at']:.1f}s)"
                    slot = clock_utc(fire["scheduled_for"]) if fire["scheduled_for"] else "manual"
                    took = fmt_duration((data["at"] - fire["at"]) * 1000)
                    print(
                        f"{clock_utc(fire['at']):<12}  {replica:<7}  {fire['name']:<12}  "
                        f"{slot:<12}  {fire['attempt']:<7}  {took:<7}  {status}",
                        flush=True,
                    )
                elif event in ("lease_lost", "store_error"):
                    print(
                        f"{clock_utc(time.time()):<12}  {replica:<7}  {event}: {data}", flush=True
                    )

            return on_event

        for i in range(1, args.replicas + 1):
            store = SqliteStore(db)  # its own connection and worker thread, like another process
            dispatcher = HttpDispatcher(base_url, poll_initial=0.2)
            label = f"r{i}"
            stores.append(store)
            dispatchers.append(dispatcher)
            replicas.append(
                Scheduler(
                    store,
                    dispatcher,
                    clock=SystemClock(),
                    replica_id=f"{label}-{uuid.uuid4().hex[:6]}",
                    poll_interval=1.0,
                    lease_seconds=30.0,
                    on_event=hook(label),
                )
            )
        stop = asyncio.Event()
        with stop_on_signals(asyncio.get_running_loop(), stop):
            for sched in replicas:
                await sched.start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.seconds)
            await asyncio.gather(*(sched.stop(timeout=grace) for sched in replicas))
        print()

        runs = {s.id: await admin.list_runs(s.id, 1_000_000) for s in schedules}
        with target._lock:
            deliveries = list(target.deliveries)
        reports, problems = demo_report(schedules, runs, deliveries)
        print(demo_table(reports))
        fired = {r.replica_id.split("-")[0]: r.fired for r in replicas}
        print(
            "attempts sent per replica: "
            + ", ".join(f"{k}={v}" for k, v in fired.items())
            + f"; target: {len(deliveries)} deliveries, {target.polls} status polls"
        )
        if any(r.cut for r in reports):
            print(
                "(CUT: attempts still in flight when the grace period ended; their lease "
                "was released, so the next replica re-delivers them with the same key)"
            )
        if problems:
            print("every slot fired exactly once: NO")
            for line in problems[:50]:
                print(f"  {line}")
            if len(problems) > 50:
                print(f"  ... and {len(problems) - 50} more")
            return 1
        print("every slot fired exactly once: YES")
        return 0
    finally:
        for sched in replicas:
            await sched.stop(timeout=0)
        for dispatcher in dispatchers:
            await dispatcher.aclose()
        for store in stores:
            await store.close()
        await admin.close()
        target.close()


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
    common.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file (default: {DEFAULT_DB})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", parents=[common], help="run one scheduler replica until a signal")
    p.add_argument("--base-url", required=True, help="where endpoints are called, e.g. AgentOS")
    p.add_argument("--token", help="bearer token sent with every call")
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

    p = sub.add_parser("add", parents=[common], help="create a schedule")
    p.add_argument("name")
    p.add_argument("--endpoint", required=True, help="path like /agents/x/runs, or an http URL")
    timing = p.add_mutually_exclusive_group()
    timing.add_argument("--cron", metavar="EXPR", help='cron expression, e.g. "*/5 * * * *"')
    timing.add_argument("--interval", type=_number, metavar="SECONDS")
    timing.add_argument(
        "--run-at", metavar="WHEN", help="one-off: epoch seconds or ISO 8601 (naive: --timezone)"
    )
    p.add_argument("--payload", metavar="JSON", help="JSON object sent with every call")
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

    p = sub.add_parser("list", parents=[common], help="list schedules")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--enabled", action="store_true", help="only enabled schedules")
    which.add_argument("--disabled", action="store_true", help="only disabled schedules")

    for name, text in (
        ("show", "all fields of a schedule and its last 5 runs"),
        ("pause", "disable a schedule (pending triggers and retries are cancelled)"),
        ("resume", "enable a schedule from its next slot"),
        ("trigger", "queue a run now; prints the pending run id"),
        ("rm", "delete a schedule (its run history stays)"),
    ):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("schedule", metavar="NAME_OR_ID")

    p = sub.add_parser("runs", parents=[common], help="recent runs, newest first")
    p.add_argument("schedule", metavar="NAME_OR_ID", nargs="?")
    p.add_argument("--limit", type=int, default=20)

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
}


async def _crud(args: argparse.Namespace) -> int:
    store = SqliteStore(args.db, inline=True)
    try:
        return await _CRUD[args.command](args, ScheduleManager(store))
    finally:
        await store.close()


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.command == "run":
            return asyncio.run(cmd_run(args))
        if args.command == "demo":
            return asyncio.run(cmd_demo(args))
        return asyncio.run(_crud(args))
    except ValidationError as exc:
        _error(str(exc))
        return 2
    except ScheduleExistsError as exc:
        _error(f"{exc} (use --if-exists update or skip)")
        return 2
    except ScheduleNotFoundError as exc:
        _error(f"schedule: no schedule with id or name {exc.key!r}")
        return 2
    except (StoreError, sqlite3.Error) as exc:
        _error(f"db: {args.db}: {exc}")
        return 1
    except LeasecronError as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
