"""Shared test parts: an in-process HTTP target that speaks the AgentOS run protocol on an httpx
MockTransport (start, poll, cancel) and records every request, and a cluster of replicas on one
SQLite file."""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import httpx

from leasecron.kernel import (
    HttpDispatcher,
    ScheduleManager,
    Scheduler,
    SimClock,
    SqliteStore,
)

T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z


@dataclass
class Request:
    at: float
    method: str
    path: str
    key: str
    attempt: int
    scheduled_for: str
    schedule_id: str
    authorization: str | None
    body: bytes


@dataclass
class AgentRun:
    run_id: str
    session_id: str
    done_at: float  # float("inf"): it keeps running until cancelled
    final: str
    cancelled_at: float | None = None


RUN_PATH = r"^/(agents|teams|workflows)/([^/]+)/runs"


@dataclass
class Target:
    """Records requests; answers plain endpoints from a per-path script of status codes and
    AgentOS runs (agents, teams, workflows) with RUNNING until their duration has passed on the
    clock (float("inf"): until cancelled). `POST <run>/cancel` answers 200 {} and, unless
    `cancel_delay` is None, ends the run CANCELLED that much later (cooperative, like the real
    one); cancels are recorded in `cancels`, not in `requests`."""

    clock: SimClock
    requests: list[Request] = field(default_factory=list)
    codes: dict[str, list[int]] = field(default_factory=dict)  # path -> codes, last one repeats
    durations: dict[str, float] = field(default_factory=dict)  # agent id -> run seconds
    finals: dict[str, list[str]] = field(default_factory=dict)  # agent id -> final statuses
    runs: dict[str, AgentRun] = field(default_factory=dict)
    cancels: list[tuple[float, str, str | None]] = field(default_factory=list)  # at, run, session
    cancel_delay: float | None = 0.0
    on_request: object = None  # optional callback(request) run before answering
    _ids: itertools.count = field(default_factory=itertools.count)

    def _run(self, request: httpx.Request, match: re.Match) -> AgentRun | None:
        run = self.runs.get(match.group(3))
        session = request.url.params.get("session_id")
        return run if run is not None and session == run.session_id else None

    def status(self, run: AgentRun) -> str:
        now = self.clock.now()
        if run.cancelled_at is not None and now >= run.cancelled_at and now < run.done_at:
            return "CANCELLED"
        return run.final if now >= run.done_at else "RUNNING"

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET":
            m = re.match(RUN_PATH + r"/([^/]+)$", path)
            run = self._run(request, m) if m else None
            if run is None:
                return httpx.Response(404, json={"detail": "Run not found"})
            status = self.status(run)
            body = {"run_id": run.run_id, "session_id": run.session_id, "status": status}
            if status != "RUNNING":
                body.update(content=f"{status} content", content_type="str")
            return httpx.Response(200, json=body)
        m = re.match(RUN_PATH + r"/([^/]+)/cancel$", path)
        if request.method == "POST" and m:
            run = self._run(request, m)
            session = request.url.params.get("session_id")
            self.cancels.append((self.clock.now(), m.group(3), session))
            if run is None:
                return httpx.Response(404, json={"detail": "Run not found"})
            if self.cancel_delay is not None and run.cancelled_at is None:
                run.cancelled_at = self.clock.now() + self.cancel_delay
            return httpx.Response(200, json={})
        rec = Request(
            at=self.clock.now(),
            method=request.method,
            path=path,
            key=request.headers["idempotency-key"],
            attempt=int(request.headers["x-schedule-attempt"]),
            scheduled_for=request.headers["x-scheduled-for"],
            schedule_id=request.headers["x-schedule-id"],
            authorization=request.headers.get("authorization"),
            body=request.content,
        )
        self.requests.append(rec)
        if callable(self.on_request):
            self.on_request(rec)
        m = re.match(RUN_PATH + "$", path)
        if m:
            agent = m.group(2)
            n = next(self._ids)
            finals = self.finals.get(agent, ["COMPLETED"])
            run = AgentRun(
                f"run-{n}",
                f"sess-{n}",
                self.clock.now() + self.durations.get(agent, 0.0),
                finals[min(len([r for r in self.requests if r.path == path]) - 1, len(finals) - 1)],
            )
            self.runs[run.run_id] = run
            return httpx.Response(
                202, json={"run_id": run.run_id, "session_id": run.session_id, "status": "PENDING"}
            )
        script = self.codes.get(path, [200])
        count = sum(1 for r in self.requests if r.path == path)
        code = script[min(count - 1, len(script) - 1)]
        return httpx.Response(code, json={"ok": code < 400})

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)

    def posts(self, path: str) -> list[Request]:
        """The run starts (or plain POSTs) sent to `path`."""
        return [r for r in self.requests if r.method == "POST" and r.path == path]

    def keys(self) -> Counter:
        return Counter((r.key, r.attempt) for r in self.requests)

    def slots(self, path: str) -> list[float]:
        return [float(r.scheduled_for) for r in self.requests if r.path == path]


