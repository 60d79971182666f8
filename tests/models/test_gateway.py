"""The gateway over in-process simulated models: routing, facade, usage hook, errors."""

from __future__ import annotations

import pytest

from myriad.errors import InvalidRequest, UnknownModel
from myriad.models import Gateway, GatewayConfig, ModelsClient, UsageRecord


async def test_facade_chat_stream_embed():
    g = Gateway.simulated()
    models = g.for_agent("acme", "agents/helper/alice")
    assert isinstance(models, ModelsClient)
    r = await models.chat("What is 2+2?")
    assert r.model == "sim-small" and r.deployment == "sim-small"
    assert "simulated" in r.text and r.usage.completion_tokens == 16
    assert r.raw["object"] == "chat.completion"
    chunks = [c async for c in models.stream([{"role": "user", "content": "What is 2+2?"}])]
    assert "".join(c.text for c in chunks) == r.text
    assert chunks[-1].finish_reason == "stop"
    e = await models.embed(["a cat", "a dog"])
    assert len(e.vectors) == 2 and len(e.vectors[0]) == 384
    assert (await models.embed("one")).vectors[0] == pytest.approx(
        (await models.embed(["one", "two"])).vectors[0])


async def test_usage_hook_gets_cost_and_attribution():
    seen: list[UsageRecord] = []

    async def hook(rec: UsageRecord) -> None:
        seen.append(rec)

    g = Gateway.simulated()
    g.on_usage = hook
    m = g.for_agent("acme", "a1")
    await m.chat("hello", model="sim-large")
    [c async for c in m.stream("hello")]
    await m.embed(["x"])
    chat, stream, emb = seen
    assert (chat.tenant, chat.agent, chat.model, chat.operation) == ("acme", "a1", "sim-large", "chat")
    expected = (chat.usage.prompt_tokens * 2.5 + chat.usage.completion_tokens * 10.0) / 1e6
    assert chat.cost_usd == pytest.approx(expected) and chat.cost_usd > 0
    assert stream.usage.completion_tokens == 16  # usage is collected even when the client did not ask
    assert emb.operation == "embeddings" and emb.usage.prompt_tokens > 0


async def test_context_fallback_in_process():
    g = Gateway.simulated()
    long = "lorem ipsum " * 8000  # ~24k tokens > sim-small's 16k window
    r = await g.chat({"model": "sim-small", "messages": [{"role": "user", "content": long}]})
    assert r.deployment == "sim-large" and r.model == "sim-small"


async def test_tool_calls_pass_through():
    g = Gateway.simulated()
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]
    r = await g.chat({"model": "sim-small", "tools": tools, "tool_choice": "required",
                      "messages": [{"role": "user", "content": "find it"}]})
    assert r.finish_reason == "tool_calls" and r.tool_calls[0]["function"]["name"] == "lookup"
    chunks = [c async for c in g.chat_stream({"model": "sim-small", "tools": tools, "tool_choice": "required",
                                              "messages": [{"role": "user", "content": "find it"}]})]
    assert chunks[0].raw["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "lookup"


async def test_bad_requests_are_invalid_request():
    g = Gateway.simulated()
    with pytest.raises(UnknownModel) as e:
        await g.chat({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]})
    assert e.value.status == 404 and "sim-small" in e.value.message
    with pytest.raises(InvalidRequest, match="non-empty"):
        await g.chat({"model": "sim-small", "messages": []})
    with pytest.raises(InvalidRequest, match=r"messages\[0\]"):
        await g.chat({"model": "sim-small", "messages": ["hi"]})
    with pytest.raises(InvalidRequest, match="embedding model"):
        await g.chat({"model": "sim-embed", "messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(InvalidRequest, match="chat model"):
        await g.embed(["x"], model="sim-small")
    with pytest.raises(InvalidRequest):
        await g.embed([], model="sim-embed")


async def test_model_names_and_defaults():
    g = Gateway.simulated()
    assert g.model_names("chat") == ["sim-small", "sim-large"]
    assert g.model_names("embedding") == ["sim-embed"]
    assert g.default_model() == "sim-small" and g.default_model("embedding") == "sim-embed"


async def test_missing_secret_is_a_config_error():
    from myriad.errors import ConfigError

    cfg = GatewayConfig.from_toml('[[deployment]]\nmodel = "x"\nprovider = "openai"\napi_key = "env:NOPE"\n')
    with pytest.raises(ConfigError, match="env:NOPE"):
        Gateway(cfg, secrets={})
    assert Gateway(cfg, secrets={"NOPE": "k"})._keys["x#1"] == "k"


async def test_capabilities_steer_and_refuse():
    cfg = GatewayConfig.from_toml(
        '[[deployment]]\nname = "text"\nmodel = "fast"\nprovider = "simulated"\ncapabilities = ["tools"]\n'
        '[[deployment]]\nname = "eyes"\nmodel = "seeing"\nprovider = "simulated"\ncapabilities = ["tools", "vision"]\n'
        '[[deployment]]\nname = "plain"\nmodel = "other"\nprovider = "simulated"\ncapabilities = ["json"]\n'
        '[groups.fast]\nfallbacks = ["seeing"]\n')
    g = Gateway(cfg)
    image = [{"role": "user", "content": [{"type": "text", "text": "what is this"},
                                          {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]
    assert (await g.chat({"model": "fast", "messages": image})).deployment == "eyes"
    assert (await g.chat({"model": "fast", "messages": [{"role": "user", "content": "hi"}]})).deployment == "text"
    with pytest.raises(InvalidRequest, match="supports vision"):
        await g.chat({"model": "other", "messages": image})
    with pytest.raises(InvalidRequest, match="supports tools"):
        [c async for c in g.chat_stream({"model": "other", "messages": [{"role": "user", "content": "x"}],
                                         "tools": [{"type": "function", "function": {"name": "f"}}]})]
    r = await g.chat({"model": "other", "messages": [{"role": "user", "content": "x"}],
                      "response_format": {"type": "json_object"}})
    assert r.deployment == "plain"
