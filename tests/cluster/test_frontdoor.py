"""The front door itself, on a real one-node Ray cluster (one shard) over a real
PostgreSQL, through a real ``myriad serve --cluster`` front door: it refuses bad
credentials before any shard sees them (with the body a shard would send), a key
revoked with the CLI is refused within 2 s, and one trace runs from the door through
the shard to the model call (a second door, in this process, over the telemetry
room's in-memory span store; the shard's spans read from its own store).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

pytest.importorskip("ray")

from tests.cluster.harness import FrontDoorProc, RayCluster  # noqa: E402
from tests.integration.live import REPO, free_port  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(300)]
TTL = 1.5


class Env:
    def __init__(self, database: str, ray: RayCluster, door: FrontDoorProc, data_dir: Path) -> None:
        self.database, self.ray, self.door, self.data_dir = database, ray, door, data_dir
        self.key = (data_dir / "default.key").read_text().strip()

    def cli(self, *args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "myriad", *args], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(REPO / "src"), "MYRIAD_DATABASE": self.database,
                                "MYRIAD_DATA_DIR": str(self.data_dir)})
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    def shards(self) -> list[dict[str, Any]]:
        import psycopg

        with psycopg.connect(self.database, autocommit=True) as conn:
            rows = conn.execute("SELECT address, load FROM myriad_shards WHERE expires_at > clock_timestamp()").fetchall()
        return [{"address": a, "load": load} for a, load in rows]

    def shard_requests(self) -> int:
        """What reached the shards' doors, as their last heartbeats said (every ttl/4)."""
        return sum(int(s["load"].get("requests", 0)) for s in self.shards())


