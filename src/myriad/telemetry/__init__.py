"""Telemetry: OpenTelemetry setup, GenAI semantic-convention helpers, and the local
store behind the dashboard.

Public surface::

    setup_telemetry(settings, env)   -> Telemetry (SDK + exporters from OTEL_* variables)
    Telemetry                        .instrument_gateway(gw)  .instrument_host(host)
                                     .sandbox_hook()         .asgi_middleware(app)
                                     .observe_sandboxes(fn)
                                     .store  .metrics_snapshot()  .aclose()
    TelemetryStore                   bounded in-memory spans, rollups, logs (a SpanProcessor)
    GatewayTelemetry (a gateway pipeline middleware), SandboxTracing (a sandbox hook),
    TelemetryMiddleware,
    AgentInstrumentation             the wrappers
    execute_tool, sandbox_span       spans for tools and sandboxes (API-only hooks)
    trace_headers, trace_env, inject_headers   W3C context for outbound calls and sandboxes
    redact_text, redact_value        credential redaction
    genai, semconv                   convention helpers and names (semconv 1.44.0)

Library code here uses the OpenTelemetry API only; ``setup_telemetry`` imports the
SDK and exporters (the ``myriad[telemetry]`` extra) when it is called. Importing this
package starts nothing.
"""

from myriad.telemetry import genai, semconv
from myriad.telemetry._agents import AgentInstrumentation
from myriad.telemetry._asgi import TelemetryMiddleware, carrier_from_scope
from myriad.telemetry._gateway import GatewayTelemetry, current_user
from myriad.telemetry._logs import LOG_FORMAT, install_log_correlation
from myriad.telemetry._redact import REDACTED, redact_headers, redact_text, redact_value
from myriad.telemetry._sandbox import SandboxTracing
from myriad.telemetry._setup import EXPORTERS, Telemetry, metrics_snapshot, setup_telemetry
from myriad.telemetry._store import TelemetryStore, span_dict
from myriad.telemetry._tools import (
    current_tenant,
    execute_tool,
    inject_headers,
    sandbox_span,
    trace_env,
    trace_headers,
)

__all__ = [
    "EXPORTERS",
    "LOG_FORMAT",
    "REDACTED",
    "AgentInstrumentation",
    "GatewayTelemetry",
    "SandboxTracing",
    "Telemetry",
    "TelemetryMiddleware",
    "TelemetryStore",
    "carrier_from_scope",
    "current_tenant",
    "current_user",
    "execute_tool",
    "genai",
    "inject_headers",
    "install_log_correlation",
    "metrics_snapshot",
    "redact_headers",
    "redact_text",
    "redact_value",
    "sandbox_span",
    "semconv",
    "setup_telemetry",
    "span_dict",
    "trace_env",
    "trace_headers",
]
