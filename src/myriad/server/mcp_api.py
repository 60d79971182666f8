"""The MCP door: every agent instance that declares MCP tools is an MCP server at
``/mcp/{agent}/{name}`` (Streamable HTTP), with Myriad as the OAuth resource server.

Authorization (MCP spec, "Authorization"): a request without valid credentials gets a
401 whose ``WWW-Authenticate`` points at this resource's Protected Resource Metadata
(RFC 9728, ``/.well-known/oauth-protected-resource/mcp/{agent}/{name}``); Myriad's own
API keys and the tokens its identity room issues (audience ``urn:myriad:mcp``) are
accepted; ``tools/call`` needs the scope ``mcp:{agent}:{tool}`` and is refused with a
403 naming it (``error="insufficient_scope"``) before the agent runs.

A class decorated ``@mcp.per_session`` is also served at ``/mcp/{agent}``, one new
instance per MCP session (Cloudflare's ``McpAgent``): ``initialize`` without a session
creates instance ``mcp-{id}`` (owned by the caller's user, as any instance) and answers
``Mcp-Session-Id: {id}``; a request carrying the header reaches that instance (404 once
it is gone, so the client starts a new session, as the spec says); ``DELETE`` ends the
session and deletes the instance. Sessions exist only in the handshake revisions
(2025-11-25, 2025-06-18): a 2026-07-28 (stateless) request there gets a 400 naming the
per-instance URL.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from myriad import safe_json
from myriad.agents import AgentRef, validate_name
from myriad.errors import InvalidRequest, MyriadError, NotFound, PermissionDenied
from myriad.models.mcp_tools import MCP_CALLS, McpToolset, chat_with_mcp, stream_with_mcp
from myriad.server._mcp_servers import McpServers, Target
from myriad.server.auth import require_principal
from myriad.server.ownership import require_agent, require_tenant_wide
from myriad.server.params import json_object, read_body

MAX_BODY = 4 * 1024 * 1024
PRM_PREFIX = "/.well-known/oauth-protected-resource"


def _servers(request: Request) -> McpServers:
    state = request.app.state
    servers = getattr(state, "mcp_servers", None)
    if servers is None:
        servers = state.mcp_servers = McpServers(state.services.host)
    return servers


def _resource_path(agent: str, name: str | None) -> str:
    return f"/mcp/{agent}" if name is None else f"/mcp/{agent}/{name}"


def _resource_url(request: Request, agent: str, name: str | None) -> str:
    return f"{request.base_url}".rstrip("/") + _resource_path(agent, name)


def _error(request: Request, exc: MyriadError, agent: str, name: str | None) -> JSONResponse:
    headers: dict[str, str] = {}
    if exc.status == 401:
        prm = f"{request.base_url}".rstrip("/") + PRM_PREFIX + _resource_path(agent, name)
        headers["WWW-Authenticate"] = f'Bearer resource_metadata="{prm}"'
    elif exc.status == 403 and isinstance(exc.details.get("scope"), str):
        headers["WWW-Authenticate"] = f'Bearer error="insufficient_scope", scope="{exc.details["scope"]}"'
    return JSONResponse(exc.to_json(), status_code=exc.status, headers=headers)


def _message(body: bytes) -> Any:
    """The JSON-RPC message of a POST body (None when it does not parse: the SDK answers)."""
    try:
        return safe_json.loads(body, "body")
    except safe_json.JSONLimitExceeded:
        raise  # too deep or NaN: a 400 here, before the SDK's own parser sees it
    except safe_json.InvalidJSON:
        return None


def _tool_called(msg: Any) -> str | None:
    """The tool a JSON-RPC ``tools/call`` message names (None for any other message)."""
    if isinstance(msg, dict) and msg.get("method") == "tools/call":
        params = msg.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        return name if isinstance(name, str) else None
    return None


_DIRECT_VERSIONS = ("2025-06-18", "2025-11-25")
_DIRECT_METHODS = ("tools/call", "tools/list", "ping")


def _direct(request: Request, msg: Any) -> bool:
    """Can this request skip the SDK's per-request transport? A single JSON-RPC request for
    tools or ping, from a handshake-era client (it sent MCP-Protocol-Version), no session,
    accepting JSON: the answer is the same JSON the SDK would give, for ~1/10 of the CPU."""
    h = request.headers
    accept = h.get("accept", "")
    return (isinstance(msg, dict) and msg.get("jsonrpc") == "2.0" and msg.get("method") in _DIRECT_METHODS
            and isinstance(msg.get("id"), (str, int)) and not isinstance(msg.get("id"), bool)
            and h.get("mcp-protocol-version") in _DIRECT_VERSIONS and "mcp-session-id" not in h
            and "application/json" in accept and "text/event-stream" in accept
            and h.get("content-type", "").startswith("application/json"))


async def _answer_directly(servers: McpServers, target: Target, msg: dict[str, Any]) -> Response:
    method, params = msg["method"], msg.get("params")
    reply: dict[str, Any] = {"jsonrpc": "2.0", "id": msg["id"]}
    if method == "ping":
        reply["result"] = {}
    elif method == "tools/list":
        reply["result"] = servers.list_tools_json(target)
    else:
        name = params.get("name") if isinstance(params, dict) else None
        arguments = params.get("arguments") if isinstance(params, dict) else None
        result = None
        if isinstance(name, str) and isinstance(arguments, (dict, type(None))):
            result = await servers.call_tool_json(target, name, dict(arguments or {}))
        if result is None:
            reply["error"] = {"code": -32602, "message": f"unknown tool {name!r}" if isinstance(name, str)
                              else "tools/call needs params.name (a string) and params.arguments (an object)"}
        else:
            reply["result"] = result
    return Response(orjson.dumps(reply), media_type="application/json")


SESSION_PREFIX = "mcp-"
"""Instance names of per-session MCP instances: ``mcp-{session id}``."""
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


async def _session_instance(request: Request, principal: Any, agent: str, msg: Any) -> tuple[AgentRef, str | None]:
    """The instance a ``/mcp/{agent}`` request reaches, and the id of the session it
    starts (None when it continues one)."""
    host = request.app.state.services.host
    sid = request.headers.get("mcp-session-id")
    if sid is None:
        if not (request.method == "POST" and isinstance(msg, dict) and msg.get("method") == "initialize"):
            raise InvalidRequest(
                f"agent class {agent!r} keeps one instance per MCP session: start one with 'initialize' (protocol "
                f"revisions 2025-11-25 or 2025-06-18) and send its Mcp-Session-Id header; stateless clients "
                f"(2026-07-28) address an instance by name at /mcp/{agent}/{{name}}")
        sid = secrets.token_urlsafe(24)
        ref = AgentRef(principal.tenant, agent, SESSION_PREFIX + sid)
        await require_agent(request, principal, ref)  # the caller's user owns the new instance
        await host.run(ref, _started, caller=principal)  # exists (on_start ran) before its id is answered
        return ref, sid
    gone = NotFound("no such MCP session (ended, or never started): start a new one with 'initialize'")
    if not _SESSION_ID.match(sid):
        raise gone
    ref = AgentRef(principal.tenant, agent, SESSION_PREFIX + sid)
    if await host.storage.load_agent(ref.path) is None:
        raise gone
    try:
        await require_agent(request, principal, ref)
    except PermissionDenied:
        raise gone from None  # another user's session is as good as unknown
    return ref, None


async def _started(agent: Any) -> None:
    return None


def _with_header(send: Send, name: bytes, value: bytes) -> Send:
    async def sending(message: Any) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (name, value)]}
        await send(message)
    return sending


class McpDoor:
    """ASGI endpoint for ``/mcp/{agent}/{name}`` and, for ``@mcp.per_session`` classes,
    ``/mcp/{agent}`` (POST, GET, DELETE)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        agent, name = request.path_params["agent"], request.path_params.get("name")
        started: str | None = None
        try:
            principal = await require_principal(request)
            host = request.app.state.services.host
            host.agent_class(agent)
            servers = _servers(request)
            decl = servers.declarations(agent)
            if not decl:
                raise NotFound(f"agent class {agent!r} declares no MCP tools, resources or prompts")
            body, msg = b"", None
            if request.method == "POST":
                body = await read_body(request, MAX_BODY)
                msg = _message(body)
            if name is not None:
                ref = AgentRef(principal.tenant, agent, validate_name(name))
                await require_agent(request, principal, ref)
            elif not decl.per_session:
                raise NotFound(f"agent class {agent!r} serves one MCP server per instance: address one at "
                               f"/mcp/{agent}/{{name}} (or declare the class @mcp.per_session)")
            else:
                ref, started = await _session_instance(request, principal, agent, msg)
                if request.method == "DELETE":  # the client ends its session: the instance goes with it
                    await host.delete(ref)
                    await Response(status_code=204)(scope, receive, send)
                    return
            if msg is not None:
                tool = _tool_called(msg)
                if tool is not None and tool in servers.declarations(agent).tools:
                    wanted = f"mcp:{agent}:{tool}"
                    if not principal.capabilities.covers(wanted):
                        raise PermissionDenied(f"calling MCP tool {tool!r} of {agent!r} needs the scope {wanted!r}",
                                               details={"scope": wanted})
            if msg is not None and started is None and _direct(request, msg):
                response = await _answer_directly(servers, Target(ref, principal), msg)
                await response(scope, receive, send)
                return
        except MyriadError as e:
            await _error(request, e, agent, name)(scope, receive, send)
            return
        if started is not None:  # the SDK's answer to initialize carries the new session's id
            send = _with_header(send, b"mcp-session-id", started.encode())
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        try:
            await servers.handle(Target(ref, principal), scope, replay, send)
        except ImportError:  # the SDK is an extra: say which, not a traceback
            await JSONResponse({"error": {"code": "mcp_unavailable", "message": "serving MCP needs the mcp SDK on "
                                          "this server: pip install 'myriad[mcp]'"}}, status_code=503)(scope, receive, send)


