"""The local store, fed by a real SDK tracer provider."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from myriad.telemetry import TelemetryStore, semconv as sc


def _provider(store: TelemetryStore) -> TracerProvider:
    tp = TracerProvider()
    tp.add_span_processor(store)
    return tp


def _turn(tracer, tenant: str, model: str = "m1", user: str = "ann", tokens=(10, 5), cost=0.001, fail=False):
    with tracer.start_as_current_span("invoke_agent bot", attributes={
            sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT, sc.MYRIAD_TENANT: tenant,
            sc.GEN_AI_AGENT_NAME: "bot", sc.GEN_AI_AGENT_ID: f"{tenant}/bot/x"}) as turn:
        with tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT, attributes={
                sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT, sc.GEN_AI_REQUEST_MODEL: model, sc.MYRIAD_TENANT: tenant,
                sc.MYRIAD_USER: user, sc.GEN_AI_AGENT_ID: f"{tenant}/bot/x",
                sc.GEN_AI_USAGE_INPUT_TOKENS: tokens[0], sc.GEN_AI_USAGE_OUTPUT_TOKENS: tokens[1],
                sc.MYRIAD_COST_USD: cost}) as chat:
            if fail:
                chat.set_status(Status(StatusCode.ERROR, "boom"))
        return format(turn.get_span_context().trace_id, "032x")


def test_ring_is_bounded_and_trace_index_follows():
    store = TelemetryStore(max_spans=10)
    tracer = _provider(store).get_tracer("t")
    ids = [_turn(tracer, "a") for _ in range(20)]  # 40 spans through a ring of 10
    stats = store.stats()
    assert stats["spans"] == 10 and stats["seen"] == 40 and stats["evicted"] == 30
    assert stats["traces"] == 5
    assert store.trace(ids[0]) is None and len(store.trace(ids[-1])) == 2


def test_turns_sum_their_model_calls_and_are_tenant_scoped():
    store = TelemetryStore()
    tracer = _provider(store).get_tracer("t")
    a = _turn(tracer, "a", tokens=(7, 3), cost=0.5)
    b = _turn(tracer, "b")
    (turn,) = store.turns("a")
    assert turn["trace_id"] == a and turn["model_calls"] == 1
    assert (turn["input_tokens"], turn["output_tokens"], turn["cost_usd"]) == (7, 3, 0.5)
    assert store.trace(b, tenant="a") is None  # another tenant's trace is invisible
    assert [s["name"] for s in store.trace(a, tenant="a")] == ["invoke_agent bot", "chat m1"]
    assert len(store.turns()) == 2


def test_usage_series_groups_and_filters():
    store = TelemetryStore()
    tracer = _provider(store).get_tracer("t")
    _turn(tracer, "a", model="m1", user="ann", tokens=(10, 5), cost=0.25)
    _turn(tracer, "a", model="m2", user="bob", tokens=(1, 1), cost=0.0)
    _turn(tracer, "a", model="m1", user="bob", tokens=(10, 5), cost=0.25)
    _turn(tracer, "b", model="m1", user="eve", tokens=(100, 100), cost=9.0)
    by_model = {s["key"]: s for s in store.usage_series("a", by="model", since_minutes=5)["series"]}
    assert by_model["m1"]["total_tokens"] == 30 and by_model["m1"]["cost_usd"] == 0.5
    assert by_model["m2"]["total_tokens"] == 2
    by_user = {s["key"]: s["total_tokens"] for s in store.usage_series("a", by="user")["series"]}
    assert by_user == {"ann": 15, "bob": 17}
    by_tenant = {s["key"]: s["total_tokens"] for s in store.usage_series(None, by="tenant")["series"]}
    assert by_tenant == {"a": 32, "b": 200}
    points = store.usage_series("a", by="model", bucket_minutes=5, since_minutes=30)["series"][0]["points"]
    assert sum(p["calls"] for p in points) == 2


def test_errors_and_sandboxes():
    store = TelemetryStore()
    tracer = _provider(store).get_tracer("t")
    _turn(tracer, "a", fail=True)
    _turn(tracer, "b", fail=True)
    assert [s["error"] for s in store.errors("a")["spans"]] == ["boom"]
    for i, tier in enumerate(["isolate", "isolate", "container"]):
        with tracer.start_as_current_span("execute_tool run", attributes={sc.MYRIAD_SANDBOX_TIER: tier,
                                                                           sc.MYRIAD_TENANT: "a"}) as s:
            if i == 1:
                s.set_status(Status(StatusCode.ERROR))
    store.live_sandboxes = lambda: {"isolate": 3}
    tiers = store.sandboxes("a")
    assert tiers["isolate"]["runs"] == 2 and tiers["isolate"]["errors"] == 1 and tiers["isolate"]["live"] == 3
    assert tiers["container"]["runs"] == 1
    assert store.sandboxes("b") == {"isolate": {"runs": 0, "errors": 0, "p50_ms": None, "p95_ms": None, "live": 3}}
