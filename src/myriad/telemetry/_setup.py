"""Wiring the OpenTelemetry SDK: ``setup_telemetry`` builds a ``Telemetry`` at start-up.

Library code in Myriad (and in agents) uses the OpenTelemetry *API* only; this module
is the one place that imports the SDK and the OTLP exporters, and it does so lazily,
inside ``setup_telemetry``. Everything is read from the ``env`` mapping it is handed
(the standard ``OTEL_*`` variables) and from ``TelemetrySettings``:

==============================================  =========================================
``OTEL_SDK_DISABLED=true``                      no SDK at all: instrumentation is not installed
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``  the resource
``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``  ``otlp``, ``console``, ``none`` (comma list);
                                                default ``otlp`` when an OTLP endpoint is set,
                                                else ``none`` (the local store still records)
``OTEL_EXPORTER_OTLP[_TRACES|_METRICS]_PROTOCOL``  ``http/protobuf`` (default) or ``grpc``
``OTEL_EXPORTER_OTLP[_TRACES|_METRICS]_ENDPOINT``  collector address (signal-specific used as is)
``OTEL_EXPORTER_OTLP[_TRACES|_METRICS]_HEADERS``   ``k=v,k=v``
``OTEL_EXPORTER_OTLP[_TRACES|_METRICS]_TIMEOUT``   milliseconds (default 10000)
``OTEL_TRACES_SAMPLER`` / ``_ARG``              ``parentbased_always_on`` (default), ``always_on``,
                                                ``always_off``, ``traceidratio``,
                                                ``parentbased_traceidratio``, ``parentbased_always_off``
``OTEL_BSP_*``, ``OTEL_METRIC_EXPORT_INTERVAL``  batching and export intervals
==============================================  =========================================

An exporter never runs on the event loop: spans go through a ``BatchSpanProcessor``
(a bounded queue that drops when full, exported by a background thread) and metrics
through a ``PeriodicExportingMetricReader`` thread. A dead or slow collector costs
dropped telemetry, never a slower turn.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

from opentelemetry import trace as trace_api
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider

from myriad.errors import ConfigError
from myriad.settings import TelemetrySettings
from myriad.telemetry import semconv as sc
from myriad.telemetry._metrics import FastMetrics, merge_into
from myriad.telemetry._store import TelemetryStore

log = logging.getLogger("myriad.telemetry")

PROTOCOLS = ("http/protobuf", "grpc")
_TRUE = ("1", "true", "yes", "on")


# -- exporter registry (by protocol name) --------------------------------------------------

def _http_exporters(signal: str, endpoint: str, headers: dict[str, str], timeout: float) -> Any:
    if signal == "traces":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, headers=headers, timeout=timeout)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=endpoint, headers=headers, timeout=timeout)


def _grpc_exporters(signal: str, endpoint: str, headers: dict[str, str], timeout: float) -> Any:
    insecure = not endpoint.startswith("https://")
    target = endpoint.split("://", 1)[-1].rstrip("/")
    if signal == "traces":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=target, insecure=insecure, headers=headers or None, timeout=timeout)
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=target, insecure=insecure, headers=headers or None, timeout=timeout)


EXPORTERS: dict[str, Callable[[str, str, dict[str, str], float], Any]] = {
    "http/protobuf": _http_exporters,
    "grpc": _grpc_exporters,
}
"""OTLP exporter factories by ``OTEL_EXPORTER_OTLP_PROTOCOL`` value; register more here."""

DEFAULT_ENDPOINTS = {"http/protobuf": "http://localhost:4318", "grpc": "http://localhost:4317"}


def _sampler(name: str, arg: str | None) -> Any:
    from opentelemetry.sdk.trace import sampling

    def ratio() -> float:
        try:
            r = float(arg) if arg not in (None, "") else 1.0
        except ValueError:
            raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG must be a number between 0 and 1, got {arg!r}") from None
        if not 0.0 <= r <= 1.0:
            raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG must be between 0 and 1, got {arg!r}")
        return r

    table: dict[str, Callable[[], Any]] = {
        "always_on": lambda: sampling.ALWAYS_ON,
        "always_off": lambda: sampling.ALWAYS_OFF,
        "traceidratio": lambda: sampling.TraceIdRatioBased(ratio()),
        "parentbased_always_on": lambda: sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": lambda: sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": lambda: sampling.ParentBased(sampling.TraceIdRatioBased(ratio())),
    }
    make = table.get(name)
    if make is None:
        raise ConfigError(f"OTEL_TRACES_SAMPLER={name!r} is not supported; use one of {', '.join(table)}")
    return make()


# -- the handle --------------------------------------------------------------------------

@dataclass
class GenAIInstruments:
    """The metric instruments instrumentation records into (built once per ``Telemetry``)."""

    token_usage: Any
    operation_duration: Any
    time_to_first_chunk: Any
    turn_duration: Any
    tool_duration: Any
    http_duration: Any
    budget_refusals: Any

    @classmethod
    def create(cls, meter: Any, fast: Any = None) -> "GenAIInstruments":
        """Instruments on ``meter``; the hot-path histograms on ``fast`` (a ``FastMetrics``)
        when given, so recording them costs a dict update instead of an SDK measurement."""
        def h(name: str, unit: str, description: str, bounds: tuple[float, ...]) -> Any:
            if fast is not None:
                return fast.histogram(name, unit, description, bounds)
            return meter.create_histogram(name, unit=unit, description=description,
                                          explicit_bucket_boundaries_advisory=bounds)

        return cls(
            token_usage=h(sc.GEN_AI_CLIENT_TOKEN_USAGE, "{token}", "Number of input and output tokens used.",
                          sc.TOKEN_BUCKETS),
            operation_duration=h(sc.GEN_AI_CLIENT_OPERATION_DURATION, "s", "GenAI operation duration.",
                                 sc.DURATION_BUCKETS),
            time_to_first_chunk=h(sc.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK, "s",
                                  "Time to receive the first chunk of a streamed response.", sc.DURATION_BUCKETS),
            turn_duration=h(sc.MYRIAD_TURN_DURATION, "s", "Agent turn duration (queue wait included).",
                            sc.DURATION_BUCKETS),
            tool_duration=h(sc.MYRIAD_TOOL_DURATION, "s", "Tool execution duration.", sc.DURATION_BUCKETS),
            http_duration=h(sc.HTTP_SERVER_REQUEST_DURATION, "s", "HTTP server request duration.",
                            sc.HTTP_DURATION_BUCKETS),
            budget_refusals=meter.create_counter(sc.MYRIAD_BUDGET_REFUSALS, unit="{request}",
                                                 description="Model calls refused by a budget."),
        )


@dataclass
class Telemetry:
    """What the host holds: tracer, meter, instruments, the local store, and how to
    instrument the other rooms. Build it with ``setup_telemetry``; ``Telemetry.disabled()``
    is the no-op one (nothing gets wrapped, so it costs nothing)."""

    enabled: bool
    tracer: Any
    meter: Any
    instruments: GenAIInstruments
    store: TelemetryStore | None = None
    capture_content: bool = False
    exclude_paths: tuple[str, ...] = ()
    status: dict[str, Any] = field(default_factory=dict)
    metric_reader: Any = None
    fast_metrics: Any = None
    _tracer_provider: Any = None
    _meter_provider: Any = None
    _log_hooks: list[Callable[[], None]] = field(default_factory=list)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _host_instr: Any = None
    _closed: bool = False

    @classmethod
    def disabled(cls, reason: str = "disabled") -> "Telemetry":
        meter = NoOpMeterProvider().get_meter("myriad")
        return cls(False, NoOpTracerProvider().get_tracer("myriad"), meter, GenAIInstruments.create(meter),
                   status={"enabled": False, "reason": reason})

    # -- instrumenting the other rooms (by wrapping) -------------------------------------
    def instrument_gateway(self, gateway: Any) -> Any:
        """Register the tracing middleware on ``gateway``'s pipeline, so each call is a
        CLIENT span with ``gen_ai.*`` attributes and metrics; returns ``gateway`` (nothing
        is registered when disabled, so it costs nothing)."""
        if not self.enabled or gateway is None:
            return gateway
        from myriad.telemetry._gateway import GatewayTelemetry

        if gateway.pipeline.find(GatewayTelemetry.name) is None:
            gateway.pipeline.use(GatewayTelemetry(self, gateway))
        return gateway

    def instrument_host(self) -> Any:
        """The hook an ``AgentHost`` accepts as ``instrumentation``: wraps its turn in an
        ``invoke_agent`` span and observes its gauges. None when disabled."""
        if not self.enabled:
            return None
        from myriad.telemetry._agents import AgentInstrumentation

        if self._host_instr is None:
            self._host_instr = AgentInstrumentation(self)
        return self._host_instr

    def sandbox_hook(self) -> Any:
        """The hook ``Sandboxes.add_hook`` takes: lifecycle, runs and tool calls as spans
        (``_sandbox.SandboxTracing``); None when disabled."""
        if not self.enabled:
            return None
        from myriad.telemetry._sandbox import SandboxTracing

        return SandboxTracing(self)

    def asgi_middleware(self, app: Any) -> Any:
        """``app`` behind HTTP server spans and W3C context extraction; ``app`` when disabled."""
        if not self.enabled:
            return app
        from myriad.telemetry._asgi import TelemetryMiddleware

        return TelemetryMiddleware(app, self)

    def observe_sandboxes(self, live: Callable[[], Mapping[str, int]]) -> None:
        """Tell telemetry how many sandboxes are live per tier (the sandbox room calls
        this once); feeds the ``myriad.sandboxes.live`` gauge and the dashboard."""
        if self.store is not None:
            self.store.live_sandboxes = lambda: dict(live())

    def metrics_snapshot(self) -> dict[str, Any]:
        """Current values of every metric (gauges collected now, histograms as aggregated)."""
        out = metrics_snapshot(self.metric_reader) if self.metric_reader is not None else {}
        if self.fast_metrics is not None:
            out.update(self.fast_metrics.snapshot())
        return out

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        if self._host_instr is not None:
            self._tasks.append(asyncio.get_running_loop().create_task(self._host_instr.refresh_forever()))

    def force_flush(self, timeout_millis: int = 5000) -> None:
        if self._tracer_provider is not None:
            self._tracer_provider.force_flush(timeout_millis)
        if self._meter_provider is not None:
            self._meter_provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Flush (bounded by the exporters' timeouts) and stop the export threads."""
        if self._closed:
            return
        self._closed = True
        for undo in reversed(self._log_hooks):
            undo()
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()
        if self._meter_provider is not None:
            self._meter_provider.shutdown(timeout_millis=5000)

    async def aclose(self, timeout: float = 5.0) -> None:
        """``shutdown`` off the event loop, giving up after ``timeout`` seconds (a hung
        collector then keeps a daemon thread, never the process or the loop)."""
        for t in self._tasks:
            t.cancel()
        self._tasks.clear()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def run() -> None:
            try:
                self.shutdown()
            except Exception as e:  # pragma: no cover - reported, never raised at shutdown
                log.warning("telemetry shutdown failed: %s", e)
            finally:
                try:
                    loop.call_soon_threadsafe(_resolve, done)
                except RuntimeError:
                    pass  # the loop is gone already

        threading.Thread(target=run, name="myriad-telemetry-shutdown", daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout)
        except (TimeoutError, asyncio.TimeoutError):
            log.warning("telemetry export did not finish within %.1fs at shutdown; dropped", timeout)