async def protected_resource(request: Request) -> Response:
    """RFC 9728 Protected Resource Metadata for one MCP endpoint."""
    agent, name = request.path_params["agent"], request.path_params.get("name")
    services = request.app.state.services
    try:
        decl = _servers(request).declarations(agent)
        if name is not None:
            validate_name(name)
    except MyriadError as e:
        return JSONResponse(e.to_json(), status_code=e.status)
    issuer = services.identity.settings.issuer if services.identity is not None else str(request.base_url).rstrip("/")
    return JSONResponse({
        "resource": _resource_url(request, agent, name),
        "authorization_servers": [issuer],
        "scopes_supported": [f"mcp:{agent}:{t}" for t in decl.tools],
        "bearer_methods_supported": ["header"],
        "resource_name": f"Myriad agent {agent}" + ("" if name is None else f"/{name}"),
    })


# -- the gateway's MCP tools: the tenant's registry and the tool loop -------------------

async def chat_with_mcp_tools(request: Request, principal: Any, gateway: Any, body: dict[str, Any],
                              specs: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
    """A chat completion whose ``type: "mcp"`` tools Myriad calls (``myriad.models.mcp_tools``)."""
    toolset = await open_toolset(request, principal, specs)
    try:
        settings = request.app.state.services.settings.models
        return await chat_with_mcp(lambda turn: gateway.chat(turn, tenant=principal.tenant), body, toolset,
                                   max_rounds=settings.mcp_max_rounds)
    finally:
        await toolset.aclose()


async def stream_with_mcp_tools(request: Request, principal: Any, gateway: Any, body: dict[str, Any],
                                specs: list[dict[str, Any]]) -> Any:
    """``chat_with_mcp_tools`` streamed: an async iterator of ``(deployment, [chunk, ...])``
    (``myriad.models.mcp_tools.stream_with_mcp``) that closes the MCP sessions at its end."""
    toolset = await open_toolset(request, principal, specs)
    rounds = request.app.state.services.settings.models.mcp_max_rounds

    async def relay() -> Any:
        try:
            async for item in stream_with_mcp(lambda turn: gateway.chat_stream_batches(turn, tenant=principal.tenant),
                                              body, toolset, max_rounds=rounds):
                yield item
        finally:
            await toolset.aclose()

    return relay()


async def open_toolset(request: Request, principal: Any, specs: list[dict[str, Any]]) -> McpToolset:
    services = request.app.state.services
    registry = services.identity.mcp_servers if services.identity is not None else None
    meter = services.meter

    def lookup(label: str) -> tuple[str, dict[str, str]]:
        if registry is None:
            raise NotFound(f"no MCP server registry on this server; give server_url for {label!r}")
        return registry.get(principal.tenant, label).url, registry.headers(principal.tenant, label)

    # the registry is a database table: read the labels it must resolve before opening, off the
    # event loop on PostgreSQL (the toolset asks for them synchronously)
    found: dict[str, tuple[str, dict[str, str]]] = {}
    for spec in specs:
        label = spec.get("server_label")
        if not spec.get("server_url") and isinstance(label, str) and label not in found:
            found[label] = await services.identity.off_loop(lookup, label) if services.identity else lookup(label)

    def resolve(label: str) -> tuple[str, dict[str, str]]:
        return found[label] if label in found else lookup(label)

    async def record(server: str, tool: str, failed: bool) -> None:
        if meter is not None:
            from myriad.metering import Subject, Usage

            await meter.record(Subject(principal.tenant, user=principal.user), Usage({MCP_CALLS: 1}), type="mcp",
                               source=f"{meter.source}/gateway/mcp",
                               attributes={"server": server, "tool": tool, "failed": failed})

    settings = services.settings.models
    return await McpToolset.open(specs, resolve, allow_private=settings.mcp_allow_private,
                                 timeout=settings.mcp_timeout, record=record)


async def list_servers(request: Request) -> Response:
    principal = await require_principal(request)
    principal.require("admin")
    require_tenant_wide(principal, "the MCP server registry")
    identity = request.app.state.services.identity
    servers = await identity.off_loop(identity.mcp_servers.list, principal.tenant)
    return JSONResponse({"servers": [s.to_json() for s in servers]})


async def put_server(request: Request) -> Response:
    principal = await require_principal(request)
    principal.require("admin")
    require_tenant_wide(principal, "the MCP server registry")
    body = await json_object(request, 64 * 1024, required=True)
    identity = request.app.state.services.identity
    info = await identity.off_loop(identity.mcp_servers.put, principal.tenant, request.path_params["label"],
                                   body.get("server_url"), body.get("token"))
    return JSONResponse(info.to_json())


async def delete_server(request: Request) -> Response:
    principal = await require_principal(request)
    principal.require("admin")
    require_tenant_wide(principal, "the MCP server registry")
    identity = request.app.state.services.identity
    await identity.off_loop(identity.mcp_servers.delete, principal.tenant, request.path_params["label"])
    return Response(status_code=204)


async def close(app: Any) -> None:
    servers = getattr(app.state, "mcp_servers", None)
    if servers is not None:
        await servers.aclose()


def routes() -> list[BaseRoute]:
    return [
        Route("/mcp/{agent}/{name}", McpDoor(), methods=["GET", "POST", "DELETE"]),
        Route(PRM_PREFIX + "/mcp/{agent}/{name}", protected_resource, methods=["GET"]),
        Route("/mcp/{agent}", McpDoor(), methods=["GET", "POST", "DELETE"]),
        Route(PRM_PREFIX + "/mcp/{agent}", protected_resource, methods=["GET"]),
        Route("/v1/mcp/servers", list_servers, methods=["GET"]),
        Route("/v1/mcp/servers/{label}", put_server, methods=["PUT"]),
        Route("/v1/mcp/servers/{label}", delete_server, methods=["DELETE"]),
    ]


__all__ = ["routes", "close"]
