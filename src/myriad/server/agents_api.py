"""The agents doors: ``/agents/{class}/{name}`` over WebSocket (the npm ``agents``
client's protocol) and plain HTTP (``on_request``), plus a JSON admin API under
``/v1/agents`` for scripts and curl."""

from __future__ import annotations

import uuid
from typing import Any, MutableMapping
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from myriad.agents import AgentHost, AgentRef, Connection, validate_name
from myriad.errors import AuthenticationError, InvalidRequest, MyriadError, PermissionDenied
from myriad.server.auth import presented_key, require_principal
from myriad.server.live_sockets import live_sockets
from myriad.server.ownership import require_agent
from myriad.server.slow_clients import FrameRate
from myriad.server.params import json_object

CLOSE_AUTH = 4001
CLOSE_FORBIDDEN = 4003
CLOSE_BAD_ADDRESS = 4004
CLOSE_TOO_BIG = 1009
CLOSE_TRY_LATER = 1013
CLOSE_UNSUPPORTED_TRANSPORT = 4005
"""``?__agents_transport=capnweb`` (the npm client's experimental Cap'n Web transport)
is refused at once; 4000-4999 tells the client not to reconnect."""


def parse_agent_path(tenant: str, raw_path: str, host: AgentHost) -> tuple[AgentRef, str]:
    """``/agents/{class}/{name}(/sub/{class}/{name})*(/rest)`` -> (ref, rest).

    Segments are percent-decoded one by one, so a name cannot smuggle a ``/``.
    """
    segments = raw_path.split("/")[2:]  # drop "" and "agents"
    if len(segments) < 2 or not segments[0] or not segments[1]:
        raise InvalidRequest("agent URL must be /agents/{class}/{name}")
    ref: AgentRef | None = None
    i = 0
    while True:
        cls_name = unquote(segments[i])
        host.agent_class(cls_name)
        name = validate_name(unquote(segments[i + 1]))
        ref = AgentRef(tenant, cls_name, name) if ref is None else ref.child(cls_name, name)
        i += 2
        if i + 2 < len(segments) and segments[i] == "sub":
            i += 1
            continue
        if i < len(segments) and segments[i] == "sub":
            raise InvalidRequest("sub-agent URL must be .../sub/{class}/{name}")
        break
    rest = "/" + "/".join(segments[i:]) if i < len(segments) else "/"
    return ref, rest


def _raw_path(scope: MutableMapping[str, Any]) -> str:
    raw: bytes | None = scope.get("raw_path")
    path: str = raw.decode("latin-1").split("?", 1)[0] if raw else scope["path"]
    return path


class _WebSocketTransport:
    __slots__ = ("_ws",)

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws

    async def send_text(self, text: str) -> None:
        await self._ws.send({"type": "websocket.send", "text": text})

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.send({"type": "websocket.close", "code": code, "reason": reason[:120]})


async def agent_websocket(ws: WebSocket) -> None:
    services = ws.app.state.services
    host: AgentHost = services.host
    transport = ws.query_params.get("__agents_transport")
    if transport is not None and transport != "websocket":
        await ws.accept()
        await ws.close(CLOSE_UNSUPPORTED_TRANSPORT,
                       f"transport {transport[:20]!r} is not supported: connect without __agents_transport (JSON frames)")
        return
    try:
        principal = await require_principal(ws)
        ref, _ = parse_agent_path(principal.tenant, _raw_path(ws.scope), host)
        principal.require(f"agents:{ref.agent_class}")
        await require_agent(ws, principal, ref)
    except (AuthenticationError, PermissionDenied) as e:
        await ws.accept()
        await ws.close(CLOSE_AUTH if e.status == 401 else CLOSE_FORBIDDEN, e.message[:120])
        return
    except MyriadError as e:
        await ws.accept()  # a database that is down: 1013 (try again later), which clients retry
        await ws.close(CLOSE_TRY_LATER if e.status == 503 else CLOSE_BAD_ADDRESS, e.message[:120])
        return
    await ws.accept()
    query = dict(ws.query_params)
    query.pop("token", "")
    conn = Connection(query.pop("_pk", "") or uuid.uuid4().hex, _WebSocketTransport(ws), query, principal=principal)
    max_bytes = services.settings.agents.max_frame_bytes
    rate = FrameRate(services.settings.agents.frame_rate, services.settings.agents.frame_burst)
    sockets, presented = live_sockets(ws.app), presented_key(ws)
    handle = sockets.add(presented, principal.key_id, conn.close)
    code, reason = 1000, ""
    try:
        await host.connect(ref, conn)
        while True:
            await rate.take()
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                code = message.get("code", 1000)
                break
            text = message.get("text")
            if text is None:
                data = message.get("bytes") or b""
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    await conn.send({"type": "error", "error": "binary frames must be UTF-8 JSON text"})
                    continue
            if len(text) > max_bytes:
                code, reason = CLOSE_TOO_BIG, f"frame larger than {max_bytes} bytes"
                await conn.close(code, reason)
                break
            await host.frame(ref, conn, text)
    except WebSocketDisconnect as e:
        code = e.code
    except MyriadError as e:
        code, reason = CLOSE_BAD_ADDRESS, e.message[:120]
        await conn.close(code, reason)
    finally:
        sockets.remove(presented, handle)
        await host.disconnect(ref, conn, code, reason)