def _resolve(future: "asyncio.Future[None]") -> None:
    if not future.done():
        future.set_result(None)


# -- setup ---------------------------------------------------------------------------------

_global_installed = False


def _split(value: str | None) -> list[str]:
    return [v.strip().lower() for v in (value or "").split(",") if v.strip()]


def _kv(value: str | None) -> dict[str, str]:
    out = {}
    for part in (value or "").split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[urllib.parse.unquote(k.strip())] = urllib.parse.unquote(v.strip())
    return out


def _signal(env: Mapping[str, str], signal: str, name: str) -> str | None:
    return env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_{name}") or env.get(f"OTEL_EXPORTER_OTLP_{name}")


def _endpoint(env: Mapping[str, str], signal: str, protocol: str) -> str:
    specific = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    if specific:
        return specific
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_ENDPOINTS[protocol]
    if protocol == "grpc":
        return base
    return base.rstrip("/") + f"/v1/{signal}"


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        v = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if v < 0:
        raise ConfigError(f"{name} must not be negative, got {raw!r}")
    return v


def _exporters_for(env: Mapping[str, str], signal: str) -> list[str]:
    names = _split(env.get(f"OTEL_{signal.upper()}_EXPORTER"))
    if not names:
        has_endpoint = bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or
                            env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"))
        names = ["otlp"] if has_endpoint else ["none"]
    unknown = [n for n in names if n not in ("otlp", "console", "none")]
    if unknown:
        raise ConfigError(f"OTEL_{signal.upper()}_EXPORTER: unsupported exporter(s) {', '.join(unknown)} "
                          "(use otlp, console or none)")
    return [n for n in names if n != "none"]


