"""Metering the model gateway by wrapping it: ``MeteredGateway(gateway, meter)``.

The wrapper has the gateway's call surface (``chat``, ``chat_stream``, ``embed``,
``for_agent``; everything else passes through), so the server and the agent host
hold it where they held the gateway. Per call it:

1. reserves the worst case before routing: the prompt bound (UTF-8 bytes as tokens)
   plus ``max_tokens`` (or ``default_max_output``), priced at the most expensive
   deployment that could serve the model, and refuses with ``BudgetExceeded`` /
   ``RateLimited`` before any upstream is touched;
2. commits exactly the usage the upstream reported (the gateway passes the
   provider's ``usage`` through; for streams it asks for the final usage chunk and
   hides it again from a caller that did not ask for it), priced by the model
   alias and the deployment that answered;
3. releases the rest; a failed call that produced nothing is released entirely.

Duck-typed on purpose: metering does not import the models room.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, AsyncIterator, Mapping

from myriad.metering._events import Resources, Subject, Usage
from myriad.metering._meter import Meter
from myriad.metering._wrap import current_subject, prompt_tokens_bound

CACHE = "cache"
"""The deployment name the gateway gives answers from its semantic cache."""
CACHE_HITS = "model.cache_hits"
UNATTRIBUTED = "unattributed"
"""Tenant charged for gateway calls made with no tenant and no ``charging`` subject."""


class MeteredGateway:
    """A model gateway whose every chat, stream and embedding call is reserved and metered."""

    def __init__(self, inner: Any, meter: Meter, *, default_max_output: int = 4096, bytes_per_token: float = 1.0) -> None:
        self.inner = inner
        self.meter = meter
        self.default_max_output = default_max_output
        self.bytes_per_token = bytes_per_token

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    # -- who and how much ------------------------------------------------------------

    @staticmethod
    def subject(tenant: str | None, agent: str | None) -> Subject:
        """The explicit tenant/agent of the call; a ``charging`` subject adds the user."""
        ctx = current_subject()
        if tenant is None:
            return ctx if ctx is not None else Subject(UNATTRIBUTED, agent=agent)
        if ctx is not None and ctx.tenant == tenant:
            return Subject(tenant, ctx.user, agent or ctx.agent)
        return Subject(tenant, None, agent)

    def _deployments(self, model: str | None, kind: str) -> list[Any]:
        deps = list(getattr(getattr(self.inner, "config", None), "deployments", ()) or ())
        named = [d for d in deps if getattr(d, "model", None) == model]
        return named or [d for d in deps if getattr(d, "kind", kind) == kind]

    def _alias_of(self, deployment: str, fallback: str) -> str:
        for d in getattr(getattr(self.inner, "config", None), "deployments", ()) or ():
            if getattr(d, "name", None) == deployment:
                return str(d.model)
        return fallback

    def _worst(self, quantities: dict[str, int], model: str | None, kind: str) -> Usage:
        """``quantities`` priced at the dearest deployment that could serve ``model``."""
        book = self.meter.store.price_book()
        now = int(self.meter.clock() * 1_000_000)
        best: Usage | None = None
        best_cost = -1
        for d in self._deployments(model, kind):
            u = Usage(quantities, model=str(d.model), deployment=str(d.name))
            c = book.estimate_nanos(u, now)
            if c > best_cost:
                best, best_cost = u, c
        return best or Usage(quantities, model=model)

    def _chat_estimate(self, body: Mapping[str, Any]) -> Usage:
        # bad values are the gateway's to refuse; the estimate only must not fail on them
        out = _positive_int(body.get("max_completion_tokens") or body.get("max_tokens"), self.default_max_output)
        n = _positive_int(body.get("n"), 1)
        model = body.get("model") if isinstance(body.get("model"), str) else self._default("chat")
        return self._worst({
            Resources.MODEL_REQUESTS: 1,
            Resources.INPUT_TOKENS: prompt_tokens_bound(body, bytes_per_token=self.bytes_per_token),
            Resources.OUTPUT_TOKENS: out * n,
        }, model, "chat")

    def _default(self, kind: str) -> str | None:
        try:
            return str(self.inner.default_model(kind))
        except Exception:  # noqa: BLE001 - no default: estimate over every deployment of the kind
            return None

    def _actual(self, usage: Any, asked: str, deployment: str) -> Usage:
        return Usage.from_openai(usage or {}, self._alias_of(deployment, asked), deployment or None)

    # -- the calls ---------------------------------------------------------------------

    def _cache_hit(self, asked: str) -> Usage:
        # a semantic-cache hit cost no upstream tokens: one request, one hit, priced like any resource
        return Usage({Resources.MODEL_REQUESTS: 1, CACHE_HITS: 1}, model=asked or None, deployment=CACHE)

    async def chat(self, body: Mapping[str, Any], *, tenant: str | None = None, agent: str | None = None) -> Any:
        """``gateway.chat``, reserved and metered."""
        if not isinstance(body, Mapping):
            return await self.inner.chat(body, tenant=tenant, agent=agent)  # it names the problem
        async with self.meter.reserve(self.subject(tenant, agent), self._chat_estimate(body), operation="model.chat") as r:
            result = await self.inner.chat(body, tenant=tenant, agent=agent)
            if getattr(result, "cached", False) or result.deployment == CACHE:
                r.commit(self._cache_hit(result.model))
            else:
                r.commit(self._actual(result.raw.get("usage"), result.model, result.deployment),
                         attributes={"upstream_id": result.raw.get("id"), "attempts": getattr(result, "attempts", 1)})
            return result

    async def chat_stream(self, body: Mapping[str, Any], *, tenant: str | None = None,
                          agent: str | None = None) -> AsyncIterator[Any]:
        """``gateway.chat_stream`` (chunk objects with ``.raw`` and ``.deployment``), reserved and metered."""
        if not isinstance(body, Mapping):
            async for chunk in self.inner.chat_stream(body, tenant=tenant, agent=agent):  # it names the problem
                yield chunk
            return
        async with self._stream_meter(body, tenant, agent) as (req, sm):
            async for chunk in self.inner.chat_stream(req, tenant=tenant, agent=agent):
                if sm.see(chunk.raw, chunk.deployment):
                    yield chunk

    async def chat_stream_batches(self, body: Mapping[str, Any], *, tenant: str | None = None,
                                  agent: str | None = None) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        """``gateway.chat_stream_batches`` (``(deployment, [raw chunk, ...])``), reserved and metered."""
        if not isinstance(body, Mapping):
            async for item in self.inner.chat_stream_batches(body, tenant=tenant, agent=agent):
                yield item
            return
        async with self._stream_meter(body, tenant, agent) as (req, sm):
            async for deployment, batch in self.inner.chat_stream_batches(req, tenant=tenant, agent=agent):
                kept = [raw for raw in batch if sm.see(raw, deployment)]
                if kept:
                    yield deployment, kept

    @contextlib.asynccontextmanager
    async def _stream_meter(self, body: Mapping[str, Any], tenant: str | None,
                            agent: str | None) -> AsyncIterator[tuple[dict[str, Any], "_StreamMeter"]]:
        raw_opts = body.get("stream_options")
        opts: Mapping[str, Any] = raw_opts if isinstance(raw_opts, Mapping) else {}
        req = dict(body)
        req["stream_options"] = {**opts, "include_usage": True}  # we need the usage chunk even if the caller does not
        asked = str(body.get("model") or self._default("chat") or "")
        estimate = self._chat_estimate(body)
        async with self.meter.reserve(self.subject(tenant, agent), estimate, operation="model.stream") as r:
            sm = _StreamMeter(want_usage=bool(opts.get("include_usage")))
            try:
                yield req, sm
            finally:
                if sm.deployment == CACHE:
                    r.commit(self._cache_hit(asked))
                elif sm.usage is not None:
                    r.commit(self._actual(sm.usage, asked, sm.deployment), attributes={"upstream_id": sm.upstream_id})
                elif sm.chars:
                    # the stream broke before its usage chunk: the prompt bound and what we saw stream
                    est = estimate.micro()
                    r.commit(Usage.tokens_of(self._alias_of(sm.deployment, asked),
                                             input=est[Resources.INPUT_TOKENS] // 10**6, output=sm.chars,
                                             deployment=sm.deployment or None),
                             attributes={"upstream_id": sm.upstream_id, "estimated": True})

    async def embed(self, texts: list[str], *, model: str | None = None, tenant: str | None = None,
                    agent: str | None = None, dimensions: int | None = None) -> Any:
        """``gateway.embed``, reserved and metered."""
        alias = model or self._default("embedding")
        bound = sum(len(t.encode()) for t in texts) + 8 * len(texts) if isinstance(texts, list) else 0
        est = self._worst({Resources.MODEL_REQUESTS: 1, Resources.EMBEDDING_TOKENS: bound}, alias, "embedding")
        async with self.meter.reserve(self.subject(tenant, agent), est, operation="model.embed") as r:
            result = await self.inner.embed(texts, model=model, tenant=tenant, agent=agent, dimensions=dimensions)
            tokens = int(getattr(result.usage, "prompt_tokens", 0) or 0)
            r.commit(Usage({Resources.MODEL_REQUESTS: 1, Resources.EMBEDDING_TOKENS: tokens},
                           model=self._alias_of(result.deployment, alias or ""), deployment=result.deployment or None))
            return result

    def for_agent(self, ref: Any, agent: str | None = None, default_model: str | None = None) -> Any:
        """What an agent holds as ``self.models``: the gateway's own facade, bound to this wrapper."""
        client = self.inner.for_agent(ref, agent, default_model)
        client.gateway = self
        return client


