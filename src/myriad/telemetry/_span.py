"""Spans as plain slotted records: Myriad's own implementation of the OpenTelemetry
API's ``Tracer`` and ``Span``.

The stock SDK span costs ~25-50 us to start and end on this machine (sampler result
objects, a lock, bounded attribute containers, a readable-span copy and every
processor's ``on_end``, all on the request path). A ``FastSpan`` is one slotted object
holding what the span is: start/end in ns, name, kind, its ids and its parent's
context, a plain attribute dict, events, status. ``end()`` appends it to a queue and
returns; everything else (the local store, conversion into OTLP, export) happens in
batches on the ``SpanPump`` thread (``_pump.py``), off the request path.

It is still an OpenTelemetry span where it matters:

- it subclasses the API's ``Span``, so ``trace.set_span_in_context``,
  ``trace.use_span``, ``get_current_span``, W3C propagation and log correlation see
  it as any other span;
- ids, trace flags (sampled, random-trace-id) and trace state are what the SDK's
  tracer would give, and the configured SDK sampler decides (the common samplers are
  evaluated inline, any other one is called as the SDK calls it);
- attributes set through the public API are cleaned as the SDK cleans them
  (``set_attribute`` drops invalid values, sequences become tuples); the configured
  span limits are applied when a span is converted for an exporter (``_otlp.py``).
  Attributes that telemetry builds itself from known types go in without the check
  (``_fast.put``).

``FastTracerProvider`` is what ``setup_telemetry`` installs (globally too, for
``myriad serve``), so the tools' and sandbox hooks' spans, and any other code using the
API's global tracer, are fast spans as well.
"""

from __future__ import annotations

import logging
import random
import threading
import traceback
from collections import deque
from time import time_ns
from typing import Any, Callable, Iterator, Mapping, Sequence

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.attributes import _clean_attribute_value
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation import _SPAN_KEY  # the context key the API keeps the current span under
from opentelemetry.trace.span import DEFAULT_TRACE_STATE
from opentelemetry.util._decorator import _agnosticcontextmanager

log = logging.getLogger("myriad.telemetry")

_SAMPLED = TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
_SAMPLED_PLAIN = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.RANDOM_TRACE_ID)
_NOT_SAMPLED_PLAIN = TraceFlags(TraceFlags.DEFAULT)
_get_value = context_api.get_value
_new_context = tuple.__new__


def _span_context(trace_id: int, span_id: int, flags: TraceFlags, state: Any) -> SpanContext:
    """A ``SpanContext`` for ids we generated (valid by construction), without the
    constructor's range checks."""
    ctx: SpanContext = _new_context(SpanContext, (trace_id, span_id, False, flags, state, True))
    return ctx


