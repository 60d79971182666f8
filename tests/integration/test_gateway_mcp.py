"""The gateway's ``type: "mcp"`` tools, with the ``openai`` client against a real
server and a real MCP server (the official SDK's): a tenant registers a server (its
token sealed, injected by the gateway), the model's calls are executed by Myriad and
metered, and an MCP server on a private address is refused unless the operator allows it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.integration.live import REPO, LiveServer
from tests.integration.mcp_upstream import running

pytest.importorskip("mcp")
TOKEN = "registered-token-0987654321"


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with running(TOKEN) as url:
        yield url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    s = LiveServer(tmp_path_factory.mktemp("gwmcp") / "data", agents="examples.counter",
                   env={"MYRIAD_MODELS__MCP_ALLOW_PRIVATE": "true"}).start()
    yield s
    s.stop()


def test_registered_server_tools_are_called_by_myriad(server: LiveServer, upstream: str) -> None:
    from openai import OpenAI

    r = httpx.put(f"{server.url}/v1/mcp/servers/calc", headers=server.headers(),
                  json={"server_url": upstream + "/mcp", "token": TOKEN})
    assert r.status_code == 200 and r.json()["has_token"] is True
    listed = httpx.get(f"{server.url}/v1/mcp/servers", headers=server.headers()).json()["servers"]
    assert [s["server_label"] for s in listed] == ["calc"] and TOKEN not in json.dumps(listed)

    client = OpenAI(base_url=server.url + "/v1", api_key=server.key)
    resp = client.chat.completions.create(
        model="sim-small", messages=[{"role": "user", "content": "Please use calc__add for me."}],
        tools=[{"type": "mcp", "server_label": "calc", "allowed_tools": ["add", "shout"]}])  # type: ignore[list-item]
    message = resp.choices[0].message
    assert message.content and not message.tool_calls  # Myriad ran the tool, the model answered
    calls = (resp.model_extra or {})["mcp_calls"]
    assert len(calls) == 1 and calls[0]["server_label"] == "calc" and calls[0]["name"] == "add"
    assert calls[0]["error"] is None and "result" in calls[0]["output"]
    assert resp.usage is not None and resp.usage.total_tokens > 0
    seen = httpx.get(upstream + "/seen").json()
    assert seen[-1]["authorization"] == f"Bearer {TOKEN}"  # the registered token, put there by the gateway
    # metered: one mcp.calls event for this tenant
    events = httpx.get(f"{server.url}/v1/usage/events", headers=server.headers()).text
    assert '"mcp.calls"' in events and '"tool": "add"' in events.replace('"tool":"add"', '"tool": "add"')


def test_streamed_chat_with_mcp_tools(server: LiveServer, upstream: str) -> None:
    """stream=true: Myriad runs the MCP calls between streamed model turns; the client's
    stream shows the answer's text, one chunk per MCP call, never the calls as tool_calls,
    one id and one role, and the usage summed over the turns."""
    from openai import OpenAI

    httpx.put(f"{server.url}/v1/mcp/servers/calc", headers=server.headers(),
              json={"server_url": upstream + "/mcp", "token": TOKEN}).raise_for_status()
    client = OpenAI(base_url=server.url + "/v1", api_key=server.key)
    ask = {"model": "sim-small", "messages": [{"role": "user", "content": "Please use calc__add for me."}],
           "tools": [{"type": "mcp", "server_label": "calc"}]}
    whole = client.chat.completions.create(**ask)  # type: ignore[call-overload]
    chunks = list(client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    assert len({c.id for c in chunks}) == 1
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert sum(1 for d in deltas if d.role) == 1 and not any(d.tool_calls for d in deltas)
    assert "".join(d.content or "" for d in deltas) == whole.choices[0].message.content
    calls = [(c.model_extra or {})["mcp_call"] for c in chunks if not c.choices and (c.model_extra or {}).get("mcp_call")]
    assert [(x["server_label"], x["name"], x["error"]) for x in calls] == [("calc", "add", None)]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert usage is not None and whole.usage is not None and usage.total_tokens == whole.usage.total_tokens > 0


def test_responses_api_returns_mcp_items(server: LiveServer, upstream: str) -> None:
    from openai import OpenAI

    httpx.put(f"{server.url}/v1/mcp/servers/calc", headers=server.headers(),
              json={"server_url": upstream + "/mcp", "token": TOKEN}).raise_for_status()
    client = OpenAI(base_url=server.url + "/v1", api_key=server.key)
    resp = client.responses.create(model="sim-small", input="Please use calc__shout on this.",
                                   tools=[{"type": "mcp", "server_label": "calc", "require_approval": "never"}])
    kinds = [item.type for item in resp.output]
    assert kinds == ["mcp_list_tools", "mcp_call", "message"], kinds
    listed, call = resp.output[0], resp.output[1]
    assert {t.name for t in listed.tools} == {"add", "shout", "slow"}  # type: ignore[union-attr]
    assert call.name == "shout" and call.error is None and call.output  # type: ignore[union-attr]
    assert resp.output_text and resp.usage is not None and resp.usage.total_tokens > 0
    # stored like any response: retrievable by id
    again = client.responses.retrieve(resp.id)
    assert [i.type for i in again.output] == kinds


def test_only_admin_keys_manage_the_registry(server: LiveServer) -> None:
    out = subprocess.run([sys.executable, "-m", "myriad", "keys", "create", "--tenant", "default", "--scopes", "models",
                          "--data-dir", str(server.data_dir)], cwd=REPO, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": f"{REPO / 'src'}:{REPO}", "PATH": "/usr/bin:/bin"})
    models_key = out.stdout.strip().splitlines()[-1]
    h = {"Authorization": f"Bearer {models_key}"}
    assert httpx.put(f"{server.url}/v1/mcp/servers/evil", headers=h,
                     json={"server_url": "https://evil.example/mcp"}).status_code == 403
    assert httpx.get(f"{server.url}/v1/mcp/servers", headers=h).status_code == 403
    r = httpx.put(f"{server.url}/v1/mcp/servers/bad%20label", headers=server.headers(), json={"server_url": "ftp://x"})
    assert r.status_code == 400


def test_bad_mcp_tools_are_clear_4xx(server: LiveServer, upstream: str) -> None:
    h = server.headers()
    base = {"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(f"{server.url}/v1/chat/completions", headers=h, json={**base, "tools": [{"type": "mcp"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools[0].server_label"
    r = httpx.post(f"{server.url}/v1/chat/completions", headers=h,
                   json={**base, "tools": [{"type": "mcp", "server_label": "nope"}]})
    assert r.status_code == 404 and "nope" in r.json()["error"]["message"]
    r = httpx.post(f"{server.url}/v1/chat/completions", headers=h,
                   json={**base, "tools": [{"type": "mcp", "server_label": "x", "require_approval": "always",
                                            "server_url": upstream + "/mcp"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "require_approval"
    # the token is wrong for an inline URL: the server refuses, a clear error, not a 500 (streamed or not)
    for stream in (False, True):
        r = httpx.post(f"{server.url}/v1/chat/completions", headers=h, json={**base, "stream": stream, "tools": [
            {"type": "mcp", "server_label": "x", "server_url": upstream + "/mcp"}]})
        assert r.status_code == 403 and "refused the credentials" in r.json()["error"]["message"]


def test_private_addresses_are_the_operators_decision(tmp_path: Path, upstream: str) -> None:
    s = LiveServer(tmp_path / "data", agents="examples.counter").start()
    try:
        before = len(httpx.get(upstream + "/seen").json())
        r = httpx.post(f"{s.url}/v1/chat/completions", headers=s.headers(), json={
            "model": "sim-small", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "mcp", "server_label": "x", "server_url": upstream + "/mcp",
                       "headers": {"Authorization": f"Bearer {TOKEN}"}}]})
        assert r.status_code == 403 and "non-public address" in r.json()["error"]["message"]
        assert len(httpx.get(upstream + "/seen").json()) == before  # nothing reached it
    finally:
        s.stop()
