"""The front door's WebSocket path: authenticate and route the handshake, then splice
bytes between the client and the shard.

uvicorn hands a WebSocket upgrade to its ``ws`` protocol class together with the raw
transport; for the front door that class is ``DoorWebSocket``. It authenticates the
handshake (``FrontDoor.auth``), opens a TCP connection to the holder shard
(``FrontDoor.route``: placement, ``agent_moved``, dead shards), forwards the client's
own handshake (its ``Sec-WebSocket-Key``, so the shard's ``101`` is valid for the
client as it is) and waits for the shard's first frame: a close 4004 ``agent_moved``
sends it to another shard, invisibly to the client. Then it writes the shard's 101
and first frame to the client and from there on copies bytes both ways without
decoding them: client frames are already masked as a server expects, the shard's are
unmasked as a client expects, and the door strips ``Sec-WebSocket-Extensions`` so the
two negotiate no compression (as before, when the door re-encoded every frame).

The only thing it reads of the stream is the shard's frame headers (not payloads,
``FrameTracker``): whether the shard sent a close frame, and where frames end, so
that when a shard dies the client's side is closed with 1012 ("reconnect") at a frame
boundary, as the npm ``agents`` client expects. Back-pressure is the transports' own:
a side whose write buffer is full pauses reading from the other.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import struct
from typing import Any
from urllib.parse import unquote

log = logging.getLogger("myriad.cluster")

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_NOT_FORWARDED = frozenset((b"host", b"sec-websocket-extensions", b"content-length"))
_TRACE_FIELDS = frozenset((b"traceparent", b"tracestate", b"baggage"))
CLOSE_AUTH = 4001
"""The close code of a WebSocket refused for its credential (the server's ``CLOSE_AUTH``)."""


def close_frame(code: int, reason: str) -> bytes:
    """An unmasked close frame (server to client)."""
    payload = struct.pack("!H", code) + reason.encode("utf-8")[:123]
    return bytes((0x88, len(payload))) + payload


def accept_head(key: bytes) -> bytes:
    """The door's own ``101`` for a handshake it refuses (accept, then close, as a shard does)."""
    accept = base64.b64encode(hashlib.sha1(key.strip() + _GUID).digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            b"sec-websocket-accept: " + accept + b"\r\n\r\n")


class FrameTracker:
    """Follows frame boundaries of a WebSocket byte stream without touching payloads."""

    __slots__ = ("left", "head", "closed")

    def __init__(self) -> None:
        self.left = 0  # payload bytes of the current frame still to come
        self.head = b""  # a frame header split across reads
        self.closed = False  # a close frame went by

    @property
    def at_boundary(self) -> bool:
        return not self.left and not self.head

    def feed(self, data: bytes) -> None:
        if self.head:
            data, self.head = self.head + data, b""
        i, n = 0, len(data)
        while i < n:
            if self.left:
                step = min(self.left, n - i)
                self.left -= step
                i += step
                continue
            if n - i < 2:
                self.head = data[i:]
                return
            b0, b1 = data[i], data[i + 1]
            size, hlen = b1 & 0x7F, 2
            if size == 126:
                hlen = 4
            elif size == 127:
                hlen = 10
            if b1 & 0x80:
                hlen += 4
            if n - i < hlen:
                self.head = data[i:]
                return
            if size == 126:
                size = int.from_bytes(data[i + 2:i + 4], "big")
            elif size == 127:
                size = int.from_bytes(data[i + 2:i + 10], "big")
            if b0 & 0x0F == 8:
                self.closed = True
            i += hlen
            self.left = size


def first_frame(data: bytes | bytearray, at: int) -> tuple[int, bytes, int] | None:
    """(opcode, payload, end) of the unmasked frame starting at ``at``, or None if incomplete."""
    n = len(data)
    if n - at < 2:
        return None
    b0, b1 = data[at], data[at + 1]
    size, hlen = b1 & 0x7F, 2
    if size == 126:
        hlen = 4
    elif size == 127:
        hlen = 10
    if n - at < hlen:
        return None
    if size == 126:
        size = int.from_bytes(data[at + 2:at + 4], "big")
    elif size == 127:
        size = int.from_bytes(data[at + 2:at + 10], "big")
    end = at + hlen + size
    if n < end:
        return None
    return b0 & 0x0F, bytes(data[at + hlen:end]), end


class _Upstream(asyncio.Protocol):
    """The door's connection to a shard: the handshake's answer, then bytes to the client."""

    def __init__(self, client: "DoorWebSocket") -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.head_end = 0
        self.ready: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self.tracker = FrameTracker()
        self.spliced = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.spliced:
            self.tracker.feed(data)
            self.client.write(data)
            return
        self.buf += data
        if self.ready.done():
            return
        if not self.head_end:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    self.ready.set_exception(OSError("the shard's handshake answer is too long"))
                return
            status = bytes(self.buf[:self.buf.find(b"\r\n")]).split(b" ", 2)
            if len(status) < 2 or status[1] != b"101":
                self.ready.set_exception(OSError(f"the shard answered the handshake with {status[1:2]!r}"))
                return
            self.head_end = end + 4
        frame = first_frame(self.buf, self.head_end)
        if frame is not None:
            self.ready.set_result((frame[0], frame[1]))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.spliced:
            self.client.upstream_lost(self.tracker)
        elif not self.ready.done():
            self.ready.set_exception(OSError("the shard closed the connection during the handshake"))

    def pause_writing(self) -> None:
        self.client.pause_reading()

    def resume_writing(self) -> None:
        self.client.resume_reading()

    def splice(self) -> bytes:
        """Switch to copying; returns what arrived so far (101, first frame and any more)."""
        data = bytes(self.buf)
        self.buf = bytearray()
        self.tracker.feed(data[self.head_end:])
        self.spliced = True
        return data


class DoorWebSocket(asyncio.Protocol):
    """uvicorn's ``ws`` protocol for a front door (see the module docstring); uvicorn
    gets it bound to its door by ``protocol_for(door)``."""

    def __init__(self, door: Any, config: Any = None, server_state: Any = None, app_state: Any = None,
                 **_: Any) -> None:
        self.door = door
        self.connections: set[Any] = server_state.connections if server_state is not None else set()
        self.tasks: set[Any] = server_state.tasks if server_state is not None else set()
        self.transport: asyncio.Transport | None = None
        self.upstream: _Upstream | None = None
        self.pending = bytearray()
        self.task: asyncio.Task[None] | None = None
        self.closing = False

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connections.add(self)
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        up = self.upstream
        if up is not None:
            up.transport.write(data)  # type: ignore[union-attr]
            return
        if self.task is None:  # the handshake, as uvicorn rebuilt it from the request it parsed
            self.task = asyncio.get_running_loop().create_task(self._open(data))
            self.tasks.add(self.task)
            self.task.add_done_callback(self.tasks.discard)
            return
        if self.closing:  # the client's answer to our close: done
            self._close()
            return
        self.pending += data  # frames sent before the shard answered
        if len(self.pending) > self.door.max_frame_bytes + 65536:
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.close()
        elif self.task is not None and not self.task.done():
            self.task.cancel()

    def pause_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()

    def shutdown(self) -> None:
        """uvicorn is stopping: tell the client to reconnect (to another node)."""
        up = self.upstream
        if up is None or up.tracker.at_boundary and not up.tracker.closed:
            self.write(close_frame(1012, "front door restarting; reconnect"))
        if up is not None and up.transport is not None:
            up.transport.close()
        self._close()

    # -- used by _Upstream -----------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def upstream_lost(self, tracker: FrameTracker) -> None:
        if not tracker.closed and tracker.at_boundary:  # the shard died: reconnect (to its successor)
            self.write(close_frame(1012, "shard went away; reconnect"))
        self._close()

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- the handshake -----------------------------------------------------------------------
    async def _open(self, head: bytes) -> None:
        assert self.transport is not None
        scope = _scope(head, self.transport)
        key = next((v for k, v in scope["headers"] if k == b"sec-websocket-key"), None)
        if key is None:
            self.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 29\r\n"
                       b"connection: close\r\n\r\nmissing Sec-WebSocket-Key\r\n\r\n")
            self._close()
            return
        up: _Upstream | None = None
        try:
            up = await self.door.open_websocket(scope, self._connect)
        finally:
            if up is not None and self.transport.is_closing():  # the client left meanwhile
                if up.transport is not None:
                    up.transport.close()
                up = None
        if up is None:
            return
        if isinstance(up, tuple):  # refused: (code, reason) from the door itself
            code, reason = up
            self.write(accept_head(key) + close_frame(code, reason[:120]))
            self.closing = True
            asyncio.get_running_loop().call_later(2.0, self._close)
            return
        self.write(up.splice())
        self.upstream = up
        if self.pending:
            up.transport.write(bytes(self.pending))  # type: ignore[union-attr]
            self.pending = bytearray()

    async def _connect(self, address: str, request: bytes, timeout: float) -> tuple[_Upstream, int, bytes]:
        """Open ``address``, send the handshake ``request``; returns the connection and the
        shard's first frame (opcode, payload). ``OSError`` when the shard cannot answer."""
        host, _, port = address.rpartition(":")
        loop = asyncio.get_running_loop()
        try:
            transport, up = await asyncio.wait_for(
                loop.create_connection(lambda: _Upstream(self), host, int(port)), timeout)
        except (OSError, asyncio.TimeoutError) as e:
            raise OSError(f"cannot reach shard at {address}: {e or type(e).__name__}") from None
        transport.write(request)
        try:
            opcode, payload = await asyncio.wait_for(up.ready, timeout)
        except (OSError, asyncio.TimeoutError) as e:
            transport.close()
            raise OSError(f"shard at {address} did not open the WebSocket: {e or type(e).__name__}") from None
        except BaseException:
            transport.close()
            raise
        return up, opcode, payload


