"""Finished ``FastSpan``s to OTLP, in batches, on the export thread.

- ``encode_request(spans, resource, limits)``: an OTLP ``ExportTraceServiceRequest`` as
  protobuf bytes, written directly (no message objects). It is the message the SDK's
  ``encode_spans`` builds for the same spans (same fields, same grouping by resource
  and instrumentation scope, the same span limits): ``tests/telemetry/test_otlp.py``
  parses both and compares them. Encoded attribute pairs are memoised (a model call's
  attributes mostly repeat: operation, model, provider, tenant, server...), so a span
  costs a few dict lookups and one join.
- ``to_readable(span, resource, limits)``: the SDK's own ``ReadableSpan`` for exporters
  and processors that need one (console, extra processors).
- ``FastSpanExporter``: what the SDK's ``BatchSpanProcessor`` exports through. The OTLP
  exporters keep their transport (endpoint, headers, TLS, compression, timeouts,
  retries); only the encoding is replaced: over HTTP the bytes go to the exporter's
  client, over gRPC the request is parsed from the bytes (C code). Any other exporter
  gets ``ReadableSpan``s.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Iterable

log = logging.getLogger("myriad.telemetry")

_pack_d = struct.Struct("<d").pack
_pack_q = struct.Struct("<Q").pack
_pack_i = struct.Struct("<I").pack
_KINDS: dict[Any, bytes] = {}  # API SpanKind -> the OTLP kind field
_FLAGS_HAS_IS_REMOTE = 0x100
_FLAGS_IS_REMOTE = 0x200
_MEMO_MAX = 8192
_DISTINCT_MAX = 256


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (``tag`` is the one-byte key)."""
    return bytes((tag,)) + _varint(len(payload)) + payload


def _any_value(v: Any) -> bytes:
    """AnyValue's bytes, following ``opentelemetry.exporter.otlp.proto.common._encode_value``."""
    if v is None:
        return b""
    if isinstance(v, bool):
        return b"\x10\x01" if v else b"\x10\x00"
    if isinstance(v, str):
        return _field(0x0A, v.encode("utf-8"))
    if isinstance(v, int):
        if not -(1 << 63) <= v < (1 << 63):
            raise ValueError(f"Value out of range: {v}")
        return b"\x18" + _varint(v & 0xFFFFFFFFFFFFFFFF)
    if isinstance(v, float):
        return b"\x21" + _pack_d(v)
    if isinstance(v, bytes):
        return _field(0x3A, v)
    if isinstance(v, Sequence):
        return _field(0x2A, b"".join(_field(0x0A, _any_value(x)) for x in v))
    if isinstance(v, Mapping):
        return _field(0x32, b"".join(_field(0x0A, _key_value(str(k), x)) for k, x in v.items()))
    raise TypeError(f"Invalid type {type(v)} of value {v}")


def _key_value(k: str, v: Any) -> bytes:
    return _field(0x0A, k.encode("utf-8")) + _field(0x12, _any_value(v))


