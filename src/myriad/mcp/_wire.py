"""The MCP client's wire: one Streamable HTTP session with a remote MCP server.

JSON-RPC over HTTP POST with the ``initialize`` handshake (2025-11-25, accepting a
server that answers 2025-06-18 or 2025-03-26), answers as JSON or as an SSE stream,
``Mcp-Session-Id`` kept and the session reopened once when the server forgot it.
Every request is bounded by ``timeout``; failures are ``McpError`` / ``McpTimeout``
naming the server. The HTTP client is the caller's (the agents' client passes one
that goes through the outbound path: scope check, credential injection, signature).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import httpx

from myriad.errors import McpError, McpTimeout, PermissionDenied

PROTOCOL_VERSION = "2025-11-25"
ACCEPTED_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")


class McpSession:
    """One protocol session with a server (reopened when the server forgets it)."""

    def __init__(self, url: str, http: httpx.AsyncClient, timeout: float, label: str,
                 headers: dict[str, str] | None = None) -> None:
        self.url, self.http, self.timeout, self.label = url, http, timeout, label
        self.extra_headers = headers or {}
        self.session_id: str | None = None
        self.version: str | None = None
        self._ids = itertools.count(1)

    def _headers(self) -> dict[str, str]:
        h = {**self.extra_headers, "accept": "application/json, text/event-stream", "content-type": "application/json"}
        if self.session_id:
            h["mcp-session-id"] = self.session_id
        if self.version:
            h["mcp-protocol-version"] = self.version
        return h

    async def open(self) -> None:
        result = await self._post("initialize", {
            "protocolVersion": PROTOCOL_VERSION, "capabilities": {},
            "clientInfo": {"name": "myriad-agent", "version": "1"}})
        version = result.get("protocolVersion")
        if version not in ACCEPTED_VERSIONS:
            raise McpError(f"MCP server {self.label} speaks protocol {version!r}, not one of {list(ACCEPTED_VERSIONS)}")
        self.version = version
        await self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.version is None:
            await self.open()
        try:
            return await self._post(method, params)
        except SessionGone:
            self.session_id = self.version = None  # the server restarted: a new session, once
            await self.open()
            return await self._post(method, params)

    async def _post(self, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        rid = next(self._ids)
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        reply = await self._send(msg, rid)
        if "error" in reply:
            err = reply["error"] if isinstance(reply["error"], dict) else {}
            raise McpError(f"MCP server {self.label} refused {method}: {err.get('message', 'error')}",
                           details={"mcp_code": err.get("code")})
        result = reply.get("result")
        if not isinstance(result, dict):
            raise McpError(f"MCP server {self.label} answered {method} without a result object")
        return result

    async def _send(self, msg: dict[str, Any], rid: int | None = None) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.timeout):
                async with self.http.stream("POST", self.url, json=msg, headers=self._headers()) as r:
                    if r.status_code == 404 and self.session_id and msg.get("method") != "initialize":
                        raise SessionGone
                    if r.status_code in (401, 403):
                        raise PermissionDenied(f"MCP server {self.label} refused the credentials "
                                               f"(HTTP {r.status_code}); reconnect with a valid token")
                    if r.status_code >= 400:
                        body = (await r.aread())[:200].decode("utf-8", "replace")
                        raise McpError(f"MCP server {self.label} answered HTTP {r.status_code}: {body}")
                    if sid := r.headers.get("mcp-session-id"):
                        self.session_id = sid
                    if rid is None:  # a notification: 202, no body
                        return {}
                    if r.headers.get("content-type", "").startswith("text/event-stream"):
                        return await _from_sse(r, rid, self.label)
                    return _decode(await r.aread(), self.label)
        except (TimeoutError, httpx.TimeoutException):
            raise McpTimeout(f"MCP server {self.label} did not answer {msg.get('method')} within {self.timeout:g} s",
                             details={"timeout": self.timeout}) from None
        except httpx.HTTPError as e:
            raise McpError(f"MCP server {self.label} is unreachable: {type(e).__name__}: {e}") from None


class SessionGone(Exception):
    """The server no longer knows the session (HTTP 404 with a session id)."""


def _decode(raw: bytes, label: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        raise McpError(f"MCP server {label} sent a reply that is not JSON") from None
    if not isinstance(value, dict):
        raise McpError(f"MCP server {label} sent a reply that is not a JSON-RPC object")
    return value


async def _from_sse(r: httpx.Response, rid: int, label: str) -> dict[str, Any]:
    data: list[str] = []
    async for line in r.aiter_lines():
        if line.startswith("data:"):
            data.append(line[5:].lstrip())
        elif not line and data:
            event, data = _decode("\n".join(data).encode(), label), []
            if event.get("id") == rid and ("result" in event or "error" in event):
                return event
    raise McpError(f"MCP server {label} closed its event stream without answering")


__all__ = ["ACCEPTED_VERSIONS", "McpSession", "PROTOCOL_VERSION"]
