"""Metering the model gateway as a middleware of its pipeline: ``GatewayMetering(meter)``.

``meter_gateway(gateway, meter)`` registers it (``gateway.pipeline.use(...)``) and
makes the meter's price book the pipeline's pricer, so a call's cost is computed
once (``call.cost_usd``) and the span, the usage hook and the ledger agree. Per call:

1. ``enter`` reserves the worst case before routing: the prompt bound (UTF-8 bytes
   as tokens) plus ``max_tokens`` (or ``default_max_output``), priced at the most
   expensive deployment that could serve the model, and refuses with
   ``BudgetExceeded`` / ``RateLimited`` before any upstream is touched;
2. ``exit`` commits exactly the usage the upstream reported (``call.usage``; for
   streams the gateway always asks for the final usage chunk and hides it from a
   caller that did not ask), priced by the model alias and the deployment that
   answered; a stream that broke before its usage chunk is charged the prompt bound
   and the characters it streamed (marked ``estimated``);
3. releases the rest; a failed call that produced nothing is released entirely.

Duck-typed on the pipeline's ``Call`` on purpose: metering does not import the models room.
"""

from __future__ import annotations

from typing import Any, Mapping

import orjson

from myriad.metering._events import Resources, Subject, Usage
from myriad.metering._meter import Meter
from myriad.metering._wrap import current_subject

CACHE = "cache"
"""The deployment name the gateway gives answers from its semantic cache."""
CACHE_HITS = "model.cache_hits"
UNATTRIBUTED = "unattributed"
"""Tenant charged for gateway calls made with no tenant and no ``charging`` subject."""
_OPERATIONS = {("chat", False): "model.chat", ("chat", True): "model.stream", ("embeddings", False): "model.embed",
               ("responses", False): "model.responses", ("responses", True): "model.responses"}
_KEY = "metering"


def fast_prompt_bound(body: Mapping[str, Any], bytes_per_token: float = 1.0) -> int:
    """``prompt_tokens_bound`` with orjson (same bytes: compact UTF-8 JSON), ~10x cheaper."""
    payload = {k: body.get(k) for k in ("messages", "tools", "input", "prompt", "instructions")
               if body.get(k) is not None}
    try:
        n = len(orjson.dumps(payload))
    except TypeError:  # not JSON: the gateway refuses it; the estimate only must not fail
        n = len(str(payload).encode())
    return int(n / bytes_per_token) + 8


