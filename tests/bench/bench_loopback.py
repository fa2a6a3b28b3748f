"""Fires per second through a REAL loopback HTTP server (TCP on 127.0.0.1, another process).

What it measures: the wall time from the moment N interval schedules all come due (one SQLite
file, one Scheduler, threaded SqliteStore, HttpDispatcher) until the scheduler reports the N-th
"finish" event, each fire being a real HTTP/1.1 keep-alive POST to a minimal asyncio server running
in a separate process. Baseline from the same run and the same server: plain httpx.AsyncClient
POSTs (same body and headers as a fire) at concurrency 1, 10 and 50; every leasecron figure is
printed with its ratio to the baseline at the same concurrency. One extra row raises
max_concurrent to 50 but keeps the dispatcher's default max_connections=10, which answers "is
the max_connections=10 default the right choice". A raw asyncio-streams client (requests
written and parsed by hand) shows what the server and the loopback carry, and every row prints
the CPU share of a core used by this process and by the server over its measured window.

Target: >= 800 fires/s. The dispatcher's default transport for http:// is Http11Transport; one
row runs the same fires through httpx's own pool (httpx.AsyncHTTPTransport) for comparison.

Usage: python tests/bench/bench_loopback.py [N]        (default N = 5000)
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import time

import httpx

from common import bulk_schedules, cpu_seconds, machine, temp_db
from leasecron.kernel import HttpDispatcher, Scheduler, SqliteStore

TARGET = 800.0

_OK = b'{"ok":true}'
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n" % len(_OK) + _OK
)
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


# -- the target: a minimal keep-alive HTTP/1.1 server, run in its own process ---------------------


async def _serve(port_out) -> None:
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lower = head.lower()
                i = lower.find(b"\r\ncontent-length:")
                if i >= 0:
                    j = lower.find(b"\r\n", i + 17)
                    length = int(head[i + 17 : j])
                    if length:
                        await reader.readexactly(length)
                if head.startswith(b"POST /hooks/noop "):
                    served += 1
                    writer.write(_RESPONSE)
                elif head.startswith(b"GET /stats "):
                    body = b"%d %.6f" % (served, time.process_time())
                    head_out = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
                    writer.write(head_out + body)
                else:
                    writer.write(_NOT_FOUND)
                if writer.transport.get_write_buffer_size() > 65536:
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    port_out.send(server.sockets[0].getsockname()[1])
    port_out.close()
    async with server:
        await server.serve_forever()


def _server_main(port_out) -> None:
    asyncio.run(_serve(port_out))


def start_server() -> tuple[str, multiprocessing.process.BaseProcess]:
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_server_main, args=(send,), daemon=True, name="loopback-target")
    proc.start()
    if not recv.poll(30):
        proc.kill()
        raise RuntimeError("loopback server did not start")
    port = recv.recv()
    return f"http://127.0.0.1:{port}", proc


async def server_stats(base_url: str) -> tuple[int, float]:
    """(requests served to /hooks/noop, CPU seconds used) by the server process so far."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        served, cpu = (await client.get("/stats")).text.split()
        return int(served), float(cpu)


class Usage:
    """CPU of this process and of the server process over a measured window (async with), as
    shares of one core, and how many /hooks/noop requests the server answered meanwhile."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.client = self.server = 0.0
        self.served = 0

    async def __aenter__(self) -> Usage:
        self.served0, self.server0 = await server_stats(self.base_url)
        self.wall0, self.cpu0 = time.perf_counter(), cpu_seconds()
        return self

    async def __aexit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.wall0
        self.client = (cpu_seconds() - self.cpu0) / wall
        served, cpu = await server_stats(self.base_url)
        self.served = served - self.served0
        self.server = (cpu - self.server0) / wall

    def __str__(self) -> str:
        return f"client CPU {self.client:4.0%}, server CPU {self.server:4.0%}"


# -- baselines: a raw asyncio client, httpx alone ------------------------------------------------


async def raw_client(base_url: str, n: int, concurrency: int, use: Usage) -> float:
    """The same POSTs written and parsed by hand on `concurrency` asyncio streams: what the
    server and the loopback can carry when the client costs next to nothing."""
    port = int(base_url.rsplit(":", 1)[1])
    request = (
        b"POST /hooks/noop HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Idempotency-Key: k\r\nContent-Length: 4\r\n\r\nnull"
    )
    left = n

    async def conn() -> None:
        nonlocal left
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while left > 0:
            left -= 1
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            i = head.lower().find(b"content-length:")
            await reader.readexactly(int(head[i + 15 : head.find(b"\r\n", i)]))
        writer.close()

    async with use:
        t0 = time.perf_counter()
        await asyncio.gather(*(conn() for _ in range(concurrency)))
        return n / (time.perf_counter() - t0)


async def httpx_alone(base_url: str, n: int, concurrency: int, use: Usage) -> float:
    """n POSTs with the body and headers of a fire, `concurrency` at a time; the client's pool is
    sized to the concurrency (as HttpDispatcher sizes its own), so every connection is kept."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits) as client:
        # Open the connections first, as a running scheduler would have them.
        await asyncio.gather(*(client.get("/stats") for _ in range(concurrency)))
        sem = asyncio.Semaphore(concurrency)
        headers = {
            "Content-Type": "application/json",
            "X-Schedule-Id": "s0000000",
            "X-Schedule-Attempt": "1",
            "X-Scheduled-For": "1780000000.0",
        }

        async def one(i: int) -> None:
            async with sem:
                r = await client.post(
                    "/hooks/noop", content=b"null", headers={**headers, "Idempotency-Key": str(i)}
                )
                assert r.status_code == 200, r.status_code

        async with use:
            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            return n / (time.perf_counter() - t0)


