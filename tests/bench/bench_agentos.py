"""The AgentOS server end to end: schedule due -> fire -> `POST /agents/noop/runs` (background) ->
polls -> the schedule run recorded, with a no-op agent, on one SQLite file.

Prints, from the same run:
- fires/s over N schedules all due at once, and the attempt's own time (fire -> outcome) p50/p99,
  in-process (httpx.ASGITransport into the same app) and over real loopback HTTP (uvicorn on a
  free port, `scheduler_base_url`);
- latency from due to the run's completion, p50/p99, with fires spread at a rate the server
  keeps up with (so it is the path's latency, not a queue's);
- `POST /agents/noop/runs` background=true requests/s against the app alone (scheduler off), and
  GET /health through the same transport as the per-request baseline;
- the ratio of fires/s to the reference's 100-250 fires/s (target: >= 10x in-process);
- per fire: SQLite commits (group commit shares them), requests the server took (the POST and
  its polls), and how many of those the fast path answered ahead of FastAPI's routing.

Usage: python tests/bench/bench_agentos.py [N]   (N due schedules, default 2000)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
from typing import Any

import httpx
import uvicorn

from common import bulk_schedules_sql, cpu_seconds, machine, percentiles, temp_db
from leasecron.adapters.fastapi import AgentOS
from leasecron.kernel import HttpDispatcher, Scheduler, SqliteStore
from leasecron.kernel.cli.serve import listen

REFERENCE = (100.0, 250.0)  # the reference's fires/s
AGENT = "noop"


class NoopAgent:
    id = AGENT

    async def arun(self, message, *, session_id=None, user_id=None, **kwargs) -> str:
        return "ok"


def seed(path: str, n: int, due_at: float, spread: float = 0.0) -> None:
    """n interval schedules on the no-op agent, first due from `due_at` over `spread` s."""
    bulk_schedules_sql(
        path, n, due_at=due_at, spread=spread, interval=3600.0, endpoint=f"/agents/{AGENT}/runs"
    )
    store = SqliteStore(path, inline=True)
    conn = store._connect()
    conn.execute(
        f"UPDATE {store.schedules_table} SET payload = ?", (json.dumps({"message": "go"}),)
    )
    conn.commit()
    conn.close()
    store._conn = None


class Finishes:
    """The scheduler's on_event hook: when each attempt started and ended, and its status."""

    def __init__(self, n: int):
        self.n = n
        self.started: dict[str, float] = {}
        self.rows: list[tuple[float, float, float, str]] = []  # (due, fired, done, status)
        self.due: dict[str, float] = {}
        self.all_done = asyncio.Event()

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event == "fire":
            self.started[data["run_row_id"]] = data["at"]
            self.due[data["run_row_id"]] = data["scheduled_for"] or data["at"]
        elif event == "finish":
            rid = data["run_row_id"]
            self.rows.append((self.due.pop(rid), self.started.pop(rid), data["at"], data["status"]))
            if len(self.rows) >= self.n:
                self.all_done.set()


def free_socket() -> socket.socket:
    return listen("127.0.0.1", 0)  # what `leasecron serve` listens on (TCP_NODELAY-ready)


@contextlib.asynccontextmanager
async def served(app: Any, sock: socket.socket):
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
    )
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await task


class Statements:
    """Counts the store connection's COMMITs (sqlite3's trace callback, on its worker thread)."""

    def __init__(self, store: SqliteStore):
        self.commits = 0
        store._call(lambda: store._connect().set_trace_callback(self._seen))

    def _seen(self, statement: str) -> None:
        if statement == "COMMIT":
            self.commits += 1


class Requests:
    """A middleware counting the requests the app takes (however they come)."""

    count = 0

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            Requests.count += 1
        await self.app(scope, receive, send)


async def fires(n: int, *, loopback: bool, spread: float = 0.0) -> dict[str, float]:
    path = temp_db("agentos.db")
    due = time.time() + 1.0
    seed(path, n, due, spread)
    finishes = Finishes(n)
    sock = free_socket() if loopback else None
    base = f"http://127.0.0.1:{sock.getsockname()[1]}" if sock else None
    store = SqliteStore(path)
    statements = Statements(store)
    agent_os = AgentOS(
        store,
        agents=[NoopAgent()],
        on_event=finishes,
        scheduler_base_url=base,
        scheduler_poll_interval=0.25,
    )
    app = agent_os.get_app()
    app.add_middleware(Requests)
    Requests.count = 0
    context = served(app, sock) if sock else app.router.lifespan_context(app)
    async with context:
        await asyncio.sleep(max(0.0, due - time.time()))
        commits0, t0, cpu0 = statements.commits, time.perf_counter(), cpu_seconds()
        await asyncio.wait_for(finishes.all_done.wait(), timeout=600)
        seconds = time.perf_counter() - t0
        cpu = cpu_seconds() - cpu0
        commits = statements.commits - commits0
    await store.close()
    ok = sum(1 for r in finishes.rows if r[3] == "success")
    attempt = percentiles([(done - fired) * 1000 for _, fired, done, _ in finishes.rows])
    from_due = percentiles([(done - d) * 1000 for d, _, done, _ in finishes.rows])
    return {
        "rate": n / seconds,
        "ok": ok,
        "attempt_p50": attempt[0],
        "attempt_p99": attempt[1],
        "due_p50": from_due[0],
        "due_p99": from_due[1],
        "commits": commits / n,
        "requests": Requests.count / n,
        "cpu_ms": cpu / n * 1000,
    }