async def agent_http(request: Request) -> Response:
    principal = await require_principal(request)
    host: AgentHost = request.app.state.services.host
    ref, _rest = parse_agent_path(principal.tenant, _raw_path(request.scope), host)
    principal.require(f"agents:{ref.agent_class}")
    await require_agent(request, principal, ref)
    result = await host.request(ref, request, caller=principal)
    if isinstance(result, Response):
        return result
    return JSONResponse(result)


# -- /v1/agents: JSON admin API ----------------------------------------------------

async def list_agents(request: Request) -> JSONResponse:
    principal = await require_principal(request)
    host: AgentHost = request.app.state.services.host
    stored = await host.storage.count_agents(principal.tenant)
    classes = []
    for name, cls in sorted(host.classes.items()):
        if not principal.capabilities.covers(f"agents:{name}"):
            continue  # a key scoped to some classes sees only those
        methods = [
            {"name": m, "streaming": spec.streaming, "description": spec.description}
            for m in dir(cls)
            if (spec := getattr(getattr(cls, m, None), "__myriad_callable__", None)) is not None
        ]
        classes.append({"agent": name, "class": cls.__qualname__, "methods": methods, "stored": stored.get(name, 0)})
    return JSONResponse({"classes": classes})


async def _ref(request: Request) -> AgentRef:
    principal = await require_principal(request)
    host: AgentHost = request.app.state.services.host
    cls_name = request.path_params["agent"]
    host.agent_class(cls_name)
    principal.require(f"agents:{cls_name}")
    ref = AgentRef(principal.tenant, cls_name, validate_name(request.path_params["name"]))
    await require_agent(request, principal, ref)
    return ref


async def agent_state(request: Request) -> JSONResponse:
    ref = await _ref(request)
    state = await request.app.state.services.host.get_state(ref)
    return JSONResponse({"agent": ref.agent_class, "name": ref.name, "state": state})


async def agent_rpc(request: Request) -> JSONResponse:
    ref = await _ref(request)
    body = await json_object(request, request.app.state.services.settings.agents.max_frame_bytes)
    if not isinstance(body.get("method"), str):
        raise InvalidRequest('body must be {"method": "<name>", "args": [...]}')
    args = body.get("args", [])
    if not isinstance(args, list):
        raise InvalidRequest("args must be a list")
    result = await request.app.state.services.host.call(ref, body["method"], args,
                                                        caller=await require_principal(request))
    return JSONResponse({"result": result})


async def agent_delete(request: Request) -> Response:
    ref = await _ref(request)
    await request.app.state.services.host.delete(ref)
    return Response(status_code=204)


def routes() -> list[BaseRoute]:
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return [
        WebSocketRoute("/agents/{path:path}", agent_websocket),
        Route("/agents/{path:path}", agent_http, methods=methods),
        Route("/v1/agents", list_agents, methods=["GET"]),
        Route("/v1/agents/{agent}/{name}", agent_state, methods=["GET"]),
        Route("/v1/agents/{agent}/{name}", agent_delete, methods=["DELETE"]),
        Route("/v1/agents/{agent}/{name}/rpc", agent_rpc, methods=["POST"]),
    ]


__all__ = ["routes", "parse_agent_path"]