class _StreamMeter:
    """Watches a stream's raw chunks: keeps the usage chunk, hides it from callers that did not ask."""

    __slots__ = ("want_usage", "usage", "deployment", "upstream_id", "chars")

    def __init__(self, want_usage: bool) -> None:
        self.want_usage = want_usage
        self.usage: Any = None
        self.deployment = ""
        self.upstream_id: Any = None
        self.chars = 0

    def see(self, raw: Mapping[str, Any], deployment: str) -> bool:
        """Note a chunk; True if the caller should get it."""
        self.deployment = deployment or self.deployment
        if self.upstream_id is None:
            self.upstream_id = raw.get("id")
        choices = raw.get("choices") or ()
        if raw.get("usage"):
            self.usage = raw["usage"]
            if not self.want_usage and not choices:
                return False
        for choice in choices:
            delta = choice.get("delta") or {}
            self.chars += len(delta.get("content") or "") + len(json.dumps(delta.get("tool_calls") or ""))
        return True


def _positive_int(value: Any, default: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return default


def gateway_price_version(gateway: Any) -> dict[str, Any] | None:
    """A price version (JSON shape) from the deployments' ``price`` (USD per 1M tokens), or None if all are free.

    Lets the deployment file stay the one place prices are written when no price file is set.
    """
    prices: list[dict[str, Any]] = []
    for d in getattr(getattr(gateway, "config", None), "deployments", ()) or ():
        p = getattr(d, "price", None)
        if p is None:
            continue
        kind = getattr(d, "kind", "chat")
        rates = ({Resources.EMBEDDING_TOKENS: p.input} if kind == "embedding" else
                 {Resources.INPUT_TOKENS: p.input, Resources.OUTPUT_TOKENS: p.output,
                  Resources.CACHED_TOKENS: p.input if p.cached is None else p.cached})
        for resource, rate in rates.items():
            if rate:
                prices.append({"resource": resource, "model": d.model, "deployment": d.name,
                               "unit_price": repr(float(rate)), "per": 1_000_000})
    return {"currency": "USD", "prices": prices} if prices else None


__all__ = ["MeteredGateway", "UNATTRIBUTED", "gateway_price_version"]
