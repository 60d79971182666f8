"""Metering as a middleware of the gateway pipeline, over the in-process simulated gateway."""

import pytest

from myriad.errors import BudgetExceeded, InvalidRequest
from myriad.metering import Budget, Meter, Scope, Subject, UsageQuery, charging, gateway_price_version, meter_gateway
from myriad.metering._gateway import UNATTRIBUTED
from myriad.models import Gateway


@pytest.fixture(params=["owned", "shared"])
async def gw(tmp_path, request):
    inner = Gateway.simulated()
    # owned: admission in memory (what myriad serve runs); shared: every admission a SQLite transaction
    meter = Meter.open(f"sqlite:///{tmp_path}/m.db", shared=request.param == "shared")
    meter.ensure_prices(gateway_price_version(inner))
    meter_gateway(inner, meter, default_max_output=256)
    inner.meter = meter  # for the tests' convenience
    yield inner
    await inner.aclose()
    meter.close()


def by(gw, *dims, **filters):
    return {tuple(r.keys.values()): r for r in gw.meter.store.totals(UsageQuery("acme", group_by=dims, **filters))}


def test_deployment_prices_become_a_price_version_once(gw):
    v = gw.meter.store.price_book().latest
    big = v.price_of("model.output_tokens", "sim-large", "sim-large")
    assert big is not None and str(big.unit_price) == "10.0" and big.per == 1_000_000
    assert gw.meter.ensure_prices(gateway_price_version(gw)) is None  # unchanged: no new version


async def test_chat_stream_and_embed_are_charged_to_the_caller(gw):
    msgs = [{"role": "user", "content": "hello"}]
    r = await gw.chat({"model": "sim-small", "messages": msgs, "max_tokens": 5}, tenant="acme", agent="acme/helper/x")
    chunks = [c async for c in gw.chat_stream({"model": "sim-large", "messages": msgs}, tenant="acme")]
    assert chunks and all(not (c.raw.get("usage") and not c.raw.get("choices")) for c in chunks)  # usage chunk hidden
    await gw.embed(["a b c"], tenant="acme")
    rows = by(gw, "model", "agent", resource="model.output_tokens")
    assert rows[("sim-small", "acme/helper/x")].quantity_micro == r.usage.completion_tokens * 10**6
    assert ("sim-large", None) in rows
    assert by(gw, "resource", model="sim-embed")[("model.embedding_tokens",)].quantity_micro > 0
    assert gw.meter.store.open_reservations() == 0


async def test_agent_calls_are_metered_with_the_charging_user(gw):
    class Ref:
        tenant, path = "acme", "acme/assistant/bob"

    client = gw.for_agent(Ref())
    with charging(Subject("acme", user="bob")):
        await client.chat("hi", model="sim-small")
    (key,) = by(gw, "user", "agent", resource="model.requests")
    assert key == ("bob", "acme/assistant/bob")


async def test_budget_refuses_at_the_dearest_deployment(gw):
    # sim-large worst case: 256 output tokens x 10/M = 0.00256 (+ prompt) > 0.002
    gw.meter.set_budget(Budget(Scope("acme"), "day", hard="0.002"))
    with pytest.raises(BudgetExceeded):
        await gw.chat({"model": "sim-large", "messages": [{"role": "user", "content": "x"}]}, tenant="acme")
    await gw.chat({"model": "sim-small", "messages": [{"role": "user", "content": "x"}]}, tenant="acme")


async def test_calls_without_a_tenant_are_still_counted(gw):
    await gw.chat({"model": "sim-small", "messages": [{"role": "user", "content": "x"}]})
    assert gw.meter.store.count_events(UNATTRIBUTED) == 1


async def test_bad_bodies_get_the_gateways_own_errors(gw):
    with pytest.raises(InvalidRequest):
        await gw.chat(["not", "a", "body"], tenant="acme")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        await gw.chat({"messages": "nope", "max_tokens": "many"}, tenant="acme")
    assert gw.meter.store.open_reservations() == 0 and gw.meter.store.count_events() == 0


async def test_streamed_batches_are_metered_and_hide_the_usage_chunk(gw):
    msgs = [{"role": "user", "content": "hello"}]
    batches = [b async for _, b in gw.chat_stream_batches({"model": "sim-small", "messages": msgs}, tenant="acme")]
    assert all(c.get("choices") for b in batches for c in b)
    assert by(gw, "resource")[("model.output_tokens",)].quantity_micro > 0
    assert gw.meter.store.open_reservations() == 0


async def test_cache_hits_cost_no_tokens(tmp_path):
    from myriad.metering._gateway import GatewayMetering
    from myriad.models.pipeline import Call, Pipeline
    from myriad.models.types import ChatResult, Usage

    meter = Meter.open(f"sqlite:///{tmp_path}/m.db")
    pipeline = Pipeline()
    pipeline.use(GatewayMetering(meter))

    async def cached(call):
        call.cached, call.deployment, call.usage = True, "cache", Usage(900, 90, 990)
        return ChatResult(raw={}, model="m", deployment="cache", attempts=0, cached=True)

    try:
        await pipeline.unary(Call("chat", "m", {"messages": [{"role": "user", "content": "x"}]}, tenant="acme"), cached)
        rows = {r.keys["resource"]: r.quantity_micro for r in meter.store.totals(UsageQuery("acme", group_by=("resource",)))}
        assert rows == {"model.requests": 10**6, "model.cache_hits": 10**6}
    finally:
        meter.close()
