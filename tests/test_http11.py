"""Http11Transport against real loopback servers on 127.0.0.1 (no socket mocks).

Most servers here are `asyncio.start_server` handlers on the test's own event loop writing
hand-made bytes, so every framing case (chunked, read-to-close, 1xx, stale connections) is
exact; one test talks to the standard library's ThreadingHTTPServer in a thread. Each async test
is bounded in real time so a hang fails fast instead of stalling the suite.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import gzip
import json
import socket
import struct
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from leasecron.kernel.http.dispatch import HttpDispatcher
from leasecron.kernel.http.http11 import Http11Transport
from leasecron.kernel.model import Fire

LIMIT = 3.0  # real-time bound of every async test


def bounded(fn):
    """Fail an async test that runs longer than LIMIT seconds (instead of hanging)."""

    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        async with asyncio.timeout(LIMIT):
            return await fn(*args, **kwargs)

    return wrapper


# -- a hand-written loopback server ------------------------------------------------------------


@dataclass
class Req:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    conn: int  # which accepted connection (1-based) carried it

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        assert len(values) <= 1, f"header {name!r} sent {len(values)} times"
        return values[0] if values else None


def reply(
    status: int = 200,
    reason: str = "OK",
    body: bytes = b"",
    headers: tuple[str, ...] = (),
    *,
    version: str = "HTTP/1.1",
    length: bool = True,
) -> bytes:
    """A response head (+ body); Content-Length added unless `length` is False."""
    lines = [f"{version} {status} {reason}", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


Handler = Callable[["Server", asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Server:
    """asyncio.start_server on 127.0.0.1:0; `handler(server, reader, writer, conn_no)` runs
    each accepted connection. Counts accepted / simultaneously open connections and EOFs."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.accepted = 0
        self.open = 0
        self.max_open = 0
        self.requests: list[Req] = []
        self.eofs = 0  # connections whose client side closed cleanly (read_request -> None)
        self.eof_event = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        await asyncio.sleep(0)  # let the closed transports finish

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await self.handler(self, reader, writer, self.accepted)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # __aexit__ ended it: finish quietly (asyncio logs a cancelled handler)
        finally:
            self.open -= 1
            writer.close()
            self._tasks.discard(task)

    async def read_request(self, reader: asyncio.StreamReader, conn: int) -> Req | None:
        """One request (Content-Length body) or None at a clean EOF."""
        line = await reader.readline()
        if not line:
            self.eofs += 1
            self.eof_event.set()
            return None
        method, target, version = line.decode("latin-1").rstrip("\r\n").split(" ")
        headers = []
        while True:
            raw = await reader.readline()
            if raw in (b"\r\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers.append((name.strip(), value.strip()))
        req = Req(method, target, version, headers, b"", conn)
        req.body = await reader.readexactly(int(req.header("Content-Length") or 0))
        self.requests.append(req)
        return req


def serving(make_reply: Callable[[Req], bytes]) -> Handler:
    """A handler answering every request of a connection with make_reply(request)."""

    async def handler(server, reader, writer, conn):
        while (req := await server.read_request(reader, conn)) is not None:
            writer.write(make_reply(req))
            await writer.drain()

    return handler


def echo_path(req: Req) -> bytes:
    return reply(body=req.target.encode())


def timeouts(read: float | None = 2.0, pool: float | None = 2.0) -> dict:
    return {"timeout": {"connect": 2.0, "read": read, "write": 2.0, "pool": pool}}


async def fetch(
    transport: httpx.AsyncBaseTransport, method: str, url: str, **kw
) -> tuple[httpx.Response, bytes]:
    """One request straight through the transport; the response and its (decoded) body."""
    extensions = kw.pop("extensions", None) or timeouts()
    request = httpx.Request(method, url, extensions=extensions, **kw)
    response = await transport.handle_async_request(request)
    body = await response.aread()
    await response.aclose()
    return response, body


def rst_close(writer: asyncio.StreamWriter) -> None:
    """Abort a server connection with a TCP RST (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# -- requests and replies ----------------------------------------------------------------------


@bounded
async def test_post_with_body_and_headers_round_trips_exactly():
    body = b'{"message": "hello", "n": 1}'

    def answer(req):
        return reply(
            201,
            "Created Just Now",
            b"created!",
            ("X-Reply: yes", "Content-Type: text/plain", "Set-Cookie: a=1", "Set-Cookie: b=2"),
        )

    async with Server(serving(answer)) as server:
        transport = Http11Transport()
        request = httpx.Request(
            "POST",
            f"{server.url}/hooks/nightly?a=1&b=two%20words",
            content=body,
            headers={"X-Custom": "abc", "Content-Type": "application/json"},
            extensions=timeouts(),
        )
        response = await transport.handle_async_request(request)
        assert await response.aread() == b"created!"
        await transport.aclose()

    (seen,) = server.requests
    assert seen.method == "POST"
    assert seen.target == "/hooks/nightly?a=1&b=two%20words"
    assert seen.version == "HTTP/1.1"
    assert seen.header("Host") == f"127.0.0.1:{server.port}"
    assert seen.header("Content-Length") == str(len(body))
    assert seen.header("X-Custom") == "abc"
    assert seen.header("Content-Type") == "application/json"
    assert seen.header("Connection") == "keep-alive"
    assert seen.header("Transfer-Encoding") is None
    assert seen.body == body

    assert response.status_code == 201
    assert response.reason_phrase == "Created Just Now"
    assert response.http_version == "HTTP/1.1"
    assert response.headers["x-reply"] == "yes"
    assert response.headers["content-type"] == "text/plain"
    assert response.headers["content-length"] == "8"
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert response.request is request


@bounded
async def test_get_without_body_sends_no_content_length_and_large_bodies_arrive_whole():
    big = bytes(range(256)) * 1024  # 256 KiB: the separate-write path
    async with Server(serving(lambda req: reply(body=b"%d" % len(req.body)))) as server:
        transport = Http11Transport()
        _, got = await fetch(transport, "GET", f"{server.url}/plain")
        _, got_big = await fetch(transport, "PUT", f"{server.url}/big", content=big)
        _, got_empty = await fetch(transport, "POST", f"{server.url}/empty")
        await transport.aclose()
    get, put, post = server.requests
    assert (get.method, get.header("Content-Length"), get.body, got) == ("GET", None, b"", b"0")
    assert put.header("Content-Length") == str(len(big))
    assert put.body == big
    assert got_big == str(len(big)).encode()
    assert (post.header("Content-Length"), got_empty) == ("0", b"0")  # POST always says 0
    assert server.accepted == 1


@bounded
async def test_through_an_httpx_client():
    answer = serving(lambda req: reply(202, "Accepted", req.body[::-1]))
    async with (
        Server(answer) as server,
        httpx.AsyncClient(transport=Http11Transport(), base_url=server.url) as client,
    ):
        response = await client.post("/x", content=b"abc", headers={"X-Trace": "t-1"})
    assert (response.status_code, response.reason_phrase) == (202, "Accepted")
    assert response.content == b"cba"
    assert response.request.url == f"{server.url}/x"
    assert server.requests[0].header("X-Trace") == "t-1"


# -- keep-alive --------------------------------------------------------------------------------


@bounded
async def test_twenty_sequential_requests_share_one_connection():
    async with Server(serving(echo_path)) as server:
        transport = Http11Transport()
        bodies = [(await fetch(transport, "GET", f"{server.url}/n/{i}"))[1] for i in range(20)]
        await transport.aclose()
    assert bodies == [f"/n/{i}".encode() for i in range(20)]
    assert server.accepted == 1
    assert [r.conn for r in server.requests] == [1] * 20


@pytest.mark.parametrize(
    ("version", "header", "connections"),
    [
        ("HTTP/1.1", None, 1),
        ("HTTP/1.1", "Connection: close", 3),
        ("HTTP/1.1", "Connection: Close", 3),
        ("HTTP/1.0", None, 3),
        ("HTTP/1.0", "Connection: keep-alive", 1),
    ],
)
@bounded
async def test_server_close_or_http10_makes_the_next_request_connect_again(
    version, header, connections
):
    # The server keeps serving the connection whatever it says: only the client's own decision
    # to drop it can make it open a new one.
    headers = (header,) if header else ()

    def answer(req):
        return reply(body=req.target.encode(), headers=headers, version=version)

    async with Server(serving(answer)) as server:
        transport = Http11Transport()
        bodies = [(await fetch(transport, "GET", f"{server.url}/{i}"))[1] for i in range(3)]
        if connections > 1:  # the client closed each used connection: the server saw EOF
            async with asyncio.timeout(1):
                while server.eofs < connections - 1:
                    await asyncio.sleep(0.005)
        await transport.aclose()
    assert bodies == [b"/0", b"/1", b"/2"]
    assert server.accepted == connections
    assert [r.conn for r in server.requests] == ([1, 2, 3] if connections == 3 else [1, 1, 1])


@bounded
async def test_keep_alive_against_the_stdlib_threading_http_server():
    connections = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            connections.append(self.client_address)

        def do_POST(self):
            data = self.rfile.read(int(self.headers["Content-Length"]))
            out = json.dumps({"path": self.path, "len": len(data)}).encode()
            self.send_response(200, "Fine")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        transport = Http11Transport()
        results = []
        for i in range(5):
            response, body = await fetch(transport, "POST", f"{url}/p?i={i}", content=b"x" * i)
            results.append((response.status_code, response.reason_phrase, json.loads(body)))
        await transport.aclose()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(2)
    assert results == [(200, "Fine", {"path": f"/p?i={i}", "len": i}) for i in range(5)]
    assert len(connections) == 1


# -- framing -----------------------------------------------------------------------------------


CHUNKED = (
    b"HTTP/1.1 200 OK\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"X-Before: 1\r\n"
    b"\r\n"
    b"5;name=value\r\n"
    b"hello\r\n"
    b"1A\r\n"
    b", abcdefghijklmnopqrstuvwx\r\n"
    b"0\r\n"
    b"X-Trailer: t\r\n"
    b"X-Other-Trailer: u\r\n"
    b"\r\n"
)


@bounded
async def test_chunked_reply_with_extension_and_trailers_is_decoded():
    async with Server(serving(lambda req: CHUNKED if req.target == "/c" else echo_path(req))) as s:
        transport = Http11Transport()
        response, body = await fetch(transport, "GET", f"{s.url}/c")
        # The trailers were consumed: the next reply on the same connection parses cleanly.
        _, after = await fetch(transport, "GET", f"{s.url}/after")
        await transport.aclose()
    assert body == b"hello, abcdefghijklmnopqrstuvwx"
    assert "transfer-encoding" not in response.headers
    assert response.headers["x-before"] == "1"
    assert "x-trailer" not in response.headers
    assert after == b"/after"
    assert s.accepted == 1


@bounded
async def test_reply_without_length_or_chunking_is_read_until_close():
    async def handler(server, reader, writer, conn):
        req = await server.read_request(reader, conn)
        assert req is not None
        writer.write(b"HTTP/1.1 200 OK\r\nX-Mode: eof\r\n\r\nfirst part, ")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"second part" + req.target.encode())
        await writer.drain()  # then the Server closes the connection

    async with Server(handler) as server:
        transport = Http11Transport()
        response, body = await fetch(transport, "GET", f"{server.url}/one")
        _, body2 = await fetch(transport, "GET", f"{server.url}/two")
        await transport.aclose()
    assert body == b"first part, second part/one"
    assert response.headers["x-mode"] == "eof"
    assert body2 == b"first part, second part/two"
    assert [r.conn for r in server.requests] == [1, 2]


@pytest.mark.parametrize(
    ("method", "head"),
    [
        ("GET", b"HTTP/1.1 204 No Content\r\nX-K: 1\r\n\r\n"),
        ("GET", b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 99\r\n\r\n'),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"),
        ("HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ],
)
@bounded
async def test_bodiless_replies_are_empty_and_do_not_hang(method, head):
    def answer(req):
        return head if req.target == "/empty" else echo_path(req)

    async with Server(serving(answer)) as server:
        transport = Http11Transport()
        response, body = await fetch(transport, method, f"{server.url}/empty")
        _, after = await fetch(transport, "GET", f"{server.url}/next")
        await transport.aclose()
    assert response.status_code == int(head.split(b" ")[1])
    assert body == b""
    assert after == b"/next"  # no reply byte was taken as a body
    assert server.accepted == 1
    assert server.requests[0].method == method


@bounded
async def test_interim_1xx_replies_are_skipped():
    def answer(req):
        return (
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + echo_path(req)
        )

    async with Server(serving(answer)) as server:
        transport = Http11Transport()
        first, body1 = await fetch(transport, "POST", f"{server.url}/1", content=b"x")
        second, body2 = await fetch(transport, "GET", f"{server.url}/2")
        await transport.aclose()
    assert (first.status_code, body1) == (200, b"/1")
    assert (second.status_code, body2) == (200, b"/2")
    assert "link" not in first.headers
    assert server.accepted == 1


@bounded
async def test_101_switching_protocols_is_never_reused():
    def answer(req):
        if req.target == "/upgrade":
            return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: other\r\n\r\n"
        return echo_path(req)

    async with Server(serving(answer)) as server:
        transport = Http11Transport()
        switched, body = await fetch(transport, "GET", f"{server.url}/upgrade")
        _, after = await fetch(transport, "GET", f"{server.url}/next")
        await transport.aclose()
    assert (switched.status_code, body, after) == (101, b"", b"/next")
    assert [r.conn for r in server.requests] == [1, 2]


@bounded
async def test_gzip_reply_is_decoded_by_httpx_not_by_the_transport():
    plain = b"compressible text " * 200
    packed = gzip.compress(plain)
    head = ("Content-Encoding: gzip", "Content-Type: text/plain")
    async with Server(serving(lambda req: reply(body=packed, headers=head))) as server:
        transport = Http11Transport()
        response, body = await fetch(transport, "GET", f"{server.url}/z")
        assert body == plain
        # the transport passed the wire headers on: raw length, encoding left to httpx
        assert response.headers["content-length"] == str(len(packed))
        assert response.headers["content-encoding"] == "gzip"
        async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:
            got = await client.get("/z")
            async with client.stream("GET", "/z") as streamed:
                chunks = [chunk async for chunk in streamed.aiter_bytes()]
    assert got.content == plain
    assert b"".join(chunks) == plain
    assert server.accepted == 1


# -- stale and closed connections --------------------------------------------------------------


def answer_then_close(count: int = 1) -> Handler:
    """Answer `count` requests on a connection, then close it (a server idle timeout)."""

    async def handler(server, reader, writer, conn):
        for _ in range(count):
            req = await server.read_request(reader, conn)
            if req is None:
                return
            writer.write(reply(body=b"conn %d %s" % (conn, req.target.encode())))
            await writer.drain()

    return handler


@bounded
async def test_stale_kept_alive_connection_is_retried_once_on_a_new_one():
    async with Server(answer_then_close()) as server:
        transport = Http11Transport()
        _, first = await fetch(transport, "POST", f"{server.url}/a", content=b"1")
        await asyncio.sleep(0.02)  # the server's FIN arrives while the connection is idle
        _, second = await fetch(transport, "POST", f"{server.url}/b", content=b"2")
        await transport.aclose()
    assert first == b"conn 1 /a"
    assert second == b"conn 2 /b"
    assert [(r.conn, r.target) for r in server.requests] == [(1, "/a"), (2, "/b")]


@bounded
async def test_stale_retry_opens_a_new_connection_even_with_more_stale_idle_ones():
    release = asyncio.Event()

    async def handler(server, reader, writer, conn):
        req = await server.read_request(reader, conn)
        if req is None:
            return
        if conn <= 2:
            await release.wait()  # hold both first requests so that two connections exist
        writer.write(reply(body=b"conn %d" % conn))
        await writer.drain()  # then close: every idle connection goes stale

    async with Server(handler) as server:
        transport = Http11Transport(max_connections=4)
        url = f"{server.url}/x"
        pending = asyncio.gather(fetch(transport, "GET", url), fetch(transport, "GET", url))
        while len(server.requests) < 2:
            await asyncio.sleep(0.005)
        release.set()
        await pending
        await asyncio.sleep(0.02)
        _, body = await fetch(transport, "GET", url)
        await transport.aclose()
    assert body == b"conn 3"
    assert server.accepted == 3


@bounded
async def test_fresh_connection_closed_without_reply_raises_once():
    async def handler(server, reader, writer, conn):
        await server.read_request(reader, conn)  # read it, then close without a word

    async with Server(handler) as server:
        transport = Http11Transport()
        with pytest.raises(httpx.RemoteProtocolError):
            await fetch(transport, "POST", f"{server.url}/x", content=b"once")
        await transport.aclose()
    assert server.accepted == 1
    assert len(server.requests) == 1


@bounded
async def test_reused_connection_lost_mid_reply_is_not_retried():
    # The server got the request and began to answer: sending it again could run it twice.
    async def handler(server, reader, writer, conn):
        while (req := await server.read_request(reader, conn)) is not None:
            if req.target != "/dies":
                writer.write(echo_path(req))
                await writer.drain()
                continue
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            await writer.drain()
            await asyncio.sleep(0.05)
            rst_close(writer)
            return

    async with Server(handler) as server:
        transport = Http11Transport()
        _, first = await fetch(transport, "GET", f"{server.url}/ok")
        with pytest.raises(httpx.ReadError):
            await fetch(transport, "POST", f"{server.url}/dies", content=b"charge")
        await transport.aclose()
    assert first == b"/ok"
    assert [r.target for r in server.requests] == ["/ok", "/dies"]


@pytest.mark.parametrize(
    "partial",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nhel",
    ],
)
@bounded
async def test_reply_cut_short_by_the_server_is_a_read_error(partial):
    async def handler(server, reader, writer, conn):
        await server.read_request(reader, conn)
        writer.write(partial)
        await writer.drain()  # then close mid-body

    async with Server(handler) as server:
        transport = Http11Transport()
        with pytest.raises(httpx.ReadError):
            await fetch(transport, "GET", f"{server.url}/x")
        await transport.aclose()
    assert server.accepted == 1


# -- errors ------------------------------------------------------------------------------------


@bounded
async def test_connection_refused_is_connect_error():
    with socket.socket() as sock:  # bound, never listening: connects are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        transport = Http11Transport()
        with pytest.raises(httpx.ConnectError) as caught:
            await fetch(transport, "GET", f"http://127.0.0.1:{port}/")
        await transport.aclose()
    assert caught.value.request.url == f"http://127.0.0.1:{port}/"


@bounded
async def test_silent_server_raises_read_timeout_within_the_read_timeout():
    async def handler(server, reader, writer, conn):
        await server.read_request(reader, conn)
        await asyncio.Event().wait()  # never answers

    async with Server(handler) as server:
        transport = Http11Transport()
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await fetch(transport, "GET", f"{server.url}/", extensions=timeouts(read=0.2))
        elapsed = time.monotonic() - started
        await transport.aclose()
    assert 0.18 <= elapsed < 1.0
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "garbage",
    [
        b"SPAM SPAM SPAM\r\n\r\n",
        b"HTTP/1.1 OK\r\n\r\n",
        b"HTTP/1.1\r\n\r\n",
        b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
    ],
)
@bounded
async def test_malformed_reply_is_remote_protocol_error(garbage):
    async def handler(server, reader, writer, conn):
        await server.read_request(reader, conn)
        writer.write(garbage)
        await writer.drain()
        await asyncio.Event().wait()  # keep the connection open: the parse alone must fail

    async with Server(handler) as server:
        transport = Http11Transport()
        with pytest.raises(httpx.RemoteProtocolError):
            await fetch(transport, "GET", f"{server.url}/")
        await transport.aclose()


# -- the connection bound ----------------------------------------------------------------------


def held_replies(release: asyncio.Event) -> Handler:
    """Answer every request only once `release` is set."""

    async def handler(server, reader, writer, conn):
        while (req := await server.read_request(reader, conn)) is not None:
            await release.wait()
            writer.write(echo_path(req))
            await writer.drain()

    return handler


@bounded
async def test_max_connections_bounds_open_connections_and_all_requests_complete():
    release = asyncio.Event()
    async with Server(held_replies(release)) as server:
        transport = Http11Transport(max_connections=2)
        tasks = [
            asyncio.create_task(fetch(transport, "GET", f"{server.url}/r{i}")) for i in range(10)
        ]
        while len(server.requests) < 2:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # room for any extra connection to show up
        assert (server.open, server.accepted, len(server.requests)) == (2, 2, 2)
        release.set()
        results = await asyncio.gather(*tasks)
        await transport.aclose()
    assert [body for _, body in results] == [f"/r{i}".encode() for i in range(10)]
    assert server.max_open == 2
    assert server.accepted == 2
    assert sorted(r.target for r in server.requests) == sorted(f"/r{i}" for i in range(10))


@bounded
async def test_pool_timeout_when_no_connection_frees_up():
    release = asyncio.Event()
    async with Server(held_replies(release)) as server:
        transport = Http11Transport(max_connections=1)
        first = asyncio.create_task(fetch(transport, "GET", f"{server.url}/held"))
        while not server.requests:
            await asyncio.sleep(0.005)
        started = time.monotonic()
        with pytest.raises(httpx.PoolTimeout):
            await fetch(transport, "GET", f"{server.url}/waits", extensions=timeouts(pool=0.1))
        assert 0.08 <= time.monotonic() - started < 1.0
        release.set()
        _, held = await first
        _, later = await fetch(transport, "GET", f"{server.url}/later")  # the slot came back
        await transport.aclose()
    assert (held, later) == (b"/held", b"/later")
    assert [r.target for r in server.requests] == ["/held", "/later"]


# -- other schemes and closing -----------------------------------------------------------------


class RecordingMock(httpx.MockTransport):
    def __init__(self):
        self.seen: list[httpx.Request] = []
        self.closed = False
        super().__init__(self._answer)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return httpx.Response(299, content=b"from fallback")

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.parametrize("url", ["https://example.invalid/a?b=1", "HTTPS://example.invalid:8443/"])
@bounded
async def test_other_schemes_go_to_the_fallback(url):
    fallback = RecordingMock()
    transport = Http11Transport(fallback=fallback)
    response, body = await fetch(transport, "POST", url, content=b"payload")
    assert (response.status_code, body) == (299, b"from fallback")
    (seen,) = fallback.seen
    assert seen.url == httpx.URL(url)
    assert seen.content == b"payload"
    await transport.aclose()
    assert fallback.closed


@bounded
async def test_aclose_closes_idle_connections_and_the_fallback_then_refuses_requests():
    async with Server(serving(echo_path)) as server:
        fallback = RecordingMock()
        transport = Http11Transport(fallback=fallback)
        await fetch(transport, "GET", f"{server.url}/a")
        assert server.eofs == 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await transport.aclose()
            gc.collect()
        # closed by aclose itself, not left to the garbage collector ("unclosed" warnings)
        assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
        async with asyncio.timeout(1):
            await server.eof_event.wait()  # the server saw the idle connection end
        assert fallback.closed
        with pytest.raises(RuntimeError):
            await fetch(transport, "GET", f"{server.url}/b")
        with pytest.raises(RuntimeError):
            await fetch(transport, "GET", "https://example.invalid/")
    assert server.eofs == 1
    assert [r.target for r in server.requests] == ["/a"]
    assert fallback.seen == []


def test_max_connections_must_be_positive():
    with pytest.raises(ValueError):
        Http11Transport(max_connections=0)


# -- through HttpDispatcher --------------------------------------------------------------------


def make_fire(endpoint: str = "/hooks/nightly", method: str = "POST") -> Fire:
    return Fire(
        schedule_id="sch-1",
        schedule_name="nightly",
        run_row_id="row-1",
        method=method,
        endpoint=endpoint,
        payload={"message": "hello"},
        attempt=2,
        scheduled_for=1_780_000_000.5,
        idempotency_key="sch-1:1780000000.5",
        timeout_seconds=2.0,
    )


@bounded
async def test_http_dispatcher_fires_through_the_default_transport():
    def answer(req):
        return reply(body=b'{"ok": true}', headers=("Content-Type: application/json",))

    async with Server(serving(answer)) as server:
        dispatcher = HttpDispatcher(base_url=server.url + "/base")
        assert isinstance(dispatcher._open_transport(), Http11Transport)
        outcome = await dispatcher.dispatch(make_fire())
        again = await dispatcher.dispatch(make_fire("/hooks/other?x=1", "GET"))
        await dispatcher.aclose()
        async with asyncio.timeout(1):
            await server.eof_event.wait()
    assert (outcome.status, outcome.status_code, outcome.output) == ("success", 200, {"ok": True})
    assert (again.status, again.status_code) == ("success", 200)
    post, get = server.requests
    assert (post.method, post.target) == ("POST", "/base/hooks/nightly")
    assert post.header("Host") == f"127.0.0.1:{server.port}"
    assert post.header("Idempotency-Key") == "sch-1:1780000000.5"
    assert post.header("X-Schedule-Id") == "sch-1"
    assert post.header("X-Schedule-Attempt") == "2"
    assert post.header("X-Scheduled-For") == "1780000000.5"
    assert post.header("Content-Type") == "application/json"
    assert json.loads(post.body) == {"message": "hello"}
    assert (get.method, get.target, get.body) == ("GET", "/base/hooks/other?x=1", b"")
    assert get.header("Idempotency-Key") == "sch-1:1780000000.5"
    assert server.accepted == 1