class Cluster:
    """N replicas, each with its own SqliteStore connection on one file, under one SimClock."""

    def __init__(
        self,
        path,
        n: int = 3,
        *,
        clock: SimClock | None = None,
        seed: int = 1,
        lease_seconds: float = 30.0,
        poll_interval: float = 1.0,
        max_concurrent: int = 10,
        token: str | None = None,
        inline: bool = True,
    ):
        self.clock = clock or SimClock(start=T0)
        self.path = str(path)
        self.target = Target(self.clock)
        self.rng = random.Random(seed)
        ids = itertools.count()
        self.new_id = lambda: f"id{next(ids):08d}"
        self.events: list[tuple[str, dict]] = []
        self.stores = [SqliteStore(self.path, inline=inline) for _ in range(n + 1)]
        self.manager = ScheduleManager(self.stores[-1], clock=self.clock, new_id=self.new_id)
        self.dispatcher = HttpDispatcher(
            "http://target",
            token=token,
            transport=self.target.transport(),
            clock=self.clock,
            poll_initial=1.0,
            poll_max=1.0,
        )
        self.replicas = [
            Scheduler(
                self.stores[i],
                self.dispatcher,
                clock=self.clock,
                replica_id=f"r{i}",
                lease_seconds=lease_seconds,
                poll_interval=poll_interval,
                max_concurrent=max_concurrent,
                rng=random.Random(seed * 100 + i),
                new_id=self.new_id,
                on_event=lambda e, d: self.events.append((e, d)),
            )
            for i in range(n)
        ]
        # A change made through the manager's store wakes every replica, as in one process.
        for replica in self.replicas:
            self.stores[-1].add_listener(replica.wake)

    async def start(self):
        for replica in self.replicas:
            await replica.start()

    async def stop(self):
        for replica in self.replicas:
            await replica.stop(timeout=0)
        await self.dispatcher.aclose()
        for store in self.stores:
            await store.close()

    async def runs(self, schedule_id: str, limit: int = 10_000):
        return list(reversed(await self.manager.runs(schedule_id, limit=limit)))


def form(body: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(body.decode()).items()}


def as_json(body: bytes):
    return json.loads(body)


class HookedStore:
    """A real store with hooks around its operations, to crash a replica or fail a call at an
    exact step. before[op](*args) may raise; after[op](result) may raise or kill a replica."""

    def __init__(self, store):
        self._store = store
        self.before: dict = {}
        self.after: dict = {}

    def __getattr__(self, name):
        attr = getattr(self._store, name)
        if name not in (
            "claim",
            "start",
            "heartbeat",
            "finish",
            "next_due",
            "set_run_ids",
            "leases_of",
            "expire_leases",
        ):
            return attr

        async def wrapped(*args, **kwargs):
            if name in self.before:
                self.before[name](*args)
            result = await attr(*args, **kwargs)
            if name in self.after:
                self.after[name](result)
            return result

        return wrapped


async def wind_down(replicas, dispatcher, stores, *, runs_from, limit: int = 100_000) -> list:
    """End a real-time cluster test: stop the replicas (attempts in flight get 5 s), close the
    dispatcher, read every run row from `runs_from`, then close the stores; returns the rows."""
    for replica in replicas:
        await replica.stop(timeout=5)
    await dispatcher.aclose()
    runs = await runs_from.list_runs(None, limit)
    for store in stores:
        await store.close()
    return runs
