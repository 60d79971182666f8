"""setup_telemetry honours the standard OTEL_* variables."""

from __future__ import annotations

import pytest

from myriad.errors import ConfigError
from myriad.settings import TelemetrySettings
from myriad.telemetry import setup_telemetry, semconv as sc


async def test_sdk_disabled_and_settings_off_install_nothing():
    for tel in (setup_telemetry(TelemetrySettings(), {"OTEL_SDK_DISABLED": "true"}),
                setup_telemetry(TelemetrySettings(enabled=False), {})):
        assert not tel.enabled and tel.store is None
        gw = object()
        assert tel.instrument_gateway(gw) is gw and tel.instrument_host() is None
        assert tel.asgi_middleware(gw) is gw
        await tel.aclose()


async def test_exporters_follow_endpoint_and_protocol():
    tel = setup_telemetry(TelemetrySettings(), {})
    assert tel.status["traces"] == [] and tel.status["metrics"] == []  # local store only
    await tel.aclose()
    tel = setup_telemetry(TelemetrySettings(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert tel.status["traces"] == [{"exporter": "otlp", "protocol": "http/protobuf",
                                     "endpoint": "http://127.0.0.1:9/v1/traces"}]
    assert tel.status["metrics"][0]["endpoint"] == "http://127.0.0.1:9/v1/metrics"
    await tel.aclose()
    tel = setup_telemetry(TelemetrySettings(), {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                                                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                                                "OTEL_METRICS_EXPORTER": "none"})
    assert tel.status["traces"][0]["protocol"] == "grpc" and tel.status["metrics"] == []
    await tel.aclose()


@pytest.mark.parametrize("env, needle", [
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json", "OTEL_TRACES_EXPORTER": "otlp"}, "http/json"),
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "zipkin"),
    ({"OTEL_TRACES_SAMPLER": "sometimes"}, "sometimes"),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "between 0 and 1"),
    ({"OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
])
def test_bad_configuration_is_named(env, needle):
    with pytest.raises(ConfigError) as e:
        setup_telemetry(TelemetrySettings(), env)
    assert needle in e.value.message


async def test_sampler_and_resource():
    tel = setup_telemetry(TelemetrySettings(), {"OTEL_TRACES_SAMPLER": "always_off"})
    with tel.tracer.start_as_current_span("x"):
        pass
    assert tel.store.stats()["seen"] == 0
    await tel.aclose()
    tel = setup_telemetry(TelemetrySettings(), {"OTEL_SERVICE_NAME": "svc",
                                                "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test,team=a%20b"})
    with tel.tracer.start_as_current_span("x"):
        pass
    resource = tel.store.resource
    assert resource.attributes["service.name"] == "svc"
    assert resource.attributes["team"] == "a b" and resource.schema_url == sc.SCHEMA_URL
    await tel.aclose()


async def test_content_capture_env_opt_in():
    tel = setup_telemetry(TelemetrySettings(), {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"})
    assert tel.capture_content
    await tel.aclose()
    tel = setup_telemetry(TelemetrySettings(), {})
    assert not tel.capture_content
    await tel.aclose()


async def test_histograms_use_the_conventions_buckets(tel):
    tel.instruments.token_usage.record(100, {sc.GEN_AI_TOKEN_TYPE: "input"})
    tel.instruments.operation_duration.record(0.3, {})
    snap = tel.metrics_snapshot()
    assert snap[sc.GEN_AI_CLIENT_TOKEN_USAGE]["points"][0]["bounds"] == list(sc.TOKEN_BUCKETS)
    assert snap[sc.GEN_AI_CLIENT_OPERATION_DURATION]["points"][0]["bounds"] == list(sc.DURATION_BUCKETS)


def test_public_surface_is_exactly_the_intended_one():
    import myriad.telemetry as t

    assert sorted(t.__all__) == sorted([
        "EXPORTERS", "LOG_FORMAT", "REDACTED", "AgentInstrumentation", "GatewayTelemetry", "SandboxTracing",
        "Telemetry", "TelemetryMiddleware", "TelemetryStore", "carrier_from_scope",
        "current_tenant", "current_user", "execute_tool", "genai", "inject_headers", "install_log_correlation",
        "metrics_snapshot", "redact_headers", "redact_text", "redact_value", "sandbox_span", "semconv",
        "setup_telemetry", "span_dict", "trace_env", "trace_headers"])
    assert all(hasattr(t, name) for name in t.__all__)
