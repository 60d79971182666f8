"""``GET /openapi.json``: an OpenAPI 3.0 description of the HTTP doors.

Written by hand from the doors (one table, below), so it says what each door
accepts as the doors themselves check it; the fuzz suite
(``tests/security/test_fuzz_http.py``) drives a real server from it with
Schemathesis and fails on any 5xx or dropped connection. Bodies are open objects
(``additionalProperties``) where the door tolerates extra fields, which lets the
fuzzer send them too. The WebSocket door (``/agents/{class}/{name}``) is not
OpenAPI's to describe: ``docs/security.md`` and ``shared/PROTOCOL.md`` cover it.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from myriad import __version__

_S: dict[str, Any] = {"type": "string"}
_I: dict[str, Any] = {"type": "integer"}
_N: dict[str, Any] = {"type": "number"}
_B: dict[str, Any] = {"type": "boolean"}
_ANY: dict[str, Any] = {}
_TIME: dict[str, Any] = {"type": "string", "example": "2026-01-01T00:00:00Z"}


def _obj(required: tuple[str, ...] = (), **props: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    return out


def _arr(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


_MESSAGES = _arr(_obj(("role", "content"), role={"type": "string", "enum": ["system", "user", "assistant", "tool"]},
                      content={"oneOf": [_S, _arr(_obj(type=_S, text=_S))]}))
_CHAT = _obj(("messages",), model=_S, messages=_MESSAGES, stream=_B, temperature=_N, top_p=_N, max_tokens=_I,
             n=_I, stop={"oneOf": [_S, _arr(_S)]}, tools=_arr(_ANY), tool_choice=_ANY, user=_S, seed=_I,
             response_format=_ANY, stream_options=_ANY)
_LIMITS = _obj(timeout=_N, memory_mb=_I, cpu=_N, pids=_I, output_bytes=_I, idle_timeout=_N, max_lifetime=_N)
_SANDBOX = _obj(tier={"type": "string", "enum": ["isolate", "container"]}, needs=_arr(_S), limits=_LIMITS,
                network=_ANY, id=_S)
_CMD = {"oneOf": [_S, _arr(_S)]}


def _q(name: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


def _p(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or _S}


# (method, path, summary, request body schema or None, parameters)
def _doors(agent_classes: list[str]) -> list[tuple[str, str, str, Any, list[dict[str, Any]]]]:
    agent = {"type": "string", "enum": agent_classes} if agent_classes else _S
    name = {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.~@+=-]{0,63}$"}
    sid, box = _p("id"), "/v1/sandboxes/{id}"
    path_q = _q("path", _S, required=True)
    usage_q = [_q("since", _S), _q("until", _S), _q("user", _S), _q("agent", _S), _q("by", _S), _q("bucket", _S),
               _q("format", {"type": "string", "enum": ["json", "csv"]})]
    return [
        ("get", "/healthz", "liveness (anonymous: status only)", None, []),
        ("post", "/v1/chat/completions", "OpenAI chat completions", _CHAT, []),
        ("post", "/v1/completions", "OpenAI legacy completions", _obj(("prompt",), model=_S, prompt=_ANY, max_tokens=_I,
                                                                       stream=_B), []),
        ("post", "/v1/embeddings", "OpenAI embeddings", _obj(("input",), model=_S,
                                                            input={"oneOf": [_S, _arr(_S), _arr(_I), _arr(_arr(_I))]},
                                                            encoding_format=_S, dimensions=_I), []),
        ("get", "/v1/models", "models this key may use", None, []),
        ("get", "/v1/models/{model}", "one model", None, [_p("model")]),
        ("post", "/v1/router/outcomes", "router training outcomes", _obj(prompt=_S, weak_ok=_B, preferred=_S,
                                                                          outcomes=_arr(_ANY)), []),
        ("post", "/v1/responses", "OpenAI Responses API", _obj(("input",), model=_S, input={"oneOf": [_S, _arr(_ANY)]},
                                                              instructions=_S, stream=_B, store=_B,
                                                              previous_response_id=_S, max_output_tokens=_I), []),
        ("get", "/v1/responses/{response_id}", "a stored response", None, [_p("response_id")]),
        ("delete", "/v1/responses/{response_id}", "delete a stored response", None, [_p("response_id")]),
        ("get", "/v1/responses/{response_id}/input_items", "a stored response's input", None, [_p("response_id")]),
        ("get", "/v1/agents", "agent classes", None, []),
        ("get", "/v1/agents/{agent}/{name}", "an instance's state", None, [_p("agent", agent), _p("name", name)]),
        ("delete", "/v1/agents/{agent}/{name}", "delete an instance", None, [_p("agent", agent), _p("name", name)]),
        ("post", "/v1/agents/{agent}/{name}/rpc", "call a @callable method",
         _obj(("method",), method=_S, args=_arr(_ANY)), [_p("agent", agent), _p("name", name)]),
        ("get", "/agents/{agent}/{name}", "the agent's on_request", None, [_p("agent", agent), _p("name", name)]),
        ("post", "/mcp/{agent}/{name}", "MCP (streamable HTTP, JSON-RPC)",
         _obj(("jsonrpc", "method"), jsonrpc={"type": "string", "enum": ["2.0"]}, id=_ANY, method=_S, params=_ANY),
         [_p("agent", agent), _p("name", name)]),
        ("post", "/mcp/{agent}", "MCP, one instance per session (@mcp.per_session; initialize answers Mcp-Session-Id)",
         _obj(("jsonrpc", "method"), jsonrpc={"type": "string", "enum": ["2.0"]}, id=_ANY, method=_S, params=_ANY),
         [_p("agent", agent)]),
        ("delete", "/mcp/{agent}", "end an MCP session (Mcp-Session-Id) and delete its instance", None,
         [_p("agent", agent)]),
        ("get", "/v1/mcp/servers", "the tenant's registered MCP servers", None, []),
        ("put", "/v1/mcp/servers/{label}", "register an MCP server", _obj(server_url=_S, token=_S), [_p("label")]),
        ("delete", "/v1/mcp/servers/{label}", "forget an MCP server", None, [_p("label")]),
        ("get", "/v1/usage", "usage report", None, usage_q),
        ("get", "/v1/usage/budgets", "budgets", None, [_q("user", _S), _q("agent", _S)]),
        ("post", "/v1/usage/budgets", "set a budget", _obj(id=_S, user=_S, agent=_S, period=_S, hard=_ANY, soft=_ANY), []),
        ("delete", "/v1/usage/budgets/{id}", "delete a budget", None, [_p("id")]),
        ("get", "/v1/usage/limits", "limits", None, []),
        ("post", "/v1/usage/limits", "set a limit", _obj(id=_S, user=_S, agent=_S, kind=_S, limit=_ANY, operation=_S), []),
        ("delete", "/v1/usage/limits/{id}", "delete a limit", None, [_p("id")]),
        ("get", "/v1/usage/events", "CloudEvents export", None, [_q("after", _I), _q("limit", _I), _q("since", _S),
                                                                 _q("until", _S)]),
        ("get", "/v1/usage/meter-events", "meter events export", None, [_q("customer", _S), _q("customer_key", _S),
                                                                        _q("since", _S), _q("until", _S)]),
        ("get", "/v1/usage/invoice", "invoice lines", None, [_q("since", _TIME), _q("until", _TIME), _q("customer", _S)]),
        ("get", "/v1/usage/notices", "budget notices", None, [_q("after", _I)]),
        ("get", "/v1/usage/prices", "price book", None, []),
        ("get", "/v1/admin/keys", "the tenant's keys", None, []),
        ("post", "/v1/admin/keys", "create a key (narrower than the caller)", _obj(scopes=_S, label=_S, ttl=_N), []),
        ("post", "/v1/admin/keys/{key_id}/rotate", "rotate a key", _obj(grace=_N), [_p("key_id")]),
        ("delete", "/v1/admin/keys/{key_id}", "revoke a key (closes its WebSockets)", None, [_p("key_id")]),
        ("get", "/v1/admin/audit", "audit log", None, [_q("limit", _I), _q("action", _S)]),
        ("post", "/v1/admin/user-tokens", "mint a user token", _obj(("user", "scope"), user=_S, scope=_S,
                                                                     resource={"oneOf": [_S, _arr(_S)]}, ttl=_N), []),
        ("get", "/v1/vault/credentials", "stored credentials (fingerprints)", None, [_q("user", _S)]),
        ("put", "/v1/vault/credentials/{provider}", "store a credential",
         _obj(("secret",), user=_S, secret=_S, domains=_arr(_S), header=_S, prefix=_S), [_p("provider")]),
        ("delete", "/v1/vault/credentials/{provider}", "delete a credential", None, [_p("provider"), _q("user", _S)]),
        ("post", "/v1/oauth/token", "RFC 8693 token exchange",
         _obj(grant_type=_S, subject_token=_S, subject_token_type=_S, actor_token=_S, actor_token_type=_S, scope=_S,
              resource={"oneOf": [_S, _arr(_S)]}), []),
        ("post", "/v1/oauth/revoke", "RFC 7009 revocation", _obj(("token",), token=_S), []),
        ("post", "/v1/oauth/register", "RFC 7591 client registration", _obj(redirect_uris=_arr(_S), client_name=_S), []),
        ("get", "/.well-known/jwks.json", "signing keys", None, []),
        ("get", "/.well-known/oauth-authorization-server", "RFC 8414 metadata", None, []),
        ("get", "/.well-known/http-message-signatures-directory", "Web Bot Auth key directory", None, []),
        ("get", "/.well-known/oauth-protected-resource/mcp/{agent}/{name}", "RFC 9728 metadata of an MCP door", None,
         [_p("agent", agent), _p("name", name)]),
        ("get", "/.well-known/oauth-protected-resource/mcp/{agent}", "RFC 9728 metadata of a per-session MCP door",
         None, [_p("agent", agent)]),
        ("post", "/v1/sandboxes", "open a sandbox", _SANDBOX, []),
        ("get", "/v1/sandboxes", "live sandboxes", None, []),
        ("get", box, "one sandbox", None, [sid]),
        ("delete", box, "close a sandbox", None, [sid]),
        ("post", box + "/run", "run a snippet", _obj(("code",), code=_S, language=_S, timeout=_N), [sid]),
        ("post", box + "/exec", "run a command (container)", _obj(("cmd",), cmd=_CMD, env=_ANY, cwd=_S, timeout=_N,
                                                                 stdin=_S, stream=_B), [sid]),
        ("get", box + "/files", "list files", None, [sid, _q("path", _S), _q("recursive", _S)]),
        ("delete", box + "/files", "delete a path", None, [sid, path_q, _q("recursive", _S)]),
        ("get", box + "/files/content", "read a file", None, [sid, path_q]),
        ("put", box + "/files/content", "write a file", "binary", [sid, path_q]),
        ("post", box + "/files/mkdir", "make a directory", _obj(("path",), path=_S), [sid]),
        ("get", box + "/files/exists", "does a path exist", None, [sid, path_q]),
        ("post", box + "/processes", "start a background process", _obj(("cmd",), cmd=_CMD, env=_ANY, cwd=_S), [sid]),
        ("get", box + "/processes", "background processes", None, [sid]),
        ("get", box + "/processes/{pid}", "one process", None, [sid, _p("pid")]),
        ("delete", box + "/processes/{pid}", "kill a process", None, [sid, _p("pid")]),
        ("get", box + "/processes/{pid}/logs", "a process's output", None, [sid, _p("pid")]),
        ("post", box + "/pause", "freeze", None, [sid]),
        ("post", box + "/resume", "thaw", None, [sid]),
        ("post", box + "/snapshots", "snapshot the workspace", None, [sid]),
        ("post", box + "/restore", "restore a snapshot", _obj(("snapshot_id",), snapshot_id=_S), [sid]),
        ("post", box + "/fork", "fork", _obj(id=_S), [sid]),
        ("get", "/v1/snapshots/{snapshot_id}", "one snapshot", None, [_p("snapshot_id")]),
        ("delete", "/v1/snapshots/{snapshot_id}", "delete a snapshot", None, [_p("snapshot_id")]),
        ("get", "/dashboard/api/overview", "dashboard: overview", None, []),
        ("get", "/dashboard/api/turns", "dashboard: recent turns", None, [_q("limit", _I)]),
        ("get", "/dashboard/api/traces/{trace_id}", "dashboard: one trace", None, [_p("trace_id")]),
        ("get", "/dashboard/api/usage", "dashboard: usage series", None, [_q("by", _S), _q("bucket", _I), _q("since", _I)]),
        ("get", "/dashboard/api/ledger", "dashboard: ledger", None, []),
        ("get", "/dashboard/api/errors", "dashboard: errors", None, [_q("limit", _I)]),
        ("get", "/dashboard/api/sandboxes", "dashboard: sandbox runs", None, []),
    ]


_ERROR = {"description": "an error naming its problem",
          "content": {"application/json": {"schema": _obj(error=_ANY)}}}


def document(agent_classes: list[str]) -> dict[str, Any]:
    """The OpenAPI document for a server hosting ``agent_classes``."""
    paths: dict[str, Any] = {}
    for method, path, summary, body, params in _doors(agent_classes):
        op: dict[str, Any] = {"summary": summary, "parameters": params,
                              "responses": {"200": {"description": "success"}, "4XX": _ERROR}}
        if path not in ("/healthz", "/.well-known/jwks.json", "/.well-known/oauth-authorization-server"):
            op["security"] = [{"bearer": []}]
        if body == "binary":
            op["requestBody"] = {"required": True,
                                 "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
        elif body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "Myriad", "version": __version__,
                 "description": "Myriad's HTTP doors. WebSocket: /agents/{class}/{name} (see shared/PROTOCOL.md)."},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


async def openapi_json(request: Request) -> JSONResponse:
    host = request.app.state.services.host
    return JSONResponse(document(sorted(host.classes)))


def routes() -> list[BaseRoute]:
    return [Route("/openapi.json", openapi_json, methods=["GET"])]


__all__ = ["document", "routes"]