class Encoder:
    """Encodes batches of ``FastSpan``s for one resource (see the module docstring)."""

    def __init__(self, resource: Any, limits: Any = None) -> None:
        self.resource = resource
        self.limits = limits
        # encoded KeyValue fields per value type, keyed (tag, key, value): per type because
        # True == 1 == 1.0 as dict keys
        self._memo: dict[type, dict[tuple[int, str, Any], bytes]] = {str: {}, int: {}, bool: {}, tuple: {}}
        self._distinct: dict[str, int] = {}
        self._unmemoised: set[str] = set()
        """Keys seen with too many distinct values (response ids...): encoded each time."""
        self._prefix: dict[str, bytes] = {}
        self._scopes: dict[Any, tuple[bytes, bytes]] = {}
        attrs = getattr(resource, "attributes", None) or {}
        self._resource = _field(0x0A, self._attributes(attrs, 0x0A))
        schema = getattr(resource, "schema_url", "") or ""
        self._resource_schema = _field(0x1A, schema.encode()) if schema else b""

    # -- attributes ------------------------------------------------------------------
    def _attributes(self, attrs: Mapping[str, Any], tag: int) -> bytes:
        """Each attribute as one ``tag`` field holding a KeyValue, memoised per (key, value)
        for keys with few distinct values."""
        memos = self._memo
        unmemoised = self._unmemoised
        out = []
        for k, v in attrs.items():
            t = type(v)
            if t is float:
                prefix = self._prefix.get(k)
                if prefix is None:
                    prefix = self._prefix[k] = _field(0x0A, k.encode("utf-8")) + b"\x12\x09\x21"
                out.append(bytes((tag, len(prefix) + 8)) + prefix + _pack_d(v) if len(prefix) < 112 else
                           _field(tag, prefix + _pack_d(v)))
                continue
            memo = memos.get(t)
            if memo is not None and k not in unmemoised:
                key = (tag, k, v)
                enc = memo.get(key)
                if enc is not None:
                    out.append(enc)
                    continue
                enc = self._encode(tag, k, v)
                if enc is None:
                    continue
                n = self._distinct.get(k, 0) + 1
                self._distinct[k] = n
                if n > _DISTINCT_MAX:
                    unmemoised.add(k)
                else:
                    if len(memo) >= _MEMO_MAX:
                        memo.clear()
                        self._distinct.clear()
                    try:
                        memo[key] = enc
                    except TypeError:  # a tuple holding something unhashable
                        pass
                out.append(enc)
                continue
            enc = self._encode(tag, k, v)
            if enc is not None:
                out.append(enc)
        return b"".join(out)

    @staticmethod
    def _encode(tag: int, k: str, v: Any) -> bytes | None:
        try:
            return _field(tag, _key_value(k, v))
        except Exception as e:  # as the SDK: one bad attribute is logged and skipped
            log.error("Failed to encode key %s: %s", k, e)
            return None

    def _limited(self, attrs: Mapping[str, Any], count: int | None, length: int | None) -> tuple[Mapping[str, Any], int]:
        if (count is None or len(attrs) <= count) and length is None:
            return attrs, 0
        from opentelemetry.attributes import BoundedAttributes

        bounded = BoundedAttributes(count, attrs, immutable=True, max_value_len=length)
        return bounded._dict, bounded.dropped

    def _scope(self, scope: Any) -> tuple[bytes, bytes]:
        """(the ScopeSpans' scope field, its schema_url field) for ``scope``."""
        enc = self._scopes.get(scope)
        if enc is None:
            body = b""
            if scope is not None:
                if scope.name:
                    body += _field(0x0A, scope.name.encode())
                if scope.version:
                    body += _field(0x12, scope.version.encode())
                if scope.attributes:
                    body += self._attributes(scope.attributes, 0x1A)
            schema = scope.schema_url if scope is not None else None
            enc = self._scopes[scope] = (_field(0x0A, body), _field(0x1A, schema.encode()) if schema else b"")
        return enc

    # -- spans -----------------------------------------------------------------------
    def span(self, s: Any) -> bytes:
        limits = self.limits
        parts = [b"\x0a\x10", s.trace_id.to_bytes(16, "big"), b"\x12\x08", s.span_id.to_bytes(8, "big")]
        state = s.trace_state
        if state:
            parts.append(_field(0x1A, ",".join(f"{k}={v}" for k, v in state.items()).encode()))
        parent = s.parent
        if parent is not None:
            parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
        kind = _KINDS.get(s.kind)
        if kind is None:
            kind = _KINDS[s.kind] = bytes((0x30, s.kind.value + 1))
        parts += (_field(0x2A, s.name.encode("utf-8")) if s.name else b"", kind,
                  b"\x39", _pack_q(s.start_time), b"\x41", _pack_q(s.end_time or 0))
        attrs, dropped = s.attributes, 0
        if limits is not None:
            attrs, dropped = self._limited(attrs, limits.max_span_attributes, limits.max_span_attribute_length)
        if attrs:
            parts.append(self._attributes(attrs, 0x4A))
        if dropped:
            parts += (b"\x50", _varint(dropped))
        events, dropped_events = s.events or (), 0
        if limits is not None and limits.max_events is not None and len(events) > limits.max_events:
            dropped_events = len(events) - limits.max_events
            events = events[dropped_events:]
        for name, ts, eattrs in events:
            body = b"\x09" + _pack_q(ts) + (_field(0x12, name.encode()) if name else b"")
            edropped = 0
            if limits is not None:
                eattrs, edropped = self._limited(eattrs, limits.max_event_attributes, limits.max_attribute_length)
            if eattrs:
                body += self._attributes(eattrs, 0x1A)
            if edropped:
                body += b"\x20" + _varint(edropped)
            parts.append(_field(0x5A, body))
        if dropped_events:
            parts += (b"\x60", _varint(dropped_events))
        links, dropped_links = s.links, 0
        if limits is not None and limits.max_links is not None and len(links) > limits.max_links:
            dropped_links = len(links) - limits.max_links
            links = links[dropped_links:]
        for link in links:
            ctx = link.context
            body = b"\x0a\x10" + ctx.trace_id.to_bytes(16, "big") + b"\x12\x08" + ctx.span_id.to_bytes(8, "big")
            lattrs = link.attributes or {}
            if lattrs:
                body += self._attributes(lattrs, 0x22)
            body += b"\x35" + _pack_i(_FLAGS_HAS_IS_REMOTE | (_FLAGS_IS_REMOTE if ctx.is_remote else 0))
            parts.append(_field(0x6A, body))
        if dropped_links:
            parts += (b"\x70", _varint(dropped_links))
        code = s.status_code.value
        status = (_field(0x12, s.description.encode()) if s.description else b"") + (
            b"\x18" + bytes((code,)) if code else b"")
        parts += (_field(0x7A, status), b"\x85\x01",
                  _pack_i(_FLAGS_HAS_IS_REMOTE | (_FLAGS_IS_REMOTE if parent is not None and parent.is_remote else 0)))
        return b"".join(parts)

    def request(self, spans: Iterable[Any]) -> bytes:
        """An ``ExportTraceServiceRequest`` holding ``spans`` (one resource, grouped by scope)."""
        by_scope: dict[Any, list[bytes]] = {}
        for s in spans:
            try:
                enc = self.span(s)
            except Exception as e:  # a span that cannot be encoded must not lose the batch
                log.error("Failed to encode span %r: %s", getattr(s, "name", s), e)
                continue
            by_scope.setdefault(s.scope, []).append(_field(0x12, enc))
        scope_spans = b"".join(_field(0x12, head + b"".join(encs) + tail)
                               for head, tail, encs in ((*self._scope(scope), encs) for scope, encs in by_scope.items()))
        return _field(0x0A, self._resource + scope_spans + self._resource_schema) if by_scope else b""


