"""`leasecron demo`: a local HTTP target on loopback, several replicas on one SQLite file, each
fire printed as it happens, and an exactly-once report checked against both what the target
actually received and the runs table. The closing table counts slots by how they ended
(succeeded, failed after all attempts, still pending); a temporary file is removed at the end."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..clock import SystemClock
from ..errors import (
    ValidationError,
)
from ..fmt import clock_utc, fmt_duration, iso_utc, kind_of, table
from ..http.dispatch import HttpDispatcher
from ..manager import ScheduleManager
from ..model import Schedule, ScheduleRun
from ..scheduler import Scheduler
from ..slots import slot_after
from ..sqlite import SqliteStore
from .process import stop_on_signals

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
    success: int = 0  # attempts
    failed: int = 0  # attempts (a later retry of the slot may have succeeded)
    retries: int = 0
    skipped: int = 0
    cut: int = 0  # still running when the replicas stopped
    dup_target: int = 0
    dup_db: int = 0
    # Slots by how they ended: by the status of their last attempt.
    slots_succeeded: int = 0
    slots_failed: int = 0  # the last attempt failed and no retry is left
    slots_pending: int = 0  # in flight, or a retry waiting, when the demo ended
    first_slot: float | None = None  # the schedule's first slot, for "why none came due"


_ENDED_FAILED = ("failed", "timeout", "cancelled", "paused")
_STILL_OPEN = ("pending", "running", "lease_lost")  # lease_lost: re-delivered by a later row


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
        rep.first_slot = s.next_run_at
        last_of_slot: dict[str, ScheduleRun] = {}
        for r in rows:  # a slot's latest row (highest attempt, then newest) says how it ended
            old = last_of_slot.get(r.idempotency_key)
            if old is None or (r.attempt, r.created_at) >= (old.attempt, old.created_at):
                last_of_slot[r.idempotency_key] = r
        for r in last_of_slot.values():
            rep.slots_succeeded += r.status == "success"
            rep.slots_failed += r.status in _ENDED_FAILED
            rep.slots_pending += r.status in _STILL_OPEN
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


def demo_table(reports: Sequence[ScheduleReport], ended_at: float | None = None) -> str:
    """Slots by how they ended, then the attempts behind them; a legend says what each count
    means, and a schedule with no slot in the window says why."""
    headers = ("SCHEDULE", "SLOTS", "SUCCEEDED", "FAILED", "PENDING", "SKIPPED", "ATTEMPTS")
    rows = [
        (
            r.name,
            r.slots,
            r.slots_succeeded,
            r.slots_failed,
            r.slots_pending,
            r.skipped,
            f"{r.attempts_target}/{r.attempts_db}",
            r.retries,
            f"{r.dup_target}/{r.dup_db}",
        )
        for r in reports
    ]
    lines = [
        table((*headers, "RETRIES", "DUPLICATES"), rows),
        "",
        "SLOTS      slots sent at least once (their attempts share one Idempotency-Key)",
        "SUCCEEDED  slots whose last attempt succeeded",
        "FAILED     slots that failed after all their attempts (no retry left)",
        "PENDING    slots still in flight or waiting for a retry when the demo ended",
        "SKIPPED    slots not sent: the previous run was still going (overlap=skip)",
        "ATTEMPTS   requests the target received / attempts the runs table says were sent;",
        "           DUPLICATES: attempts received twice / recorded twice (both must be 0)",
    ]
    for r in reports:
        if r.slots == 0 and r.skipped == 0 and r.first_slot is not None:
            if ended_at is not None and r.first_slot > ended_at:
                why = (
                    f"its first slot, {iso_utc(r.first_slot)}, came after the demo ended at "
                    f"{iso_utc(ended_at)}"
                )
            else:
                why = f"its first slot was {iso_utc(r.first_slot)}"
            lines.append(f"{r.name}: no slot came due in the window: {why}")
    return "\n".join(lines)


async def cmd_demo(args: argparse.Namespace) -> int:
    if not args.seconds > 0:
        raise ValidationError("seconds", f"{args.seconds!r} must be > 0")
    if args.replicas < 1:
        raise ValidationError("replicas", f"{args.replicas!r} must be >= 1")
    grace = args.grace if args.grace is not None else min(2.0, args.seconds / 10)
    if grace < 0:
        raise ValidationError("grace", f"{grace!r} must be >= 0")
    scratch = None if args.db else tempfile.mkdtemp(prefix="leasecron-demo-")
    db = args.db or os.path.join(scratch, "demo.db")
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
        print(f"demo target: {base_url}   db: {db}{' (temporary)' if scratch else ''}")
        print(
            f"{args.replicas} replica(s), {args.seconds:g}s, poll_interval=1.0, "
            f"{len(schedules)} schedules:"
        )
        ends = time.time() + args.seconds
        for s in schedules:
            note = DEMO_NOTES.get(s.name, "")
            if s.cron_expr and s.next_run_at is not None and s.next_run_at > ends:
                note += f" (next minute {iso_utc(s.next_run_at)} is after the demo ends)"
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
        with stop_on_signals(asyncio.get_running_loop(), stop) as received:
            for sched in replicas:
                await sched.start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.seconds)
            ended_at = time.time()
            if received:
                print("stopping early: a signal came")
            await asyncio.gather(*(sched.stop(timeout=grace) for sched in replicas))
        print()
        interrupted = signal.SIGINT in received

        runs = {s.id: await admin.list_runs(s.id, 1_000_000) for s in schedules}
        with target._lock:
            deliveries = list(target.deliveries)
        reports, problems = demo_report(schedules, runs, deliveries)
        print(demo_table(reports, ended_at))
        fired = {r.replica_id.split("-")[0]: r.fired for r in replicas}
        print(
            "attempts sent per replica: "
            + ", ".join(f"{k}={v}" for k, v in fired.items())
            + f"; target: {len(deliveries)} deliveries, {target.polls} status polls"
        )
        cut = sum(r.cut for r in reports)
        if cut:
            print(
                f"({cut} attempt(s) still in flight when the grace period ended: their lease "
                "was released, so the next replica would re-deliver them with the same key)"
            )
        if problems:
            print("every slot fired exactly once: NO")
            for line in problems[:50]:
                print(f"  {line}")
            if len(problems) > 50:
                print(f"  ... and {len(problems) - 50} more")
            return 130 if interrupted else 1
        print("every slot fired exactly once: YES")
        return 130 if interrupted else 0
    finally:
        for sched in replicas:
            await sched.stop(timeout=0)
        for dispatcher in dispatchers:
            await dispatcher.aclose()
        for store in stores:
            await store.close()
        await admin.close()
        target.close()
        if scratch is not None:
            shutil.rmtree(scratch)
