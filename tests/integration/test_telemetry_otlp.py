"""A real ``myriad serve`` exports a turn's whole trace and the GenAI metrics to a real
OTLP receiver, over http/protobuf and over gRPC."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from myriad.telemetry import semconv as sc
from tests.integration.live import LiveServer
from tests.integration.otlp_receiver import GRPCReceiver, HTTPReceiver

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_turn_trace_and_metrics_reach_the_collector(tmp_path: Path, protocol: str):
    receiver = HTTPReceiver() if protocol == "http/protobuf" else GRPCReceiver()
    server = LiveServer(tmp_path / "data", agents="examples.assistant", env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_SERVICE_NAME": "myriad-test", "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_METRIC_EXPORT_INTERVAL": "200",
    })
    server.start()
    try:
        r = httpx.post(server.url + "/v1/agents/assistant/ann/rpc", json={"method": "ask", "args": ["hello"]},
                       headers={**server.headers(), "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
                                "baggage": "enduser.id=ann"}, timeout=30)
        assert r.status_code == 200, r.text
        receiver.wait_for(lambda rc: any(s["name"].startswith("chat ") for s in rc.spans))
        wanted = {sc.GEN_AI_CLIENT_TOKEN_USAGE, sc.MYRIAD_TURN_DURATION, sc.MYRIAD_AGENTS_RESIDENT,
                  sc.HTTP_SERVER_REQUEST_DURATION}
        receiver.wait_for(lambda rc: wanted <= {m["name"] for m in rc.metrics})
    finally:
        server.stop()
        receiver.stop()

    trace = [s for s in receiver.spans if s["trace_id"] == CLIENT_TRACE]
    by_name = {s["name"]: s for s in trace}
    http = by_name["POST /v1/agents/{agent}/{name}/rpc"]
    turn = by_name["invoke_agent assistant"]
    chat = by_name["chat sim-small"]
    # the whole turn is one trace under the client's span: HTTP -> invoke_agent -> chat
    assert http["parent_id"] == CLIENT_SPAN and http["kind"] == 2  # SERVER
    assert turn["parent_id"] == http["span_id"] and turn["kind"] == 1  # INTERNAL
    assert chat["parent_id"] == turn["span_id"] and chat["kind"] == 3  # CLIENT
    assert http["attributes"][sc.HTTP_RESPONSE_STATUS_CODE] == 200
    assert http["attributes"][sc.MYRIAD_TENANT] == "default"
    t = turn["attributes"]
    assert t[sc.GEN_AI_OPERATION_NAME] == "invoke_agent" and t[sc.GEN_AI_AGENT_NAME] == "assistant"
    assert t[sc.GEN_AI_AGENT_ID] == "default/assistant/ann" and t[sc.MYRIAD_USER] == "ann"
    c = chat["attributes"]
    assert c[sc.GEN_AI_OPERATION_NAME] == "chat" and c[sc.GEN_AI_PROVIDER_NAME] == "myriad.simulated"
    assert c[sc.GEN_AI_REQUEST_MODEL] == "sim-small" and c[sc.GEN_AI_RESPONSE_MODEL] == "sim-small"
    assert c[sc.GEN_AI_USAGE_INPUT_TOKENS] > 0 and c[sc.GEN_AI_USAGE_OUTPUT_TOKENS] > 0
    assert c[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ["stop"] and c[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] > 0
    assert c[sc.MYRIAD_USER] == "ann" and sc.GEN_AI_INPUT_MESSAGES not in c
    assert chat["resource"]["service.name"] == "myriad-test"

    usage = [m for m in receiver.metrics if m["name"] == sc.GEN_AI_CLIENT_TOKEN_USAGE]
    assert {m["attributes"][sc.GEN_AI_TOKEN_TYPE] for m in usage} == {"input", "output"}
    assert all(m["bounds"] == list(sc.TOKEN_BUCKETS) and m["unit"] == "{token}" for m in usage)
    assert {m["attributes"][sc.GEN_AI_PROVIDER_NAME] for m in usage} == {"myriad.simulated"}
    durations = [m for m in receiver.metrics if m["name"] == sc.GEN_AI_CLIENT_OPERATION_DURATION]
    assert durations and all(m["bounds"] == list(sc.DURATION_BUCKETS) for m in durations)
    names = {m["name"] for m in receiver.metrics}
    assert {sc.MYRIAD_TURN_DURATION, sc.MYRIAD_AGENTS_RESIDENT, sc.HTTP_SERVER_REQUEST_DURATION} <= names, names


async def test_websocket_turns_join_the_clients_trace(live_server: LiveServer):
    """Browsers cannot set headers on a WebSocket: traceparent and baggage ride in the query."""
    import json

    import websockets

    trace_id = "5bf92f3577b34da6a3ce929d0e0e4736"
    url = (f"{live_server.ws_url}/agents/counter/ws1?token={live_server.key}"
           f"&traceparent=00-{trace_id}-00f067aa0ba902b7-01&baggage=enduser.id%3Dzoe")
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "rpc", "id": "r1", "method": "add", "args": [2, 3]}))
        while True:
            msg = json.loads(await ws.recv())
            if msg.get("type") == "rpc" and msg.get("id") == "r1":
                break
    assert msg["result"] == 5
    turns = httpx.get(live_server.url + "/dashboard/api/turns", headers=live_server.headers()).json()["turns"]
    mine = [t for t in turns if t["trace_id"] == trace_id]
    assert len(mine) >= 2  # the connect turn and the RPC turn
    assert all(t["parent_id"] == "00f067aa0ba902b7" for t in mine)
    assert all(t["attributes"][sc.MYRIAD_USER] == "zoe" for t in mine)
