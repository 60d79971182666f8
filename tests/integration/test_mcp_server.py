"""Agents as MCP servers, driven by the official ``mcp`` Python SDK client against a
real Myriad server: every protocol era the SDK speaks, per-tool scopes, and the
OAuth resource-server answers (401 with Protected Resource Metadata, 403 naming the scope)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Iterator

import httpx
import pytest

from tests.integration.live import REPO, LiveServer

mcp = pytest.importorskip("mcp")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    s = LiveServer(tmp_path_factory.mktemp("mcp") / "data", agents="examples.notes,examples.counter").start()
    yield s
    s.stop()


def _key(server: LiveServer, scopes: str) -> str:
    out = subprocess.run([sys.executable, "-m", "myriad", "keys", "create", "--tenant", "default", "--scopes", scopes,
                          "--data-dir", str(server.data_dir)], cwd=REPO, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": f"{REPO / 'src'}:{REPO}", "PATH": "/usr/bin:/bin"})
    return out.stdout.strip().splitlines()[-1]


async def _session(url: str, key: str, mode: str) -> Any:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30)
    return Client(streamable_http_client(url, http_client=http), mode=mode)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_tools_resources_prompts_through_the_sdk_client(server: LiveServer, mode: str) -> None:
    url = f"{server.url}/mcp/notes/alice-{mode}"
    async with await _session(url, server.key, mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"add_note", "search"}
        assert tools["search"].input_schema["properties"]["limit"] == {"type": "integer"}
        assert tools["search"].input_schema["required"] == ["query"]
        assert "newest first" in (tools["search"].description or "")
        first = await client.call_tool("add_note", {"text": "buy oat milk"})
        assert not first.is_error and first.structured_content == {"id": 1, "count": 1}
        await client.call_tool("add_note", {"text": "call the plumber about the milk pipe"})
        found = await client.call_tool("search", {"query": "MILK"})
        assert json.loads(found.content[0].text) == ["call the plumber about the milk pipe", "buy oat milk"]
        bad = await client.call_tool("search", {"query": 3})  # schema violation: a result the model can read
        assert bad.is_error and "query" in bad.content[0].text
        res = await client.read_resource("notes://all")
        assert res.contents[0].text == "buy oat milk\ncall the plumber about the milk pipe"
        prompt = await client.get_prompt("summarize", {"topic": "plumber"})
        assert "- call the plumber about the milk pipe" in prompt.messages[0].content.text
    # the tools ran as turns of the instance: its state and SQL are the agent's own
    state = httpx.get(f"{server.url}/v1/agents/notes/alice-{mode}", headers=server.headers()).json()["state"]
    assert state == {"notes": 2}


async def test_negotiated_eras(server: LiveServer) -> None:
    """auto negotiates the newest revision (server/discover); legacy does the initialize handshake."""
    async with await _session(f"{server.url}/mcp/notes/eras", server.key, "auto") as client:
        modern = client.session.protocol_version
    async with await _session(f"{server.url}/mcp/notes/eras", server.key, "legacy") as client:
        legacy = client.session.protocol_version
    from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_MODERN_VERSION

    assert modern == LATEST_MODERN_VERSION
    assert legacy in HANDSHAKE_PROTOCOL_VERSIONS


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25"])
def test_older_revisions_over_plain_http(server: LiveServer, version: str) -> None:
    """A 2025 client's handshake and call, byte by byte (what older SDKs send)."""
    url = f"{server.url}/mcp/notes/plain"
    h = {**server.headers(), "Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    init = httpx.post(url, headers=h, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert init.status_code == 200, init.text
    assert init.json()["result"]["protocolVersion"] == version
    h["MCP-Protocol-Version"] = version
    call = httpx.post(url, headers=h, json={"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                            "params": {"name": "add_note", "arguments": {"text": "x"}}})
    assert call.status_code == 200 and call.json()["result"]["structuredContent"]["count"] >= 1


def test_authorization_answers(server: LiveServer) -> None:
    url = f"{server.url}/mcp/notes/bob"
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add_note", "arguments": {"text": "x"}}}
    h = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
    # no credentials: 401 pointing at the Protected Resource Metadata (RFC 9728)
    r = httpx.post(url, json=body, headers=h)
    assert r.status_code == 401
    challenge = r.headers["www-authenticate"]
    prm_url = challenge.split('resource_metadata="')[1].rstrip('"')
    prm = httpx.get(prm_url).json()
    assert prm["resource"] == url
    assert prm["authorization_servers"] and set(prm["scopes_supported"]) == {"mcp:notes:add_note", "mcp:notes:search"}
    # a key that may search but not add: 403 naming the missing scope, and the agent never ran
    narrow = _key(server, "mcp:notes:search")
    r = httpx.post(url, json=body, headers={**h, "Authorization": f"Bearer {narrow}"})
    assert r.status_code == 403
    assert "mcp:notes:add_note" in r.json()["error"]["message"]
    assert 'scope="mcp:notes:add_note"' in r.headers["www-authenticate"]
    assert httpx.get(f"{server.url}/v1/agents/notes/bob", headers=server.headers()).status_code == 404
    # ... and it lists only the tool it may call
    r = httpx.post(url, headers={**h, "Authorization": f"Bearer {narrow}"},
                   json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    assert [t["name"] for t in r.json()["result"]["tools"]] == ["search"]
    # a key for another door entirely: 403 at the door
    r = httpx.post(url, json=body, headers={**h, "Authorization": f"Bearer {_key(server, 'agents')}"})
    assert r.status_code == 403


def test_bad_addresses_are_clear_4xx(server: LiveServer) -> None:
    h = {**server.headers(), "Accept": "application/json, text/event-stream"}
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    assert httpx.post(f"{server.url}/mcp/nope/x", headers=h, json=ping).status_code in (400, 404)
    r = httpx.post(f"{server.url}/mcp/counter/x", headers=h, json=ping)  # a class with no MCP declarations
    assert r.status_code == 404 and "declares no MCP" in r.json()["error"]["message"]
    r = httpx.post(f"{server.url}/mcp/notes/x", headers={**h, "Content-Type": "application/json"}, content=b"{nope")
    assert 400 <= r.status_code < 500


def test_npm_sdk_client(server: LiveServer) -> None:
    """The official npm client (@modelcontextprotocol/sdk 1.32, revision 2025-11-25)."""
    node_dir = REPO / "tests" / "node"
    out = subprocess.run(["node", "mcp_client.mjs", f"{server.url}/mcp/notes/node-user", server.key],
                         cwd=node_dir, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["tools"] == ["add_note", "search"]
    assert seen["added"] == {"id": 1, "count": 1}
    assert seen["found"] == ["from node"]
    assert seen["resource"] == "from node"
    assert "- from node" in seen["prompt"]


def test_npm_sdk_client_per_session(server: LiveServer) -> None:
    """The npm client keeps the session id Myriad answers and ends the session at the end."""
    out = subprocess.run(["node", "mcp_session.mjs", f"{server.url}/mcp/scratchpad", server.key],
                         cwd=REPO / "tests" / "node", capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["lines"] == [["one"], ["one", "two"]] and seen["sessionId"]
    r = httpx.get(f"{server.url}/v1/agents/scratchpad/mcp-{seen['sessionId']}", headers=server.headers())
    assert r.status_code == 404  # terminated: the instance went with it


def test_direct_path_answers_exactly_as_the_sdk(server: LiveServer) -> None:
    """Tools requests of handshake-era clients skip the SDK's per-request transport; what
    they get back must be byte-for-byte the JSON the SDK path gives (a request without
    MCP-Protocol-Version still goes through the SDK)."""
    url = f"{server.url}/mcp/notes/same"
    base = {**server.headers(), "Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    direct = {**base, "MCP-Protocol-Version": "2025-11-25"}
    msgs = [{"jsonrpc": "2.0", "id": 7, "method": "tools/list"},
            {"jsonrpc": "2.0", "id": "a", "method": "tools/call", "params": {"name": "search", "arguments": {"query": "x"}}},
            {"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "search", "arguments": {"query": 1}}},
            {"jsonrpc": "2.0", "id": 9, "method": "ping"}]
    for msg in msgs:
        a = httpx.post(url, headers=direct, json=msg)
        b = httpx.post(url, headers=base, json=msg)
        assert a.status_code == b.status_code == 200
        assert a.json() == b.json(), msg
    r = httpx.post(url, headers=direct, json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                              "params": {"name": "nope", "arguments": {}}})
    assert r.json()["error"]["code"] == -32602


async def test_one_instance_per_session_with_the_sdk_client(server: LiveServer) -> None:
    """``@mcp.per_session`` (examples/notes.py Scratchpad): each session of the official
    client is its own instance; the session id reaches only its owner; ending the session
    deletes the instance, and the ended id is a 404 (the client starts a new session)."""
    url = f"{server.url}/mcp/scratchpad"

    def stored() -> int:
        classes = httpx.get(f"{server.url}/v1/agents", headers=server.headers()).json()["classes"]
        return next(c["stored"] for c in classes if c["agent"] == "scratchpad")

    async def jot(client: Any, text: str) -> list[str]:
        result = await client.call_tool("jot", {"text": text})
        assert not result.is_error, result
        return list(json.loads(result.content[0].text))

    before = stored()
    async with await _session(url, server.key, "legacy") as a, await _session(url, server.key, "legacy") as b:
        assert await jot(a, "a1") == ["a1"]
        assert await jot(b, "b1") == ["b1"]
        assert await jot(a, "a2") == ["a1", "a2"]
        assert stored() == before + 2
    assert stored() == before  # the client ends its session on close (DELETE): the instances are gone


def test_sessions_over_plain_http(server: LiveServer) -> None:
    url = f"{server.url}/mcp/scratchpad"
    h = {**server.headers(), "Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    jot = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "jot", "arguments": {"text": "x"}}}
    # no session and no initialize: a 400 that says how to start one (or where stateless clients go)
    r = httpx.post(url, headers=h, json=jot)
    assert r.status_code == 400 and "initialize" in r.json()["error"]["message"]
    r = httpx.post(url, headers=h, json=init)
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    s = {**h, "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
    for n in (1, 2):
        r = httpx.post(url, headers=s, json=jot)
        assert r.status_code == 200 and json.loads(r.json()["result"]["content"][0]["text"]) == ["x"] * n
    # the instance is an agent like any other, reachable by name
    state = httpx.get(f"{server.url}/v1/agents/scratchpad/mcp-{sid}", headers=server.headers()).json()["state"]
    assert state == {"lines": ["x", "x"]}
    # another key of the tenant without the tool's scope: refused before the agent runs
    narrow = _key(server, "mcp:scratchpad:nothing")
    r = httpx.post(url, headers={**s, "Authorization": f"Bearer {narrow}"}, json=jot)
    assert r.status_code == 403 and "mcp:scratchpad:jot" in r.json()["error"]["message"]
    # a made-up or malformed session id: 404 (the spec's answer for an unknown session)
    for bad in ("A" * 32, "../../x", "x"):
        assert httpx.post(url, headers={**s, "Mcp-Session-Id": bad}, json=jot).status_code == 404
    # ending the session deletes the instance; its id is then unknown
    assert httpx.delete(url, headers=s).status_code == 204
    assert httpx.get(f"{server.url}/v1/agents/scratchpad/mcp-{sid}", headers=server.headers()).status_code == 404
    assert httpx.post(url, headers=s, json=jot).status_code == 404
    # a class that is not per-session has no /mcp/{agent} endpoint
    r = httpx.post(f"{server.url}/mcp/notes", headers=h, json=init)
    assert r.status_code == 404 and "/mcp/notes/{name}" in r.json()["error"]["message"]
    # the per-session endpoint has its own Protected Resource Metadata
    r = httpx.post(url, json=jot, headers={"Accept": "application/json, text/event-stream"})
    assert r.status_code == 401 and "/.well-known/oauth-protected-resource/mcp/scratchpad" in r.headers["www-authenticate"]
    prm = httpx.get(f"{server.url}/.well-known/oauth-protected-resource/mcp/scratchpad").json()
    assert prm["resource"] == url and prm["scopes_supported"] == ["mcp:scratchpad:jot"]


def test_a_session_reaches_only_its_users_instance(server: LiveServer) -> None:
    from myriad.identity import Identity, KeyStore
    from myriad.settings import IdentitySettings

    keys = KeyStore(server.data_dir)
    try:
        tokens = Identity(IdentitySettings(), keys, server.data_dir).tokens
        alice, bob = (tokens.user_token("default", u, scopes="mcp", resources=["urn:myriad:mcp"])
                      for u in ("alice", "bob"))
    finally:
        keys.close()
    url = f"{server.url}/mcp/scratchpad"
    h = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    r = httpx.post(url, headers={**h, "Authorization": f"Bearer {alice}"}, json=init)
    assert r.status_code == 200, r.text
    s = {**h, "Mcp-Session-Id": r.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-06-18"}
    jot = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "jot", "arguments": {"text": "mine"}}}
    assert httpx.post(url, headers={**s, "Authorization": f"Bearer {alice}"}, json=jot).status_code == 200
    # bob holding alice's session id (leaked, guessed): as good as unknown, and cannot end it
    assert httpx.post(url, headers={**s, "Authorization": f"Bearer {bob}"}, json=jot).status_code == 404
    assert httpx.delete(url, headers={**s, "Authorization": f"Bearer {bob}"}).status_code == 404
    r = httpx.post(url, headers={**s, "Authorization": f"Bearer {alice}"}, json=jot)
    assert json.loads(r.json()["result"]["content"][0]["text"]) == ["mine", "mine"]