class GatewayMetering:
    """The gateway pipeline's admission and metering middleware (see module docstring)."""

    name = "metering"
    order = 20

    def __init__(self, meter: Meter, *, default_max_output: int = 4096, bytes_per_token: float = 1.0,
                 gateway: Any = None) -> None:
        self.meter = meter
        self.default_max_output = default_max_output
        self.bytes_per_token = bytes_per_token
        self.gateway = gateway
        self._deployments: list[Any] = list(getattr(getattr(gateway, "config", None), "deployments", ()) or ())
        self._alias: dict[str, str] = {str(d.name): str(d.model) for d in self._deployments}

    # -- who and how much ------------------------------------------------------------

    @staticmethod
    def subject(tenant: str | None, agent: str | None, user: str | None = None) -> Subject:
        """The explicit tenant/agent of the call; a ``charging`` subject adds the user."""
        ctx = current_subject()
        if tenant is None:
            return ctx if ctx is not None else Subject(UNATTRIBUTED, agent=agent)
        if ctx is not None and ctx.tenant == tenant:
            return Subject(tenant, ctx.user, agent or ctx.agent)
        return Subject(tenant, user, agent)

    def _candidates(self, model: str | None, kind: str) -> list[Any]:
        named = [d for d in self._deployments if getattr(d, "model", None) == model]
        return named or [d for d in self._deployments if getattr(d, "kind", kind) == kind]

    def _worst(self, quantities: dict[str, int], model: str | None, kind: str) -> Usage:
        """``quantities`` priced at the dearest deployment that could serve ``model``
        (which deployment that is depends only on the model and the resources' shape:
        remembered per price-book version)."""
        candidates = self._candidates(model, kind)
        if len(candidates) == 1:  # nothing to compare: the one that can serve it
            d = candidates[0]
            return Usage(quantities, model=str(d.model), deployment=str(d.name))
        book = self.meter.store.price_book()
        now = int(self.meter.clock() * 1_000_000)
        best: Usage | None = None
        best_cost = -1
        for d in candidates:
            u = Usage(quantities, model=str(d.model), deployment=str(d.name))
            c = book.estimate_nanos(u, now)
            if c > best_cost:
                best, best_cost = u, c
        return best or Usage(quantities, model=model)

    def estimate(self, call: Any) -> Usage:
        body = call.body if isinstance(call.body, Mapping) else {}
        if call.kind == "embeddings":
            texts = body.get("input") or []
            bound = sum(len(t.encode()) for t in texts) + 8 * len(texts)
            return self._worst({Resources.MODEL_REQUESTS: 1, Resources.EMBEDDING_TOKENS: bound}, call.model, "embedding")
        # bad values are the gateway's to refuse; the estimate only must not fail on them
        out = _positive_int(body.get("max_completion_tokens") or body.get("max_tokens")
                            or body.get("max_output_tokens"), self.default_max_output)
        n = _positive_int(body.get("n"), 1)
        return self._worst({
            Resources.MODEL_REQUESTS: 1,
            Resources.INPUT_TOKENS: fast_prompt_bound(body, self.bytes_per_token),
            Resources.OUTPUT_TOKENS: out * n,
        }, call.model, "chat")

    def actual(self, call: Any) -> Usage | None:
        """What the call used, in the ledger's terms (computed once, kept on the call)."""
        cached = call.state.get("metering.usage")
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        u: Usage | None = None
        if call.cached or call.deployment == CACHE:
            # a semantic-cache hit cost no upstream tokens: one request, one hit, priced like any resource
            u = Usage({Resources.MODEL_REQUESTS: 1, CACHE_HITS: 1}, model=call.model or None, deployment=CACHE)
        elif call.usage is not None:
            alias = self._alias.get(call.deployment, call.model)
            if call.kind == "embeddings":
                u = Usage({Resources.MODEL_REQUESTS: 1, Resources.EMBEDDING_TOKENS: int(call.usage.prompt_tokens)},
                          model=alias, deployment=call.deployment or None)
            else:
                u = Usage.from_openai(call.usage.to_openai(), alias, call.deployment or None)
        if u is not None:
            call.state["metering.usage"] = u
        return u

    def price(self, call: Any) -> float | None:
        """The pipeline's pricer: the meter's price book, so span and ledger agree."""
        u = self.actual(call)
        if u is None:
            return None
        return self.meter.store.price_book().estimate_nanos(u, int(self.meter.clock() * 1_000_000)) / 1e9

    # -- the middleware --------------------------------------------------------------

    async def enter(self, call: Any) -> None:
        op = _OPERATIONS.get((call.kind, bool(call.stream)), "model." + call.kind)
        r = self.meter.reserve(self.subject(call.tenant, call.agent, call.user), self.estimate(call), operation=op)
        await r.start()  # raises BudgetExceeded / RateLimited before any upstream is touched
        call.state[_KEY] = r

    async def exit(self, call: Any) -> None:
        r = call.state.get(_KEY)
        if r is None:
            return
        u = self.actual(call)
        attrs: dict[str, Any] = {}
        if call.response_id:
            attrs["upstream_id"] = call.response_id
        if u is not None:
            if call.attempts and not call.stream:
                attrs["attempts"] = call.attempts
            r.commit(u, attributes=attrs)
        elif call.stream_chars:
            # the stream broke before its usage chunk: the prompt bound and what we saw stream
            est = r.request.estimate.micro() if r.request.estimate is not None else {}
            r.commit(Usage.tokens_of(self._alias.get(call.deployment, call.model),
                                     input=est.get(Resources.INPUT_TOKENS, 0) // 10**6, output=call.stream_chars,
                                     deployment=call.deployment or None),
                     attributes={**attrs, "estimated": True})
        await r.finish()


def meter_gateway(gateway: Any, meter: Meter, *, default_max_output: int = 4096,
                  bytes_per_token: float = 1.0) -> GatewayMetering:
    """Register metering on ``gateway``'s pipeline (and its price book as the pricer)."""
    mw = GatewayMetering(meter, default_max_output=default_max_output, bytes_per_token=bytes_per_token,
                         gateway=gateway)
    gateway.pipeline.use(mw)
    gateway.pipeline.pricer = mw.price
    return mw


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


__all__ = ["GatewayMetering", "UNATTRIBUTED", "fast_prompt_bound", "gateway_price_version", "meter_gateway"]
