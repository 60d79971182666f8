"""kill -9 under load loses no acknowledged state change or schedule."""

import asyncio
import json
import random

from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import websockets

from tests.integration.live import LiveServer


@pytest.fixture(params=["sqlite", "postgres"])
def crash_server(request: Any, tmp_path: Path) -> Iterator[LiveServer]:
    """A server on each storage backend (PostgreSQL: a fresh database of the session's server)."""
    env = {}
    if request.param == "postgres":
        # a claim left by the killed process expires within the test's wait
        env = {"MYRIAD_DATABASE": request.getfixturevalue("pg_url"), "MYRIAD_AGENTS__SCHEDULE_LEASE": "2"}
    server = LiveServer(tmp_path / "data", env=env).start()
    yield server
    server.stop()


async def _hammer(server: LiveServer, name: str, acked: dict[str, int], stop: asyncio.Event) -> None:
    try:
        async with websockets.connect(f"{server.ws_url}/agents/counter/{name}?_pk=p&token={server.key}") as ws:
            for _ in range(3):
                await ws.recv()
            i = 0
            while not stop.is_set():
                i += 1
                await ws.send(json.dumps({"type": "rpc", "id": str(i), "method": "add", "args": [1, 0]}))
                while True:
                    msg = json.loads(await ws.recv())
                    if msg.get("type") == "rpc" and msg["id"] == str(i):
                        break
                acked[name] = msg["result"]  # acknowledged: the client saw it
    except (websockets.ConnectionClosed, OSError):
        pass


async def test_kill9_under_load_loses_nothing_acknowledged(crash_server: LiveServer):
    live_server = crash_server
    names = [f"crash-{i}" for i in range(16)]
    acked: dict[str, int] = {}
    stop = asyncio.Event()
    # schedules acknowledged before the crash: one due during the downtime, one far away
    h = live_server.headers()
    async with httpx.AsyncClient(base_url=live_server.url, headers=h) as c:
        soon = (await c.post("/v1/agents/reminders/r1/rpc", json={"method": "remind_in", "args": [1.0, "soon"]})).json()["result"]
        later = (await c.post("/v1/agents/reminders/r1/rpc", json={"method": "remind_in", "args": [3600, "later"]})).json()["result"]
    tasks = [asyncio.create_task(_hammer(live_server, n, acked, stop)) for n in names]
    await asyncio.sleep(1.0 + random.random())
    live_server.kill9()
    stop.set()
    await asyncio.gather(*tasks)
    assert sum(acked.values()) > 50, "the load did not get going"

    live_server.start()
    async with httpx.AsyncClient(base_url=live_server.url, headers=h) as c:
        for n in names:
            if n not in acked:
                continue
            state = (await c.get(f"/v1/agents/counter/{n}")).json()["state"]
            # durable before acknowledged: the stored count is at least what any client saw
            assert state["n"] >= acked[n], (n, state, acked[n])
            # and at most one more (a write that was durable but whose reply was lost)
            assert state["n"] <= acked[n] + 1
        pending = (await c.post("/v1/agents/reminders/r1/rpc", json={"method": "pending", "args": []})).json()["result"]
        assert later["id"] in [p["id"] for p in pending]
        for _ in range(100):  # the one that fell due while the host was dead fires after restart
            history = (await c.post("/v1/agents/reminders/r1/rpc", json={"method": "history", "args": []})).json()["result"]
            if history:
                break
            await asyncio.sleep(0.1)
        assert [r["text"] for r in history] == ["soon"]
        assert soon["id"] not in [p["id"] for p in (await c.post("/v1/agents/reminders/r1/rpc", json={"method": "pending", "args": []})).json()["result"]]
