"""The Anthropic provider: translation both ways, and real calls to the simulated
upstream's /v1/messages (Anthropic shape)."""

from __future__ import annotations

import json

import pytest

from myriad.errors import ContextWindowExceeded, InvalidRequest, UpstreamRateLimited
from myriad.models import Gateway, GatewayConfig
from myriad.models.providers.anthropic import StreamTranslator, from_anthropic, to_anthropic
from myriad.models.simulated import SimulatedConfig, start_simulated_upstream

TOOLS = [{"type": "function", "function": {"name": "get_time", "description": "now", "parameters": {
    "type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}}]


def test_request_translation():
    body = {"model": "claude", "max_tokens": 50, "stop": "END", "temperature": 0.2, "tools": TOOLS,
            "tool_choice": "required", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "look"},
                                             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}]},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "UTC"}'}},
                    {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "CET"}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "12:00"},
                {"role": "tool", "tool_call_id": "c2", "content": "13:00"},
            ]}
    out = to_anthropic(body)
    assert out["system"] == "Be brief." and out["max_tokens"] == 50 and out["stop_sequences"] == ["END"]
    assert out["tool_choice"] == {"type": "any"}
    assert out["tools"][0] == {"name": "get_time", "description": "now",
                               "input_schema": TOOLS[0]["function"]["parameters"]}
    user, assistant, results = out["messages"]
    assert user["content"][1]["source"] == {"type": "base64", "media_type": "image/png", "data": "AAA"}
    assert [b["input"] for b in assistant["content"]] == [{"tz": "UTC"}, {"tz": "CET"}]
    assert results["role"] == "user" and [b["tool_use_id"] for b in results["content"]] == ["c1", "c2"]
    with pytest.raises(InvalidRequest):
        to_anthropic({"model": "m", "messages": [{"role": "oracle", "content": "x"}]})


def test_response_and_stream_translation():
    resp = {"id": "msg_1", "content": [{"type": "text", "text": "Let me check."},
                                       {"type": "tool_use", "id": "tu_1", "name": "get_time", "input": {"tz": "UTC"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 4}}
    out = from_anthropic(resp, "smart")
    msg = out["choices"][0]["message"]
    assert msg["content"] == "Let me check." and out["choices"][0]["finish_reason"] == "tool_calls"
    assert json.loads(msg["tool_calls"][0]["function"]["arguments"]) == {"tz": "UTC"}
    assert out["usage"] == {"prompt_tokens": 14, "completion_tokens": 5, "total_tokens": 19,
                            "prompt_tokens_details": {"cached_tokens": 4}}
    tr = StreamTranslator("smart")
    chunks = []
    for ev, data in [
        ("message_start", {"message": {"id": "m", "usage": {"input_tokens": 7}}}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        ("ping", {}),
        ("content_block_start", {"index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "f"}}),
        ("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
        ("message_delta", {"delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 3}}),
        ("message_stop", {}),
    ]:
        chunks += tr.feed(ev, data)
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hi"}
    assert chunks[2]["choices"][0]["delta"]["tool_calls"][0]["index"] == 0
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["total_tokens"] == 10 and tr.done


@pytest.fixture(scope="module")
def up():
    handle = start_simulated_upstream(SimulatedConfig(api_key="anth-key"))
    yield handle
    handle.close()


def anthropic_gateway(up) -> Gateway:
    cfg = GatewayConfig.from_toml(
        f'[router]\nretries = 0\n[[deployment]]\nname = "claude"\nmodel = "smart"\nprovider = "anthropic"\n'
        f'base_url = "{up.base_url}"\nupstream_model = "claude-sim"\napi_key = "env:ANTHROPIC_API_KEY"\n')
    return Gateway(cfg, secrets={"ANTHROPIC_API_KEY": "anth-key"})


@pytest.mark.integration
async def test_chat_and_tools_over_http(up):
    g = anthropic_gateway(up)
    r = await g.chat({"model": "smart", "messages": [{"role": "system", "content": "x"},
                                                     {"role": "user", "content": "hello claude"}]})
    assert r.text.startswith("[simulated claude-sim] You said: hello claude.")
    assert r.usage.completion_tokens == 16 and r.finish_reason == "stop"
    r = await g.chat({"model": "smart", "tools": TOOLS, "messages": [{"role": "user", "content": "get_time now"}]})
    call = r.tool_calls[0]
    assert call["function"]["name"] == "get_time" and json.loads(call["function"]["arguments"]) == {"tz": "simulated"}
    r2 = await g.chat({"model": "smart", "tools": TOOLS, "messages": [
        {"role": "user", "content": "get_time now"}, r.message,
        {"role": "tool", "tool_call_id": call["id"], "content": "noon"}]})
    assert "noon" in r2.text
    await g.aclose()


@pytest.mark.integration
async def test_stream_over_http(up):
    g = anthropic_gateway(up)
    plain = await g.chat({"model": "smart", "messages": [{"role": "user", "content": "stream me"}]})
    chunks = [c async for c in g.chat_stream({"model": "smart", "messages": [{"role": "user", "content": "stream me"}],
                                              "stream_options": {"include_usage": True}})]
    assert "".join(c.text for c in chunks) == plain.text
    assert chunks[-1].usage.completion_tokens == 16
    tc = [c async for c in g.chat_stream({"model": "smart", "tools": TOOLS, "tool_choice": "required",
                                          "messages": [{"role": "user", "content": "x"}]})]
    deltas = [c.raw["choices"][0]["delta"] for c in tc if c.raw["choices"]]
    assert any("tool_calls" in d for d in deltas)
    await g.aclose()


@pytest.mark.integration
async def test_errors_over_http(up):
    g = anthropic_gateway(up)
    up.rate_limit_next(1, retry_after=40)
    with pytest.raises(UpstreamRateLimited) as e:
        await g.chat({"model": "smart", "messages": [{"role": "user", "content": "x"}]})
    assert e.value.retry_after == 40
    await g.aclose()
    cfg = GatewayConfig.from_toml(
        f'[router]\nretries = 0\n[[deployment]]\nmodel = "smart"\nprovider = "anthropic"\n'
        f'base_url = "{up.base_url}"\nupstream_model = "claude-sim@ctx=10"\napi_key = "env:K"\n')
    g = Gateway(cfg, secrets={"K": "anth-key"})
    with pytest.raises(ContextWindowExceeded):
        await g.chat({"model": "smart", "messages": [{"role": "user", "content": "long " * 100}]})
    await g.aclose()