def to_readable(s: Any, resource: Any, limits: Any = None) -> Any:
    """The SDK's ``ReadableSpan`` for a finished ``FastSpan``."""
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util import BoundedList
    from opentelemetry.trace import Status

    count = limits.max_span_attributes if limits is not None else None
    length = limits.max_span_attribute_length if limits is not None else None
    events: Sequence[Any] = [Event(name, BoundedAttributes(limits.max_event_attributes if limits is not None else None, attrs,
                                            immutable=True,
                                            max_value_len=limits.max_attribute_length if limits is not None else None),
                    ts)
              for name, ts, attrs in (s.events or ())]
    links: Sequence[Any] = list(s.links)
    if limits is not None:
        events = BoundedList.from_seq(limits.max_events, events)
        links = BoundedList.from_seq(limits.max_links, links)
    return ReadableSpan(
        name=s.name, context=s.get_span_context(), parent=s.parent, resource=resource,
        attributes=BoundedAttributes(count, s.attributes, immutable=True, max_value_len=length),
        events=events, links=links, kind=s.kind, status=Status(s.status_code, s.description),
        start_time=s.start_time, end_time=s.end_time, instrumentation_scope=s.scope,
    )


class FastSpanExporter:
    """A ``SpanExporter`` over ``FastSpan``s that wraps an SDK exporter (module docstring)."""

    def __init__(self, inner: Any, resource: Any, limits: Any = None) -> None:
        self.inner = inner
        self.resource = resource
        self.limits = limits
        self.encoder = Encoder(resource, limits)
        self._mode = "readable"
        mod = type(inner).__module__
        if mod.startswith("opentelemetry.exporter.otlp.proto.http") and hasattr(inner, "_client") and hasattr(
                inner, "_metrics"):
            self._mode = "http"
        elif mod.startswith("opentelemetry.exporter.otlp.proto.grpc") and hasattr(inner, "_translate_data"):
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

            parse = ExportTraceServiceRequest.FromString
            encode = self.encoder.request
            inner._translate_data = lambda data: parse(encode(data))
            self._mode = "grpc"

    def export(self, spans: Sequence[Any]) -> Any:
        if self._mode == "grpc":
            return self.inner.export(spans)
        if self._mode == "http":
            return self._export_http(spans)
        return self.inner.export([to_readable(s, self.resource, self.limits) for s in spans])

    def _export_http(self, spans: Sequence[Any]) -> Any:
        """The HTTP exporter's ``export`` with our encoding (its client does the transport)."""
        from opentelemetry.exporter.otlp.proto.http._common import _is_request_too_large
        from opentelemetry.sdk.trace.export import SpanExportResult

        inner = self.inner
        if inner._shutdown:
            log.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with inner._metrics.export_operation(len(spans)) as result:
            data = self.encoder.request(spans)
            if _is_request_too_large(data, inner._max_request_size):
                log.warning("Dropping span batch: serialized size %d bytes exceeds max_request_size %d bytes.",
                            len(data), inner._max_request_size)
                result.error = ValueError("span batch too large")
                return SpanExportResult.FAILURE
            out = inner._client.export(data)
            if not out.success:
                result.error = out.error
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self, *args: Any, **kwargs: Any) -> None:
        self.inner.shutdown(*args, **kwargs)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


__all__ = ["Encoder", "FastSpanExporter", "to_readable"]
