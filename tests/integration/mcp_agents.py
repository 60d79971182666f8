"""An agent that uses remote MCP servers (for tests/integration/test_mcp_client.py)."""

from __future__ import annotations

from typing import Any

from myriad import Agent, callable


class Researcher(Agent):
    @callable()
    async def connect(self, url: str, name: str, token: str | None = None) -> dict[str, Any]:
        return (await self.mcp.connect(url, name=name, token=token)).to_json()

    @callable()
    async def servers(self) -> list[dict[str, Any]]:
        return [s.to_json() for s in self.mcp.servers()]

    @callable()
    async def tool_names(self, name: str) -> list[str]:
        return sorted(t["name"] for t in await self.mcp.list_tools(name))

    @callable()
    async def call(self, name: str, tool: str, args: dict[str, Any], timeout: float = 30.0) -> Any:
        self.mcp.timeout = timeout
        result = await self.mcp.call(name, tool, args)
        self.set_state({"calls": (self.state or {}).get("calls", 0) + 1})
        return result

    @callable()
    async def code_mode(self, code: str) -> Any:
        tools = await self.mcp.tools()
        box = await self.sandbox(tier="isolate", tools=tools)
        try:
            return {"result": (await box.run(code)).value, "declaration": box.declaration()}
        finally:
            await box.close()

    @callable()
    async def dump(self) -> dict[str, Any]:
        tables = self.sql("SELECT name FROM sqlite_master WHERE type='table'")
        rows = {t["name"]: self.sql(f"SELECT * FROM {t['name']}") for t in tables}
        return {"state": self.state, "sql": rows}
