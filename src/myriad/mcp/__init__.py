"""MCP (Model Context Protocol) for agents.

An agent class declares tools, resources and prompts with ``@mcp.tool()``,
``@mcp.resource(uri)`` and ``@mcp.prompt()``; each instance is then an MCP server at
``/mcp/{agent}/{name}`` (Streamable HTTP; see ``myriad.server.mcp_api`` for the door
and its authorization). The official ``mcp`` SDK serves the transport and is imported
only when the first MCP request arrives (extra ``mcp``).

The client side (``self.mcp``) lives in ``myriad.agents.mcp_client``. Not yet here: the
gateway's ``tools: [{"type": "mcp"}]`` and per-session instances.
"""

from myriad.mcp._declare import Declarations, McpPrompt, McpResource, McpTool, declarations, prompt, resource, tool
from myriad.mcp._serve import McpServers, Target

__all__ = [
    "Declarations",
    "McpPrompt",
    "McpResource",
    "McpServers",
    "McpTool",
    "Target",
    "declarations",
    "prompt",
    "resource",
    "tool",
]