def protocol_for(door: Any) -> type[asyncio.Protocol]:
    """The ``ws`` protocol class to give uvicorn for ``door``."""

    class Bound(DoorWebSocket):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(door, **kwargs)

    return Bound


def _scope(head: bytes, transport: asyncio.BaseTransport) -> dict[str, Any]:
    """An ASGI-like scope of the handshake uvicorn rebuilt (``METHOD target HTTP/1.1``,
    then ``name: value`` lines with lowercase names)."""
    lines = head.split(b"\r\n")
    target = lines[0].split(b" ")[1] if len(lines[0].split(b" ")) > 1 else b"/"
    headers = [(n, v) for n, _, v in (line.partition(b": ") for line in lines[1:] if line)]
    raw_path, _, query = target.partition(b"?")
    peer = transport.get_extra_info("peername")
    local = transport.get_extra_info("sockname")
    protocols = next((v for n, v in headers if n == b"sec-websocket-protocol"), b"")
    return {"type": "websocket", "scheme": "ws", "path": unquote(raw_path.decode("latin-1")), "raw_path": raw_path,
            "query_string": query, "headers": headers, "target": target,
            "client": tuple(peer[:2]) if isinstance(peer, tuple) else None,
            "server": tuple(local[:2]) if isinstance(local, tuple) else None,
            "subprotocols": [p.strip() for p in protocols.decode("latin-1").split(",") if p.strip()]}


def handshake_request(scope: dict[str, Any], address: str, trace: dict[str, str] | None) -> bytes:
    """The client's handshake for the shard at ``address``: its own headers (key,
    version, subprotocols) without ``Host`` and extensions; the door's trace context in
    place of the client's when the door traced it."""
    out = [b"GET ", scope["target"], b" HTTP/1.1\r\nhost: ", address.encode("latin-1"), b"\r\n"]
    skip = _NOT_FORWARDED | _TRACE_FIELDS if trace else _NOT_FORWARDED
    for name, value in scope["headers"]:
        if name not in skip:
            out += [name, b": ", value, b"\r\n"]
    for name_s, value_s in (trace or {}).items():
        out += [name_s.encode("latin-1"), b": ", value_s.encode("latin-1"), b"\r\n"]
    out.append(b"\r\n")
    return b"".join(out)


__all__ = ["CLOSE_AUTH", "DoorWebSocket", "protocol_for", "FrameTracker", "accept_head", "close_frame", "first_frame",
           "handshake_request"]
