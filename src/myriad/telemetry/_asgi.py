"""ASGI middleware: HTTP server spans and W3C context from clients.

- HTTP: the ``traceparent``/``tracestate``/``baggage`` headers are extracted and a
  SERVER span ``{method} {route}`` wraps the request (HTTP semantic conventions:
  method, route, path, status code, client address, user agent; the tenant once the
  app has authenticated the caller).
- WebSocket: browsers cannot set headers on a WebSocket, so the same three fields are
  also read from the query string (``?traceparent=...&baggage=...``). No span covers
  the connection (it may live for hours); the extracted context is made current for
  its lifetime, so every turn it causes joins the client's trace.

Paths under ``exclude_paths`` (health checks, the dashboard's own polling) pass
through untouched.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from myriad.telemetry import _fast as fast
from myriad.telemetry import semconv as sc
from myriad.telemetry._gateway import fail

_FIELDS = ("traceparent", "tracestate", "baggage")
Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


_FIELD_BYTES = {f.encode(): f for f in _FIELDS}


def carrier_from_scope(scope: Scope, query: bool = False) -> dict[str, str]:
    """The W3C fields of an ASGI scope's headers (and query string when ``query``).
    ASGI header names are lower-case bytes, so they are compared as they come."""
    carrier: dict[str, str] = {}
    for k, v in scope.get("headers") or ():
        name = _FIELD_BYTES.get(k)
        if name is None and k[:1] in (b"T", b"B"):  # a server that did not lower-case them
            name = _FIELD_BYTES.get(k.lower())
        if name is not None:
            carrier[name] = v.decode("latin-1")
    if query and scope.get("query_string"):
        for k, v in parse_qsl(scope["query_string"].decode("latin-1")):
            if k in _FIELDS and k not in carrier:
                carrier[k] = v
    return carrier


class TelemetryMiddleware:
    """Pure ASGI middleware (no base class), see the module docstring."""

    def __init__(self, app: ASGIApp, telemetry: Any) -> None:
        self.app = app
        self._tracer = telemetry.tracer
        self._duration = telemetry.instruments.http_duration
        self._exclude = tuple(telemetry.exclude_paths)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or (self._exclude and scope.get("path", "").startswith(self._exclude)):
            await self.app(scope, receive, send)
            return
        carrier = carrier_from_scope(scope, query=kind == "websocket")
        parent = propagate.extract(carrier) if carrier else None
        if kind == "websocket":
            if parent is None:
                await self.app(scope, receive, send)
                return
            token = context.attach(parent)
            try:
                await self.app(scope, receive, send)
            finally:
                context.detach(token)
            return
        await self._http(scope, receive, send, parent)

    async def _http(self, scope: Scope, receive: Any, send: Any, parent: Any) -> None:
        method = scope.get("method", "GET")
        attrs: dict[str, Any] = {sc.HTTP_REQUEST_METHOD: method, sc.URL_PATH: scope.get("path", ""),
                                 sc.URL_SCHEME: scope.get("scheme", "http"), sc.NETWORK_PROTOCOL_NAME: "http"}
        client = scope.get("client")
        if client:
            attrs[sc.CLIENT_ADDRESS] = client[0]
        server = scope.get("server")
        if server:
            attrs[sc.SERVER_ADDRESS] = server[0]
            if server[1] is not None:
                attrs[sc.SERVER_PORT] = server[1]
        for k, v in scope.get("headers") or ():
            if k == b"user-agent":
                attrs[sc.USER_AGENT_ORIGINAL] = v.decode("latin-1")[:256]
                break
        span = fast.start(self._tracer, method, SpanKind.SERVER, attrs, context=parent)
        token = context.attach(trace.set_span_in_context(span, parent))
        started = time.perf_counter()
        status: list[int] = [0]

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        error: BaseException | None = None
        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as e:
            error = e
            raise
        finally:
            context.detach(token)
            mattrs: dict[str, Any] = {sc.HTTP_REQUEST_METHOD: method}
            end: dict[str, Any] = {}
            route = getattr(scope.get("route"), "path", None)
            if route:
                span.update_name(f"{method} {route}")
                end[sc.HTTP_ROUTE] = route
                mattrs[sc.HTTP_ROUTE] = route
            principal = scope.get("myriad.principal")
            tenant = getattr(principal, "tenant", None)
            if tenant:
                end[sc.MYRIAD_TENANT] = tenant
            code = status[0] or (500 if error is not None else 0)
            if code:
                end[sc.HTTP_RESPONSE_STATUS_CODE] = code
                mattrs[sc.HTTP_RESPONSE_STATUS_CODE] = code
            fast.put(span, end)
            if error is not None:
                mattrs[sc.ERROR_TYPE] = fail(span, error)
            elif code >= 500:
                span.set_attribute(sc.ERROR_TYPE, str(code))
                span.set_status(Status(StatusCode.ERROR))
                mattrs[sc.ERROR_TYPE] = str(code)
            span.end()
            self._duration.record(time.perf_counter() - started, mattrs)


__all__ = ["TelemetryMiddleware", "carrier_from_scope"]
