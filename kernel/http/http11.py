"""A lean HTTP/1.1 keep-alive transport for plain-http targets, behind httpx's transport interface.

Why: with httpx's default transport, the client side of a loopback call costs about 1 ms of CPU
(httpcore's pool re-scans every connection on each request and close, through anyio), so a
replica tops out near 500-800 fires/s while the target idles. Fires are small requests to one
service, usually over a few kept-alive connections: this transport does exactly that with
asyncio streams and an idle-connection stack, and nothing else. `HttpDispatcher` uses it for
http:// targets; https:// (and any transport a caller passes) goes through httpx as usual.

What it does: HTTP/1.1 requests with Content-Length bodies; responses with Content-Length,
chunked transfer encoding, or read-to-close; keep-alive unless either side says close; at most
`max_connections` connections per origin; one transparent retry when a kept-alive connection
turns out to have been closed by the server before it answered. Errors are httpx's exceptions
(ConnectError, ConnectTimeout, ReadTimeout, RemoteProtocolError, ...), so callers classify them
as they would httpx's. Timeouts come from the request's httpx "timeout" extension.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx

_MAX_LINE = 64 * 1024
_MAX_HEADERS = 200


class _Conn:
    __slots__ = ("reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.reused = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class _Origin:
    """Connections to one host:port: an idle stack and a bound on how many exist."""

    __slots__ = ("idle", "slots")

    def __init__(self, max_connections: int):
        self.idle: list[_Conn] = []
        self.slots = asyncio.Semaphore(max_connections)


class Http11Transport(httpx.AsyncBaseTransport):
    """httpx transport speaking plain HTTP/1.1 over kept-alive asyncio connections."""

    def __init__(self, max_connections: int = 10, fallback: httpx.AsyncBaseTransport | None = None):
        """fallback: where requests of any other scheme (https) go; by default an
        httpx.AsyncHTTPTransport with the same limit, built on first use."""
        if max_connections < 1:
            raise ValueError("max_connections: must be >= 1")
        self.max_connections = max_connections
        self._origins: dict[tuple[str, int], _Origin] = {}
        self._fallback = fallback
        self._closed = False

    def _other_scheme(self) -> httpx.AsyncBaseTransport:
        if self._fallback is None:
            n = self.max_connections
            self._fallback = httpx.AsyncHTTPTransport(
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n)
            )
        return self._fallback

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("transport is closed")
        url = request.url
        if url.scheme != "http":
            return await self._other_scheme().handle_async_request(request)
        host, port = url.host, url.port or 80
        origin = self._origins.get((host, port))
        if origin is None:
            origin = self._origins[(host, port)] = _Origin(self.max_connections)
        timeouts = request.extensions.get("timeout", {})
        pool_timeout = timeouts.get("pool")
        body = await request.aread()
        head = _request_head(request, host, port, len(body))
        try:
            async with asyncio.timeout(pool_timeout):
                await origin.slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no connection free within the pool timeout") from None
        try:
            for attempt in range(2):
                # the retry goes on a new connection: other idle ones may be just as stale
                conn = origin.idle.pop() if origin.idle and not attempt else None
                if conn is None:
                    conn = await _connect(host, port, timeouts.get("connect"), request)
                try:
                    status, reason, headers, content, keep = await _exchange(
                        conn, head, body, timeouts.get("read"), request
                    )
                except _StaleConnection:
                    conn.close()
                    continue  # the server had closed this kept-alive connection: once more
                except BaseException:
                    conn.close()
                    raise
                if keep and not self._closed:
                    conn.reused = True
                    origin.idle.append(conn)
                else:
                    conn.close()
                return httpx.Response(
                    status,
                    headers=headers,
                    content=content,
                    request=request,
                    extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
                )
            raise httpx.RemoteProtocolError("server closed the connection twice", request=request)
        finally:
            origin.slots.release()

    async def aclose(self) -> None:
        self._closed = True
        for origin in self._origins.values():
            while origin.idle:
                origin.idle.pop().close()
        if self._fallback is not None:
            await self._fallback.aclose()


class _StaleConnection(Exception):
    """A reused connection was closed by the server before any byte of the reply."""


def _request_head(request: httpx.Request, host: str, port: int, length: int) -> bytes:
    target = request.url.raw_path or b"/"
    lines = [b"%s %s HTTP/1.1" % (request.method.encode(), target)]
    seen_host = False
    for name, value in request.headers.raw:
        lower = name.lower()
        if lower in (b"content-length", b"transfer-encoding", b"connection"):
            continue
        seen_host = seen_host or lower == b"host"
        lines.append(name + b": " + value)
    if not seen_host:
        lines.append(b"Host: " + (host if port == 80 else f"{host}:{port}").encode())
    if length or request.method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: %d" % length)
    lines.append(b"Connection: keep-alive")
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _connect(host: str, port: int, timeout: float | None, request: httpx.Request) -> _Conn:
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=_MAX_LINE)
    except TimeoutError:
        raise httpx.ConnectTimeout(f"connect to {host}:{port} timed out", request=request) from None
    except OSError as exc:
        raise httpx.ConnectError(f"{host}:{port}: {exc}", request=request) from exc
    return _Conn(reader, writer)


async def _exchange(
    conn: _Conn, head: bytes, body: bytes, timeout: float | None, request: httpx.Request
) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes, bool]:
    reader, writer = conn.reader, conn.writer
    replied = False  # a byte of the reply came: from then on the request is never sent again
    try:
        async with asyncio.timeout(timeout):
            writer.write(head + body if len(body) < 65_536 else head)
            if len(body) >= 65_536:
                writer.write(body)
            await writer.drain()
            while True:  # interim 1xx replies (100 Continue, 103 Early Hints) are skipped
                status_line = await reader.readline()
                if not status_line:
                    if conn.reused and not replied:
                        raise _StaleConnection
                    raise httpx.RemoteProtocolError("server closed the connection", request=request)
                replied = True
                status, reason, version = _parse_status(status_line, request)
                headers: list[tuple[bytes, bytes]] = []
                length: int | None = None
                chunked = False
                close = version == b"HTTP/1.0"
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    if len(headers) >= _MAX_HEADERS:
                        raise httpx.RemoteProtocolError("too many headers", request=request)
                    name, _, value = line.partition(b":")
                    name, value = name.strip(), value.strip()
                    headers.append((name, value))
                    lower = name.lower()
                    if lower == b"content-length":
                        length = int(value)
                    elif lower == b"transfer-encoding" and b"chunked" in value.lower():
                        chunked = True
                    elif lower == b"connection":
                        close = value.lower() == b"close" or (
                            version == b"HTTP/1.0" and value.lower() != b"keep-alive"
                        )
                if not 100 <= status < 200 or status == 101:
                    break
            close = close or status == 101  # switched protocols: never reuse the connection
            no_body = request.method == "HEAD" or status in (204, 304) or 100 <= status < 200
            if no_body:
                content = b""
            elif chunked:
                content = await _read_chunked(reader, request)
            elif length is not None:
                content = await reader.readexactly(length)
            else:
                content = await reader.read()  # until the server closes
                close = True
    except TimeoutError:
        raise httpx.ReadTimeout(
            "no complete reply within the read timeout", request=request
        ) from None
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        if conn.reused and not replied and isinstance(exc, ConnectionResetError | BrokenPipeError):
            raise _StaleConnection from exc
        raise httpx.ReadError(f"connection lost: {exc!r}", request=request) from exc
    except ValueError as exc:
        raise httpx.RemoteProtocolError(f"malformed reply: {exc}", request=request) from exc
    # Transfer-Encoding was undone here: do not let httpx try again on the decoded body.
    headers = [(n, v) for n, v in headers if n.lower() != b"transfer-encoding"]
    return status, reason, headers, content, not close


def _parse_status(line: bytes, request: httpx.Request) -> tuple[int, bytes, bytes]:
    parts = line.rstrip(b"\r\n").split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise httpx.RemoteProtocolError(f"bad status line {line[:80]!r}", request=request)
    reason = parts[2] if len(parts) > 2 else b""
    return int(parts[1]), reason, parts[0]


async def _read_chunked(reader: asyncio.StreamReader, request: httpx.Request) -> bytes:
    chunks: list[bytes] = []
    while True:
        size_line = await reader.readline()
        if not size_line:  # the server closed mid-body: not the end of the body
            raise asyncio.IncompleteReadError(b"".join(chunks), None)
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailers: read and dropped
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        if await reader.readline() not in (b"\r\n", b"\n"):
            raise httpx.RemoteProtocolError("bad chunk terminator", request=request)
