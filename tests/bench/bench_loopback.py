"""Fires per second through a REAL loopback HTTP server (TCP on 127.0.0.1, another process).

What it measures: the wall time from the moment N interval schedules all come due (one SQLite
file, one Scheduler, threaded SqliteStore, HttpDispatcher) until the scheduler reports the N-th
"finish" event, each fire being a real HTTP/1.1 keep-alive POST to a minimal asyncio server running
in a separate process. Baseline from the same run and the same server: plain httpx.AsyncClient
POSTs (same body and headers as a fire) at concurrency 1, 10 and 50; every leasecron figure is
printed with its ratio to the baseline at the same concurrency. One extra row raises
max_concurrent to 50 but keeps the dispatcher's default max_connections=10, which answers "is
the max_connections=10 default the right choice".

Target: >= 800 fires/s.

Usage: python tests/bench/bench_loopback.py [N]        (default N = 5000)
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import time

import httpx

from common import bulk_schedules, machine, temp_db
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
                    body = b"%d" % served
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


async def served_count(base_url: str) -> int:
    async with httpx.AsyncClient(base_url=base_url) as client:
        return int((await client.get("/stats")).text)


# -- baseline: httpx alone ------------------------------------------------------------------------


async def httpx_alone(base_url: str, n: int, concurrency: int) -> float:
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

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return n / (time.perf_counter() - t0)


# -- leasecron ------------------------------------------------------------------------------------


async def leasecron_fires(
    base_url: str, n: int, max_concurrent: int, max_connections: int
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
    dispatcher = HttpDispatcher(base_url, max_connections=max_connections)
    scheduler = Scheduler(
        store, dispatcher, replica_id="bench", max_concurrent=max_concurrent, on_event=on_event
    )
    await scheduler.start()
    try:
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
        baseline = {}
        for c in (1, 10, 50):
            baseline[c] = asyncio.run(httpx_alone(base_url, n, c))
            label = f"httpx.AsyncClient alone, concurrency {c}"
            print(f"{label:<55}: {baseline[c]:7.0f} req/s")
        results = {}
        for conc, conns in ((10, 10), (50, 50), (50, 10)):
            before = asyncio.run(served_count(base_url))
            rate, failed = asyncio.run(leasecron_fires(base_url, n, conc, conns))
            served = asyncio.run(served_count(base_url)) - before
            results[conc, conns] = rate
            ratio = rate / baseline[conns]
            verdict = "meets" if rate >= TARGET else "MISSES"
            label = f"leasecron max_concurrent={conc} max_connections={conns}"
            print(
                f"{label:<55}: {rate:7.0f} fires/s"
                f"  = {ratio:4.2f}x httpx@{conns}  ({verdict} >= {TARGET:.0f}; "
                f"server saw {served}, failed {failed})"
            )
        r10, r50, r50_10 = results[10, 10], results[50, 50], results[50, 10]
        print(
            f"max_connections: 50 vs 10 = {r50 / r10:4.2f}x fires/s for leasecron, "
            f"{baseline[50] / baseline[10]:4.2f}x for httpx alone; max_concurrent=50 on the "
            f"default pool of 10 = {r50_10 / r10:4.2f}x of max_concurrent=10"
        )
        if r50 < 1.15 * r10:
            print(
                "=> the default max_connections=10 is adequate: a 5x larger pool buys "
                f"{(r50 / r10 - 1) * 100:+.0f}% on loopback (CPU-bound on this machine)"
            )
        else:
            print(
                f"=> the default max_connections=10 leaves {(r50 / r10 - 1) * 100:.0f}% of "
                "loopback throughput unused; a larger default (or max_connections = "
                "max_concurrent) would be faster"
            )
    finally:
        proc.kill()
        proc.join()


if __name__ == "__main__":
    main()
