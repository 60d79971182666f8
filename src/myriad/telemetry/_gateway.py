"""``GatewayTelemetry``: the gateway pipeline's tracing middleware. Each call is a
``chat {model}`` / ``embeddings {model}`` CLIENT span with ``gen_ai.*`` attributes,
plus the GenAI client metrics.

Duck-typed on the pipeline's ``Call`` (telemetry sits below the rooms it observes
and imports nothing from ``myriad.models``). The span is current while the gateway
routes and opens the upstream (``attach``/``detach``), so the W3C context the
providers inject names it as the parent; it is never current in the consumer's code
between a stream's chunks. Request attributes are built once at ``enter``; usage,
cost, finish reasons and first-chunk time are read from the ``Call`` at ``exit``
(the gateway counted them; the pipeline priced the call once).
"""

from __future__ import annotations

import time
from typing import Any, Mapping
from urllib.parse import urlsplit

from opentelemetry import context, trace
from opentelemetry.baggage import _BAGGAGE_KEY
from opentelemetry.trace import SpanKind, Status, StatusCode

from myriad.telemetry import _fast as fast
from myriad.telemetry import genai
from myriad.telemetry import semconv as sc
from myriad.telemetry._redact import redact_text

_USER_KEYS = ("myriad.user", "enduser.id", "user")
_START_KEYS = frozenset((sc.GEN_AI_OPERATION_NAME, sc.GEN_AI_REQUEST_MODEL))


def current_user() -> str | None:
    """The end user named in W3C baggage (``myriad.user`` or ``enduser.id``), if any."""
    entries = context.get_value(_BAGGAGE_KEY)  # what baggage.get_all() wraps in a read-only view
    if not entries or not isinstance(entries, dict):
        return None
    for key in _USER_KEYS:
        v = entries.get(key)
        if v:
            return str(v)
    return None


def fail(span: Any, error: BaseException) -> str:
    """Mark ``span`` failed with a redacted message; returns the ``error.type``."""
    etype = genai.error_type(error)
    message = redact_text(str(error))[:500]
    span.set_attribute(sc.ERROR_TYPE, etype)
    span.add_event("exception", {"exception.type": type(error).__qualname__, "exception.message": message})
    span.set_status(Status(StatusCode.ERROR, message or etype))
    return etype


class _DeploymentInfo:
    __slots__ = ("provider", "address", "port", "price")

    def __init__(self, deployment: Any) -> None:
        raw = str(getattr(deployment, "provider", "") or "")
        self.provider = sc.PROVIDER_NAMES.get(raw, raw or "unknown")
        self.address: str | None = None
        self.port: int | None = None
        base = getattr(deployment, "base_url", None)
        if base:
            parts = urlsplit(base)
            self.address = parts.hostname
            self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.price = getattr(deployment, "price", None)