def clean_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Attributes from outside as the SDK keeps them: invalid keys and values dropped,
    sequences as tuples (``opentelemetry.attributes`` rules, no length limit here)."""
    out: dict[str, Any] = {}
    if not attributes:
        return out
    for k, v in attributes.items():
        if not k or not isinstance(k, str):
            log.warning("invalid attribute key %r dropped", k)
            continue
        c = _clean(v)
        if c is not None:
            out[k] = c
    return out


def _clean(value: Any) -> Any:
    t = type(value)
    if t is str or t is int or t is float or t is bool:
        return value
    return _clean_attribute_value(value, None)


class FastSpan(trace_api.Span):
    """A recording span as a plain record (see the module docstring)."""

    __slots__ = ("name", "trace_id", "span_id", "flags", "trace_state", "parent", "kind", "start_time",
                 "end_time", "attributes", "events", "links", "status_code", "description", "scope", "_sink",
                 "_ctx", "_record_exception", "_set_status_on_exception")

    def __init__(self, name: str, trace_id: int, span_id: int, flags: TraceFlags, trace_state: Any,
                 parent: SpanContext | None, kind: SpanKind, attributes: dict[str, Any], links: tuple[Link, ...],
                 scope: Any, sink: Callable[["FastSpan"], None], start_time: int | None = None,
                 record_exception: bool = True, set_status_on_exception: bool = True) -> None:
        self.name = name
        self.trace_id = trace_id
        self.span_id = span_id
        self.flags = flags
        self.trace_state = trace_state
        self.parent = parent
        """The parent's ``SpanContext`` (None for a root span)."""
        self.kind = kind
        self.start_time = start_time if start_time is not None else time_ns()
        self.end_time: int | None = None
        self.attributes = attributes
        self.events: list[tuple[str, int, dict[str, Any]]] | None = None
        """(name, time in ns, attributes) per event."""
        self.links = links
        self.status_code = StatusCode.UNSET
        self.description: str | None = None
        """The status description (kept only for ERROR, as the SDK does)."""
        self.scope = scope
        self._sink: Callable[[FastSpan], None] | None = sink
        self._ctx: SpanContext | None = None
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception

    @property
    def context(self) -> SpanContext:
        return self.get_span_context()

    # -- the API's Span --------------------------------------------------------------
    def get_span_context(self) -> SpanContext:
        ctx = self._ctx
        if ctx is None:
            ctx = self._ctx = _span_context(self.trace_id, self.span_id, self.flags, self.trace_state)
        return ctx

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            log.warning("Calling end() on an ended span.")
            return
        self.end_time = end_time if end_time is not None else time_ns()
        sink = self._sink
        self._sink = None
        if sink is not None:
            sink(self)

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self.end_time is not None:
            log.warning("Setting attribute on ended span.")
            return
        self.attributes.update(clean_attributes(attributes))

    def set_attribute(self, key: str, value: Any) -> None:
        if self.end_time is not None:
            log.warning("Setting attribute on ended span.")
            return
        if not key or not isinstance(key, str):
            log.warning("invalid attribute key %r dropped", key)
            return
        c = _clean(value)
        if c is not None:
            self.attributes[key] = c

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None,
                  timestamp: int | None = None) -> None:
        if self.end_time is not None:
            return
        if self.events is None:
            self.events = []
        self.events.append((name, timestamp if timestamp is not None else time_ns(), clean_attributes(attributes)))

    def add_link(self, context: SpanContext, attributes: Mapping[str, Any] | None = None) -> None:
        if self.end_time is not None or context is None or not context.is_valid:
            return
        self.links = (*self.links, Link(context, clean_attributes(attributes)))

    def update_name(self, name: str) -> None:
        if self.end_time is None:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.end_time is not None or self.status_code is StatusCode.OK:
            return  # OK is final (as in the SDK)
        if isinstance(status, Status):
            code, description = status.status_code, status.description
        else:
            code = status
        if code is StatusCode.UNSET:
            return
        self.status_code = code
        self.description = description if code is StatusCode.ERROR else None

    def record_exception(self, exception: BaseException, attributes: Mapping[str, Any] | None = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        attrs: dict[str, Any] = {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            attrs.update(attributes)
        self.add_event("exception", attrs, timestamp)

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        if exc_val is not None and self.end_time is None:
            if self._record_exception:
                self.record_exception(exc_val, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{exc_type.__name__}: {exc_val}"))
        self.end()

    def __repr__(self) -> str:
        return f"FastSpan({self.name!r}, trace_id=0x{self.trace_id:032x}, span_id=0x{self.span_id:016x})"


def _decider(sampler: Any) -> Callable[[SpanContext | None, int], bool] | None:
    """An inline sampling decision equal to ``sampler``'s, for the SDK's built-in
    samplers; None for any other sampler (it is then called as the SDK calls it)."""
    try:
        from opentelemetry.sdk.trace import sampling
    except ImportError:  # pragma: no cover - the SDK is there whenever a provider is built
        return None
    if isinstance(sampler, sampling.StaticSampler):
        if sampler._decision is sampling.Decision.RECORD_AND_SAMPLE:
            return lambda parent, trace_id: True
        if sampler._decision is sampling.Decision.DROP:
            return lambda parent, trace_id: False
        return None
    if type(sampler) is sampling.TraceIdRatioBased:
        bound, limit = sampler.bound, sampler.TRACE_ID_LIMIT
        return lambda parent, trace_id: trace_id & limit < bound
    if type(sampler) is sampling.ParentBased:
        parts = [_decider(s) for s in (sampler._root, sampler._remote_parent_sampled,
                                       sampler._remote_parent_not_sampled, sampler._local_parent_sampled,
                                       sampler._local_parent_not_sampled)]
        if any(p is None for p in parts):
            return None
        root, rs, rns, ls, lns = parts

        def parent_based(parent: SpanContext | None, trace_id: int) -> bool:
            if parent is None:
                return root(parent, trace_id)  # type: ignore[misc]
            if parent.is_remote:
                return (rs if parent.trace_flags.sampled else rns)(parent, trace_id)  # type: ignore[misc]
            return (ls if parent.trace_flags.sampled else lns)(parent, trace_id)  # type: ignore[misc]

        return parent_based
    return None


class FastTracer(trace_api.Tracer):
    """Starts ``FastSpan``s (see the module docstring); one per instrumentation scope."""

    def __init__(self, provider: "FastTracerProvider", scope: Any) -> None:
        self._provider = provider
        self.scope = scope
        self._sink = provider.queue.append
        self._decide = provider.decide
        self._sampler = provider.sampler

    def start_span(self, name: str, context: Any = None, kind: SpanKind = SpanKind.INTERNAL,
                   attributes: Mapping[str, Any] | None = None, links: Sequence[Link] | None = (),
                   start_time: int | None = None, record_exception: bool = True,
                   set_status_on_exception: bool = True) -> trace_api.Span:
        return self._start(name, kind, clean_attributes(attributes) if attributes else {}, context,
                           tuple(links or ()), start_time, record_exception, set_status_on_exception)

    def start_trusted(self, name: str, kind: SpanKind, attributes: dict[str, Any], context: Any = None
                      ) -> trace_api.Span:
        """``start_span`` for attributes telemetry built itself from known types: taken as
        they are (the dict is the span's from now on)."""
        return self._start(name, kind, attributes, context, (), None, True, True)

    def _start(self, name: str, kind: SpanKind, attributes: dict[str, Any], context: Any,
               links: tuple[Link, ...], start_time: int | None, record_exception: bool,
               set_status_on_exception: bool) -> trace_api.Span:
        current: Any = _get_value(_SPAN_KEY, context)
        parent = current.get_span_context() if current is not None else None
        if parent is not None and not parent.is_valid:
            parent = None
        if parent is None:
            trace_id = random.getrandbits(128)
            while not trace_id:
                trace_id = random.getrandbits(128)
            state = DEFAULT_TRACE_STATE
            randomized = True
        else:
            trace_id = parent.trace_id
            state = parent.trace_state
            randomized = parent.trace_flags.random_trace_id
        span_id = random.getrandbits(64)
        while not span_id:
            span_id = random.getrandbits(64)
        decide = self._decide
        if decide is not None:
            sampled = recording = decide(parent, trace_id)
        else:
            result = self._sampler.should_sample(context, trace_id, name, kind, attributes or None, links)
            sampled = result.decision.is_sampled()
            recording = result.decision.is_recording()
            state = result.trace_state if result.trace_state is not None else DEFAULT_TRACE_STATE
            if result.attributes:
                attributes = {**attributes, **result.attributes}
        if sampled:
            flags = _SAMPLED if randomized else _SAMPLED_PLAIN
        else:
            flags = _NOT_SAMPLED if randomized else _NOT_SAMPLED_PLAIN
        if not recording:
            return NonRecordingSpan(_span_context(trace_id, span_id, flags, state))
        return FastSpan(name, trace_id, span_id, flags, state, parent, kind, attributes, links, self.scope,
                        self._sink, start_time, record_exception, set_status_on_exception)

    @_agnosticcontextmanager
    def start_as_current_span(self, name: str, context: Any = None, kind: SpanKind = SpanKind.INTERNAL,
                              attributes: Mapping[str, Any] | None = None, links: Sequence[Link] | None = (),
                              start_time: int | None = None, record_exception: bool = True,
                              set_status_on_exception: bool = True, end_on_exit: bool = True
                              ) -> Iterator[trace_api.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time, record_exception,
                               set_status_on_exception)
        with trace_api.use_span(span, end_on_exit=end_on_exit, record_exception=record_exception,
                                set_status_on_exception=set_status_on_exception) as s:
            yield s


class FastTracerProvider(trace_api.TracerProvider):
    """Hands out ``FastTracer``s; finished spans go to ``queue`` (drained by the
    ``SpanPump``). ``resource`` and ``sampler`` are the SDK's objects."""

    def __init__(self, resource: Any, sampler: Any, queue: deque[FastSpan] | None = None) -> None:
        self.resource = resource
        self.sampler = sampler
        self.decide = _decider(sampler)
        self.queue: deque[FastSpan] = queue if queue is not None else deque()
        self.pump: Any = None
        """The ``SpanPump`` draining ``queue`` (set by ``setup_telemetry``)."""
        self._tracers: dict[tuple[str, str | None, str | None], FastTracer] = {}
        self._lock = threading.Lock()

    def get_tracer(self, instrumenting_module_name: str, instrumenting_library_version: str | None = None,
                   schema_url: str | None = None, attributes: Mapping[str, Any] | None = None) -> FastTracer:
        key = (instrumenting_module_name, instrumenting_library_version, schema_url)
        tracer = self._tracers.get(key)
        if tracer is None:
            from opentelemetry.sdk.util.instrumentation import InstrumentationScope

            with self._lock:
                tracer = self._tracers.get(key)
                if tracer is None:
                    scope = InstrumentationScope(instrumenting_module_name, instrumenting_library_version,
                                                 schema_url, attributes)
                    tracer = self._tracers[key] = FastTracer(self, scope)
        return tracer

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.pump.force_flush(timeout_millis) if self.pump is not None else True

    def shutdown(self) -> None:
        if self.pump is not None:
            self.pump.shutdown()


__all__ = ["FastSpan", "FastTracer", "FastTracerProvider", "clean_attributes"]
