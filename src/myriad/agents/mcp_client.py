"""An agent's MCP client: ``self.mcp`` connects to remote MCP servers (Streamable HTTP),
lists their tools and calls them, through Myriad's outbound path.

    await self.mcp.connect("https://tools.example.com/mcp", name="docs", token=oauth_token)
    tools = await self.mcp.list_tools("docs")
    result = await self.mcp.call("docs", "search", {"query": "sla"})
    box = await self.sandbox(tools=await self.mcp.tools())   # Code Mode: tools.docs_search({...})

- **Persistent**: a connection is a row in the agent's own SQL (name, URL), so it
  survives hibernation and restarts; the protocol session is reopened on first use.
- **No raw credentials in the agent**: a ``token`` given to ``connect`` goes into the
  vault (provider ``mcp-{name}``, for the caller's user and the server's host) and the
  outbound path injects it on each request; it is never in the agent's state or SQL.
- **Outbound path**: every request is scope-checked for the turn's caller
  (``egress:{host}``, ``vault:mcp-{name}`` when a credential is injected), signed
  (RFC 9421) and audited, as the tool layer's requests are.
- **Bounded**: each request has a timeout (``timeout``, default 30 s); a broken or slow
  server raises ``McpError`` / ``McpTimeout`` with a message naming the server.
- **Traced**: each call is an ``execute_tool {tool}`` span with the MCP attributes of
  the GenAI conventions (``mcp.method.name``, ``mcp.session.id``, ``mcp.protocol.version``).

Speaks the ``initialize`` handshake revisions (2025-11-25, accepting a server that
answers 2025-06-18 or 2025-03-26), with JSON or SSE responses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from myriad.errors import InvalidRequest, McpError, NotFound, PermissionDenied
from myriad.mcp import McpSession
from myriad.sandbox import Tool

if TYPE_CHECKING:
    from myriad.agents.agent import Agent

_TABLE = "_myriad_mcp_servers"


@dataclass
class McpServer:
    """One remote MCP server this agent is connected to."""

    name: str
    url: str
    created: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "created": self.created}


class McpClient:
    """``self.mcp`` of one agent instance (see the module docstring)."""

    def __init__(self, agent: "Agent", *, timeout: float = 30.0) -> None:
        self._agent = agent
        self.timeout = timeout
        self._sessions: dict[str, McpSession] = {}
        self._tools: dict[str, list[dict[str, Any]]] = {}
        self._errors: dict[str, str] = {}

    # -- connections (persisted in the agent's SQL) --------------------------------
    def _table(self) -> None:
        self._agent.sql(f"CREATE TABLE IF NOT EXISTS {_TABLE} (name TEXT PRIMARY KEY, url TEXT NOT NULL, "
                        "created REAL NOT NULL)")

    def servers(self) -> list[McpServer]:
        """The servers this agent is connected to (persisted)."""
        if not self._agent.sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", _TABLE):
            return []
        return [McpServer(r["name"], r["url"], r["created"])
                for r in self._agent.sql(f"SELECT name, url, created FROM {_TABLE} ORDER BY name")]

    def _server(self, name: str) -> McpServer:
        for s in self.servers():
            if s.name == name:
                return s
        raise NotFound(f"this agent has no MCP server named {name!r}; connect it first")

    async def connect(self, url: str, *, name: str, token: str | None = None) -> McpServer:
        """Connect (or reconnect) to the MCP server at ``url`` under ``name``; ``token``
        (an OAuth access token for that server) goes to the vault, not the agent."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequest("MCP server URL must be absolute http(s)", details={"param": "url"})
        if not name.replace("_", "").isalnum() or not name.isascii() or len(name) > 40:
            raise InvalidRequest("MCP server name must be 1-40 ASCII letters, digits or '_'", details={"param": "name"})
        if token is not None:
            principal = self._principal()
            if principal is None or principal.user is None:
                raise PermissionDenied("storing an MCP server's token needs a user's (or delegated) token as caller")
            identity = self._agent.identity  # the vault is a database table: off the event loop on PostgreSQL
            await identity.off_loop(lambda: identity.vault.put(principal.tenant, principal.user, f"mcp-{name}", token,
                                                               domains=[parts.hostname]))
        self._sessions.pop(name, None)
        self._tools.pop(name, None)
        session = self._sessions[name] = McpSession(url, self._http(), self.timeout, repr(name))
        try:
            await session.open()
        except BaseException:
            self._sessions.pop(name, None)
            raise
        finally:
            await session.http.aclose()
        self._table()
        self._agent.sql(f"INSERT OR REPLACE INTO {_TABLE} (name, url, created) VALUES (?, ?, ?)", name, url, time.time())
        self._errors.pop(name, None)
        await self.list_tools(name)
        await self._agent.broadcast(self.frame())
        return McpServer(name, url, time.time())

    async def disconnect(self, name: str) -> None:
        self._table()
        self._sessions.pop(name, None)
        self._tools.pop(name, None)
        self._agent.sql(f"DELETE FROM {_TABLE} WHERE name = ?", name)
        await self._agent.broadcast(self.frame())

    def frame(self) -> dict[str, Any]:
        """The ``cf_agent_mcp_servers`` frame the npm ``agents`` client expects: this
        agent's connections, their state, and the tools it has listed."""
        servers: dict[str, Any] = {}
        tools: list[dict[str, Any]] = []
        for s in self.servers():
            error = self._errors.get(s.name)
            servers[s.name] = {"name": s.name, "server_url": s.url, "auth_url": None,
                               "state": "failed" if error else "ready", "error": error,
                               "instructions": None, "capabilities": None}
            tools += [{**t, "serverId": s.name} for t in self._tools.get(s.name, [])]
        return {"type": "cf_agent_mcp_servers",
                "mcp": {"servers": servers, "tools": tools, "prompts": [], "resources": []}}

    # -- calls ------------------------------------------------------------------------
    def _principal(self) -> Any:
        return self._agent.caller

    def _http(self) -> httpx.AsyncClient:
        host = self._agent._host  # noqa: SLF001 - the agent's own host
        principal = self._principal()
        if host.identity is None:
            return httpx.AsyncClient(timeout=self.timeout)
        if principal is None:
            raise PermissionDenied("MCP calls go out on behalf of the turn's caller; this turn has none "
                                   "(a schedule): call from a client's turn")
        client: httpx.AsyncClient = host.identity.outbound.client(principal, timeout=self.timeout)
        return client

    def _session(self, name: str, url: str) -> McpSession:
        session = self._sessions.get(name)
        if session is None:
            session = self._sessions[name] = McpSession(url, self._http(), self.timeout, repr(name))
        else:
            session.http = self._http()  # this turn's caller, not the one that opened it
        return session

    async def _request(self, name: str, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        server = self._server(name)
        session = self._session(name, server.url)
        try:
            result = await session.request(method, params)
        except McpError as e:
            self._errors[name] = e.message
            raise
        finally:
            await session.http.aclose()
        self._errors.pop(name, None)
        return result

    async def list_tools(self, name: str) -> list[dict[str, Any]]:
        """The tools of server ``name`` (MCP ``Tool`` objects as JSON)."""
        result = await self._request(name, "tools/list")
        tools = [t for t in result.get("tools", []) if isinstance(t, dict) and isinstance(t.get("name"), str)]
        self._tools[name] = tools
        return tools

    async def call(self, name: str, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        """Call ``tool`` on server ``name``; the MCP ``CallToolResult`` as JSON."""
        from myriad.telemetry import execute_tool

        with execute_tool(tool, tool_type="extension") as span:
            span.set_attribute("mcp.method.name", "tools/call")
            span.set_attribute("myriad.mcp.server", name)
            result = await self._request(name, "tools/call", {"name": tool, "arguments": arguments or {}})
            session = self._sessions.get(name)
            if session is not None:
                if session.session_id:
                    span.set_attribute("mcp.session.id", session.session_id)
                if session.version:
                    span.set_attribute("mcp.protocol.version", session.version)
            if result.get("isError"):
                span.set_attribute("error.type", "tool_error")
        await self._meter(name, tool, bool(result.get("isError")))
        return result

    async def _meter(self, server: str, tool: str, failed: bool) -> None:
        meter = self._agent._host.meter  # noqa: SLF001 - the agent's own host
        if meter is None:
            return
        from myriad.metering import Subject, Usage

        ref = self._agent.ref
        caller = self._principal()
        await meter.record(Subject(ref.tenant, user=getattr(caller, "user", None), agent=ref.path),
                           Usage({"mcp.calls": 1}), type="mcp", source=f"{meter.source}/agents/mcp",
                           attributes={"server": server, "tool": tool, "failed": failed})

    async def tools(self, *names: str) -> list[Tool]:
        """Code-Mode tools for the servers ``names`` (all when none are given): each MCP
        tool is ``tools.{server}_{tool}(args)`` in an isolate, typed from its input schema.
        The result is the tool's structured content, else its text."""
        out: list[Tool] = []
        for server in names or tuple(s.name for s in self.servers()):
            for spec in self._tools.get(server) or await self.list_tools(server):
                out.append(self._code_mode_tool(server, spec))
        return out

    def _code_mode_tool(self, server: str, spec: dict[str, Any]) -> Tool:
        tool_name = spec["name"]

        async def invoke(**arguments: Any) -> Any:
            result = await self.call(server, tool_name, arguments)
            if result.get("isError"):
                text = " ".join(c.get("text", "") for c in result.get("content", []) if isinstance(c, dict))
                raise McpError(f"MCP tool {server}.{tool_name} failed: {text}")
            if "structuredContent" in result:
                return result["structuredContent"]
            texts = [c.get("text", "") for c in result.get("content", []) if isinstance(c, dict) and c.get("type") == "text"]
            return texts[0] if len(texts) == 1 else texts

        raw = spec.get("inputSchema")
        schema: dict[str, Any] = raw if isinstance(raw, dict) else {"type": "object"}
        js_name = f"{server}_{tool_name}".replace("-", "_").replace(".", "_")
        return Tool(js_name, invoke, str(spec.get("description") or ""), schema)


__all__ = ["McpClient", "McpServer"]
