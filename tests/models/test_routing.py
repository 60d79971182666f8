"""Routing strategies and deployment state."""

from __future__ import annotations

import random
from collections import Counter

from myriad.errors import UpstreamError, UpstreamRateLimited
from myriad.models.config import Deployment, Price, RouterConfig
from myriad.models.routing import STRATEGIES, DeploymentState, RouteContext


def st(name: str, **kw) -> DeploymentState:
    return DeploymentState(Deployment(name, "m", "simulated", "m", **kw))


def ctx(stream: bool = False, seed: int = 0) -> RouteContext:
    return RouteContext(prompt_tokens=1000, stream=stream, now=1000.0, rng=random.Random(seed))


def test_weighted_follows_weights():
    a, b = st("a", weight=3), st("b", weight=1)
    firsts = Counter(STRATEGIES["weighted"].order([a, b], ctx(seed=i))[0].deployment.name for i in range(4000))
    assert 0.70 < firsts["a"] / 4000 < 0.80


def test_least_busy():
    a, b = st("a"), st("b")
    a.in_flight = 3
    assert STRATEGIES["least-busy"].order([a, b], ctx())[0] is b


def test_lowest_latency_uses_ttft_for_streams_and_explores_unmeasured():
    a, b, c = st("a"), st("b"), st("c")
    a.latency, a.ttft = 0.1, 0.9
    b.latency, b.ttft = 0.5, 0.2
    assert STRATEGIES["lowest-latency"].order([a, b, c], ctx())[0] is c  # never measured: try it
    assert [s.deployment.name for s in STRATEGIES["lowest-latency"].order([a, b], ctx())] == ["a", "b"]
    assert [s.deployment.name for s in STRATEGIES["lowest-latency"].order([a, b], ctx(stream=True))] == ["b", "a"]


def test_lowest_cost():
    cheap, dear = st("cheap", price=Price(0.1, 0.4)), st("dear", price=Price(3, 15))
    assert STRATEGIES["lowest-cost"].order([dear, cheap], ctx())[0] is cheap


def test_usage_headroom_and_limits():
    a, b = st("a", rpm=10), st("b", rpm=100)
    for _ in range(5):
        a.started(1000.0, 10)
        b.started(1000.0, 10)
    assert STRATEGIES["usage-headroom"].order([a, b], ctx())[0] is b
    for _ in range(5):
        a.started(1000.0, 10)
    assert not a.fits_limits(1000.0, 10)
    assert a.fits_limits(1060.0, 10)  # next minute


def test_ewma_and_cooldowns():
    cfg = RouterConfig(cooldown_failures=2, cooldown_seconds=10)
    a = st("a")
    a.started(0, 1)
    a.succeeded(1.0)
    a.started(0, 1)
    a.succeeded(2.0)
    assert a.latency == 1.2
    a.started(0, 1)
    a.failed(100.0, UpstreamRateLimited("x", retry_after=3), cfg)
    assert a.cooldown_until == 103.0 and a.cooldown_reason == "rate_limited"
    a.started(0, 1)
    a.failed(200.0, UpstreamError("x"), cfg)
    assert a.cooldown_until == 210.0 and a.cooldown_reason == "circuit_open"
    a.started(0, 1)
    a.failed(300.0, UpstreamError("x"), cfg)
    a.started(0, 1)
    a.failed(300.0, UpstreamError("x"), cfg)
    assert a.cooldown_until == 320.0  # second trip in a row doubles
    assert a.in_flight == 0
