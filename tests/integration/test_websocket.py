"""The agents wire protocol over a real WebSocket (Python ``websockets`` client)."""

import asyncio
import json

import pytest
import websockets

from tests.integration.live import LiveServer


async def _open(server: LiveServer, path: str, pk: str = "c1", token: str | None = None):
    token = server.key if token is None else token
    ws = await websockets.connect(f"{server.ws_url}{path}?_pk={pk}&token={token}", max_size=None)
    return ws


async def _recv(ws, n: int) -> list:
    return [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(n)]


async def test_handshake_rpc_stream_state(live_server: LiveServer):
    a = await _open(live_server, "/agents/counter/room", "a")
    b = await _open(live_server, "/agents/counter/room", "b")
    hello = await _recv(a, 3)
    assert hello[0] == {"type": "cf_agent_identity", "name": "room", "agent": "counter", "stateFollows": True}
    assert hello[1] == {"type": "cf_agent_state", "state": {"n": 0}}
    assert hello[2]["type"] == "cf_agent_mcp_servers"
    await _recv(b, 3)

    await a.send(json.dumps({"type": "rpc", "id": "1", "method": "add", "args": [2, 3]}))
    got = await _recv(a, 2)
    assert got == [{"type": "cf_agent_state", "state": {"n": 5}},
                   {"type": "rpc", "id": "1", "success": True, "result": 5, "done": True}]
    assert await _recv(b, 1) == [{"type": "cf_agent_state", "state": {"n": 5}}]

    await a.send(json.dumps({"type": "rpc", "id": "2", "method": "count", "args": [2]}))
    assert [(m["result"], m["done"]) for m in await _recv(a, 3)] == [(0, False), (1, False), ("done", True)]

    await b.send(json.dumps({"type": "cf_agent_state", "state": {"n": 42}}))
    assert await _recv(a, 1) == [{"type": "cf_agent_state", "state": {"n": 42}}]
    await a.close(); await b.close()


async def test_bad_frames_answered_and_socket_survives(live_server: LiveServer):
    ws = await _open(live_server, "/agents/counter/bad")
    await _recv(ws, 3)
    # Not a protocol frame: silence (as Cloudflare's base agent), never a made-up
    # {"type":"error"} frame; the next frame's answer is the next thing received.
    await ws.send("{not json")
    await ws.send(json.dumps({"type": "cf_agent_use_chat_request", "id": "c1", "init": {"method": "POST", "body": "{}"}}))
    await ws.send(json.dumps({"type": "rpc", "id": "x", "method": "nope", "args": []}))
    assert (await _recv(ws, 1))[0] == {"type": "rpc", "id": "x", "success": False, "error": "Method nope does not exist"}
    await ws.send(json.dumps({"type": "rpc", "id": "y", "method": "add", "args": [1]}))
    assert (await _recv(ws, 1))[0]["error"].startswith("Wrong arguments for add")
    await ws.send(json.dumps({"type": "cf_agent_state", "state": "not a dict"}))
    assert (await _recv(ws, 1))[0] == {"type": "cf_agent_state_error", "error": "State update rejected"}
    await ws.send(json.dumps({"type": "rpc", "id": "z", "method": "add", "args": [1, 1]}))
    assert (await _recv(ws, 2))[1]["result"] == 2
    await ws.close()


async def test_auth_and_address_close_codes(live_server: LiveServer):
    ws = await _open(live_server, "/agents/counter/x", token="myr_000000000000_" + "y" * 27)
    with pytest.raises(websockets.ConnectionClosed) as e:
        await ws.recv()
    assert e.value.rcvd.code == 4001
    ws = await _open(live_server, "/agents/ghost/x")
    with pytest.raises(websockets.ConnectionClosed) as e:
        await ws.recv()
    assert e.value.rcvd.code == 4004 and "unknown agent class" in e.value.rcvd.reason


async def test_oversized_frame_closes_1009_others_unaffected(live_server: LiveServer):
    big = await _open(live_server, "/agents/counter/big", "big")
    other = await _open(live_server, "/agents/counter/big", "other")
    await _recv(big, 3); await _recv(other, 3)
    await big.send("x" * (2 * 1024 * 1024))
    with pytest.raises(websockets.ConnectionClosed) as e:
        await asyncio.wait_for(big.recv(), 5)
    assert e.value.rcvd.code == 1009
    await other.send(json.dumps({"type": "rpc", "id": "1", "method": "add", "args": [1, 1]}))
    assert (await _recv(other, 2))[1]["result"] == 2
    await other.close()


async def test_sub_agent_route(live_server: LiveServer):
    ws = await _open(live_server, "/agents/counter/parent/sub/counter/child")
    hello = await _recv(ws, 3)
    assert hello[0]["name"] == "child"
    await ws.send(json.dumps({"type": "rpc", "id": "1", "method": "add", "args": [7, 0]}))
    assert (await _recv(ws, 2))[1]["result"] == 7
    await ws.close()
    # the parent is a different instance
    ws = await _open(live_server, "/agents/counter/parent")
    assert (await _recv(ws, 3))[1]["state"] == {"n": 0}
    await ws.close()
    log = live_server.log.read_text()
    assert "token=[redacted]" in log
    assert log.count(live_server.key) == 1  # only the first-start banner shows it, never a log line


async def test_assistant_streams_from_the_simulated_model(live_server: LiveServer):
    ws = await _open(live_server, "/agents/assistant/u1")
    await _recv(ws, 3)
    await ws.send(json.dumps({"type": "rpc", "id": "q", "method": "ask", "args": ["What is Myriad?"]}))
    chunks, final = [], None
    while final is None:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if msg.get("type") != "rpc":
            continue
        assert msg["success"], msg
        if msg["done"]:
            final = msg["result"]
        else:
            chunks.append(msg["result"])
    assert len(chunks) > 1 and "".join(chunks) == final
    await ws.send(json.dumps({"type": "rpc", "id": "h", "method": "history", "args": []}))
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if msg.get("id") == "h":
            break
    assert [m["role"] for m in msg["result"]] == ["user", "assistant"]
    assert msg["result"][1]["content"] == final
    await ws.close()
