"""The MCP servers ``myriad bench mcp`` measures (run as processes by the bench).

    python -m myriad.bench._mcp_upstream PORT     the official SDK's MCPServer, stateless JSON:
                                                  echo(text) and lookup_0 .. lookup_9(id)

``Echo`` is the same ``echo`` tool as a Myriad agent (served by ``myriad serve
--agents myriad.bench._mcp_upstream``), so the two round trips differ only by Myriad.
"""

from __future__ import annotations

import sys
from typing import Any

from myriad import Agent, mcp


class Echo(Agent):
    """The bench's agent: one MCP tool."""

    @mcp.tool()
    async def echo(self, text: str) -> str:
        """Return the text."""
        return text


def build_server() -> Any:
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("bench-upstream")

    @server.tool()
    def echo(text: str) -> str:
        """Return the text."""
        return text

    for k in range(10):
        def lookup(id: int, k: int = k) -> dict[str, int]:  # noqa: A002 - the tool's parameter name
            return {"id": id, "value": id * (k + 1)}

        server.tool(name=f"lookup_{k}", description=f"Look up record {k} for an id.")(lookup)
    return server.streamable_http_app(stateless_http=True, json_response=True, host="127.0.0.1")


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(build_server(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
