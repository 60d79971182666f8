"""The strong/weak router: send a prompt to the cheap model unless past prompts
like it needed the strong one.

Ask for ``router-knn-0.2``: the number is the target share of strong-model calls.
Each tenant records outcomes (``record_outcome(prompt, weak_ok=...)`` or the HTTP
``POST /v1/router/outcomes``): was the weak model's answer to this prompt good
enough? A new prompt's score is the similarity-weighted share of its ``k`` nearest
recorded prompts where the weak model was *not* good enough. The threshold is
calibrated on the tenant's own recorded prompts (leave-one-out scores) so that the
target share of them would go strong; ties at the threshold are split by a hash of
the prompt so the share holds even when many scores are equal.

Until a tenant has ``min_outcomes`` outcomes the router explores: a hash of the
prompt sends the target share to the strong model, which yields outcomes for both.
Outcomes stay in memory per tenant (never shared across tenants); persistence is a
later step.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from myriad.errors import InvalidRequest
from myriad.models._tokens import last_user_text
from myriad.models._vectors import VectorIndex
from myriad.models.config import KnnConfig

PREFIX = "router-knn-"
MAX_OUTCOMES = 5000
CALIBRATION_SAMPLE = 1000


@dataclass(frozen=True)
class KnnDecision:
    strong: bool
    model: str
    score: float
    threshold: float
    explored: bool = False


@dataclass
class _Outcomes:
    index: VectorIndex[bool] = field(default_factory=lambda: VectorIndex(MAX_OUTCOMES))
    version: int = 0
    calibrated: dict[float, tuple[int, float, float]] = field(default_factory=dict)
    """share -> (version, threshold, tie fraction)."""


def parse_share(name: str) -> float:
    """``router-knn-0.2`` -> 0.2."""
    try:
        share = float(name[len(PREFIX):])
    except ValueError:
        raise InvalidRequest(f"{name!r}: the router model name is router-knn-<share>, e.g. router-knn-0.2") from None
    if not 0 <= share <= 1:
        raise InvalidRequest(f"{name!r}: the strong-model share must be between 0 and 1")
    return share


def _hash_fraction(text: str) -> float:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


class KnnRouter:
    """A virtual model family ``router-knn-<share>``."""

    def __init__(self, gateway: Any, config: KnnConfig) -> None:
        self.gateway = gateway
        self.config = config
        self._tenants: dict[str | None, _Outcomes] = {}

    def matches(self, name: str) -> bool:
        return name.startswith(PREFIX)

    def names(self) -> list[str]:
        return [f"{PREFIX}0.2", f"{PREFIX}0.5"]

    def outcomes(self, tenant: str | None) -> int:
        """How many outcomes ``tenant`` has recorded."""
        o = self._tenants.get(tenant)
        return len(o.index) if o else 0

    async def _embed(self, texts: list[str], tenant: str | None) -> list[list[float]]:
        vectors: list[list[float]] = (await self.gateway.embed(texts, model=self.config.embedding_model,
                                                                tenant=tenant)).vectors
        return vectors

    async def record(self, prompts: list[str], weak_ok: list[bool], tenant: str | None) -> int:
        """Record outcomes; returns the tenant's total."""
        if len(prompts) != len(weak_ok) or not prompts:
            raise InvalidRequest("outcomes need one weak_ok per prompt")
        vecs = await self._embed([p or " " for p in prompts], tenant)
        o = self._tenants.setdefault(tenant, _Outcomes())
        for v, ok in zip(vecs, weak_ok):
            o.index.add(v, bool(ok))
        o.version += 1
        return len(o.index)

    def _score(self, o: _Outcomes, sims: np.ndarray, exclude: int | None = None) -> float:
        bad = np.fromiter((not ok for ok in o.index.payloads), dtype=np.float32, count=len(o.index))
        if exclude is not None:
            sims = sims.copy()
            sims[exclude] = -np.inf
        k = min(self.config.k, int(np.isfinite(sims).sum()))
        if k <= 0:
            return 0.0
        idx = np.argpartition(-sims, k - 1)[:k]
        w = np.clip(sims[idx], 1e-6, None)
        return float((w * bad[idx]).sum() / w.sum())

    def _calibrate(self, o: _Outcomes, share: float) -> tuple[float, float]:
        cached = o.calibrated.get(share)
        if cached and cached[0] == o.version:
            return cached[1], cached[2]
        m = o.index.matrix()
        n = m.shape[0]
        sample = range(max(0, n - CALIBRATION_SAMPLE), n)
        sims = m[sample.start:sample.stop] @ m.T
        scores = np.array([self._score(o, sims[j], exclude=i) for j, i in enumerate(sample)])
        if share <= 0:
            thr, tie = float(np.inf), 0.0
        elif share >= 1:
            thr, tie = float(-np.inf), 1.0
        else:
            thr = float(np.quantile(scores, 1 - share, method="higher"))
            above = float((scores > thr).mean())
            at = float((scores == thr).mean())
            tie = min(1.0, max(0.0, (share - above) / at)) if at > 0 else 0.0
        o.calibrated[share] = (o.version, thr, tie)
        return thr, tie

    def decide_vector(self, text: str, vec: Any, share: float, tenant: str | None) -> KnnDecision:
        """The decision for an embedded prompt (no I/O)."""
        cfg = self.config
        o = self._tenants.get(tenant)
        h = _hash_fraction(text)
        if o is None or len(o.index) < cfg.min_outcomes:
            strong = h < share
            return KnnDecision(strong, cfg.strong if strong else cfg.weak, float("nan"), float("nan"), True)
        score = self._score(o, o.index.similarities(vec))
        thr, tie = self._calibrate(o, share)
        strong = score > thr or (score == thr and h < tie)
        return KnnDecision(strong, cfg.strong if strong else cfg.weak, score, thr)

    async def decide(self, text: str, share: float, tenant: str | None) -> KnnDecision:
        vec = (await self._embed([text or " "], tenant))[0]
        return self.decide_vector(text, vec, share, tenant)

    async def pick(self, name: str, body: Mapping[str, Any], tenant: str | None) -> str:
        share = parse_share(name)
        return (await self.decide(last_user_text(body["messages"]), share, tenant)).model


__all__ = ["KnnRouter", "KnnDecision", "parse_share", "PREFIX"]