class GatewayTelemetry:
    """The gateway pipeline's telemetry middleware (see module docstring)."""

    name = "telemetry"
    order = 10

    def __init__(self, telemetry: Any, gateway: Any = None) -> None:
        self._tel = telemetry
        self._tracer = telemetry.tracer
        self._m = telemetry.instruments
        self._gateway = gateway
        self._infos: dict[str, _DeploymentInfo | None] = {}
        self._statics: dict[tuple[bool, str, str, str | None], _Static] = {}
        self._capture = bool(telemetry.capture_content)

    def _info(self, deployment: str) -> _DeploymentInfo | None:
        try:
            return self._infos[deployment]
        except KeyError:
            pass
        d = None
        lookup = getattr(self._gateway, "deployment", None)
        if lookup is not None:
            d = lookup(deployment)
        info = _DeploymentInfo(d) if d is not None else None
        self._infos[deployment] = info
        return info

    async def enter(self, call: Any) -> None:
        op = sc.OP_EMBEDDINGS if call.kind == "embeddings" else sc.OP_CHAT
        body = call.body if isinstance(call.body, Mapping) else None
        attrs = genai.request_attributes(op, call.model, body if op == sc.OP_CHAT else None, stream=call.stream)
        if call.kind not in ("chat", "embeddings"):
            attrs[sc.MYRIAD_API] = call.kind
        if call.tenant:
            attrs[sc.MYRIAD_TENANT] = call.tenant
        if call.agent:
            attrs[sc.GEN_AI_AGENT_ID] = call.agent
        if call.user:
            attrs[sc.MYRIAD_USER] = call.user
        if op == sc.OP_EMBEDDINGS and body and body.get("dimensions"):
            attrs[sc.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = body["dimensions"]
        if self._capture and body is not None:
            msgs = body.get("messages")
            if isinstance(msgs, list):
                attrs[sc.GEN_AI_INPUT_MESSAGES] = genai.input_messages(msgs)
            if call.stream:
                call.output_text = []
        content = attrs.pop(sc.GEN_AI_INPUT_MESSAGES, None)
        span = call.state["telemetry"] = fast.start(self._tracer, f"{op} {call.model}", SpanKind.CLIENT, attrs)
        if content is not None:
            span.set_attribute(sc.GEN_AI_INPUT_MESSAGES, content)  # free text: through the SDK's limits

    def attach(self, call: Any) -> Any:
        return context.attach(trace.set_span_in_context(call.state["telemetry"]))

    def detach(self, token: Any) -> None:
        context.detach(token)

    def _static(self, embeddings: bool, model: str, deployment: str, response_model: str | None) -> "_Static":
        key = (embeddings, model, deployment, response_model)
        st = self._statics.get(key)
        if st is None:
            if len(self._statics) > 1024:
                self._statics.clear()
            st = self._statics[key] = _Static(embeddings, model, deployment, response_model,
                                              self._info(deployment) if deployment else None)
        return st

    async def exit(self, call: Any) -> None:
        span = call.state.get("telemetry")
        if span is None:
            return
        embeddings = call.kind == "embeddings"
        st = self._static(embeddings, call.model, call.deployment,
                          call.response_model or (call.model if call.deployment else None))
        u = call.usage
        if u is not None and not call.cached:
            record = self._m.token_usage.record
            record(u.prompt_tokens, st.metric_input)
            if not embeddings:
                record(u.completion_tokens, st.metric_output)
        if span.is_recording():  # an unsampled span gets no attributes: only the metrics
            attrs: dict[str, Any] = dict(st.span)
            if call.response_id:
                attrs[sc.GEN_AI_RESPONSE_ID] = str(call.response_id)
            if call.finish_reasons:
                attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = tuple(call.finish_reasons)
            if call.first_chunk_s is not None and call.stream:
                attrs[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = call.first_chunk_s
            if u is not None:
                attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] = u.prompt_tokens
                if not embeddings:
                    attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = u.completion_tokens
                if u.cached_tokens:
                    attrs[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = u.cached_tokens
            if call.cost_usd is not None:
                attrs[sc.MYRIAD_COST_USD] = float(call.cost_usd)
            if call.cached:
                attrs[sc.MYRIAD_CACHE_HIT] = True
            fast.put(span, attrs)
            if self._capture:  # free text: through the SDK's limits
                if call.stream and call.output_text is not None:
                    span.set_attribute(sc.GEN_AI_OUTPUT_MESSAGES, genai.output_messages(
                        [{"message": {"role": "assistant", "content": "".join(call.output_text)},
                          "finish_reason": call.finish_reasons[-1] if call.finish_reasons else None}]))
                elif call.result is not None and isinstance(getattr(call.result, "raw", None), Mapping):
                    span.set_attribute(sc.GEN_AI_OUTPUT_MESSAGES,
                                       genai.output_messages(call.result.raw.get("choices") or ()))
        mattrs = st.metric
        error = call.error
        if error is not None and not isinstance(error, GeneratorExit):
            etype = fail(span, error)
            mattrs = {**mattrs, sc.ERROR_TYPE: etype}
            if etype == "budget_exceeded":
                self._m.budget_refusals.add(1, {sc.GEN_AI_REQUEST_MODEL: call.model})
        self._m.operation_duration.record(time.perf_counter() - call.started, mattrs)
        if call.stream and call.first_chunk_s is not None:
            self._m.time_to_first_chunk.record(call.first_chunk_s, mattrs)
        span.end()


class _Static:
    """What a call's span and metrics carry that depends only on (kind, model, deployment,
    response model): built once, shared by every such call (never changed after)."""

    __slots__ = ("metric", "metric_input", "metric_output", "span")

    def __init__(self, embeddings: bool, model: str, deployment: str, response_model: str | None,
                 info: _DeploymentInfo | None) -> None:
        op = sc.OP_EMBEDDINGS if embeddings else sc.OP_CHAT
        m: dict[str, Any] = {sc.GEN_AI_OPERATION_NAME: op, sc.GEN_AI_REQUEST_MODEL: model}
        if info is not None:
            m[sc.GEN_AI_PROVIDER_NAME] = info.provider
            if info.address:
                m[sc.SERVER_ADDRESS] = info.address
                m[sc.SERVER_PORT] = info.port
        if response_model:
            m[sc.GEN_AI_RESPONSE_MODEL] = response_model
        self.metric = m
        self.metric_input = {**m, sc.GEN_AI_TOKEN_TYPE: "input"}
        self.metric_output = {**m, sc.GEN_AI_TOKEN_TYPE: "output"}
        span = {k: v for k, v in m.items() if k not in _START_KEYS}
        if deployment:
            span[sc.MYRIAD_DEPLOYMENT] = deployment
        self.span = span


__all__ = ["GatewayTelemetry", "current_user", "fail"]
