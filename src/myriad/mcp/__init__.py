"""MCP (Model Context Protocol) for agents.

An agent class declares tools, resources and prompts with ``@mcp.tool()``,
``@mcp.resource(uri)`` and ``@mcp.prompt()``; each instance is then an MCP server at
``/mcp/{agent}/{name}`` (Streamable HTTP; ``myriad.server.mcp_api`` is the door and its
authorization, ``myriad.server._mcp_servers`` the bridge to the official ``mcp`` SDK,
imported only when the first MCP request arrives: extra ``mcp``). ``McpSession`` is
the client's wire, used by agents (``self.mcp``) and the gateway. ``@mcp.per_session``
makes a class serve one new instance per MCP session at ``/mcp/{agent}``.

The client side (``self.mcp``) lives in ``myriad.agents.mcp_client``; the gateway's
``tools: [{"type": "mcp"}]`` in ``myriad.models.mcp_tools``.
"""

from myriad.mcp._declare import (
    Declarations,
    McpPrompt,
    McpResource,
    McpTool,
    declarations,
    per_session,
    prompt,
    resource,
    tool,
)
from myriad.mcp._guard import PublicOnlyTransport
from myriad.mcp._wire import ACCEPTED_VERSIONS, PROTOCOL_VERSION, McpSession

__all__ = [
    "ACCEPTED_VERSIONS",
    "PROTOCOL_VERSION",
    "Declarations",
    "McpPrompt",
    "McpResource",
    "McpSession",
    "McpTool",
    "PublicOnlyTransport",
    "declarations",
    "per_session",
    "prompt",
    "resource",
    "tool",
]
