"""Remote MCP tools offered to a model by the gateway, as OpenAI defines them:

    tools: [{"type": "mcp", "server_label": "docs",                  # a server the tenant registered
             "allowed_tools": ["search"], "require_approval": "never"},
            {"type": "mcp", "server_label": "calc", "server_url": "https://calc.example/mcp",
             "headers": {"Authorization": "Bearer ..."}}]               # or one named in the request

Myriad lists each server's tools (``tools/list``), offers them to the model as function
tools (``{label}__{tool}``), and when the model calls them, calls the server
(``tools/call``) and hands the result back to the model, until the model answers or
``max_rounds`` model turns are spent. Every model turn is an ordinary gateway call (one
pipeline: routing, budgets, metering, telemetry); every MCP call is an
``execute_tool`` span and a usage event (``mcp.calls``). Requests reach only public
addresses unless the operator allows private ones; a tenant's registered token is put
in the request's ``Authorization`` header by the gateway, never shown to the caller.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping

import httpx

from myriad.errors import InvalidRequest, McpError, MyriadError
from myriad.mcp import McpSession, PublicOnlyTransport

MCP_CALLS = "mcp.calls"
Resolve = Callable[[str], tuple[str, dict[str, str]]]
"""``server_label`` -> (URL, headers) of a server the tenant registered (raises NotFound)."""
Record = Callable[[str, str, bool], Awaitable[None]]
"""Called once per MCP tool call: (server label, tool, failed)."""


@dataclass
class _Server:
    label: str
    session: McpSession
    allowed: set[str] | None
    tools: list[dict[str, Any]] = field(default_factory=list)


def mcp_specs(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``type: "mcp"`` entries of ``body["tools"]`` (validated shape)."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return []
    specs = [t for t in tools if isinstance(t, dict) and t.get("type") == "mcp"]
    for i, t in enumerate(specs):
        label = t.get("server_label")
        if not isinstance(label, str) or not label:
            raise InvalidRequest("an mcp tool needs a server_label", details={"param": f"tools[{i}].server_label"})
        approval = t.get("require_approval", "never")
        if approval != "never":
            raise InvalidRequest("only require_approval 'never' is supported for mcp tools here "
                                 "(approve tool calls in a chat agent instead)", details={"param": "require_approval"})
        allowed = t.get("allowed_tools")
        if allowed is not None and not (isinstance(allowed, list) and all(isinstance(a, str) for a in allowed)):
            raise InvalidRequest("allowed_tools must be a list of tool names", details={"param": "allowed_tools"})
        headers = t.get("headers")
        if headers is not None and not (isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())):
            raise InvalidRequest("headers must be an object of strings", details={"param": "headers"})
    return specs


class McpToolset:
    """The MCP servers of one request, their tools as function tools, and the calls."""

    def __init__(self, servers: list[_Server], http: httpx.AsyncClient, record: Record | None) -> None:
        self._servers = servers
        self._http = http
        self._record = record
        self._by_function: dict[str, tuple[_Server, str]] = {}
        for s in servers:
            for t in s.tools:
                self._by_function[_function_name(s.label, t["name"])] = (s, t["name"])

    @classmethod
    async def open(cls, specs: list[dict[str, Any]], resolve: Resolve, *, allow_private: bool = False,
                   timeout: float = 30.0, record: Record | None = None) -> "McpToolset":
        http = httpx.AsyncClient(transport=PublicOnlyTransport(allow_private=allow_private), timeout=timeout)
        servers: list[_Server] = []
        try:
            for spec in specs:
                label = spec["server_label"]
                headers: dict[str, str]
                if spec.get("server_url"):
                    from myriad.identity.mcp_servers import check_url

                    url, headers = check_url(spec["server_url"]), {}
                else:
                    url, headers = resolve(label)
                headers = {**headers, **{k.lower(): v for k, v in (spec.get("headers") or {}).items()}}
                session = McpSession(url, http, timeout, repr(label), headers=headers)
                allowed = set(spec["allowed_tools"]) if spec.get("allowed_tools") is not None else None
                listed = (await session.request("tools/list")).get("tools", [])
                tools = [t for t in listed if isinstance(t, dict) and isinstance(t.get("name"), str)
                         and (allowed is None or t["name"] in allowed)]
                servers.append(_Server(label, session, allowed, tools))
        except BaseException:
            await http.aclose()
            raise
        return cls(servers, http, record)

    async def aclose(self) -> None:
        await self._http.aclose()

    def functions(self) -> list[dict[str, Any]]:
        """The OpenAI function tools the model sees."""
        out = []
        for name, (server, tool) in self._by_function.items():
            spec = next(t for t in server.tools if t["name"] == tool)
            schema = spec.get("inputSchema") if isinstance(spec.get("inputSchema"), dict) else {"type": "object"}
            out.append({"type": "function", "function": {"name": name, "parameters": schema,
                                                         "description": str(spec.get("description") or "")}})
        return out

    def list_items(self) -> list[dict[str, Any]]:
        """What each server offered (the Responses API's ``mcp_list_tools`` items' content)."""
        return [{"server_label": s.label, "tools": [{"name": t["name"], "description": t.get("description"),
                                                     "input_schema": t.get("inputSchema") or {}}
                                                    for t in s.tools]} for s in self._servers]

    def owns(self, function_name: str) -> bool:
        return function_name in self._by_function

    async def call(self, function_name: str, arguments: str) -> dict[str, Any]:
        """Call the tool behind ``function_name``: ``{server_label, name, arguments, output, error}``
        (``error`` in the Responses API's shape: ``mcp_tool_execution_error`` or ``mcp_protocol_error``)."""
        from myriad.telemetry import execute_tool

        server, tool = self._by_function[function_name]
        out: dict[str, Any] = {"server_label": server.label, "name": tool, "arguments": arguments,
                               "output": None, "error": None}
        failed = True
        with execute_tool(tool, tool_type="extension") as span:
            span.set_attribute("mcp.method.name", "tools/call")
            span.set_attribute("myriad.mcp.server", server.label)
            try:
                args = json.loads(arguments or "{}")
                if not isinstance(args, dict):
                    raise ValueError("arguments must be a JSON object")
                result = await server.session.request("tools/call", {"name": tool, "arguments": args})
                texts = [c.get("text", "") for c in result.get("content", []) if isinstance(c, dict)]
                if result.get("isError"):
                    out["error"] = {"type": "mcp_tool_execution_error", "content": result.get("content", [])}
                else:
                    failed = False
                    out["output"] = (json.dumps(result["structuredContent"]) if "structuredContent" in result
                                     else "\n".join(texts))
            except ValueError as e:
                out["error"] = {"type": "mcp_protocol_error", "code": -32602, "message": f"arguments are not valid JSON: {e}"}
            except McpError as e:
                code = e.details.get("mcp_code")
                out["error"] = {"type": "mcp_protocol_error", "code": code if isinstance(code, int) else -32603,
                                "message": e.message}
            if failed:
                span.set_attribute("error.type", "tool_error")
        if self._record is not None:
            await self._record(server.label, tool, failed)
        return out


def _error_text(error: dict[str, Any]) -> str:
    if "message" in error:
        return str(error["message"])
    return " ".join(str(c.get("text", "")) for c in error.get("content", []) if isinstance(c, dict)) or "the tool failed"


def _function_name(label: str, tool: str) -> str:
    safe = "".join(c if c.isalnum() or c in "_-" else "_" for c in tool)
    return f"{label}__{safe}"[:64]


def _turn(request: dict[str, Any], messages: list[Any], tools: list[dict[str, Any]]) -> dict[str, Any]:
    """One model turn's request: the conversation so far, with the tools (or no tool_choice)."""
    turn = {**request, "messages": messages}
    if tools:
        turn["tools"] = tools
    else:
        turn.pop("tool_choice", None)
    return turn


def _tool_message(call_id: Any, done: dict[str, Any]) -> dict[str, Any]:
    """What the model is told an MCP call returned (or how it failed)."""
    return {"role": "tool", "tool_call_id": call_id,
            "content": done["output"] if done["error"] is None else "error: " + _error_text(done["error"])}


def _too_many_rounds(max_rounds: int) -> MyriadError:
    return MyriadError(f"the model was still calling MCP tools after {max_rounds} turns (models.mcp_max_rounds)")


async def chat_with_mcp(chat: Callable[[dict[str, Any]], Awaitable[Any]], body: Mapping[str, Any],
                        toolset: McpToolset, *, max_rounds: int = 8) -> tuple[Any, list[dict[str, Any]]]:
    """Run ``body`` (a chat completion request whose ``tools`` held the MCP entries)
    through ``chat`` (one gateway call per model turn), calling MCP tools the model asks
    for. Returns the last result, with usage summed over the turns, and the calls made."""
    plain = [t for t in body.get("tools") or [] if not (isinstance(t, dict) and t.get("type") == "mcp")]
    messages = list(body.get("messages") or [])
    calls: list[dict[str, Any]] = []
    totals = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    request = {k: v for k, v in body.items() if k not in ("tools", "messages")}
    tools = plain + toolset.functions()
    for round_ in range(max_rounds + 1):
        turn = _turn(request, messages, tools)
        result = await chat(turn)
        usage = result.raw.get("usage") or {}
        for k in totals:
            totals[k] += int(usage.get(k) or 0)
        message = (result.raw.get("choices") or [{}])[0].get("message") or {}
        wanted = message.get("tool_calls") or []
        if not wanted or not all(toolset.owns(c.get("function", {}).get("name", "")) for c in wanted):
            break  # an answer, or a call of the client's own function tools: the client's turn
        if round_ == max_rounds:
            raise _too_many_rounds(max_rounds)
        messages.append({"role": "assistant", "content": message.get("content"), "tool_calls": wanted})
        for c in wanted:
            done = await toolset.call(c["function"]["name"], c["function"].get("arguments") or "{}")
            calls.append({"id": c.get("id"), **done})
            messages.append(_tool_message(c.get("id"), done))
        if "tool_choice" in request and request["tool_choice"] not in ("auto", "none"):
            request["tool_choice"] = "auto"  # a forced first call is made; let the model answer
    result.raw["usage"] = {**(result.raw.get("usage") or {}), **totals}
    return result, calls


Batches = AsyncIterator[tuple[str, list[dict[str, Any]]]]


async def stream_with_mcp(stream: Callable[[dict[str, Any]], Batches], body: Mapping[str, Any], toolset: McpToolset,
                          *, max_rounds: int = 8) -> AsyncGenerator[tuple[str, list[dict[str, Any]]], None]:
    """``chat_with_mcp``, streamed: each model turn is a streamed gateway call (``stream``
    gives ``(deployment, [chunk, ...])``). Text reaches the client as it arrives; a turn's
    tool calls are assembled from their deltas and, when they are all MCP tools, run by
    Myriad instead of shown (the client gets one chunk per call with ``choices: []`` and
    Myriad's ``mcp_call`` field). The client sees one stream: one id, one ``role``, the
    last turn's finish chunk, and with ``stream_options.include_usage`` the usage summed
    over the turns."""
    plain = [t for t in body.get("tools") or [] if not (isinstance(t, dict) and t.get("type") == "mcp")]
    messages = list(body.get("messages") or [])
    want_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    request = {k: v for k, v in body.items() if k not in ("tools", "messages")}
    request["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}  # to sum it
    tools = plain + toolset.functions()
    totals = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    stream_id: str | None = None
    deployment = ""
    role_shown = False
    for round_ in range(max_rounds + 1):
        turn = _turn(request, messages, tools)
        pending: dict[int, dict[str, Any]] = {}  # the turn's tool calls, by index, from their deltas
        held: list[dict[str, Any]] = []  # their chunks: shown only if they are the client's own tools
        finish: dict[str, Any] | None = None
        usage_chunk: dict[str, Any] | None = None
        text: list[str] = []
        async for deployment, batch in stream(turn):
            out = []
            for c in batch:
                stream_id = stream_id or c.get("id")
                c["id"] = stream_id
                choices = c.get("choices")
                if not choices:
                    if isinstance(c.get("usage"), dict):
                        for k in totals:
                            totals[k] += int(c["usage"].get(k) or 0)
                        usage_chunk = c
                    continue
                delta = choices[0].get("delta") or {}
                if role_shown and "role" in delta:  # the client sees the role once
                    delta = {k: v for k, v in delta.items() if k != "role"}
                    choices[0]["delta"] = delta
                for tc in delta.get("tool_calls") or []:
                    call = pending.setdefault(int(tc.get("index") or 0), {"id": None, "type": "function",
                                                                         "function": {"name": "", "arguments": ""}})
                    call["id"] = tc.get("id") or call["id"]
                    fn = tc.get("function") or {}
                    call["function"]["name"] += fn.get("name") or ""
                    call["function"]["arguments"] += fn.get("arguments") or ""
                if delta.get("tool_calls"):
                    held.append(c)
                    if delta.get("content"):  # text in the same delta: shown now, without the calls
                        text.append(delta["content"])
                        out.append({**c, "choices": [{**choices[0], "delta": {"content": delta["content"]}}]})
                    continue
                if choices[0].get("finish_reason") is not None:
                    finish = c  # held until it is known whether this turn is the last
                    continue
                if delta.get("content"):
                    text.append(delta["content"])
                if delta:
                    role_shown = role_shown or "role" in delta
                    out.append(c)
            if out:
                yield deployment, out
        calls = [pending[i] for i in sorted(pending)]
        if not calls or not all(toolset.owns(c["function"]["name"]) for c in calls):
            tail = held + ([finish] if finish is not None else [])
            if want_usage and usage_chunk is not None:
                tail.append({**usage_chunk, "usage": {**usage_chunk["usage"], **totals}})
            if tail:
                yield deployment, tail
            return
        if round_ == max_rounds:
            raise _too_many_rounds(max_rounds)
        messages.append({"role": "assistant", "content": "".join(text) or None, "tool_calls": calls})
        for c in calls:
            done = await toolset.call(c["function"]["name"], c["function"]["arguments"] or "{}")
            messages.append(_tool_message(c["id"], done))
            yield deployment, [{"id": stream_id, "object": "chat.completion.chunk", "choices": [],
                                "mcp_call": {"id": c["id"], **done}}]
        if "tool_choice" in request and request["tool_choice"] not in ("auto", "none"):
            request["tool_choice"] = "auto"


__all__ = ["MCP_CALLS", "McpToolset", "chat_with_mcp", "mcp_specs", "stream_with_mcp"]
