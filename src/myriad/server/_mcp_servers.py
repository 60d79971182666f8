"""Agents as MCP servers over Streamable HTTP, on the official ``mcp`` SDK's transport.

One SDK ``Server`` per agent class (its declared tools, resources and prompts), behind
one stateless ``StreamableHTTPSessionManager`` each, so every protocol revision the SDK
serves is served here: 2026-07-28 (single-exchange, ``server/discover``) and the
``initialize`` handshake revisions (2025-11-25, 2025-06-18, ...). The instance and the
caller of a request travel in a context variable set by the HTTP door; each
``tools/call``, ``resources/read`` and ``prompts/get`` runs as one turn of that
instance (input gate, output gate, metering and tracing as for any turn).

The SDK is imported here only, when the first MCP request arrives (extra ``mcp``).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from dataclasses import dataclass
from typing import Any

from myriad.agents import Agent, AgentHost, AgentRef
from myriad.errors import InvalidRequest, MyriadError
from myriad.mcp import Declarations, declarations
from myriad.sandbox import Tool


@dataclass(frozen=True)
class Target:
    """Who a request is for (the instance) and from (the principal)."""

    ref: AgentRef
    principal: Any


_target: contextvars.ContextVar[Target] = contextvars.ContextVar("myriad_mcp_target")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


class McpServers:
    """The MCP endpoints of every agent class that declares something."""

    def __init__(self, host: AgentHost) -> None:
        self._host = host
        self._managers: dict[str, Any] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()

    def declarations(self, agent_class: str) -> Declarations:
        return declarations(self._host.agent_class(agent_class))

    async def handle(self, target: Target, scope: Any, receive: Any, send: Any) -> None:
        """Serve one HTTP request of the Streamable HTTP transport for ``target``."""
        manager = await self._manager(target.ref.agent_class)
        token = _target.set(target)
        try:
            await manager.handle_request(scope, receive, send)
        finally:
            _target.reset(token)

    async def _manager(self, agent_class: str) -> Any:
        found = self._managers.get(agent_class)
        if found is not None:
            return found
        async with self._lock:
            if agent_class in self._managers:
                return self._managers[agent_class]
            from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

            manager = StreamableHTTPSessionManager(self._server(agent_class), stateless=True, json_response=True)
            started = asyncio.Event()

            async def run() -> None:
                async with manager.run():
                    started.set()
                    await self._stop.wait()

            self._tasks.append(asyncio.create_task(run(), name=f"mcp-{agent_class}"))
            await started.wait()
            self._managers[agent_class] = manager
            return manager

    async def aclose(self) -> None:
        self._stop.set()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, 5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                task.cancel()
        self._tasks.clear()

    # -- tools as plain JSON (the direct path and the SDK's handlers share these) ----------

    def list_tools_json(self, target: Target) -> dict[str, Any]:
        agent_class = target.ref.agent_class
        caps = target.principal.capabilities
        tools = []
        for s in self.declarations(agent_class).tools.values():
            if not caps.covers(f"mcp:{agent_class}:{s.name}"):
                continue
            tool: dict[str, Any] = {"name": s.name, "inputSchema": s.parameters}
            if s.description:
                tool["description"] = s.description
            if s.returns.get("type") == "object":
                tool["outputSchema"] = s.returns
            tools.append(tool)
        return {"tools": tools}

    async def call_tool_json(self, target: Target, name: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
        """The ``CallToolResult`` as JSON; None when the class has no such tool."""
        spec = self.declarations(target.ref.agent_class).tools.get(name)
        if spec is None:
            return None
        target.principal.require(f"mcp:{target.ref.agent_class}:{spec.name}")  # the door checked too
        try:
            await Tool(spec.name, _noop, spec.description, spec.parameters).invoke(arguments)  # schema check
            result = await self._turn(target, spec.attr, arguments)
        except MyriadError as e:  # tool errors are results the model can read (MCP spec)
            return {"content": [{"type": "text", "text": e.message}], "isError": True}
        except Exception as e:  # noqa: BLE001 - the agent's own error, reported to the caller
            return {"content": [{"type": "text", "text": f"{type(e).__name__}: {e}"}], "isError": True}
        out: dict[str, Any] = {"content": [{"type": "text", "text": _text(result)}], "isError": False}
        if isinstance(result, dict):
            out["structuredContent"] = result
        return out

    async def _turn(self, target: Target, attr: str, kwargs: dict[str, Any]) -> Any:
        async def body(agent: Agent) -> Any:
            return await getattr(agent, attr)(**kwargs)
        return await self._host.run(target.ref, body, caller=target.principal)

    # -- the SDK server of one class ---------------------------------------------------

    def _server(self, agent_class: str) -> Any:
        import mcp_types as t
        from mcp.server.lowlevel.server import Server
        from mcp.shared.exceptions import MCPError

        cls = self._host.agent_class(agent_class)
        decl = declarations(cls)

        def not_found(what: str) -> MCPError:
            return MCPError(code=t.INVALID_PARAMS, message=what)

        turn = self._turn

        async def list_tools(ctx: Any, params: Any) -> Any:
            return t.ListToolsResult.model_validate(self.list_tools_json(_target.get()))

        async def call_tool(ctx: Any, params: Any) -> Any:
            result = await self.call_tool_json(_target.get(), params.name, dict(params.arguments or {}))
            if result is None:
                raise not_found(f"unknown tool {params.name!r}")
            return t.CallToolResult.model_validate(result)

        async def list_resources(ctx: Any, params: Any) -> Any:
            return t.ListResourcesResult(resources=[
                t.Resource(uri=r.uri, name=r.name, description=r.description or None, mime_type=r.mime_type)
                for r in decl.resources.values()
            ])

        async def read_resource(ctx: Any, params: Any) -> Any:
            spec = decl.resources.get(str(params.uri))
            if spec is None:
                raise not_found(f"unknown resource {params.uri!s}")
            value = await turn(_target.get(), spec.attr, {})
            return t.ReadResourceResult(contents=[
                t.TextResourceContents(uri=spec.uri, mime_type=spec.mime_type, text=_text(value))])

        async def list_prompts(ctx: Any, params: Any) -> Any:
            return t.ListPromptsResult(prompts=[
                t.Prompt(name=p.name, description=p.description or None, arguments=[
                    t.PromptArgument(name=k, required=k in p.parameters.get("required", []))
                    for k in p.parameters.get("properties", {})])
                for p in decl.prompts.values()
            ])

        async def get_prompt(ctx: Any, params: Any) -> Any:
            spec = decl.prompts.get(params.name)
            if spec is None:
                raise not_found(f"unknown prompt {params.name!r}")
            args = dict(params.arguments or {})
            try:
                await Tool(spec.name, _noop, spec.description, spec.parameters).invoke(args)
            except InvalidRequest as e:
                raise MCPError(code=t.INVALID_PARAMS, message=e.message) from None
            text = await turn(_target.get(), spec.attr, args)
            return t.GetPromptResult(description=spec.description or None, messages=[
                t.PromptMessage(role="user", content=t.TextContent(type="text", text=_text(text)))])

        handlers: dict[str, Any] = {}
        if decl.tools:
            handlers.update(on_list_tools=list_tools, on_call_tool=call_tool)
        if decl.resources:
            handlers.update(on_list_resources=list_resources, on_read_resource=read_resource)
        if decl.prompts:
            handlers.update(on_list_prompts=list_prompts, on_get_prompt=get_prompt)
        doc = (cls.__doc__ or "").strip().split("\n")[0] or None
        return Server(f"myriad/{agent_class}", version="1", instructions=doc, **handlers)


async def _noop(**kwargs: Any) -> None:
    return None


__all__ = ["McpServers", "Target"]
