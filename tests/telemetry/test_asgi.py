"""The middleware: HTTP server spans, W3C extraction from headers and the WebSocket query."""

from __future__ import annotations

from opentelemetry import baggage, trace
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient

from myriad.telemetry import semconv as sc

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _app(tel):
    async def hello(request):
        ctx = trace.get_current_span().get_span_context()
        return JSONResponse({"trace": f"{ctx.trace_id:032x}", "user": baggage.get_baggage("enduser.id")})

    async def boom(request):
        raise RuntimeError("nope")

    async def ws(websocket):
        await websocket.accept()
        ctx = trace.get_current_span().get_span_context()
        await websocket.send_json({"trace": f"{ctx.trace_id:032x}", "user": baggage.get_baggage("enduser.id")})
        await websocket.close()

    app = Starlette(routes=[Route("/hello/{name}", hello), Route("/boom", boom), Route("/healthz", hello),
                            WebSocketRoute("/ws", ws)])
    return tel.asgi_middleware(app)


def test_http_server_span_continues_the_client_trace(tel):
    client = TestClient(_app(tel))
    r = client.get("/hello/ann", headers={"traceparent": PARENT, "baggage": "enduser.id=ann"})
    assert r.json() == {"trace": "0af7651916cd43dd8448eb211c80319c", "user": "ann"}
    (span,) = tel.store._snapshot()
    assert span.name == "GET /hello/{name}" and span.kind == "SERVER"
    assert span.parent_id == 0xB7AD6B7169203331
    a = span.attributes
    assert a[sc.HTTP_ROUTE] == "/hello/{name}" and a[sc.HTTP_RESPONSE_STATUS_CODE] == 200
    assert a[sc.URL_PATH] == "/hello/ann" and a[sc.HTTP_REQUEST_METHOD] == "GET"
    client.get("/healthz")  # excluded: no span
    assert len(tel.store._snapshot()) == 1


def test_server_errors_mark_the_span(tel):
    client = TestClient(_app(tel), raise_server_exceptions=False)
    assert client.get("/boom").status_code == 500
    (span,) = tel.store._snapshot()
    assert not span.ok and span.attributes[sc.HTTP_RESPONSE_STATUS_CODE] == 500
    assert span.attributes[sc.ERROR_TYPE] == "RuntimeError"


def test_websocket_takes_context_from_the_query(tel):
    client = TestClient(_app(tel))
    with client.websocket_connect(f"/ws?traceparent={PARENT}&baggage=enduser.id%3Dbob") as ws:
        got = ws.receive_json()
    assert got == {"trace": "0af7651916cd43dd8448eb211c80319c", "user": "bob"}
    with client.websocket_connect("/ws") as ws:
        assert ws.receive_json()["trace"] == "0" * 32
