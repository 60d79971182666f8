"""Semantic routing: routes described by example utterances.

Ask for the model ``auto`` (``[routes] model``) and the router embeds the last
user message, finds the most similar example utterance, and sends the request to
that route's model when the similarity clears ``[routes] threshold``; otherwise to
``[routes] default`` (or the gateway's default model).

``threshold = "auto"`` (the default) calibrates from the utterances alone: the
midpoint between the median similarity of each utterance to its own route's other
utterances and the median of its best similarity to any other route. Good short
queries often sit well below a fixed 0.4-0.5 with MiniLM; see docs/models.md for
what each choice measured on the shipped labelled set::

    [routes]
    threshold = "auto"    # or a cosine similarity, e.g. 0.4
    default = "fast"

    [[route]]
    name = "code"
    model = "smart"
    utterances = ["fix this stack trace", "write a python function that ..."]
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from myriad.models._tokens import last_user_text
from myriad.models._vectors import VectorIndex
from myriad.models.config import RouteConfig


@dataclass(frozen=True)
class RouteDecision:
    route: str | None
    """The matched route, or None when nothing cleared the threshold."""
    model: str
    score: float


class SemanticRouter:
    """A virtual model that picks a route by embedding similarity."""

    def __init__(self, gateway: Any, routes: tuple[RouteConfig, ...], *, name: str = "auto",
                 threshold: float | None = None, default: str | None = None,
                 embedding_model: str | None = None) -> None:
        self.gateway = gateway
        self.routes = routes
        self.name = name
        self.threshold = threshold
        self.default = default
        self.embedding_model = embedding_model
        self._index: VectorIndex[int] | None = None
        self._lock = asyncio.Lock()

    def matches(self, name: str) -> bool:
        return name == self.name

    def names(self) -> list[str]:
        return [self.name]

    async def index(self) -> VectorIndex[int]:
        """Embed every example utterance once (on first use)."""
        if self._index is None:
            async with self._lock:
                if self._index is None:
                    texts = [u for r in self.routes for u in r.utterances]
                    owners = [i for i, r in enumerate(self.routes) for _ in r.utterances]
                    vecs = (await self.gateway.embed(texts, model=self.embedding_model)).vectors
                    idx: VectorIndex[int] = VectorIndex(max_entries=len(texts) + 1)
                    for v, owner in zip(vecs, owners):
                        idx.add(v, owner)
                    if self.threshold is None:
                        self.threshold = calibrate_threshold(idx)
                    self._index = idx
        return self._index

    def decide_vector(self, index: VectorIndex[int], vec: Any) -> RouteDecision:
        """The decision for an already-embedded prompt (no I/O: what the benchmark times)."""
        best = index.nearest(vec, 1)
        fallback = self.default or self.gateway.default_model()
        if not best:
            return RouteDecision(None, fallback, 0.0)
        score, i = best[0]
        if score < (self.threshold if self.threshold is not None else 0.5):
            return RouteDecision(None, fallback, score)
        route = self.routes[index.payloads[i]]
        return RouteDecision(route.name, route.model, score)

    async def decide(self, text: str, tenant: str | None = None) -> RouteDecision:
        index = await self.index()
        vec = (await self.gateway.embed([text or " "], model=self.embedding_model, tenant=tenant)).vectors[0]
        return self.decide_vector(index, vec)

    async def pick(self, name: str, body: Mapping[str, Any], tenant: str | None) -> str:
        return (await self.decide(last_user_text(body["messages"]), tenant)).model


def calibrate_threshold(index: VectorIndex[int]) -> float:
    """Midpoint of the median own-route (leave-one-out) and median best other-route
    similarity of the example utterances; 0.5 when there is too little to go on."""
    m = index.matrix()
    owners = np.array(index.payloads)
    if len(owners) < 3 or len(set(owners.tolist())) < 2:
        return 0.5
    sims = m @ m.T
    np.fill_diagonal(sims, -np.inf)
    own, other = [], []
    for i, o in enumerate(owners):
        same = owners == o
        if same.sum() > 1:
            own.append(float(sims[i][same].max()))
        other.append(float(sims[i][~same].max()))
    if not own:
        return 0.5
    return (float(np.median(own)) + float(np.median(other))) / 2


__all__ = ["SemanticRouter", "RouteDecision", "calibrate_threshold"]
