"""Agents as MCP clients, against a real MCP server (the official SDK's) that the test
starts, through a real Myriad server: tokens in the vault and injected by the outbound
path (never in the agent's state or SQL), signed requests, connections that survive
hibernation and a restart, MCP tools in Code Mode, and clear errors for broken or slow
servers."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.integration.live import LiveServer, free_port
from tests.integration.mcp_upstream import running

pytest.importorskip("mcp")
TOKEN = "upstream-oauth-token-1234567890"


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with running(TOKEN) as url:
        yield url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    s = LiveServer(tmp_path_factory.mktemp("mcpc") / "data", agents="tests.integration.mcp_agents").start()
    yield s
    s.stop()


def _user_token(server: LiveServer, user: str, extra: str = "") -> str:
    r = httpx.post(f"{server.url}/v1/admin/user-tokens", headers=server.headers(), json={
        "user": user, "scope": "agents egress vault sandbox tools" + extra, "resource": ["urn:myriad:agents", "urn:myriad:egress"],
        "ttl": 600})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _rpc(server: LiveServer, token: str, name: str, method: str, *args: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/agents/researcher/{name}/rpc", headers={"Authorization": f"Bearer {token}"},
                      json={"method": method, "args": list(args)}, timeout=60)


def test_connect_call_and_the_token_stays_in_the_vault(server: LiveServer, upstream: str) -> None:
    alice = _user_token(server, "alice")
    r = _rpc(server, alice, "a1", "connect", upstream + "/mcp", "calc", TOKEN)
    assert r.status_code == 200, r.text
    assert _rpc(server, alice, "a1", "tool_names", "calc").json()["result"] == ["add", "shout", "slow"]
    result = _rpc(server, alice, "a1", "call", "calc", "add", {"a": 2, "b": 40}).json()["result"]
    assert result["structuredContent"] == {"result": 42} and not result.get("isError")
    # the upstream saw the vault's token and Myriad's signature on every request ...
    seen = httpx.get(upstream + "/seen").json()
    assert seen and all(h["authorization"] == f"Bearer {TOKEN}" for h in seen[-3:])
    assert all(h["signature-input"] for h in seen[-3:])
    # ... and the agent holds it nowhere: not in its state, not in its SQL
    dump = json.dumps(_rpc(server, alice, "a1", "dump").json())
    assert TOKEN not in dump and "calc" in dump
    # each call is metered to the agent
    events = httpx.get(f"{server.url}/v1/usage/events", headers=server.headers()).text
    assert '"mcp.calls"' in events and "researcher" in events
    # the user's vault lists it (as a fingerprint)
    creds = httpx.get(f"{server.url}/v1/vault/credentials", headers=server.headers()).json()
    assert any(c["provider"] == "mcp-calc" for c in creds.get("credentials", creds if isinstance(creds, list) else []))


def test_another_user_gets_no_token_injected(server: LiveServer, upstream: str) -> None:
    # bob's token may reach other users' instances ('users'); without it the door refuses (test_user_isolation.py)
    alice, bob = _user_token(server, "alice"), _user_token(server, "bob", extra=" users")
    assert _rpc(server, alice, "shared", "connect", upstream + "/mcp", "calc", TOKEN).status_code == 200
    # bob drives the same instance: the outbound path injects bob's credentials (none), so the upstream refuses
    r = _rpc(server, bob, "shared", "call", "calc", "add", {"a": 1, "b": 1})
    assert r.status_code == 403, r.text
    assert "refused the credentials" in r.json()["error"]["message"]


def test_connection_survives_hibernation_and_restart(tmp_path: Path, upstream: str) -> None:
    s = LiveServer(tmp_path / "data", agents="tests.integration.mcp_agents",
                   env={"MYRIAD_AGENTS__HIBERNATE_AFTER": "0.2"}).start()
    try:
        alice = _user_token(s, "alice")
        assert _rpc(s, alice, "p", "connect", upstream + "/mcp", "calc", TOKEN).status_code == 200
        time.sleep(1.0)  # hibernated
        assert _rpc(s, alice, "p", "call", "calc", "shout", {"text": "hi"}).json()["result"]["structuredContent"] == \
            {"result": "HI"}
        s.kill9()
        s.start()
        alice = _user_token(s, "alice")
        assert [x["name"] for x in _rpc(s, alice, "p", "servers").json()["result"]] == ["calc"]
        r = _rpc(s, alice, "p", "call", "calc", "add", {"a": 1, "b": 2})
        assert r.json()["result"]["structuredContent"] == {"result": 3}
    finally:
        s.stop()


def test_mcp_tools_in_code_mode(server: LiveServer, upstream: str) -> None:
    alice = _user_token(server, "alice")
    assert _rpc(server, alice, "cm", "connect", upstream + "/mcp", "calc", TOKEN).status_code == 200
    code = "async () => { const s = await tools.calc_add({a: 20, b: 1}); " \
           "const t = await tools.calc_shout({text: 'ok'}); return [s.result * 2, t.result]; }"
    r = _rpc(server, alice, "cm", "code_mode", code)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["result"] == [42, "OK"]
    decl = r.json()["result"]["declaration"]
    assert "calc_add" in decl and "a: number" in decl


def test_broken_and_slow_servers_give_clear_errors(server: LiveServer, upstream: str) -> None:
    alice = _user_token(server, "alice")
    dead = f"http://127.0.0.1:{free_port()}/mcp"
    r = _rpc(server, alice, "e", "connect", dead, "dead", TOKEN)
    assert r.status_code == 502 and "unreachable" in r.json()["error"]["message"]
    assert _rpc(server, alice, "e", "connect", upstream + "/mcp", "calc", TOKEN).status_code == 200
    # a tool slower than the client's timeout: a 504 naming the server, not a hang or a 500
    r = httpx.post(f"{server.url}/v1/agents/researcher/e/rpc", headers={"Authorization": f"Bearer {alice}"},
                   json={"method": "call", "args": ["calc", "slow", {"seconds": 30}, 1.5]}, timeout=60)
    assert r.status_code == 504 and "'calc'" in r.json()["error"]["message"]
    r = _rpc(server, alice, "e", "call", "nope", "add", {})
    assert r.status_code == 404


async def test_mcp_servers_frame_carries_the_connections(server: LiveServer, upstream: str) -> None:
    """What useAgent's onMcpUpdate reads: the agent's connections, their state and tools."""
    import websockets

    alice = _user_token(server, "alice")
    async with websockets.connect(f"{server.ws_url}/agents/researcher/frames?token={alice}") as ws:
        frames = [json.loads(await ws.recv()) for _ in range(2)]  # identity, then the (empty) mcp frame
        assert frames[-1] == {"type": "cf_agent_mcp_servers",
                              "mcp": {"servers": {}, "tools": [], "prompts": [], "resources": []}}
        await ws.send(json.dumps({"type": "rpc", "id": "1", "method": "connect",
                                  "args": [upstream + "/mcp", "calc", TOKEN]}))
        pushed = json.loads(await ws.recv())  # broadcast when the connection is made
        assert pushed["type"] == "cf_agent_mcp_servers"
        calc = pushed["mcp"]["servers"]["calc"]
        assert calc["state"] == "ready" and calc["server_url"] == upstream + "/mcp"
        assert sorted(t["name"] for t in pushed["mcp"]["tools"]) == ["add", "shout", "slow"]
        assert all(t["serverId"] == "calc" for t in pushed["mcp"]["tools"])
    async with websockets.connect(f"{server.ws_url}/agents/researcher/frames?token={alice}") as ws:
        frames = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(2)]  # identity, mcp
        assert frames[-1]["type"] == "cf_agent_mcp_servers"
        assert list(frames[-1]["mcp"]["servers"]) == ["calc"]
