"""A node's front door: one ASGI app that routes every request and WebSocket for an
agent to the shard that holds it, and everything else to any shard.

It does not run agents. It authenticates (``door_auth``: the identity room over the
cluster's key store) and refuses a bad credential itself, with the body a shard
would send, so a flood of bad keys never reaches a shard; the shard still
authenticates what it is sent and judges scopes exactly as in embedded mode. What
it adds is routing:

1. the placement key of the URL (``placement.placement_key``: the root agent's
   ``class/name``) picks a shard by rendezvous over the live, non-draining shards
   of the directory (refreshed every ``refresh`` seconds), or the shard it last
   found holding that key;
2. a shard that does not hold the address answers ``agent_moved`` (HTTP 409, or
   a WebSocket close 4004 before any frame) naming the holder: the front door
   goes there instead; with no live holder (it died, its lease has not expired
   yet) it waits and places again, up to ``route_timeout`` seconds;
3. a shard that refuses connections is avoided until the next refresh.

Telemetry (``myriad.telemetry``): every HTTP request gets a SERVER span at the door
(the telemetry room's ASGI middleware, which also continues a client's
``traceparent``), every WebSocket handshake a SERVER span covering authentication
and routing; the door's context goes to the shard as ``traceparent``, so one trace
runs from the door through the shard's span and the agent's turn to the model call.

WebSockets never reach this ASGI app: uvicorn hands each upgrade to
``door_ws.DoorWebSocket``, which calls ``open_websocket`` (authentication, span,
routing) and then splices bytes between the client and the shard. A WebSocket is
accepted from the client only once the shard has accepted it and sent its first
frame, so re-routing is invisible to clients. When a shard's side
closes abnormally (it died), the client's socket closes with 1012, and clients
reconnect (the npm ``agents`` client does by itself) to the new owner.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from typing import Any

from myriad.cluster.activation import MOVED_PREFIX
from myriad.cluster.directory import Directory, ShardInfo
from myriad.cluster.door_auth import DoorAuth, needs_credential, refusal_body
from myriad.cluster.door_ws import CLOSE_AUTH, handshake_request, protocol_for
from myriad.cluster.placement import placement_key, rendezvous

log = logging.getLogger("myriad.cluster")

_HOP = {b"host", b"connection", b"keep-alive", b"upgrade", b"transfer-encoding", b"te", b"trailer",
        b"proxy-authorization", b"proxy-connection", b"content-length"}
_MAX_OWNERS = 1_000_000
_WHOLE = 65_536
"""A response this small with a Content-Length is read whole and sent as one message."""


class _Moved(Exception):
    def __init__(self, holder: str) -> None:
        self.holder = holder


class FrontDoor:
    """The ASGI app of a node's front door (see the module docstring)."""

    def __init__(self, database: str, settings: Any, *, telemetry: Any = None, refresh: float = 0.5,
                 route_timeout: float = 10.0, max_frame_bytes: int = 1_048_576) -> None:
        self.directory = Directory(database)
        self.settings = settings
        self.auth = DoorAuth(settings, database)
        self.telemetry = telemetry
        """A ``myriad.telemetry.Telemetry`` (None or disabled: no spans, headers pass as sent)."""
        self._traced = telemetry is not None and telemetry.enabled
        self._app = telemetry.asgi_middleware(self._dispatch) if self._traced else self._dispatch
        self.refresh_every = refresh
        self.route_timeout = route_timeout
        self.max_frame_bytes = max_frame_bytes
        self.live: dict[str, ShardInfo] = {}
        self.placeable: list[str] = []
        self.owners: dict[str, str] = {}
        self.suspect: dict[str, float] = {}
        self.stats = {"http": 0, "websockets": 0, "refused": 0, "moved": 0, "retries": 0, "unavailable": 0}
        self._rr = itertools.count()
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Lock | None = None

    # -- lifecycle -----------------------------------------------------------------
    def server_config(self, host: str, port: int, *, log_level: str = "warning") -> Any:
        """The ``uvicorn.Config`` that serves this door: ``uvicorn.Server(config).run()``
        (uvloop when installed). HTTP is uvicorn's httptools protocol with the server's
        header and body deadlines (a door faces the same slow clients as a server);
        WebSocket upgrades go to ``door_ws.DoorWebSocket``, never to the ASGI app."""
        import uvicorn

        from myriad.server.slow_clients import guarded_http_protocol

        http = guarded_http_protocol(self.settings.header_timeout, self.settings.body_timeout)
        return uvicorn.Config(self, host=host, port=port, log_level=log_level, http=http, ws=protocol_for(self),
                              lifespan="on", access_log=False)

    async def start(self) -> None:
        import aiohttp

        await self.directory.connect()
        await self.auth.open()
        self._refreshing = asyncio.Lock()
        await self.refresh()
        self._client = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=3.0),
            connector=aiohttp.TCPConnector(limit=1000, limit_per_host=0, enable_cleanup_closed=True),
            auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"))
        self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._client is not None:
            await self._client.close()
        await self.directory.close()
        self.auth.close()

    async def refresh(self) -> None:
        assert self._refreshing is not None
        async with self._refreshing:
            shards = await self.directory.shards()
            self.live = {s.id: s for s in shards}
            self.placeable = [s.id for s in shards if not s.draining]
            now = time.monotonic()
            self.suspect = {k: v for k, v in self.suspect.items() if v > now and k in self.live}

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_every)
            try:
                await self.refresh()
            except Exception as e:  # keep routing with the last view
                log.warning("front door could not refresh the shard list: %s", e)

    # -- routing -------------------------------------------------------------------
    def _usable(self, sid: str) -> bool:
        return sid in self.live and self.suspect.get(sid, 0.0) <= time.monotonic()

    def _pick(self, key: str | None, hint: str | None, avoid: set[str] = set()) -> ShardInfo | None:
        if hint and self._usable(hint):
            return self.live[hint]
        candidates = [s for s in self.placeable if self._usable(s) and s not in avoid]
        if not candidates:
            return None
        if key is None:
            return self.live[candidates[next(self._rr) % len(candidates)]]
        cached = self.owners.get(key)
        if cached is not None and self._usable(cached) and cached not in avoid:
            return self.live[cached]
        sid = rendezvous(key, candidates)
        return self.live[sid] if sid else None

    async def _route(self, key: str | None, attempt: Any) -> Any:
        """Call ``attempt(shard)`` on the owner, following moves and avoiding dead
        shards, until it returns or ``route_timeout`` passes (then None)."""
        deadline = time.monotonic() + self.route_timeout
        hint: str | None = None
        avoid: set[str] = set()  # shards that said "not here, and no live holder" to this request
        while True:
            shard = self._pick(key, hint, avoid)
            if shard is None and avoid:
                avoid.clear()  # every placeable shard said so: try them again after the pause below
            hint = None
            if shard is not None:
                try:
                    result = await attempt(shard)
                except _Moved as m:
                    self.stats["moved"] += 1
                    if key is not None:
                        self.owners.pop(key, None)
                    if m.holder and m.holder != shard.id and self._usable(m.holder):
                        hint = m.holder
                        continue
                    if not m.holder:
                        avoid.add(shard.id)  # draining or without a lease: place it elsewhere
                        continue
                except OSError:
                    self.suspect[shard.id] = time.monotonic() + max(1.0, self.refresh_every * 2)
                else:
                    if key is not None:
                        if len(self.owners) >= _MAX_OWNERS:
                            self.owners.clear()
                        self.owners[key] = shard.id
                    return result
            if time.monotonic() > deadline:
                self.stats["unavailable"] += 1
                return None
            self.stats["retries"] += 1
            await asyncio.sleep(0.1)
            try:
                await self.refresh()
            except Exception:
                pass

    # -- ASGI ----------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self._app(scope, receive, send)

    async def _dispatch(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as e:
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.stats["http"] += 1
        path = scope["path"]
        if path == "/healthz" and scope["method"] == "GET":
            await _json(send, 200, {"status": "ok", "role": "front-door", "shards": len(self.live),
                                    "placeable": len(self.placeable), **self.stats})
            return
        if self._traced:
            scope["route"] = _Route(_route_template(path))  # names the middleware's span
        if needs_credential(path):
            refused = await self.auth.refusal(scope)
            if refused is not None:
                self.stats["refused"] += 1
                await _json(send, refused.status, refusal_body(path, refused), [(b"www-authenticate", b"Bearer")])
                return
        body = b""
        more: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            if body:
                more.append(chunk)
            else:
                body = chunk
            if not message.get("more_body"):
                break
        if more:
            body = b"".join([body, *more])
        raw = scope.get("raw_path") or path.encode()
        query = scope.get("query_string") or b""
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in _HOP]
        if self._traced:
            headers = _with_trace(headers)
        client = scope.get("client")
        if client:
            headers.append(("x-forwarded-for", client[0]))
        method = scope["method"]

        async def attempt(shard: ShardInfo) -> Any:
            import aiohttp
            from yarl import URL

            # an encoded URL built, not parsed: the client's path and query go as they came
            url = URL.build(scheme="http", authority=shard.address, path=raw.decode("latin-1"),
                            query_string=query.decode("latin-1"), encoded=True)
            try:
                response = await self._client.request(method, url, headers=headers, data=body, allow_redirects=False)
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as e:
                raise OSError(str(e)) from None
            if response.status == 409:
                content = await response.read()
                response.release()
                holder = _moved_holder(content)
                if holder is not None:
                    raise _Moved(holder)
                return response, content
            length = response.content_length
            if length is not None and length <= _WHOLE and method != "HEAD" and response.status not in (204, 304):
                # one body message instead of a stream
                try:
                    content = await response.read()
                except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as e:
                    raise OSError(str(e)) from None
                finally:
                    response.release()
                return response, content
            return response, None

        routed = await self._route(placement_key(path), attempt)
        if routed is None:
            await _json(send, 503, {"error": {"code": "cluster_unavailable", "retry_after": 1,
                                              "message": "no shard could take this request in time; retry shortly"}},
                        [(b"retry-after", b"1")])
            return
        response, content = routed
        out = [(k, v) for k, v in ((k.lower(), v) for k, v in response.raw_headers) if k not in _HOP]
        status = response.status
        if content is not None:
            out.append((b"content-length", str(len(content)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": out})
            await send({"type": "http.response.body", "body": content})
            return
        length = response.headers.get("content-length")
        if length is not None:
            out.append((b"content-length", length.encode()))
        await send({"type": "http.response.start", "status": status, "headers": out})
        try:
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            response.release()
        await send({"type": "http.response.body", "body": b""})

    async def open_websocket(self, scope: dict[str, Any], connect: Any) -> Any:
        """A WebSocket handshake (``door_ws.DoorWebSocket`` calls this): authenticate it,
        then route it with ``connect(address, request, timeout)`` to the holder shard.
        Returns the shard's connection, or ``(code, reason)`` to accept and close with."""
        self.stats["websockets"] += 1
        if not self._traced:
            return await self._open_websocket(scope, connect, None)
        from opentelemetry import context, propagate, trace

        from myriad.telemetry import carrier_from_scope

        carrier = carrier_from_scope(scope, query=True)
        parent = propagate.extract(carrier) if carrier else None
        span = self._handshake_span(scope, parent)
        token = context.attach(trace.set_span_in_context(span, parent))
        try:
            return await self._open_websocket(scope, connect, span)
        finally:
            context.detach(token)
            if span.is_recording():  # left the handshake another way (the client went away)
                span.end()

    def _handshake_span(self, scope: dict[str, Any], parent: Any) -> Any:
        from opentelemetry.trace import SpanKind

        attrs: dict[str, Any] = {"http.request.method": "GET", "http.route": _route_template(scope["path"]),
                                 "url.path": scope["path"], "url.scheme": scope.get("scheme", "ws"),
                                 "network.protocol.name": "websocket"}
        client = scope.get("client")
        if client:
            attrs["client.address"] = client[0]
        assert self.telemetry is not None
        return self.telemetry.tracer.start_span(f"GET {attrs['http.route']}", context=parent, kind=SpanKind.SERVER,
                                                attributes=attrs)

    async def _open_websocket(self, scope: dict[str, Any], connect: Any, span: Any) -> Any:
        if _door_authenticates(scope):
            bad = await self.auth.refusal(scope)
            if bad is not None:  # as a shard: accept, then close with 4001 and the reason
                self.stats["refused"] += 1
                _span_end(span, scope, CLOSE_AUTH)
                return CLOSE_AUTH, bad.message
        carrier = None
        if span is not None:
            from myriad.telemetry import trace_headers

            carrier = trace_headers()

        async def attempt(shard: ShardInfo) -> Any:
            up, opcode, payload = await connect(shard.address, handshake_request(scope, shard.address, carrier), 10.0)
            if opcode == 8:  # the shard closed at once: moved, dying, or a refusal the client gets as it is
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                reason = payload[2:].decode("utf-8", "replace")
                if code == 4004 and reason.startswith(MOVED_PREFIX):
                    up.transport.close()
                    holder = reason[len(MOVED_PREFIX):]
                    raise _Moved("" if holder.startswith("(") else holder)
                if code in (1006, 1011, 1012):
                    up.transport.close()
                    raise OSError(f"shard closed with {code}")
            return up

        up = await self._route(placement_key(scope["path"]), attempt)
        if up is None:
            _span_end(span, scope, 1013)
            return 1013, "no shard could take this agent in time; retry"
        _span_end(span, scope, 101)
        return up


class _Route:
    """What the telemetry middleware reads as ``scope["route"]`` (its ``path`` names the span)."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


def _route_template(path: str) -> str:
    """A low-cardinality name for ``path``: its first two segments, then ``{path}``
    (``/v1/agents/{path}``, ``/agents/tally/{path}``, ``/v1/chat/{path}``)."""
    parts = path.split("/", 3)
    return path if len(parts) <= 3 else "/".join(parts[:3]) + "/{path}"


_TRACE_FIELDS = frozenset(("traceparent", "tracestate", "baggage"))


def _with_trace(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` with the current context's W3C fields in place of the client's
    (the door's span is now the parent of what the shard does)."""
    from myriad.telemetry import trace_headers

    carrier = trace_headers()
    if not carrier:
        return headers
    return [h for h in headers if h[0] not in _TRACE_FIELDS] + list(carrier.items())


def _span_end(span: Any, scope: dict[str, Any], code: int) -> None:
    """End the handshake's span with the outcome (101, or the close code it was refused with)."""
    if span is None:
        return
    principal = scope.get("myriad.principal")
    if principal is not None:
        span.set_attribute("myriad.tenant", principal.tenant)
    span.set_attribute("http.response.status_code" if code == 101 else "websocket.close.code", code)
    span.end()


def _door_authenticates(scope: dict[str, Any]) -> bool:
    """A WebSocket the door authenticates: an agent's, in the JSON transport (a shard
    refuses another transport before looking at the credential, so the door lets it)."""
    if not scope["path"].startswith("/agents/"):
        return False
    query = scope.get("query_string") or b""
    return b"__agents_transport" not in query


def _moved_holder(content: bytes) -> str | None:
    try:
        error = json.loads(content).get("error", {})
    except (ValueError, AttributeError):
        return None
    if isinstance(error, dict) and error.get("code") == "agent_moved":
        return str(error.get("holder") or "")
    return None


async def _json(send: Any, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None) -> None:
    # compact, like the server's own JSON responses (starlette's JSONResponse)
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


__all__ = ["FrontDoor"]
