"""``InstrumentedGateway``: the model gateway wrapped in ``chat {model}`` /
``embeddings {model}`` CLIENT spans and the GenAI client metrics.

It wraps anything with the gateway's shape (``chat``, ``chat_stream``, ``embed``,
``for_agent``) and imports nothing from ``myriad.models``: telemetry sits below the
rooms it observes. Everything it does not override passes through to the gateway.
The span is current while the gateway works, so the W3C context the providers
inject into outbound requests names this span as the parent.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Mapping
from urllib.parse import urlsplit

from opentelemetry import baggage, context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from myriad.telemetry import genai
from myriad.telemetry import semconv as sc
from myriad.telemetry._redact import redact_text

_USER_KEYS = ("myriad.user", "enduser.id", "user")
_START_KEYS = frozenset((sc.GEN_AI_OPERATION_NAME, sc.GEN_AI_REQUEST_MODEL))


def current_user() -> str | None:
    """The end user named in W3C baggage (``myriad.user`` or ``enduser.id``), if any."""
    entries = baggage.get_all()
    if not entries:
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


class InstrumentedGateway:
    """A gateway whose calls are traced and measured (see module docstring)."""

    def __init__(self, gateway: Any, telemetry: Any) -> None:
        self._inner = gateway
        self._tel = telemetry
        self._tracer = telemetry.tracer
        self._m = telemetry.instruments
        self._infos: dict[str, _DeploymentInfo] = {}
        self._defaults: dict[str, str] = {}

    @property
    def wrapped(self) -> Any:
        """The gateway underneath."""
        return self._inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:  # e.g. ``gateway.on_usage = hook`` reaches the gateway
            setattr(self._inner, name, value)

    def for_agent(self, *args: Any, **kwargs: Any) -> Any:
        client = self._inner.for_agent(*args, **kwargs)
        if hasattr(client, "gateway"):
            client.gateway = self  # the agent's calls come back through this wrapper
        body = getattr(client, "_body", None)
        if body is not None:
            # hand the agent our stream directly instead of the client's pass-through
            # generator around it: one generator hop per chunk instead of two
            # (through ``client.gateway`` as it is at call time: an outer wrapper such as
            # metering re-binds it after us and must still see every stream)
            def stream(messages: Any, model: str | None = None, **params: Any) -> AsyncIterator[Any]:
                return client.gateway.chat_stream(body(messages, model, params), tenant=client.tenant,
                                                  agent=client.agent)

            client.stream = stream
        return client

    # -- helpers --------------------------------------------------------------------------
    def _default(self, kind: str) -> str:
        name = self._defaults.get(kind)
        if name is None:
            try:
                name = str(self._inner.default_model(kind))
            except Exception:
                name = "unknown"
            self._defaults[kind] = name
        return name

    def _model_of(self, body: Any) -> str:
        m = body.get("model") if _is_mapping(body) else None
        return m if type(m) is str and m else self._default("chat")

    def _info(self, deployment: str) -> _DeploymentInfo | None:
        info = self._infos.get(deployment)
        if info is None:
            try:
                info = _DeploymentInfo(self._inner.state(deployment).deployment)
            except Exception:  # a gateway without per-deployment state: attributes stay partial
                return None
            self._infos[deployment] = info
        return info

    def _start(self, operation: str, model: str, body: Mapping[str, Any] | None, tenant: str | None,
               agent: str | None, stream: bool = False) -> tuple[Any, dict[str, Any]]:
        attrs = genai.request_attributes(operation, model, body, stream=stream)
        if tenant:
            attrs[sc.MYRIAD_TENANT] = tenant
        if agent:
            attrs[sc.GEN_AI_AGENT_ID] = agent
        user = current_user()
        if user:
            attrs[sc.MYRIAD_USER] = user
        if self._tel.capture_content and body and isinstance(body.get("messages"), list):
            attrs[sc.GEN_AI_INPUT_MESSAGES] = genai.input_messages(body["messages"])
        span = self._tracer.start_span(f"{operation} {model}", kind=SpanKind.CLIENT, attributes=attrs)
        metric_attrs = {sc.GEN_AI_OPERATION_NAME: operation, sc.GEN_AI_REQUEST_MODEL: model}
        return span, metric_attrs

    def _finish(self, span: Any, metric_attrs: dict[str, Any], deployment: str, response_model: str | None,
                usage: Mapping[str, Any] | None, started: float, error: BaseException | None = None) -> None:
        elapsed = time.perf_counter() - started
        info = self._info(deployment) if deployment else None
        if info is not None:
            metric_attrs[sc.GEN_AI_PROVIDER_NAME] = info.provider
            if info.address:
                metric_attrs[sc.SERVER_ADDRESS] = info.address
                metric_attrs[sc.SERVER_PORT] = info.port
        if response_model:
            metric_attrs[sc.GEN_AI_RESPONSE_MODEL] = response_model
        recording = span.is_recording()  # an unsampled span gets no attributes: only the metrics
        if usage:
            tin = int(usage.get("prompt_tokens") or 0)
            tout = int(usage.get("completion_tokens") or 0)
            record = self._m.token_usage.record
            record(tin, {**metric_attrs, sc.GEN_AI_TOKEN_TYPE: "input"})
            if metric_attrs[sc.GEN_AI_OPERATION_NAME] != sc.OP_EMBEDDINGS:
                record(tout, {**metric_attrs, sc.GEN_AI_TOKEN_TYPE: "output"})
        if recording:
            # the start already set operation and request model
            attrs: dict[str, Any] = {k: v for k, v in metric_attrs.items() if k not in _START_KEYS}
            if deployment:
                attrs[sc.MYRIAD_DEPLOYMENT] = deployment
            if usage:
                u = genai.usage_attributes(usage)
                if metric_attrs[sc.GEN_AI_OPERATION_NAME] == sc.OP_EMBEDDINGS:
                    u.pop(sc.GEN_AI_USAGE_OUTPUT_TOKENS, None)
                attrs.update(u)
                if info is not None and info.price is not None:
                    try:
                        attrs[sc.MYRIAD_COST_USD] = float(info.price.cost(
                            u.get(sc.GEN_AI_USAGE_INPUT_TOKENS, 0), u.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS, 0),
                            u.get(sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, 0)))
                    except Exception:
                        pass
            span.set_attributes(attrs)
        if error is not None:
            metric_attrs[sc.ERROR_TYPE] = fail(span, error)
            if metric_attrs[sc.ERROR_TYPE] == "budget_exceeded":
                self._m.budget_refusals.add(1, {sc.GEN_AI_REQUEST_MODEL: metric_attrs[sc.GEN_AI_REQUEST_MODEL]})
        self._m.operation_duration.record(elapsed, metric_attrs)
        span.end()

    # -- the wrapped calls ------------------------------------------------------------------
    async def chat(self, body: Mapping[str, Any], *, tenant: str | None = None, agent: str | None = None) -> Any:
        model = self._model_of(body)
        span, mattrs = self._start(sc.OP_CHAT, model, body if _is_mapping(body) else None, tenant, agent)
        started = time.perf_counter()
        token = context.attach(trace.set_span_in_context(span))
        try:
            result = await self._inner.chat(body, tenant=tenant, agent=agent)
        except BaseException as e:
            context.detach(token)
            self._finish(span, mattrs, "", None, None, started, e)
            raise
        context.detach(token)
        raw = result.raw
        span.set_attributes(genai.response_attributes({"id": raw.get("id"), "choices": raw.get("choices")}))
        if self._tel.capture_content:
            span.set_attribute(sc.GEN_AI_OUTPUT_MESSAGES, genai.output_messages(raw.get("choices") or ()))
        self._finish(span, mattrs, result.deployment, raw.get("model") or model, raw.get("usage"), started)
        return result

    async def chat_stream(self, body: Mapping[str, Any], *, tenant: str | None = None,
                          agent: str | None = None) -> AsyncIterator[Any]:
        model = self._model_of(body)
        span, mattrs = self._start(sc.OP_CHAT, model, body if _is_mapping(body) else None, tenant, agent,
                                   stream=True)
        started = time.perf_counter()
        ctx = trace.set_span_in_context(span)
        want_usage, body = _with_usage(body)
        agen = self._inner.chat_stream(body, tenant=tenant, agent=agent)
        first: float | None = None
        deployment, response_model, response_id = "", None, None
        usage: Mapping[str, Any] | None = None
        reasons: list[str] = []
        texts: list[str] = []
        capture = self._tel.capture_content
        error: BaseException | None = None
        try:
            # The span is current while the gateway picks a deployment and opens the
            # upstream request (all of which happens before the first chunk; no fallback
            # after it), so the injected traceparent names it. It is never current in the
            # consumer's code between chunks, and the per-chunk path stays a few dict reads.
            token = context.attach(ctx)
            try:
                chunk = await agen.__anext__()
            except StopAsyncIteration:
                chunk = None
            finally:
                context.detach(token)
            if chunk is not None:
                first = time.perf_counter() - started
                deployment = chunk.deployment
                response_model = chunk.raw.get("model")
                response_id = chunk.raw.get("id")
                pending: Any = chunk
                anext = agen.__anext__
                last_choices: Any = None
                tail: Any = None
                # per chunk: one dict read and the yield; the finish reasons come from the
                # last chunk with choices, the usage from the usage-only chunk at the end
                last: Any = chunk
                while pending is not None:
                    last = pending
                    choices = pending.raw.get("choices")
                    if choices:
                        last_choices = choices
                        if capture:
                            texts += [((c.get("delta") or {}).get("content")) or "" for c in choices]
                        yield pending
                    else:
                        tail = pending
                        if want_usage:
                            yield pending  # a usage-only chunk we asked for ourselves stays here
                    try:
                        pending = await anext()
                    except StopAsyncIteration:
                        pending = None
                if last_choices:
                    reasons = [c["finish_reason"] for c in last_choices if c.get("finish_reason")]
                usage = (tail.raw.get("usage") if tail is not None else None) or last.raw.get("usage")
        except BaseException as e:
            error = e
            raise
        finally:
            await _aclose(agen)
            if span.is_recording():
                end_attrs: dict[str, Any] = {}
                if first is not None:
                    end_attrs[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = first
                if response_id:
                    end_attrs[sc.GEN_AI_RESPONSE_ID] = str(response_id)
                if reasons:
                    end_attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
                span.set_attributes(end_attrs)
            if capture:
                span.set_attribute(sc.GEN_AI_OUTPUT_MESSAGES, genai.output_messages(
                    [{"message": {"role": "assistant", "content": "".join(texts)},
                      "finish_reason": reasons[-1] if reasons else None}]))
            if isinstance(error, GeneratorExit):
                error = None  # the consumer stopped early: not a failure
            self._finish(span, mattrs, deployment, response_model, usage, started, error)
            if first is not None:  # after _finish: it adds the provider and server to mattrs
                self._m.time_to_first_chunk.record(first, mattrs)

    async def embed(self, texts: list[str], *, model: str | None = None, tenant: str | None = None,
                    agent: str | None = None, dimensions: int | None = None) -> Any:
        name = model or self._default("embedding")
        body = {"dimensions": dimensions} if dimensions else None
        span, mattrs = self._start(sc.OP_EMBEDDINGS, name, None, tenant, agent)
        if body:
            span.set_attribute(sc.GEN_AI_EMBEDDINGS_DIMENSION_COUNT, dimensions)
        started = time.perf_counter()
        token = context.attach(trace.set_span_in_context(span))
        try:
            result = await self._inner.embed(texts, model=model, tenant=tenant, agent=agent, dimensions=dimensions)
        except BaseException as e:
            context.detach(token)
            self._finish(span, mattrs, "", None, None, started, e)
            raise
        context.detach(token)
        usage = result.usage
        self._finish(span, mattrs, result.deployment, result.model,
                     {"prompt_tokens": usage.prompt_tokens, "completion_tokens": 0}, started)
        return result


def _with_usage(body: Any) -> tuple[bool, Any]:
    """Ask the gateway for the usage chunk even when the caller did not (the span needs
    it); returns whether the caller wanted it, and the body to send."""
    if not _is_mapping(body):
        return True, body
    opts = body.get("stream_options")
    if isinstance(opts, Mapping) and opts.get("include_usage"):
        return True, body
    return False, {**body, "stream_options": {**(opts if isinstance(opts, Mapping) else {}), "include_usage": True}}


def _is_mapping(body: Any) -> bool:
    return type(body) is dict or isinstance(body, Mapping)  # the exact-type check skips the ABC machinery


async def _aclose(agen: Any) -> None:
    try:
        await agen.aclose()
    except Exception:
        pass


__all__ = ["InstrumentedGateway", "current_user", "fail"]
