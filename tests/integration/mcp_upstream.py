"""A real MCP server (the official SDK's MCPServer, stateful Streamable HTTP with SSE
responses) for the agents' MCP client to talk to; run as a process by the tests:

    python -m tests.integration.mcp_upstream PORT TOKEN

Every request must carry ``Authorization: Bearer TOKEN`` (what the vault injects).
It records the Authorization and Signature-Agent headers it saw at /seen.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import uvicorn
from mcp.server.mcpserver import MCPServer

seen: list[dict[str, str]] = []
server = MCPServer("upstream")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return "late"


def build(token: str):  # type: ignore[no-untyped-def]
    inner = server.streamable_http_app(host="127.0.0.1")

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http":
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            if scope["path"] == "/seen":
                body = json.dumps(seen).encode()
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                return
            seen.append({k: headers.get(k, "") for k in ("authorization", "signature-agent", "signature-input")})
            if headers.get("authorization") != f"Bearer {token}":
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
        await inner(scope, receive, send)

    return app


@contextmanager
def running(token: str) -> Iterator[str]:
    """This server in a process of its own; its base URL (the MCP endpoint is ``/mcp``)."""
    import httpx

    from tests.integration.live import free_port

    repo = Path(__file__).resolve().parents[2]
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.mcp_upstream", str(port), token], cwd=repo,
                            env={"PYTHONPATH": f"{repo / 'src'}:{repo}", "PATH": "/usr/bin:/bin"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                httpx.get(url + "/seen", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    port, token = int(sys.argv[1]), sys.argv[2]
    uvicorn.run(build(token), host="127.0.0.1", port=port, log_level="warning")
