"""Hooks for tools and sandboxes: ``execute_tool {tool}`` spans, sandbox lifecycle and
exec spans, and the W3C context to hand into a sandbox.

These use the OpenTelemetry API's global tracer (``opentelemetry.trace.get_tracer``)
unless given one, so the sandbox room calls them without holding a ``Telemetry``:
``myriad serve`` installs its SDK provider globally, and without one they are no-ops.

The sandbox room's intended use::

    from myriad.telemetry import execute_tool, sandbox_span, trace_env, trace_headers

    with execute_tool("run_code", tier="isolate", call_id=call["id"]):
        with sandbox_span("create", tier="isolate") as span:
            box = await pool.create(...)
            span.set_attribute("myriad.sandbox.id", box.id)
        with sandbox_span("exec", tier="isolate", sandbox_id=box.id):
            await box.run(code, bindings={"otel": trace_headers()})   # isolates: a binding
            # containers: env={**env, **trace_env()}                   # TRACEPARENT, BAGGAGE

and, once, ``telemetry.observe_sandboxes(lambda: {"isolate": n1, "container": n2})``
for the live-sandboxes gauge and the dashboard.
"""

from __future__ import annotations

import contextvars
import json
import time
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from opentelemetry import baggage, propagate, trace
from opentelemetry.trace import SpanKind

from myriad.telemetry import semconv as sc
from myriad.telemetry._gateway import fail
from myriad.telemetry._redact import redact_text, redact_value

current_tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("myriad_telemetry_tenant", default=None)
"""The tenant of the turn being run (set by the host instrumentation), for scoping
spans that are created below it without knowing their tenant."""


def _tracer(tracer: Any) -> Any:
    return tracer if tracer is not None else trace.get_tracer("myriad")


_instruments: dict[str, Any] = {}


def _duration_instrument() -> Any:
    h = _instruments.get("tool")
    if h is None:  # the API's proxy meter binds to the global provider whenever one is set
        from opentelemetry import metrics

        h = _instruments["tool"] = metrics.get_meter("myriad").create_histogram(
            sc.MYRIAD_TOOL_DURATION, unit="s", description="Tool execution duration.",
            explicit_bucket_boundaries_advisory=sc.DURATION_BUCKETS)
    return h


@contextmanager
def execute_tool(name: str, *, tier: str | None = None, call_id: str | None = None, tool_type: str = "function",
                 tenant: str | None = None, arguments: Any = None, capture_content: bool = False,
                 tracer: Any = None) -> Iterator[Any]:
    """An ``execute_tool {name}`` INTERNAL span around a tool call (yields the span).
    ``arguments`` are recorded, redacted, only with ``capture_content``."""
    attrs: dict[str, Any] = {sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL, sc.GEN_AI_TOOL_NAME: name,
                             sc.GEN_AI_TOOL_TYPE: tool_type}
    if call_id:
        attrs[sc.GEN_AI_TOOL_CALL_ID] = call_id
    if tier:
        attrs[sc.MYRIAD_SANDBOX_TIER] = tier
    tenant = tenant or current_tenant.get()
    if tenant:
        attrs[sc.MYRIAD_TENANT] = tenant
    if capture_content and arguments is not None:
        attrs[sc.GEN_AI_TOOL_CALL_ARGUMENTS] = redact_text(json.dumps(redact_value(arguments), default=str))
    started = time.perf_counter()
    error_type = None
    with _tracer(tracer).start_as_current_span(f"execute_tool {name}", kind=SpanKind.INTERNAL, attributes=attrs,
                                               record_exception=False, set_status_on_exception=False) as span:
        try:
            yield span
        except BaseException as e:
            error_type = fail(span, e)
            raise
        finally:
            mattrs = {sc.GEN_AI_TOOL_NAME: name, **({sc.MYRIAD_SANDBOX_TIER: tier} if tier else {}),
                      **({sc.ERROR_TYPE: error_type} if error_type else {})}
            _duration_instrument().record(time.perf_counter() - started, mattrs)


@contextmanager
def sandbox_span(operation: str, *, tier: str, sandbox_id: str | None = None, tenant: str | None = None,
                 tracer: Any = None, **attributes: Any) -> Iterator[Any]:
    """A ``sandbox.{operation}`` span (create, exec, destroy, snapshot...) for one tier."""
    attrs: dict[str, Any] = {sc.MYRIAD_SANDBOX_TIER: tier, **attributes}
    if sandbox_id:
        attrs[sc.MYRIAD_SANDBOX_ID] = sandbox_id
    tenant = tenant or current_tenant.get()
    if tenant:
        attrs[sc.MYRIAD_TENANT] = tenant
    with _tracer(tracer).start_as_current_span(f"sandbox.{operation}", kind=SpanKind.INTERNAL, attributes=attrs,
                                               record_exception=False, set_status_on_exception=False) as span:
        try:
            yield span
        except BaseException as e:
            fail(span, e)
            raise


def trace_headers() -> dict[str, str]:
    """The current context as W3C headers (``traceparent``, ``tracestate``, ``baggage``):
    for outbound HTTP (egress) and as an isolate binding."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def trace_env() -> dict[str, str]:
    """The current context as environment variables for a child process or container
    (``TRACEPARENT``, ``TRACESTATE``, ``BAGGAGE``: the OpenTelemetry env carrier)."""
    return {k.upper(): v for k, v in trace_headers().items()}


def inject_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    """``headers`` plus the current W3C context, or ``headers`` itself (no copy) when
    there is no context to propagate: cheap enough for every outbound request."""
    if not trace.get_current_span().get_span_context().is_valid and not baggage.get_all():
        return headers
    carrier = dict(headers)
    propagate.inject(carrier)
    return carrier


__all__ = ["execute_tool", "sandbox_span", "trace_headers", "trace_env", "inject_headers", "current_tenant"]
