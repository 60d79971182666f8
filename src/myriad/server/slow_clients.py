"""Slow clients cost little: deadlines on reading a request, under the ASGI app.

uvicorn times out idle keep-alive connections but not a request that is still
arriving: a client that opens a connection and sends half a header (or a body one
byte a minute) held a socket and its buffers forever; a thousand of them held a
thousand. ``guarded_http_protocol`` is uvicorn's httptools protocol with two
deadlines:

- ``header_timeout``: from the connection opening (or a request's first byte) to
  the end of its headers;
- ``body_timeout``: the longest pause between two pieces of a request body.

Either closes the connection (the app, if it was reading the body, sees a
disconnect). Once a request has fully arrived nothing here limits how long the
app takes to answer it (streams, long polls), and WebSockets are on their own
after the upgrade (frame rates: ``myriad.server.agents_api``).
"""

from __future__ import annotations

import asyncio
from typing import Any


def guarded_http_protocol(header_timeout: float, body_timeout: float) -> type[asyncio.Protocol] | str:
    """uvicorn's httptools protocol with the two deadlines (seconds); ``"auto"``
    (uvicorn's choice, unguarded, with a warning) where httptools is missing."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # uvicorn without [standard]
        import logging

        logging.getLogger("myriad.server").warning(
            "httptools is not installed: no header/body timeouts (pip install 'uvicorn[standard]')")
        return "auto"

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm(header_timeout)  # a connection that never sends a request

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm(header_timeout)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._arm(body_timeout)

        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            self._arm(body_timeout)

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def handle_websocket_upgrade(self) -> None:
            self._disarm()
            super().handle_websocket_upgrade()

    return GuardedHttpToolsProtocol


class FrameRate:
    """A token bucket per WebSocket: ``burst`` frames at once, then ``rate`` per
    second. ``take`` waits instead of refusing: while it waits the server reads
    nothing more from that socket, so TCP pushes back on the sender and the other
    connections keep the loop."""

    __slots__ = ("_rate", "_burst", "_tokens", "_last")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate, self._burst = rate, float(max(1, burst))
        self._tokens, self._last = self._burst, 0.0

    async def take(self) -> None:
        if self._rate <= 0:
            return
        now = asyncio.get_running_loop().time()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1.0:
            wait = (1.0 - self._tokens) / self._rate
            await asyncio.sleep(wait)
            self._last += wait
            self._tokens = 1.0
        self._tokens -= 1.0


__all__ = ["FrameRate", "guarded_http_protocol"]
