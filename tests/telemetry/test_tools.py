"""Hooks for tools and sandboxes, W3C carriers, log correlation."""

from __future__ import annotations

import logging

import pytest

from myriad.telemetry import (
    current_tenant,
    execute_tool,
    inject_headers,
    sandbox_span,
    semconv as sc,
    trace_env,
    trace_headers,
)


def test_execute_tool_and_sandbox_spans(tel):
    token = current_tenant.set("acme")
    try:
        with execute_tool("run_code", tier="isolate", call_id="call_1", tracer=tel.tracer) as tool:
            with sandbox_span("exec", tier="isolate", sandbox_id="sb1", tracer=tel.tracer):
                env = trace_env()
        with pytest.raises(ValueError):
            with execute_tool("bad", tier="container", tracer=tel.tracer):
                raise ValueError("token=abcdef123456")
    finally:
        current_tenant.reset(token)
    spans = {s.name: s for s in tel.store._snapshot()}
    t = spans["execute_tool run_code"].attributes
    assert t[sc.GEN_AI_OPERATION_NAME] == "execute_tool" and t[sc.GEN_AI_TOOL_CALL_ID] == "call_1"
    assert t[sc.MYRIAD_SANDBOX_TIER] == "isolate" and t[sc.MYRIAD_TENANT] == "acme"
    ex = spans["sandbox.exec"]
    assert ex.parent_id == tool.get_span_context().span_id
    assert env["TRACEPARENT"].split("-")[2] == f"{ex.span_id:016x}"
    bad = spans["execute_tool bad"]
    assert not bad.ok and "abcdef123456" not in bad.error
    assert tel.store.sandboxes("acme")["isolate"]["runs"] == 2


def test_inject_headers_is_free_without_context(tel):
    h = {"a": "b"}
    assert inject_headers(h) is h and trace_headers() == {}
    with tel.tracer.start_as_current_span("x") as span:
        out = inject_headers(h)
    assert out is not h and out["traceparent"].split("-")[1] == f"{span.get_span_context().trace_id:032x}"


def test_log_records_carry_trace_ids(tel, caplog):
    log = logging.getLogger("myriad.test")
    with caplog.at_level(logging.WARNING):
        with tel.tracer.start_as_current_span("work") as span:
            log.warning("upstream key sk-abcdefghijklmnopqrstuvwxyz rejected")
        log.warning("outside")
    inside, outside = caplog.records[-2:]
    assert inside.otelTraceID == f"{span.get_span_context().trace_id:032x}" and outside.otelTraceID == "0"
    (kept,) = [r for r in tel.store._logs if "upstream key" in r["message"]]
    assert kept["trace_id"] == inside.otelTraceID and "sk-abc" not in kept["message"]