def _otlp(env: Mapping[str, str], signal: str) -> tuple[Any, dict[str, Any]]:
    protocol = (_signal(env, signal, "PROTOCOL") or "http/protobuf").strip().lower()
    factory = EXPORTERS.get(protocol)
    if factory is None:
        raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; use one of "
                          f"{', '.join(EXPORTERS)}")
    endpoint = _endpoint(env, signal, protocol)
    timeout_ms = _number(env, f"OTEL_EXPORTER_OTLP_{signal.upper()}_TIMEOUT",
                         _number(env, "OTEL_EXPORTER_OTLP_TIMEOUT", 10_000))
    headers = _kv(_signal(env, signal, "HEADERS"))
    try:
        exporter = factory(signal, endpoint, headers, timeout_ms / 1000)
    except ImportError as e:
        raise ConfigError(f"the OTLP {protocol} exporter is not installed ({e}): pip install 'myriad[telemetry]'"
                          ) from None
    return exporter, {"exporter": "otlp", "protocol": protocol, "endpoint": endpoint}


def setup_telemetry(settings: TelemetrySettings | None = None, env: Mapping[str, str] | None = None, *,
                    install_global: bool = False, extra_span_processors: list[Any] | None = None,
                    extra_metric_readers: list[Any] | None = None) -> Telemetry:
    """Build the SDK pipeline (resource, sampler, local store, exporters) from settings and
    the ``OTEL_*`` variables in ``env``. ``install_global`` also makes it the process-wide
    provider that ``opentelemetry.trace.get_tracer`` returns (once per process)."""
    global _global_installed
    settings = settings or TelemetrySettings()
    env = env or {}
    if not settings.enabled:
        return Telemetry.disabled("settings.telemetry.enabled = false")
    if (env.get("OTEL_SDK_DISABLED") or "").strip().lower() in _TRUE:
        return Telemetry.disabled("OTEL_SDK_DISABLED=true")
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanLimits
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError as e:
        raise ConfigError(f"telemetry is on but the OpenTelemetry SDK is not installed ({e}): "
                          "pip install 'myriad[telemetry]', or set MYRIAD_TELEMETRY__ENABLED=false") from None

    attrs: dict[str, Any] = {"service.name": settings.service_name, "telemetry.sdk.language": "python"}
    attrs.update(_kv(env.get("OTEL_RESOURCE_ATTRIBUTES")))
    if env.get("OTEL_SERVICE_NAME"):
        attrs["service.name"] = env["OTEL_SERVICE_NAME"]
    resource = Resource(attrs, schema_url=sc.SCHEMA_URL)
    sampler_name = (env.get("OTEL_TRACES_SAMPLER") or "parentbased_always_on").strip().lower()
    sampler = _sampler(sampler_name, env.get("OTEL_TRACES_SAMPLER_ARG"))
    status: dict[str, Any] = {"enabled": True, "service": attrs["service.name"], "sampler": sampler_name,
                              "semconv": sc.SEMCONV_VERSION, "capture_content": False, "traces": [], "metrics": []}

    # Spans are FastSpans (``_span.py``): plain records on the request path, handed in
    # batches by the pump thread to the store and to one BatchSpanProcessor per exporter
    # (whose exporter encodes them to OTLP directly, ``_otlp.py``).
    from myriad.telemetry._otlp import FastSpanExporter
    from myriad.telemetry._pump import ReadableProcessor, SpanPump
    from myriad.telemetry._span import FastTracerProvider

    limits = SpanLimits()
    tp = FastTracerProvider(resource, sampler)
    store = TelemetryStore(settings.store_spans, settings.store_minutes)
    store.resource = resource
    processors: list[Any] = []
    queue = int(_number(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048))
    bsp_args: dict[str, Any] = dict(
        max_queue_size=queue,
        schedule_delay_millis=_number(env, "OTEL_BSP_SCHEDULE_DELAY", 5000),
        max_export_batch_size=int(_number(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", min(512, queue))),
        export_timeout_millis=_number(env, "OTEL_BSP_EXPORT_TIMEOUT", 30000),
    )
    for name in _exporters_for(env, "traces"):
        if name == "otlp":
            exporter, info = _otlp(env, "traces")
        else:
            exporter, info = ConsoleSpanExporter(), {"exporter": "console"}
        try:
            bsp = BatchSpanProcessor(FastSpanExporter(exporter, resource, limits), **bsp_args)  # type: ignore[arg-type]
        except ValueError as e:
            raise ConfigError(f"OTEL_BSP_* settings are inconsistent: {e}") from None
        processors.append(bsp)
        status["traces"].append(info)
    for p in extra_span_processors or ():
        processors.append(ReadableProcessor(p, resource, limits))
    pump = tp.pump = SpanPump(tp.queue, store, processors)
    store.syncer = pump.drain
    pump.start()

    fast = FastMetrics()
    pump.on_tick.append(fast.fold)

    class MergingReader(PeriodicExportingMetricReader):
        """Ships the fast histograms in the same export as the SDK's own metrics."""

        def _receive_metrics(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> None:
            super()._receive_metrics(merge_into(metrics_data, fast, resource, "myriad", sc.SCHEMA_URL),
                                     timeout_millis, **kwargs)

    readers: list[Any] = [InMemoryMetricReader()]
    interval = _number(env, "OTEL_METRIC_EXPORT_INTERVAL", 60000)
    for name in _exporters_for(env, "metrics"):
        if name == "otlp":
            mexp, info = _otlp(env, "metrics")
        else:
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            mexp, info = ConsoleMetricExporter(), {"exporter": "console"}
        readers.append(MergingReader(mexp, export_interval_millis=interval,
                                                     export_timeout_millis=_number(env, "OTEL_METRIC_EXPORT_TIMEOUT", 30000)))
        status["metrics"].append(info)
    readers += list(extra_metric_readers or ())
    mp = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)

    capture = settings.capture_content or (
        env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT") or "").strip().lower() in _TRUE
    status["capture_content"] = capture
    tracer = tp.get_tracer("myriad", schema_url=sc.SCHEMA_URL)
    meter = mp.get_meter("myriad", schema_url=sc.SCHEMA_URL)
    tel = Telemetry(True, tracer, meter, GenAIInstruments.create(meter, fast), store=store, capture_content=capture,
                    exclude_paths=tuple(settings.exclude_paths), status=status, metric_reader=readers[0],
                    fast_metrics=fast, _tracer_provider=tp, _meter_provider=mp)

    from myriad.telemetry._logs import install_log_correlation

    tel._log_hooks.append(install_log_correlation(store))
    if install_global and not _global_installed:
        _global_installed = True
        trace_api.set_tracer_provider(tp)
        from opentelemetry import metrics as metrics_api

        metrics_api.set_meter_provider(mp)
        status["global"] = True
    return tel


def iter_metrics(reader: Any) -> Iterator[tuple[str, Any]]:
    """(name, metric) pairs from an SDK metric reader's current collection."""
    data = reader.get_metrics_data()
    if data is None:
        return
    for rm in data.resource_metrics:
        for scope in rm.scope_metrics:
            for m in scope.metrics:
                yield m.name, m


def metrics_snapshot(reader: Any) -> dict[str, Any]:
    """``{name: {"unit", "points": [{"attributes", "value" | "count"/"sum"/"buckets"}]}}``."""
    out: dict[str, Any] = {}
    for name, m in iter_metrics(reader):
        points = []
        for p in m.data.data_points:
            d: dict[str, Any] = {"attributes": dict(p.attributes or {})}
            if hasattr(p, "bucket_counts"):
                d.update(count=p.count, sum=p.sum, bounds=list(p.explicit_bounds), buckets=list(p.bucket_counts))
            else:
                d["value"] = p.value
            points.append(d)
        out.setdefault(name, {"unit": m.unit, "points": []})["points"].extend(points)
    return out


__all__ = ["Telemetry", "GenAIInstruments", "setup_telemetry", "EXPORTERS", "PROTOCOLS", "iter_metrics",
           "metrics_snapshot"]