# -- leasecron ------------------------------------------------------------------------------------


async def leasecron_fires(
    base_url: str,
    n: int,
    max_concurrent: int,
    max_connections: int,
    use: Usage,
    httpx_transport: bool = False,
) -> tuple[float, int]:
    """fires/s from the common due time to the n-th finish event, and how many failed."""
    path = temp_db("loopback.db")
    due = time.time() + 1.5
    bulk_schedules(path, n, due_at=due)
    done = asyncio.Event()
    finished = failed = 0
    last_at = 0.0

    def on_event(name: str, data: dict) -> None:
        nonlocal finished, failed, last_at
        if name == "finish":
            finished += 1
            failed += data["status"] != "success"
            if finished == n:
                last_at = time.time()
                done.set()

    store = SqliteStore(path)
    transport = None
    if httpx_transport:  # httpx's own pool instead of the default Http11Transport
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        transport = httpx.AsyncHTTPTransport(limits=limits)
    dispatcher = HttpDispatcher(base_url, max_connections=max_connections, transport=transport)
    scheduler = Scheduler(
        store, dispatcher, replica_id="bench", max_concurrent=max_concurrent, on_event=on_event
    )
    await scheduler.start()
    try:
        await asyncio.sleep(max(0.0, due - time.time() - 0.05))
        async with use:
            await asyncio.wait_for(done.wait(), timeout=max(60.0, n / 50))
    finally:
        await scheduler.stop()
        await dispatcher.aclose()
        await store.close()
    return n / (last_at - due), failed


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    base_url, proc = start_server()
    try:
        print(
            f"# fires/s through a loopback HTTP/1.1 server (asyncio, separate process), "
            f"n={n}; {machine()}"
        )
        use = Usage(base_url)
        rate = asyncio.run(raw_client(base_url, 10 * n, 10, use))
        label = "raw asyncio streams client, concurrency 10 (reference)"
        print(f"{label:<55}: {rate:7.0f} req/s   [{use}]")
        baseline = {}
        for c in (1, 10, 50):
            use = Usage(base_url)
            baseline[c] = asyncio.run(httpx_alone(base_url, n, c, use))
            label = f"httpx.AsyncClient alone, concurrency {c}"
            print(f"{label:<55}: {baseline[c]:7.0f} req/s   [{use}]")
        results = {}
        rows = ((10, 10, False), (50, 50, False), (50, 10, False), (10, 10, True))
        for conc, conns, with_httpx in rows:
            use = Usage(base_url)
            rate, failed = asyncio.run(
                leasecron_fires(base_url, n, conc, conns, use, httpx_transport=with_httpx)
            )
            results[conc, conns, with_httpx] = rate
            verdict = "meets" if rate >= TARGET else "MISSES"
            label = f"leasecron max_concurrent={conc} max_connections={conns}"
            if with_httpx:
                label += " on httpx's pool"
            print(
                f"{label:<55}: {rate:7.0f} fires/s = {rate / baseline[conns]:4.2f}x httpx@{conns}"
                f"  ({verdict} >= {TARGET:.0f}; server saw {use.served}, failed {failed})"
                f"   [{use}]"
            )
        r10, r50, r50_10 = results[10, 10, False], results[50, 50, False], results[50, 10, False]
        print(
            f"max_connections 50 vs 10: {r50 / r10:4.2f}x fires/s for leasecron, "
            f"{baseline[50] / baseline[10]:4.2f}x req/s for httpx alone; max_concurrent=50 on "
            f"the default pool of 10: {r50_10 / r10:4.2f}x of max_concurrent=10"
        )
    finally:
        proc.kill()
        proc.join()


if __name__ == "__main__":
    main()
