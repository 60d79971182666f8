"""The instrumented gateway: spans, attributes, metrics, content capture, propagation."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from myriad.errors import UnknownModel
from myriad.models import Deployment, Gateway, GatewayConfig
from myriad.models.config import Price, RouterConfig
from myriad.telemetry import semconv as sc


def _spans(tel, prefix=""):
    return [s for s in tel.store._snapshot() if s.name.startswith(prefix)]


async def test_chat_stream_and_embeddings_spans(tel):
    gw = tel.instrument_gateway(Gateway.simulated())
    models = gw.for_agent("acme", "acme/bot/x")
    r = await models.chat([{"role": "user", "content": "hello"}], max_tokens=50, temperature=0.2)
    chunks = [c async for c in models.stream("hello again")]
    await models.embed(["a", "b"])
    chat, stream = _spans(tel, "chat ")
    (emb,) = _spans(tel, "embeddings ")
    assert chat.name == "chat sim-small" and chat.kind == "CLIENT"
    a = chat.attributes
    assert a[sc.GEN_AI_OPERATION_NAME] == "chat" and a[sc.GEN_AI_PROVIDER_NAME] == "myriad.simulated"
    assert a[sc.GEN_AI_REQUEST_MODEL] == "sim-small" and a[sc.GEN_AI_RESPONSE_MODEL] == "sim-small"
    assert a[sc.GEN_AI_REQUEST_MAX_TOKENS] == 50 and a[sc.GEN_AI_REQUEST_TEMPERATURE] == 0.2
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == r.usage.prompt_tokens
    assert a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == r.usage.completion_tokens
    assert a[sc.GEN_AI_RESPONSE_ID] == r.raw["id"] and a[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert a[sc.MYRIAD_TENANT] == "acme" and a[sc.GEN_AI_AGENT_ID] == "acme/bot/x"
    assert a[sc.MYRIAD_COST_USD] == pytest.approx(Price(0.15, 0.6).cost(r.usage.prompt_tokens, r.usage.completion_tokens))
    assert sc.GEN_AI_INPUT_MESSAGES not in a  # content is opt-in
    s = stream.attributes
    assert s[sc.GEN_AI_REQUEST_STREAM] is True and s[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] > 0
    assert s[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 16  # usage arrives although the caller did not ask for it
    assert all(c.raw.get("choices") for c in chunks)  # ... and the usage-only chunk is not handed over
    assert emb.name == "embeddings sim-embed" and emb.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] > 0
    snap = tel.metrics_snapshot()
    types = {p["attributes"][sc.GEN_AI_TOKEN_TYPE] for p in snap[sc.GEN_AI_CLIENT_TOKEN_USAGE]["points"]}
    assert types == {"input", "output"}
    assert sum(p["count"] for p in snap[sc.GEN_AI_CLIENT_OPERATION_DURATION]["points"]) == 3
    assert sum(p["count"] for p in snap[sc.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK]["points"]) == 1


async def test_errors_are_recorded_with_error_type(tel):
    gw = tel.instrument_gateway(Gateway.simulated())
    with pytest.raises(UnknownModel):
        await gw.chat({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, tenant="acme")
    (span,) = _spans(tel, "chat ")
    assert not span.ok and span.attributes[sc.ERROR_TYPE] == "model_not_found"
    points = tel.metrics_snapshot()[sc.GEN_AI_CLIENT_OPERATION_DURATION]["points"]
    assert points[0]["attributes"][sc.ERROR_TYPE] == "model_not_found"


async def test_stream_abandoned_by_consumer_is_not_an_error(tel):
    gw = tel.instrument_gateway(Gateway.simulated())
    agen = gw.chat_stream({"messages": [{"role": "user", "content": "tell me a long story"}]}, tenant="acme")
    async for _ in agen:
        break
    await agen.aclose()
    (span,) = _spans(tel, "chat ")
    assert span.ok and span.end > span.start


async def test_content_capture_is_redacted(tel_content):
    gw = tel_content.instrument_gateway(Gateway.simulated())
    await gw.for_agent("acme", "a").chat("my key is sk-abcdefghijklmnopqrstuvwx, summarise")
    (span,) = _spans(tel_content, "chat ")
    msgs = json.loads(span.attributes[sc.GEN_AI_INPUT_MESSAGES])
    assert msgs[0]["role"] == "user" and msgs[0]["parts"][0]["type"] == "text"
    assert "sk-abcdefghijklmnopqrstuvwx" not in span.attributes[sc.GEN_AI_INPUT_MESSAGES]
    assert "[REDACTED]" in msgs[0]["parts"][0]["content"]
    out = json.loads(span.attributes[sc.GEN_AI_OUTPUT_MESSAGES])
    assert out[0]["role"] == "assistant" and "simulated" in out[0]["parts"][0]["content"]


async def test_traceparent_reaches_the_upstream(tel):
    """A real OpenAI-compatible upstream on 127.0.0.1 sees the chat span as parent."""
    seen: list[dict[str, str]] = []

    async def completions(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        body = await request.json()
        return web.json_response({"id": "up-1", "object": "chat.completion", "model": body["model"],
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                               "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        cfg = GatewayConfig(deployments=(Deployment("up", "up", "openai", "real-model",
                                                    base_url=f"http://127.0.0.1:{port}/v1"),),
                            router=RouterConfig(default_model="up"))
        gw = tel.instrument_gateway(Gateway(cfg))
        raw = Gateway(cfg)  # no telemetry on its pipeline
        with tel.tracer.start_as_current_span("parent"):
            await gw.chat({"messages": [{"role": "user", "content": "x"}]}, tenant="acme")
        # without a current span nothing is injected
        await raw.chat({"messages": [{"role": "user", "content": "x"}]})
        await raw.aclose()
        await gw.aclose()
    finally:
        await runner.cleanup()
    (chat,) = _spans(tel, "chat ")
    assert seen[0]["traceparent"][:-3] == f"00-{chat.trace_id:032x}-{chat.span_id:016x}"
    assert "traceparent" not in seen[1]
    assert chat.attributes[sc.SERVER_ADDRESS] == "127.0.0.1" and chat.attributes[sc.SERVER_PORT] == port
    assert chat.attributes[sc.GEN_AI_PROVIDER_NAME] == "openai"
    assert chat.attributes[sc.GEN_AI_RESPONSE_MODEL] == "up"


async def test_agent_streams_and_streamed_batches_are_traced_once(tel):
    """The pipeline is the gateway's own: an agent's stream and the HTTP door's batched
    stream (which the old wrapper never saw) are each one span."""
    gw = tel.instrument_gateway(Gateway.simulated())
    text = await gw.for_agent("acme", "a").stream_text("hello")
    assert "simulated" in text and len(_spans(tel, "chat ")) == 1
    batches = [b async for _, b in gw.chat_stream_batches({"messages": [{"role": "user", "content": "x"}]},
                                                          tenant="acme")]
    assert batches
    first, second = _spans(tel, "chat ")
    assert second.attributes[sc.GEN_AI_REQUEST_STREAM] is True and second.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] > 0
    assert tel.instrument_gateway(gw) is gw and len(gw.pipeline.middleware) == 2  # identity, telemetry: once
