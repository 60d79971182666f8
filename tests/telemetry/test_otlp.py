"""Spans recorded as ``FastSpan``s and turned into OTLP off the request path export
exactly what the OpenTelemetry SDK would have: same protobuf message, same parent ids,
same sampling decisions, over a real OTLP receiver too."""

from __future__ import annotations

import random
from typing import Any

import pytest
from opentelemetry import context, propagate, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from myriad.settings import TelemetrySettings
from myriad.telemetry import semconv as sc
from myriad.telemetry import setup_telemetry
from myriad.telemetry._otlp import Encoder, to_readable
from myriad.telemetry._span import FastTracerProvider, _decider
from tests.integration.otlp_receiver import GRPCReceiver, HTTPReceiver

RESOURCE = Resource({"service.name": "svc", "team": "a"}, schema_url=sc.SCHEMA_URL)
REMOTE = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "vendor=x,other=y"}


def _workload(tracer: Any) -> None:
    """The same API calls on any tracer: every kind of attribute, events, statuses,
    local and remote parents, trace state, links, an exception inside ``use_span``."""
    with tracer.start_as_current_span("root", kind=SpanKind.SERVER, attributes={"http.request.method": "POST"}) as root:
        root.set_attribute("s", "text")
        root.set_attribute("b", False)
        root.set_attribute("i", -7)
        root.set_attribute("big", 2**62)
        root.set_attribute("f", 0.25)
        root.set_attribute("strs", ["a", "b"])
        root.set_attribute("ints", (1, 2, 3))
        root.set_attribute("empty", "")
        root.set_attribute("map", {"k": 1, "n": {"x": "y"}})
        root.set_attribute("raw", b"\x00\x01")
        root.set_attributes({"many.1": 1, "many.2": 2.5, "many.3": True})
        root.add_event("ready", {"n": 1, "why": "test"})
        with tracer.start_as_current_span("child", kind=SpanKind.CLIENT) as child:
            child.update_name("chat model")
            child.set_status(Status(StatusCode.ERROR, "upstream said no"))
        ok = tracer.start_span("ok", links=[Link(root.get_span_context(), {"l": "v"})])
        ok.set_status(StatusCode.OK)
        ok.set_status(StatusCode.ERROR, "ignored: OK is final")
        ok.end()
        try:
            with tracer.start_as_current_span("fails"):
                raise ValueError("boom")
        except ValueError:
            pass
    token = context.attach(propagate.extract(REMOTE))
    try:
        with tracer.start_as_current_span("from remote", kind=SpanKind.CONSUMER):
            pass
    finally:
        context.detach(token)


def _normalise(req: ExportTraceServiceRequest) -> list[Any]:
    """The spans of a request with what differs run to run (ids we generate, times,
    stack traces) replaced by their shape."""
    out = []
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            spans = list(ss.spans)
            ids = {s.span_id: f"span{i}" for i, s in enumerate(spans)}
            for s in spans:
                d: Any = type(s)()
                d.CopyFrom(s)
                d.trace_id = b"T" if d.trace_id != bytes.fromhex(REMOTE["traceparent"][3:35]) else b"REMOTE"
                d.span_id = ids[s.span_id].encode()
                if d.parent_span_id:
                    d.parent_span_id = ids.get(s.parent_span_id, "remote").encode()
                assert d.end_time_unix_nano >= d.start_time_unix_nano > 0
                d.start_time_unix_nano = d.end_time_unix_nano = 1
                for e in d.events:
                    e.time_unix_nano = 1
                    for kv in e.attributes:
                        if kv.key == "exception.stacktrace":
                            assert "ValueError: boom" in kv.value.string_value
                            kv.value.string_value = "..."
                for link in d.links:
                    link.trace_id, link.span_id = b"T", ids[link.span_id].encode()
                out.append((rs.resource, ss.scope, ss.schema_url, d))
    return out


def test_fast_spans_encode_as_the_sdk_encodes_its_own_spans():
    """The same API calls on the SDK's tracer and on ours give the same OTLP request."""
    sdk_out = InMemorySpanExporter()
    sdk = TracerProvider(resource=RESOURCE)
    sdk.add_span_processor(SimpleSpanProcessor(sdk_out))
    _workload(sdk.get_tracer("myriad", schema_url=sc.SCHEMA_URL))
    fast = FastTracerProvider(RESOURCE, sampling.ParentBased(sampling.ALWAYS_ON))
    _workload(fast.get_tracer("myriad", schema_url=sc.SCHEMA_URL))
    ours = list(fast.queue)
    assert [s.name for s in ours] == [s.name for s in sdk_out.get_finished_spans()]
    theirs = encode_spans(sdk_out.get_finished_spans())
    mine = ExportTraceServiceRequest.FromString(Encoder(RESOURCE, SpanLimits()).request(ours))
    assert _normalise(mine) == _normalise(theirs)
    # and for the very same spans, to the byte, also through the SDK's ReadableSpan
    readable = encode_spans([to_readable(s, RESOURCE, SpanLimits()) for s in ours])
    assert Encoder(RESOURCE, SpanLimits()).request(ours) == readable.SerializeToString()


