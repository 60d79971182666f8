"""Retries, Retry-After, cooldowns, fallbacks and timeouts against a real local
upstream (the simulated server) that fails, stalls and rate-limits on demand."""

from __future__ import annotations

import time

import pytest

from myriad.errors import (
    NoDeploymentAvailable,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from myriad.models import Gateway, GatewayConfig
from myriad.models.simulated import start_simulated_upstream

pytestmark = pytest.mark.integration

MSG = [{"role": "user", "content": "hello gateway"}]


@pytest.fixture(scope="module")
def upstream():
    up = start_simulated_upstream(tokens=8)
    yield up
    up.close()


@pytest.fixture
def up(upstream):
    upstream.reset()
    return upstream


def gateway(up, router: str = "", extra: str = "", deployments: tuple[tuple[str, str, str], ...] = ()) -> Gateway:
    """Deployments as (name, alias, upstream model)."""
    deps = deployments or (("a", "fast", "up-a"), ("b", "fast", "up-b"))
    text = "[router]\nbackoff = 0.01\n" + router + "\n"
    for name, alias, upstream_model in deps:
        text += (f'[[deployment]]\nname = "{name}"\nmodel = "{alias}"\nprovider = "openai"\n'
                 f'base_url = "{up.base_url}"\nupstream_model = "{upstream_model}"\n')
    return Gateway(GatewayConfig.from_toml(text + extra), seed=1)


def by_model(up) -> dict[str, int]:
    return up.stats()["by_model"]


async def test_500_moves_to_the_next_deployment(up):
    g = gateway(up, 'default_strategy = "lowest-cost"')  # equal prices: order is random but both tried
    up.fail_next(1, status=500)
    r = await g.chat({"model": "fast", "messages": MSG})
    assert r.attempts == 2
    assert sum(by_model(up).values()) == 2
    assert "simulated" in r.text
    await g.aclose()


async def test_retry_after_is_honoured(up):
    g = gateway(up, deployments=(("a", "fast", "up-a"),))
    up.rate_limit_next(1, retry_after=0.3)
    t0 = time.perf_counter()
    r = await g.chat({"model": "fast", "messages": MSG})
    waited = time.perf_counter() - t0
    assert r.attempts == 2
    assert 0.28 <= waited < 1.5
    await g.aclose()


async def test_long_retry_after_is_returned_not_waited(up):
    g = gateway(up, "max_retry_after = 1", deployments=(("a", "fast", "up-a"),))
    up.rate_limit_next(1, retry_after=30)
    t0 = time.perf_counter()
    with pytest.raises(UpstreamRateLimited) as e:
        await g.chat({"model": "fast", "messages": MSG})
    assert time.perf_counter() - t0 < 1
    assert e.value.retry_after == 30 and e.value.status == 429
    assert g.state("a").cooldown_reason == "rate_limited"
    await g.aclose()


async def test_circuit_opens_after_repeated_failures(up):
    g = gateway(up, "cooldown_failures = 2\ncooldown_seconds = 60\nretries = 0")
    up.fail_next(-1, status=503, model="up-a")  # a is down until cleared
    for _ in range(6):
        r = await g.chat({"model": "fast", "messages": MSG})
        assert r.deployment == "b"
    a = g.state("a")
    assert a.cooldown_reason == "circuit_open" and not a.available(time.monotonic())
    assert by_model(up)["up-a"] == 2  # not called again once open
    # all open -> fail fast with 503, no waiting on an open circuit
    up.fail_next(-1, status=503, model="up-b")
    for _ in range(2):
        with pytest.raises(UpstreamError):
            await g.chat({"model": "fast", "messages": MSG})
    t0 = time.perf_counter()
    with pytest.raises(NoDeploymentAvailable) as e:
        await g.chat({"model": "fast", "messages": MSG})
    assert time.perf_counter() - t0 < 0.2 and e.value.status == 503
    await g.aclose()


async def test_stall_hits_attempt_timeout_then_falls_back(up):
    g = gateway(up, "attempt_timeout = 0.3\nretries = 0", deployments=(
        ("a", "fast", "up-a"),), extra='[groups.fast]\nfallbacks = ["spare"]\n'
        f'[[deployment]]\nname = "s"\nmodel = "spare"\nprovider = "openai"\nbase_url = "{up.base_url}"\n'
        'upstream_model = "up-s"\n')
    up.stall_next(1, model="up-a")
    t0 = time.perf_counter()
    r = await g.chat({"model": "fast", "messages": MSG})
    assert r.deployment == "s"
    assert 0.28 <= time.perf_counter() - t0 < 1.5
    await g.aclose()


async def test_total_timeout(up):
    g = gateway(up, "attempt_timeout = 5\ntotal_timeout = 0.4")
    up.stall_next(-1)
    t0 = time.perf_counter()
    with pytest.raises(UpstreamTimeout):
        await g.chat({"model": "fast", "messages": MSG})
    assert time.perf_counter() - t0 < 1.0
    up.clear_faults()
    await g.aclose()


async def test_bad_request_is_not_retried(up):
    g = gateway(up)
    up.fail_next(1, status=400)
    with pytest.raises(UpstreamRejected) as e:
        await g.chat({"model": "fast", "messages": MSG})
    assert e.value.status == 400
    assert sum(by_model(up).values()) == 1
    await g.aclose()


async def test_context_window_fallback_on_upstream_overflow(up):
    # the small deployment claims a big window but its upstream only takes 20 tokens
    g = gateway(up, deployments=(("small", "fast", "up-small@ctx=20"), ("big", "long", "up-big")),
                extra='[groups.fast]\ncontext_fallback = "long"\n')
    short = await g.chat({"model": "fast", "messages": MSG})
    assert short.deployment == "small"
    r = await g.chat({"model": "fast", "messages": [{"role": "user", "content": "word " * 200}]})
    assert r.deployment == "big"
    await g.aclose()


async def test_context_window_fallback_before_calling(up):
    cfg = GatewayConfig.from_toml(
        f'[[deployment]]\nname = "small"\nmodel = "fast"\nprovider = "openai"\nbase_url = "{up.base_url}"\n'
        'upstream_model = "up-small"\ncontext_window = 50\n'
        f'[[deployment]]\nname = "big"\nmodel = "long"\nprovider = "openai"\nbase_url = "{up.base_url}"\n'
        'upstream_model = "up-big"\n[groups.fast]\ncontext_fallback = "long"\n')
    g = Gateway(cfg)
    r = await g.chat({"model": "fast", "messages": [{"role": "user", "content": "word " * 200}]})
    assert r.deployment == "big"
    assert "up-small" not in by_model(up)  # never sent a prompt it could not take
    assert (await g.chat({"model": "fast", "messages": MSG})).deployment == "small"
    await g.aclose()


async def test_group_fallback(up):
    g = gateway(up, "retries = 0", deployments=(("a", "fast", "up-a"), ("s", "smart", "up-s")),
                extra='[groups.fast]\nfallbacks = ["smart"]\n')
    up.fail_next(1, status=502, model="up-a")
    r = await g.chat({"model": "fast", "messages": MSG})
    assert r.deployment == "s" and r.model == "fast" and r.raw["model"] == "fast"
    await g.aclose()


async def test_stream_falls_back_before_first_token(up):
    g = gateway(up, "retries = 0", deployments=(("a", "fast", "up-a"), ("s", "smart", "up-s")),
                extra='[groups.fast]\nfallbacks = ["smart"]\n')
    up.fail_next(1, status=500, model="up-a")
    chunks = [c async for c in g.chat_stream({"model": "fast", "messages": MSG})]
    assert {c.deployment for c in chunks} == {"s"}
    assert "simulated up-s" in "".join(c.text for c in chunks)
    await g.aclose()


async def test_stream_stall_before_first_token_falls_back(up):
    g = gateway(up, "retries = 0\nattempt_timeout = 0.3", deployments=(("a", "fast", "up-a"), ("s", "smart", "up-s")),
                extra='[groups.fast]\nfallbacks = ["smart"]\n')
    up.stall_next(1, model="up-a")
    chunks = [c async for c in g.chat_stream({"model": "fast", "messages": MSG})]
    assert chunks and chunks[0].deployment == "s"
    await g.aclose()


async def test_stream_never_falls_back_after_first_token(up):
    g = gateway(up, "retries = 0\nattempt_timeout = 0.3", deployments=(("a", "fast", "up-a"), ("s", "smart", "up-s")),
                extra='[groups.fast]\nfallbacks = ["smart"]\n')
    up.stall_after_first_token_next(1, model="up-a")
    got = []
    with pytest.raises(UpstreamError, match="broke after it started"):
        async for c in g.chat_stream({"model": "fast", "messages": MSG}):
            got.append(c)
    assert len(got) == 1 and got[0].deployment == "a" and got[0].text
    assert "up-s" not in by_model(up)
    await g.aclose()


async def test_stream_usage_only_when_asked(up):
    g = gateway(up, deployments=(("a", "fast", "up-a"),))
    plain = [c async for c in g.chat_stream({"model": "fast", "messages": MSG})]
    assert all(c.raw["choices"] for c in plain)
    asked = [c async for c in g.chat_stream({"model": "fast", "messages": MSG,
                                             "stream_options": {"include_usage": True}})]
    assert asked[-1].usage is not None and asked[-1].usage.completion_tokens == 8
    await g.aclose()


async def test_unreachable_upstream_is_an_upstream_error():
    cfg = GatewayConfig.from_toml('[router]\nretries = 0\n[[deployment]]\nmodel = "x"\nprovider = "openai"\n'
                                  'base_url = "http://127.0.0.1:9/v1"\n')
    g = Gateway(cfg)
    with pytest.raises(UpstreamError, match="cannot reach"):
        await g.chat({"model": "x", "messages": MSG})
    await g.aclose()
