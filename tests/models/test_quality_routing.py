"""Semantic routes, the strong/weak kNN router and the semantic cache, over the
simulated embedding model (feature-hashed words: texts sharing words are close)."""

from __future__ import annotations

import asyncio

import pytest

from myriad.errors import ConfigError, InvalidRequest
from myriad.models import Gateway, GatewayConfig
from myriad.models._batching import MicroBatcher

BASE = """
[[deployment]]
model = "fast"
provider = "simulated"
price = { input = 0.1, output = 0.4 }

[[deployment]]
model = "smart"
provider = "simulated"
price = { input = 3, output = 15 }

[[deployment]]
model = "emb"
provider = "simulated"
kind = "embedding"
"""

ROUTES = """
[routes]
threshold = 0.3
default = "fast"

[[route]]
name = "code"
model = "smart"
utterances = ["fix this python stack trace", "write a python function", "why does my code throw an exception"]

[[route]]
name = "chitchat"
model = "fast"
utterances = ["hello how are you", "tell me a joke", "good morning"]
"""


def user(text: str) -> dict:
    return {"messages": [{"role": "user", "content": text}]}


async def test_semantic_routes():
    g = Gateway(GatewayConfig.from_toml(BASE + ROUTES))
    d = await g.semantic.decide("please fix my python stack trace")
    assert (d.route, d.model) == ("code", "smart") and d.score > 0.3
    assert (await g.semantic.decide("hello, how are you today")).route == "chitchat"
    d = await g.semantic.decide("quarterly tax filing deadlines")
    assert d.route is None and d.model == "fast"
    r = await g.chat({"model": "auto", **user("write a python function that sorts")})
    assert r.deployment == "smart#2" and r.model == "auto"
    assert "auto" in g.model_names()


def test_routes_need_an_embedding_model():
    text = BASE.replace('kind = "embedding"', 'kind = "chat"') + ROUTES
    with pytest.raises(ConfigError, match="need an embedding model"):
        GatewayConfig.from_toml(text)


KNN = '\n[knn]\nstrong = "smart"\nweak = "fast"\nk = 5\nmin_outcomes = 10\n'
EASY = [f"say hello and thanks to friend {w}" for w in "ann bob cat dan eve fay gus hal ivy jon kim lee".split()]
HARD = [f"prove the theorem about prime gaps and derive bound {w}" for w in
        "ann bob cat dan eve fay gus hal ivy jon kim lee".split()]


async def test_knn_router_learns_and_calibrates():
    g = Gateway(GatewayConfig.from_toml(BASE + KNN))
    # cold start explores: roughly the share goes strong, by hash
    cold = [await g.knn.decide(f"prompt {i}", 0.3, "acme") for i in range(200)]
    assert all(d.explored for d in cold)
    assert 0.2 < sum(d.strong for d in cold) / 200 < 0.4
    models = g.for_agent("acme")
    for p in EASY[:10]:
        await models.record_outcome(p, weak_ok=True)
    assert await g.record_outcome(HARD[:10], weak_ok=False, tenant="acme") == 20
    # share 0.5: exactly the hard half goes strong
    for p in EASY[10:]:
        d = await g.knn.decide(p, 0.5, "acme")
        assert not d.strong and not d.explored
    for p in HARD[10:]:
        assert (await g.knn.decide(p, 0.5, "acme")).strong
    # share 0.2 on the recorded prompts: about 20% strong, all of them hard
    decisions = [(p, await g.knn.decide(p, 0.2, "acme")) for p in EASY[:10] + HARD[:10]]
    strong = [p for p, d in decisions if d.strong]
    assert 2 <= len(strong) <= 6 and all(p in HARD for p in strong)
    # the chat path uses it; another tenant has learned nothing
    r = await g.chat({"model": "router-knn-0.5", **user(HARD[11])}, tenant="acme")
    assert r.deployment == "smart#2"
    assert (await g.knn.decide(HARD[11], 0.5, "other")).explored
    with pytest.raises(InvalidRequest, match="router-knn-<share>"):
        await g.chat({"model": "router-knn-lots", **user("x")})


async def test_cache_is_opt_in_single_turn_per_tenant_with_ttl():
    now = [1000.0]
    cfg = GatewayConfig.from_toml(BASE + '\n[cache]\nthreshold = 0.9\nttl = 60\n')
    g = Gateway(cfg, clock=lambda: now[0])
    q = user("What is the capital of France?")
    first = await g.chat({"model": "fast", **q, "cache": True}, tenant="a")
    assert not first.cached
    again = await g.chat({"model": "fast", "messages": [{"role": "user", "content": "what is the capital of france"}],
                          "cache": True}, tenant="a")
    assert again.cached and again.deployment == "cache" and again.text == first.text
    assert not (await g.chat({"model": "fast", **q}, tenant="a")).cached  # not opted in
    assert not (await g.chat({"model": "fast", **q, "cache": True}, tenant="b")).cached  # other tenant
    assert not (await g.chat({"model": "fast", **q, "cache": True, "temperature": 0.1}, tenant="a")).cached
    assert not (await g.chat({"model": "fast", **user("What is the capital of Spain?"), "cache": True},
                             tenant="a")).cached
    multi = {"model": "fast", "cache": True, "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "What is the capital of France?"}]}
    assert not (await g.chat(multi, tenant="a")).cached
    # streams replay from the cache too, and are stored from streams
    chunks = [c async for c in g.chat_stream({"model": "fast", **q, "cache": True}, tenant="a")]
    assert chunks[0].deployment == "cache" and "".join(c.text for c in chunks) == first.text
    [c async for c in g.chat_stream({"model": "fast", **user("tell me about tides"), "cache": True}, tenant="a")]
    assert (await g.chat({"model": "fast", **user("tell me about tides"), "cache": True}, tenant="a")).cached
    now[0] += 61
    assert not (await g.chat({"model": "fast", **q, "cache": True}, tenant="a")).cached  # expired
    with pytest.raises(InvalidRequest):
        await g.chat({"model": "fast", **q, "cache": "yes"})


async def test_cache_per_group_and_global():
    g = Gateway(GatewayConfig.from_toml(BASE + '\n[groups.fast]\ncache = true\n'))
    await g.chat({"model": "fast", **user("ping")})
    assert (await g.chat({"model": "fast", **user("ping")})).cached
    assert not (await g.chat({"model": "fast", **user("ping"), "cache": False})).cached
    await g.chat({"model": "smart", **user("ping")})
    assert not (await g.chat({"model": "smart", **user("ping")})).cached
    g = Gateway(GatewayConfig.from_toml(BASE + '\n[cache]\nenabled = true\n'))
    await g.chat({"model": "smart", **user("ping")})
    assert (await g.chat({"model": "smart", **user("ping")})).cached


async def test_micro_batcher_merges_concurrent_calls():
    calls: list[int] = []

    def encode(texts: list[str]) -> list[list[float]]:
        calls.append(len(texts))
        return [[float(len(t))] for t in texts]

    b = MicroBatcher(encode, max_batch=64, max_wait=0.01)
    results = await asyncio.gather(*[b.submit(["x" * i, "y"]) for i in range(1, 21)])
    assert results[4] == [[5.0], [1.0]]
    assert sum(calls) == 40 and len(calls) < 5
    await b.aclose()


async def test_micro_batcher_passes_errors_to_every_caller():
    def encode(texts: list[str]) -> list[list[float]]:
        raise RuntimeError("model exploded")

    b = MicroBatcher(encode, max_wait=0.01)
    results = await asyncio.gather(b.submit(["a"]), b.submit(["b"]), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    await b.aclose()
