"""A small HTTP/1.1 client for the gateway's hot path: keep-alive connection pools
on asyncio protocols, responses parsed by httptools (the parser uvicorn uses).

Why not aiohttp or httpx: on this path a request through aiohttp costs ~250 us of
CPU, five times what the rest of the gateway spends on it, and the gateway's whole
promise is to add well under a millisecond. This client does only what providers
need: POST a body, read a JSON reply or a stream of body pieces, reuse the
connection, TLS when the URL is https. No redirects, cookies, proxies or HTTP/2.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import AsyncIterator
from urllib.parse import urlsplit

import httptools

_IDLE_LIMIT = 256
"""Idle keep-alive connections kept per origin."""


class WireError(Exception):
    """The connection failed; ``received`` says whether any response byte had arrived."""

    def __init__(self, message: str, *, received: bool) -> None:
        super().__init__(message)
        self.received = received


class Response:
    """Status and headers; then the body, whole (``read``) or in pieces (``iter``)."""

    def __init__(self, conn: "_Conn") -> None:
        self._conn = conn
        self.status = conn.status
        self.headers = conn.headers

    async def read(self) -> bytes:
        return await self._conn.read_all()

    def iter(self) -> AsyncIterator[bytes]:
        return self._conn.iter_body()

    def release(self) -> None:
        self._conn.release()


class _Conn(asyncio.Protocol):
    def __init__(self, pool: "Pool") -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.busy = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = True
        self.received = False
        self.complete = False
        self.body: list[bytes] = []
        self.head: asyncio.Future[None] = self.pool.loop.create_future()
        self.wake: asyncio.Future[None] | None = None
        self.error: BaseException | None = None

    # -- protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(WireError(f"malformed HTTP response: {e}", received=True))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and exc is None and self.head.done() and not self.head.cancelled() \
                and "content-length" not in self.headers and "transfer-encoding" not in self.headers:
            # an HTTP/1.0-style body: it ends where the connection does
            self.keep_alive = False
            self.complete = True
            self._wake()
            return
        if not self.complete:
            self._fail(WireError(f"connection closed: {exc or 'by peer'}", received=self.received))

    # -- parser callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        if not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # -- helpers
    def _wake(self) -> None:
        w = self.wake
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, err: BaseException) -> None:
        self.error = err
        if not self.busy:
            return  # an idle pooled connection went away: nobody is waiting on it
        if not self.head.done():
            self.head.set_exception(err)
        w = self.wake
        if w is not None and not w.done():
            w.set_exception(err)

    async def _wait(self) -> None:
        self.wake = self.pool.loop.create_future()
        try:
            await self.wake
        finally:
            self.wake = None

    async def read_all(self) -> bytes:
        try:
            while not self.complete:
                if self.error is not None:
                    raise self.error
                await self._wait()
            return b"".join(self.body)
        finally:
            self.release()

    async def iter_body(self) -> AsyncIterator[bytes]:
        try:
            while True:
                if self.body:
                    data = b"".join(self.body)
                    self.body.clear()
                    yield data
                    continue
                if self.complete:
                    return
                if self.error is not None:
                    raise self.error
                await self._wait()
        finally:
            self.release()

    def release(self) -> None:
        """Back to the pool when the exchange finished cleanly; closed otherwise."""
        self.busy = False
        if self.complete and self.keep_alive and not self.closed and self.error is None:
            self.pool.put(self)
        else:
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Keep-alive connections to one origin (scheme, host, port), for one event loop."""

    def __init__(self, base_url: str) -> None:
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"base_url {base_url!r} must be http(s)://host[:port][/path]")
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if u.scheme == "https" else None
        self.prefix = u.path.rstrip("/")
        host_header = self.host if u.port is None else f"{self.host}:{u.port}"
        self.host_header = host_header.encode()
        self.loop = asyncio.get_running_loop()
        self.idle: deque[_Conn] = deque()

    def put(self, conn: _Conn) -> None:
        if len(self.idle) < _IDLE_LIMIT:
            conn._reset()
            self.idle.append(conn)
        else:
            conn.close()

    async def _connect(self) -> _Conn:
        try:
            _, conn = await self.loop.create_connection(lambda: _Conn(self), self.host, self.port, ssl=self.ssl)
        except OSError as e:
            raise WireError(f"cannot connect to {self.host}:{self.port}: {e}", received=False) from None
        return conn

    async def request(self, path: str, body: bytes, headers: bytes) -> Response:
        """POST ``body``; returns once the status line and headers are in.
        ``headers`` are pre-encoded ``Name: value\\r\\n`` lines."""
        msg = b"".join((b"POST ", (self.prefix + path).encode(), b" HTTP/1.1\r\nHost: ", self.host_header,
                        b"\r\nContent-Length: ", str(len(body)).encode(), b"\r\n", headers, b"\r\n", body))
        while self.idle:
            conn = self.idle.pop()
            if conn.closed:
                continue
            try:
                return await self._send(conn, msg)
            except WireError as e:
                if e.received:
                    raise
                # the server closed an idle connection as we reused it: try another
        return await self._send(await self._connect(), msg)

    async def _send(self, conn: _Conn, msg: bytes) -> Response:
        assert conn.transport is not None
        if conn.error is not None or conn.closed:
            raise WireError("connection already closed", received=False)
        conn.busy = True
        conn.transport.write(msg)
        try:
            await conn.head
        except BaseException:
            conn.busy = False
            conn.close()
            raise
        return Response(conn)

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()


def encode_headers(headers: dict[str, str]) -> bytes:
    return b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items())


__all__ = ["Pool", "Response", "WireError", "encode_headers"]