def test_encoding_with_limits_many_scopes_and_unique_values():
    fast = FastTracerProvider(RESOURCE, sampling.ALWAYS_ON)
    limits = SpanLimits(max_span_attributes=3, max_span_attribute_length=4, max_events=1)
    for i in range(600):  # past the memo's distinct-value cut-off for "id"
        scope = "a" if i % 3 else "b"
        span = fast.get_tracer(scope, "1.0").start_span("s", attributes={"id": f"resp-{i}", "n": i % 5})
        span.set_attribute("long", "abcdefgh")
        span.set_attribute("last", i % 2 == 0)
        span.add_event("e1")
        span.add_event("e2", {"x": "yyyyyyyy"})
        span.end()
    spans = list(fast.queue)
    enc = Encoder(RESOURCE, limits)
    req = ExportTraceServiceRequest.FromString(enc.request(spans))
    assert req == encode_spans([to_readable(s, RESOURCE, limits) for s in spans])
    assert enc.request(spans) == enc.request(spans)  # memoised the second time, same bytes
    first = req.resource_spans[0].scope_spans[0].spans[0]
    assert first.dropped_attributes_count == 1 and [kv.key for kv in first.attributes] == ["n", "long", "last"]
    assert first.attributes[1].value.string_value == "abcd" and first.dropped_events_count == 1
    assert {ss.scope.name for ss in req.resource_spans[0].scope_spans} == {"a", "b"}


@pytest.mark.parametrize("sampler", [
    sampling.ParentBased(sampling.ALWAYS_ON), sampling.ParentBased(sampling.ALWAYS_OFF), sampling.ALWAYS_ON,
    sampling.ALWAYS_OFF, sampling.TraceIdRatioBased(0.3), sampling.ParentBased(sampling.TraceIdRatioBased(0.5)),
], ids=lambda s: s.get_description())
def test_inline_sampling_decides_as_the_sdk_sampler(sampler):
    decide = _decider(sampler)
    assert decide is not None
    rng = random.Random(7)
    for _ in range(2000):
        trace_id = rng.getrandbits(128) or 1
        parent = None
        if rng.random() < 0.7:
            parent = trace.SpanContext(trace_id, rng.getrandbits(64) or 1, is_remote=rng.random() < 0.5,
                                       trace_flags=trace.TraceFlags(rng.choice((0, 1))))
        ctx = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent else None
        expected = sampler.should_sample(ctx, trace_id, "x").decision.is_sampled()
        assert decide(parent, trace_id) is expected


async def test_unsampled_spans_are_not_recorded_and_propagate_their_flags():
    tel = setup_telemetry(TelemetrySettings(), {"OTEL_TRACES_SAMPLER": "traceidratio",
                                                "OTEL_TRACES_SAMPLER_ARG": "0.5"})
    kept = 0
    for _ in range(400):
        with tel.tracer.start_as_current_span("x") as span:
            headers: dict[str, str] = {}
            propagate.inject(headers)
            sampled = span.is_recording()
            kept += sampled
            assert headers["traceparent"].endswith("-03" if sampled else "-02")
    assert 120 < kept < 280 and tel.store.stats()["seen"] == kept
    await tel.aclose()


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
async def test_batch_converted_spans_reach_a_real_receiver_as_recorded(protocol):
    """Spans ended on the request path, encoded later on the export thread, arrive with
    the attributes, parent ids, kinds and statuses the store recorded for them."""
    receiver = HTTPReceiver() if protocol == "http/protobuf" else GRPCReceiver()
    tel = setup_telemetry(TelemetrySettings(), {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_METRICS_EXPORTER": "none", "OTEL_BSP_SCHEDULE_DELAY": "50"})
    try:
        from myriad.models import Gateway

        gw = tel.instrument_gateway(Gateway.simulated())
        token = context.attach(propagate.extract(REMOTE))
        try:
            with tel.tracer.start_as_current_span("turn", kind=SpanKind.SERVER):
                await gw.for_agent("acme", "acme/bot/x").chat("hello", max_tokens=20)
                await gw.for_agent("acme", "acme/bot/x").stream_text("again")
        finally:
            context.detach(token)
        stored = {s["span_id"]: s for s in tel.store.spans()}
        receiver.wait_for(lambda rc: len(rc.spans) >= 3)
    finally:
        await tel.aclose()
        await gw.aclose()
        receiver.stop()
    got = {s["span_id"]: s for s in receiver.spans}
    assert set(got) == set(stored)
    kinds = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3}
    for sid, s in stored.items():
        r = got[sid]
        assert r["trace_id"] == s["trace_id"] == REMOTE["traceparent"][3:35]
        assert r["parent_id"] == s["parent_id"] and r["name"] == s["name"] and r["kind"] == kinds[s["kind"]]
        assert r["attributes"] == s["attributes"]
        assert r["duration_ns"] == s["end"] - s["start"] and r["resource"]["service.name"] == "myriad"
    chats = [s for s in got.values() if s["name"] == "chat sim-small"]
    assert len(chats) == 2 and all(c["attributes"][sc.GEN_AI_USAGE_OUTPUT_TOKENS] > 0 for c in chats)
    assert {c["parent_id"] for c in chats} == {s["span_id"] for s in got.values() if s["name"] == "turn"}
