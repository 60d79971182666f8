"""Hostile JSON at every door of a real server (issue 10, class 1): deep nesting,
NaN/Infinity and out-of-range numbers get a 4xx naming the field (WebSocket: an
error frame, the socket stays open), and the process stays up. The crash this
guards against: a 100,000-level object segfaulted orjson 3.8.3 and with it every
tenant's server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import websockets

from tests.integration.live import LiveServer

DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
DEEP_ARRAY = b"[" * 100_000 + b"]" * 100_000
# deep enough to break a recursive parser, small enough for any frame/body limit
MEDIUM_OBJECT = '{"type":"rpc","id":"d","method":"add","args":[' + "[" * 5000 + "]" * 5000 + "]}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    s = LiveServer(tmp_path_factory.mktemp("hostile") / "data").start()
    yield s
    s.stop()


def _alive(server: LiveServer) -> None:
    assert server.proc is not None and server.proc.poll() is None, "the server process died"
    assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200


def _post(server: LiveServer, path: str, raw: bytes) -> httpx.Response:
    return httpx.post(server.url + path, content=raw, timeout=30,
                      headers={**server.headers(), "Content-Type": "application/json"})


def test_pinned_orjson_refuses_deep_nesting_without_crashing():
    """The crash case on the installed (pinned) orjson, in a child process so a
    segfault shows as a failure here rather than killing pytest."""
    code = ("import orjson, sys\n"
            "for raw in (b'{\"a\":' * 100000 + b'1' + b'}' * 100000, b'[' * 100000 + b']' * 100000):\n"
            "    try:\n        orjson.loads(raw)\n    except orjson.JSONDecodeError:\n        continue\n"
            "    sys.exit('parsed a 100,000-level document')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert r.returncode == 0, f"orjson crashed or accepted it (rc={r.returncode}): {r.stderr[-500:]!r}"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/responses", "/v1/agents/counter/deep/rpc",
                                  "/v1/sandboxes", "/v1/admin/keys", "/v1/usage/budgets",
                                  "/v1/oauth/token"])
@pytest.mark.parametrize("raw", [DEEP_OBJECT, DEEP_ARRAY], ids=["object", "array"])
def test_deep_bodies_are_refused_and_the_server_lives(server: LiveServer, path: str, raw: bytes):
    r = _post(server, path, raw)
    assert r.status_code in (400, 404, 413), (path, r.status_code, r.text[:300])
    if r.status_code == 400:  # OAuth's token endpoint answers in RFC 6749's shape
        assert "nests deeper than" in r.text or "larger than" in r.text
    _alive(server)


@pytest.mark.parametrize("literal, field", [
    (b'{"model": "fast", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', "temperature"),
    (b'{"model": "fast", "messages": [{"role": "user", "content": "hi"}], "top_p": -Infinity}', "top_p"),
    (b'{"model": "fast", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e400}', "max_tokens"),
])
def test_non_finite_numbers_are_refused_naming_the_field(server: LiveServer, literal: bytes, field: str):
    r = _post(server, "/v1/chat/completions", literal)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == f"body.{field}"
    assert field in r.json()["error"]["message"]
    _alive(server)


def test_sandbox_limits_of_nan_or_inf_are_refused(server: LiveServer):
    for raw in (b'{"tier": "isolate", "limits": {"timeout": NaN}}', b'{"tier": "isolate", "limits": {"memory_mb": 1e400}}'):
        r = _post(server, "/v1/sandboxes", raw)
        assert r.status_code in (400, 404), r.text  # 404: sandboxes not enabled on this machine
        if r.status_code == 400:
            assert "limits" in r.json()["error"]["field"]
    # a finite but absurd limit is refused by the limits themselves
    r = _post(server, "/v1/sandboxes", b'{"tier": "isolate", "limits": {"timeout": 1e300}}')
    assert r.status_code in (400, 404), r.text
    if r.status_code == 400:
        assert r.json()["error"]["field"] == "limits.timeout"
    listing = httpx.get(server.url + "/v1/sandboxes", headers=server.headers(), timeout=10)
    assert listing.status_code in (200, 404)


def test_agent_state_of_infinity_is_not_storable(server: LiveServer):
    """counter.add(1e308, 1e308) would make the state {"n": inf}: refused, and the
    agent's GET door keeps answering."""
    r = _post(server, "/v1/agents/counter/inf/rpc", b'{"method": "add", "args": [1e308, 1e308]}')
    assert r.status_code == 400, r.text
    assert "NaN and Infinity" in r.json()["error"]["message"]
    got = httpx.get(server.url + "/v1/agents/counter/inf", headers=server.headers(), timeout=10)
    assert got.status_code == 200, got.text
    assert got.json()["state"] == {"n": 0}


def test_deep_jwt_is_a_401_not_a_500(server: LiveServer):
    import base64

    part = base64.urlsafe_b64encode(b"[" * 3000 + b"]" * 3000).rstrip(b"=").decode()
    r = httpx.get(server.url + "/v1/agents", headers={"Authorization": f"Bearer {part}.{part}.c2ln"}, timeout=10)
    assert r.status_code == 401, r.text
    _alive(server)


def test_websocket_frames_refused_with_an_error_frame_not_1006(server: LiveServer):
    async def run() -> None:
        url = f"{server.ws_url}/agents/counter/wsdeep?token={server.key}"
        async with websockets.connect(url, max_size=None) as ws:
            for _ in range(3):
                await asyncio.wait_for(ws.recv(), 5)
            for frame in (MEDIUM_OBJECT,
                          '{"type": "cf_agent_state", "state": {"n": NaN}}',
                          '{"type": "rpc", "id": "n", "method": "add", "args": [Infinity, 1]}'):
                await ws.send(frame)
                got = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert got["type"] == "error", got
                assert "nests deeper" in got["error"] or "NaN and Infinity" in got["error"], got
            # a state that overflows to infinity in the agent's code: refused too
            await ws.send(json.dumps({"type": "rpc", "id": "o", "method": "add", "args": [1e308, 1e308]}))
            got = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert got["type"] == "rpc" and got["success"] is False, got
            # the socket still works
            await ws.send(json.dumps({"type": "rpc", "id": "ok", "method": "add", "args": [1, 2]}))
            frames = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
            assert frames[1] == {"type": "rpc", "id": "ok", "success": True, "result": 3, "done": True}

    asyncio.run(run())
    _alive(server)
    got = httpx.get(server.url + "/v1/agents/counter/wsdeep", headers=server.headers(), timeout=10)
    assert got.status_code == 200 and got.json()["state"] == {"n": 3}


def test_query_parameters_out_of_range_are_4xx(server: LiveServer):
    for path in ("/v1/usage?since=99999999999999d", "/v1/usage?since=nan", "/v1/usage?until=9999-99-99",
                 "/v1/usage/events?limit=1e400", "/v1/admin/audit?limit=1e400"):
        r = httpx.get(server.url + path, headers=server.headers(), timeout=10)
        assert r.status_code == 400, (path, r.status_code, r.text[:200])
        assert "query parameter" in r.json()["error"]["message"] or "limit" in r.json()["error"]["message"]
    _alive(server)
