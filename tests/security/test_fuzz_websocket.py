"""Property-based fuzzing of the agents WebSocket door on a real server (issue 10).

Hypothesis generates frames: arbitrary text, arbitrary JSON (deep, NaN, huge
numbers, odd unicode), protocol-shaped frames with wrong-typed fields (``rpc``
with odd ids/methods/args, ``cf_agent_state`` with odd states, chat frames), and
binary frames. After every frame the socket must still be open and answer a
known RPC (so no frame kills it with 1006/1011), and the server must stay up.
Budget: ``FUZZ_EXAMPLES`` frames per property (default 60), a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.live import LiveServer

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES_WS", "60"))
pytestmark = pytest.mark.integration

_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                       st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
_json = st.recursive(_json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                     max_leaves=20)
_types = st.sampled_from(["rpc", "cf_agent_state", "cf_agent_use_chat_request", "cf_agent_chat_clear",
                          "cf_agent_chat_request_cancel", "cf_agent_stream_resume_request", "cf_agent_mcp_servers",
                          "error", "", "x" * 300])
_protocol = st.builds(lambda t, extra: json.dumps({"type": t, **extra}), _types,
                      st.dictionaries(st.sampled_from(["id", "method", "args", "state", "init", "body", "stream",
                                                       "messages"]), _json, max_size=4))
_raw_json = st.one_of(
    _json.map(json.dumps),
    st.integers(min_value=2, max_value=3000).map(lambda n: '{"type":"rpc","args":' + "[" * n + "]" * n + "}"),
    st.sampled_from(['{"type":"rpc","id":"1","method":"add","args":[NaN,1]}', '{"type":"cf_agent_state","state":Infinity}',
                     '{"type":"rpc","id":1e999}', '{"a":' + "1" * 5000 + "}", '{"type":"rpc"', "{" * 10_000]),
)
frames = st.one_of(st.text(max_size=200), _raw_json, _protocol, st.binary(max_size=64))


@pytest.fixture(scope="module")
def ws_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    s = LiveServer(tmp_path_factory.mktemp("wsfuzz") / "data",
                   env={"MYRIAD_AGENTS__FRAME_RATE": "0"}).start()  # the fuzzer may send fast
    yield s
    s.stop()


class _Socket:
    """One socket kept across examples (reopened only if a frame closed it, which fails)."""

    def __init__(self, server: LiveServer) -> None:
        self.server, self.loop = server, asyncio.new_event_loop()
        self.ws: Any = None
        self.n = 0

    async def _open(self) -> None:
        self.ws = await websockets.connect(f"{self.server.ws_url}/agents/counter/fuzz?token={self.server.key}",
                                           max_size=None)
        for _ in range(3):
            await asyncio.wait_for(self.ws.recv(), 5)

    async def _probe(self) -> None:
        """A known RPC still gets its answer (frames before it may answer first)."""
        self.n += 1
        rid = f"probe-{self.n}"
        await self.ws.send(json.dumps({"type": "rpc", "id": rid, "method": "add", "args": [0, 0]}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
            if msg.get("type") == "rpc" and msg.get("id") == rid:
                assert msg["success"] is True, msg
                return

    def send(self, frame: str | bytes) -> None:
        async def go() -> None:
            if self.ws is None:
                await self._open()
            await self.ws.send(frame)
            try:
                await self._probe()
            except websockets.ConnectionClosed as e:
                self.ws = None
                code = e.rcvd.code if e.rcvd else 1006
                raise AssertionError(f"frame {frame[:200]!r} closed the socket with {code}") from None

        self.loop.run_until_complete(go())

    def close(self) -> None:
        if self.ws is not None:
            self.loop.run_until_complete(self.ws.close())
        self.loop.close()


def test_no_frame_kills_the_socket_or_the_server(ws_server: LiveServer) -> None:
    sock = _Socket(ws_server)

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(frame=frames)
    def one(frame: str | bytes) -> None:
        sock.send(frame)

    try:
        one()
    finally:
        sock.close()
    assert ws_server.proc is not None and ws_server.proc.poll() is None
    assert httpx.get(ws_server.url + "/healthz", timeout=5).status_code == 200
    state = httpx.get(ws_server.url + "/v1/agents/counter/fuzz", headers=ws_server.headers(), timeout=5)
    assert state.status_code == 200, state.text  # whatever the frames did, the state is still readable JSON