@pytest.fixture(scope="module")
def cluster(postgres: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    database = postgres.create_database()
    root = tmp_path_factory.mktemp("frontdoor")
    ray = RayCluster(1)
    door = None
    try:
        door = FrontDoorProc(ray.address, ray.node_ids()[0], database, root / "data", ttl=TTL, telemetry=True)
        door.wait(1, timeout=240)
        yield Env(database, ray, door, root / "data")
    finally:
        if door is not None:
            door.stop()
        ray.shutdown()


def _ws_refusal(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async def go() -> tuple[int, str]:
        async with connect(url, additional_headers=headers, open_timeout=20, compression=None) as ws:
            try:
                await asyncio.wait_for(ws.recv(), 20)
            except ConnectionClosed as e:
                assert e.rcvd is not None
                return e.rcvd.code, e.rcvd.reason
        raise AssertionError("the socket was not closed")

    return asyncio.run(go())


def _stable_shard_requests(env: Env) -> int:
    time.sleep(TTL / 4 * 3)  # two heartbeats: the count covers everything sent before
    return env.shard_requests()


def test_bad_credentials_are_refused_at_the_door(cluster: Env) -> None:
    env = cluster
    door = env.door.url
    (shard,) = env.shards()
    direct = f"http://{shard['address']}"
    wrong = "myr_0123456789ab_" + "x" * 27  # well formed, no such key
    # the door's refusals are byte for byte a shard's own (both body shapes, the header)
    for path, headers in [("/v1/agents/tally/a1/rpc", {"Authorization": f"Bearer {wrong}"}),
                          ("/v1/chat/completions", {}),
                          ("/agents/tally/a1", {"Authorization": "Bearer nope"})]:
        ours = httpx.post(door + path, headers=headers, json={"method": "where", "args": []})
        theirs = httpx.post(direct + path, headers=headers, json={"method": "where", "args": []})
        assert ours.status_code == theirs.status_code == 401, (path, ours.text, theirs.text)
        assert ours.content == theirs.content, path
        assert ours.headers["www-authenticate"] == theirs.headers["www-authenticate"] == "Bearer"
        assert ours.headers["content-type"] == theirs.headers["content-type"]
    assert json.loads(ours.content)["error"]["code"] == "unauthenticated"
    ws_path = "/agents/tally/a1?token=" + wrong
    ours_ws = _ws_refusal(f"ws://127.0.0.1:{env.door.port}{ws_path}")
    assert ours_ws == _ws_refusal(f"ws://{shard['address']}{ws_path}")
    assert ours_ws[0] == 4001 and "invalid API key" in ours_ws[1]

    before = _stable_shard_requests(env)
    refused_before = httpx.get(door + "/healthz").json()["refused"]
    for i in range(20):
        for headers in ({}, {"Authorization": f"Bearer {wrong}"}, {"Authorization": "Bearer myr_bad"}):
            r = httpx.post(f"{door}/v1/agents/tally/f{i}/rpc", headers=headers, json={"method": "add", "args": [1]})
            assert r.status_code == 401, r.text
    for i in range(5):
        assert _ws_refusal(f"ws://127.0.0.1:{env.door.port}/agents/tally/f{i}?token={wrong}")[0] == 4001
        assert _ws_refusal(f"ws://127.0.0.1:{env.door.port}/agents/tally/f{i}",
                           {"Authorization": "Bearer nope"})[0] == 4001
    assert httpx.get(door + "/healthz").json()["refused"] - refused_before == 70
    # one good request: the shards' counter moves by exactly that one
    r = httpx.post(f"{door}/v1/agents/tally/f0/rpc", headers={"Authorization": f"Bearer {env.key}"},
                   json={"method": "add", "args": [1]})
    assert r.status_code == 200 and r.json() == {"result": 1}, r.text
    deadline = time.monotonic() + 10
    while env.shard_requests() < before + 1:
        assert time.monotonic() < deadline, "the shard's counter never moved"
        time.sleep(0.1)
    assert _stable_shard_requests(env) == before + 1  # none of the 70 bad ones reached it
    # a good key over the WebSocket still goes through (the query-string token too)
    from websockets.asyncio.client import connect

    async def good() -> Any:
        async with connect(f"ws://127.0.0.1:{env.door.port}/agents/tally/f0?token={env.key}", compression=None) as ws:
            await ws.send(json.dumps({"type": "rpc", "id": "1", "method": "add", "args": [2]}))
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if msg.get("type") == "rpc":
                    return msg

    assert asyncio.run(good())["result"] == 3


def test_a_revoked_key_is_refused_at_the_door_within_2s(cluster: Env) -> None:
    env = cluster
    key = env.cli("keys", "create", "--tenant", "default", "--label", "doomed").strip().splitlines()[-1]
    key_id = key.split("_")[1]
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{env.door.url}/v1/agents/tally/rv/rpc"
    for _ in range(3):  # known (and cached) at the door and the shard
        r = httpx.post(url, headers=headers, json={"method": "add", "args": [1]})
        assert r.status_code == 200, r.text
    refused = httpx.get(env.door.url + "/healthz").json()["refused"]
    env.cli("keys", "revoke", key_id)
    revoked = time.monotonic()
    while True:
        r = httpx.post(url, headers=headers, json={"method": "add", "args": [1]})
        if r.status_code == 401:
            break
        assert r.status_code == 200, r.text
        assert time.monotonic() - revoked < 2.0, "the door still accepts a key revoked 2 s ago"
        time.sleep(0.02)
    assert r.json()["error"]["message"] == "API key has been revoked"
    took = time.monotonic() - revoked
    print(f"revocation refused at the door {took * 1000:.0f} ms after the CLI returned")
    assert took < 2.0
    code, reason = _ws_refusal(f"ws://127.0.0.1:{env.door.port}/agents/tally/rv?token={key}")
    assert (code, reason) == (4001, "API key has been revoked")
    assert httpx.get(env.door.url + "/healthz").json()["refused"] == refused + 2  # by the door, not a shard


def _wait(fn: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_one_trace_runs_from_the_door_through_the_shard_to_the_model_call(cluster: Env) -> None:
    import uvicorn

    from myriad.cluster import FrontDoor
    from myriad.settings import Settings, TelemetrySettings
    from myriad.telemetry import setup_telemetry

    env = cluster
    tel = setup_telemetry(TelemetrySettings(), {})  # its store is the in-memory exporter we read
    door = FrontDoor(env.database, Settings.load(data_dir=env.data_dir), telemetry=tel)
    port = free_port()
    server = uvicorn.Server(door.server_config("127.0.0.1", port))
    thread = threading.Thread(target=asyncio.run, args=(server.serve(),), daemon=True)
    thread.start()
    (shard,) = env.shards()
    auth = {"Authorization": f"Bearer {env.key}"}

    def shard_trace(trace_id: str) -> list[dict[str, Any]]:
        r = httpx.get(f"http://{shard['address']}/dashboard/api/traces/{trace_id}", headers=auth)
        return r.json()["spans"] if r.status_code == 200 else []

    def chain(spans: list[dict[str, Any]], parent: str) -> dict[str, dict[str, Any]]:
        """The shard's spans under the door's span ``parent``: its server span (HTTP),
        the agent's turn and the model call, each the child of the one before."""
        by_parent = {s["parent_id"]: s for s in spans}
        found, at = {}, parent
        while at in by_parent:
            found[by_parent[at]["name"].split(" ")[0]] = by_parent[at]
            at = by_parent[at]["span_id"]
        return found

    try:
        _wait(lambda: server.started, 60)
        # HTTP: door SERVER span -> shard SERVER span -> invoke_agent -> chat
        r = httpx.post(f"http://127.0.0.1:{port}/v1/agents/tally/traced/rpc", headers=auth, timeout=30,
                       json={"method": "ask", "args": ["hello there"]})
        assert r.status_code == 200 and r.json()["result"], r.text
        (ours,) = _wait(lambda: [s for s in tel.store.spans() if s["attributes"].get("url.path") == "/v1/agents/tally/traced/rpc"])
        assert ours["kind"] == "SERVER" and ours["name"] == "POST /v1/agents/{path}" and ours["parent_id"] is None
        assert ours["attributes"]["http.response.status_code"] == 200
        assert ours["attributes"]["myriad.tenant"] == "default"
        found = _wait(lambda: (lambda c: c if "chat" in c else None)(chain(shard_trace(ours["trace_id"]), ours["span_id"])))
        assert list(found) == ["POST", "invoke_agent", "chat"], list(found)
        assert found["POST"]["kind"] == "SERVER" and found["chat"]["kind"] == "CLIENT"
        # WebSocket: the handshake's span at the door is the parent of every turn on it
        from websockets.asyncio.client import connect

        async def over_ws() -> Any:
            async with connect(f"ws://127.0.0.1:{port}/agents/tally/traced-ws?token={env.key}", compression=None) as ws:
                await ws.send(json.dumps({"type": "rpc", "id": "1", "method": "ask", "args": ["hi"]}))
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if msg.get("type") == "rpc":
                        return msg

        assert asyncio.run(over_ws())["success"]
        (hs,) = _wait(lambda: [s for s in tel.store.spans() if s["attributes"].get("url.path") == "/agents/tally/traced-ws"])
        assert hs["kind"] == "SERVER" and hs["name"] == "GET /agents/tally/{path}"
        assert hs["attributes"]["http.response.status_code"] == 101
        found = _wait(lambda: (lambda c: c if "chat" in c else None)(chain(shard_trace(hs["trace_id"]), hs["span_id"])))
        assert list(found) == ["invoke_agent", "chat"], list(found)
        # a client's own traceparent is continued: the door's span is its child
        client_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        r = httpx.post(f"http://127.0.0.1:{port}/v1/agents/tally/traced/rpc", timeout=30,
                       headers={**auth, "traceparent": f"00-{client_trace}-00f067aa0ba902b7-01"},
                       json={"method": "where", "args": []})
        assert r.status_code == 200
        (child,) = _wait(lambda: [s for s in tel.store.spans() if s["trace_id"] == client_trace])
        assert child["parent_id"] == "00f067aa0ba902b7"
        assert "POST" in _wait(lambda: chain(shard_trace(client_trace), child["span_id"]))
    finally:
        server.should_exit = True
        thread.join(20)
        tel.shutdown()
