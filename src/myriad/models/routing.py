"""Choosing among the deployments of one model group.

Each deployment carries a :class:`DeploymentState` (in flight, moving-average
latency and time to first token, consecutive failures, cooldown, this minute's
requests and tokens). A :class:`Strategy` orders the available deployments; the
gateway tries them in that order. Strategies are registered by name in
``STRATEGIES`` (``weighted``, ``least-busy``, ``lowest-latency``, ``lowest-cost``,
``usage-headroom``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol

from myriad.errors import ModelError, UpstreamRateLimited
from myriad.models.config import Deployment, RouterConfig

EWMA_ALPHA = 0.2
EXPECTED_OUTPUT_TOKENS = 256
"""Output length assumed when comparing prices before the call."""


@dataclass
class DeploymentState:
    """What the router knows about one deployment right now."""

    deployment: Deployment
    in_flight: int = 0
    latency: float | None = None
    """Moving average of whole-call seconds (non-streamed)."""
    ttft: float | None = None
    """Moving average of seconds to first token (streams)."""
    failures: int = 0
    """Consecutive failures; reset by a success."""
    cooldown_until: float = 0.0
    cooldown_reason: str = ""
    trips: int = 0
    """Times the circuit opened in a row (cooldowns double with each)."""
    minute: int = -1
    minute_requests: int = 0
    minute_tokens: int = 0
    successes: int = 0
    errors: int = 0

    def available(self, now: float) -> bool:
        return now >= self.cooldown_until

    def fits_limits(self, now: float, tokens: int) -> bool:
        """False when this minute's rpm / tpm is already used up."""
        self._roll(now)
        d = self.deployment
        if d.rpm is not None and self.minute_requests >= d.rpm:
            return False
        if d.tpm is not None and self.minute_tokens + tokens > d.tpm:
            return False
        return True

    def headroom(self, now: float) -> float:
        """Fraction (0-1) of the tighter of rpm / tpm left this minute; 1 without limits."""
        self._roll(now)
        d = self.deployment
        left = 1.0
        if d.rpm:
            left = min(left, 1 - self.minute_requests / d.rpm)
        if d.tpm:
            left = min(left, 1 - self.minute_tokens / d.tpm)
        return max(0.0, left)

    def started(self, now: float, tokens: int) -> None:
        self._roll(now)
        self.in_flight += 1
        self.minute_requests += 1
        self.minute_tokens += tokens

    def succeeded(self, seconds: float, *, ttft: float | None = None, extra_tokens: int = 0) -> None:
        self.in_flight -= 1
        self.failures = 0
        self.trips = 0
        self.successes += 1
        self.minute_tokens += extra_tokens
        if ttft is not None:
            self.ttft = ttft if self.ttft is None else self.ttft + EWMA_ALPHA * (ttft - self.ttft)
        else:
            self.latency = seconds if self.latency is None else self.latency + EWMA_ALPHA * (seconds - self.latency)

    def failed(self, now: float, error: ModelError, config: RouterConfig) -> None:
        """Count a failure; honour Retry-After, open the circuit after repeated failures."""
        self.in_flight -= 1
        self.errors += 1
        self.failures += 1
        if isinstance(error, UpstreamRateLimited):
            wait = error.retry_after if error.retry_after is not None else config.backoff
            self._cool(now + wait, "rate_limited")
        elif self.failures >= config.cooldown_failures:
            self.trips += 1
            self.failures = 0
            self._cool(now + config.cooldown_seconds * (2 ** min(self.trips - 1, 5)), "circuit_open")

    def released(self) -> None:
        """The attempt ended without a verdict (the caller went away)."""
        self.in_flight -= 1

    def _cool(self, until: float, reason: str) -> None:
        if until > self.cooldown_until:
            self.cooldown_until, self.cooldown_reason = until, reason

    def _roll(self, now: float) -> None:
        m = int(now // 60)
        if m != self.minute:
            self.minute, self.minute_requests, self.minute_tokens = m, 0, 0


@dataclass
class RouteContext:
    """What a strategy may look at besides the states."""

    prompt_tokens: int
    stream: bool
    now: float
    rng: random.Random = field(default_factory=random.Random)


class Strategy(Protocol):
    def order(self, states: list[DeploymentState], ctx: RouteContext) -> list[DeploymentState]:
        """The deployments in the order to try them."""
        ...


class Weighted:
    """Random, proportional to ``weight`` (weighted sampling without replacement)."""

    def order(self, states: list[DeploymentState], ctx: RouteContext) -> list[DeploymentState]:
        if len(states) == 1:
            return states
        keyed = [(ctx.rng.random() ** (1 / s.deployment.weight) if s.deployment.weight > 0 else 0.0, s)
                 for s in states]
        keyed.sort(key=lambda p: p[0], reverse=True)
        return [s for _, s in keyed]


class LeastBusy:
    """Fewest requests in flight first; ties broken at random."""

    def order(self, states: list[DeploymentState], ctx: RouteContext) -> list[DeploymentState]:
        return sorted(states, key=lambda s: (s.in_flight, ctx.rng.random()))


class LowestLatency:
    """Lowest moving-average latency first (time to first token for streams).
    Unmeasured deployments go first so every deployment gets measured."""

    def order(self, states: list[DeploymentState], ctx: RouteContext) -> list[DeploymentState]:
        def key(s: DeploymentState) -> tuple[float, float]:
            v = s.ttft if ctx.stream else s.latency
            if v is None:
                v = s.latency if ctx.stream else s.ttft
            return (-1.0 if v is None else v, ctx.rng.random())

        return sorted(states, key=key)


class LowestCost:
    """Cheapest expected call first (prompt estimate + a typical reply)."""

    def order(self, states: list[DeploymentState], ctx: RouteContext) -> list[DeploymentState]:
        return sorted(states, key=lambda s: (s.deployment.price.cost(ctx.prompt_tokens, EXPECTED_OUTPUT_TOKENS),
                                             ctx.rng.random()))


class UsageHeadroom:
    """Most rpm / tpm headroom left this minute first."""

    def order(self, states: list[DeploymentState], ctx: RouteContext) -> list[DeploymentState]:
        return sorted(states, key=lambda s: (-s.headroom(ctx.now), ctx.rng.random()))


STRATEGIES: dict[str, Strategy] = {
    "weighted": Weighted(),
    "least-busy": LeastBusy(),
    "lowest-latency": LowestLatency(),
    "lowest-cost": LowestCost(),
    "usage-headroom": UsageHeadroom(),
}


def register_strategy(name: str, strategy: Strategy) -> None:
    """Make ``strategy = "name"`` usable in ``[groups.*]``."""
    STRATEGIES[name] = strategy


__all__ = ["DeploymentState", "RouteContext", "Strategy", "STRATEGIES", "register_strategy"]