async def requests_per_second(
    client: httpx.AsyncClient, n: int, concurrency: int, method: str, url: str, **kwargs: Any
) -> float:
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            reply = await client.request(method, url, **kwargs)
            assert reply.status_code in (200, 202), reply.text

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - t0)


async def app_alone(n: int, concurrency: int, loopback: bool) -> tuple[float, float]:
    """(POST /agents/noop/runs background=true req/s, GET /health req/s) with the scheduler off."""
    agent_os = AgentOS(temp_db("alone.db"), agents=[NoopAgent()], scheduler=False)
    app = agent_os.get_app()
    sock = free_socket() if loopback else None
    context = served(app, sock) if sock else app.router.lifespan_context(app)
    async with context:
        if sock:
            base = f"http://127.0.0.1:{sock.getsockname()[1]}"
            client = httpx.AsyncClient(
                base_url=base, limits=httpx.Limits(max_connections=concurrency)
            )
        else:
            client = httpx.AsyncClient(
                base_url="http://app", transport=httpx.ASGITransport(app=app)
            )
        async with client:
            form = {"message": "go", "stream": "false", "background": "true"}
            await requests_per_second(
                client, 50, concurrency, "POST", f"/agents/{AGENT}/runs", data=form
            )  # warm-up
            runs = await requests_per_second(
                client, n, concurrency, "POST", f"/agents/{AGENT}/runs", data=form
            )
            health = await requests_per_second(client, n, concurrency, "GET", "/health")
            # let the background runs end before the lifespan cancels them
            while agent_os.ctx.runs is not None and agent_os.ctx.runs.runs:
                await asyncio.sleep(0.05)
    return runs, health


async def scheduler_alone(n: int) -> dict[str, float]:
    """The same N due schedules fired by the kernel alone: a Scheduler with the same dispatcher
    settings (long_poll) on a MockTransport that answers each POST with a finished run at once.
    What a fire costs before any server is involved: the floor under the server's figure."""
    path = temp_db("alone-kernel.db")
    due = time.time() + 0.5
    seed(path, n, due)
    finishes = Finishes(n)
    body = b'{"run_id":"r","session_id":"s","status":"COMPLETED","content":"ok"}'

    def finished(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    store = SqliteStore(path)
    dispatcher = HttpDispatcher(
        "http://agentos.internal", transport=httpx.MockTransport(finished), long_poll=30
    )
    scheduler = Scheduler(
        store, dispatcher, poll_interval=0.25, max_concurrent=100, on_event=finishes
    )
    await scheduler.start()
    await asyncio.sleep(max(0.0, due - time.time()))
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    await asyncio.wait_for(finishes.all_done.wait(), timeout=600)
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    await scheduler.stop()
    await dispatcher.aclose()
    await store.close()
    return {"rate": n / seconds, "cpu_ms": cpu / n * 1000}


def ratio(rate: float) -> str:
    return f"{rate / REFERENCE[1]:.1f}-{rate / REFERENCE[0]:.1f}x the reference's 100-250/s"


async def main(n: int) -> None:
    print(machine())
    print(f"N = {n} schedules due at once, no-op agent, one SQLite file\n")
    floor = await scheduler_alone(n)
    print(
        f"fires/s, the kernel alone (MockTransport)  {floor['rate']:8,.0f}  "
        f"{floor['cpu_ms']:.2f} ms CPU per fire: the floor under the server's figures"
    )
    for label, loopback in (("in-process (ASGITransport)", False), ("loopback HTTP", True)):
        r = await fires(n, loopback=loopback)
        print(
            f"fires/s, {label:27s} {r['rate']:8,.0f}  ({ratio(r['rate'])}); "
            f"{r['ok']}/{n} success; attempt p50 {r['attempt_p50']:.1f} ms, "
            f"p99 {r['attempt_p99']:.1f} ms; per fire {r['commits']:.2f} commits, "
            f"{r['requests']:.2f} requests, {r['cpu_ms']:.2f} ms CPU"
        )
    for label, loopback in (("in-process", False), ("loopback", True)):
        spread_n = max(100, n // 4)
        r = await fires(spread_n, loopback=loopback, spread=spread_n / 100.0)
        print(
            f"due -> run completed, {label:10s} (100 fires/s for {spread_n / 100:.0f} s): "
            f"p50 {r['due_p50']:.1f} ms, p99 {r['due_p99']:.1f} ms"
        )
    print()
    for label, loopback in (("in-process", False), ("loopback", True)):
        runs, health = await app_alone(n, 10, loopback)
        if not loopback:
            per_request = 1000 / health
        print(
            f"POST /agents/{AGENT}/runs background=true, {label:10s}, concurrency 10: "
            f"{runs:8,.0f} req/s  (GET /health baseline {health:,.0f} req/s, "
            f"{runs / health:.2f}x)"
        )

    print(
        f"\none in-process request (GET /health) costs {per_request:.2f} ms; the kernel's own "
        f"fire {floor['cpu_ms']:.2f} ms CPU: together a floor of "
        f"{1000 / (per_request + floor['cpu_ms']):,.0f} fires/s before the run itself"
    )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
