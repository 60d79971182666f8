"""The bounded, in-process telemetry store behind the dashboard.

``TelemetryStore`` is an OpenTelemetry ``SpanProcessor``: ``on_end`` appends the
finished span to a ring (oldest dropped first) and indexes it by trace, and folds
model-call spans into per-minute token and cost rollups that outlive the ring. It
also keeps recent warnings and errors from the ``logging`` module, correlated by
trace id. Everything is memory-bounded by construction; ``on_end`` does O(1) work
and no I/O, so keeping the store costs a turn almost nothing.

Queries (``turns``, ``trace``, ``usage_series``, ``errors``, ``sandboxes``) are
tenant-scoped: a span is visible to a tenant when it or a span of its trace carries
that tenant's ``myriad.tenant`` attribute, and spans stamped with another tenant are
never returned.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, NamedTuple

from myriad.telemetry import semconv as sc
from myriad.telemetry._redact import redact_text

_USAGE_OPS = {sc.OP_CHAT, sc.OP_EMBEDDINGS}
_KINDS = {0: "INTERNAL", 1: "SERVER", 2: "CLIENT", 3: "PRODUCER", 4: "CONSUMER"}


class SpanRecord(NamedTuple):
    """A finished span as the store keeps it: atomic values only, so the garbage
    collector untracks it (thousands of retained SDK span objects made every full
    collection walk a large graph, which cost each turn)."""

    name: str
    trace_id: int
    span_id: int
    parent_id: int
    """0 for a root span."""
    kind: str
    start: int
    end: int
    ok: bool
    """False when the span's status is ERROR."""
    error: str | None
    attributes: dict[str, Any]
    events: tuple[tuple[str, int, dict[str, Any]], ...]


def _record(span: Any) -> SpanRecord:
    ctx = span.context
    parent = span.parent
    status = span.status
    # the SDK's own attribute dict when reachable: a C-speed copy instead of a walk through
    # the read-only proxy and the locked BoundedAttributes (4x faster); public API otherwise
    raw = getattr(getattr(span, "_attributes", None), "_dict", None)
    attrs = dict(raw) if raw is not None else dict(span.attributes or {})
    events = getattr(span, "_events", None)
    if events is None:
        events = span.events
    return SpanRecord(
        span.name, ctx.trace_id, ctx.span_id, parent.span_id if parent is not None else 0,
        _KINDS.get(span.kind.value, "INTERNAL") if span.kind is not None else "INTERNAL",
        span.start_time or 0, span.end_time or 0, status.is_ok, status.description, attrs,
        tuple((e.name, e.timestamp, dict(e.attributes or {})) for e in events) if events else (),
    )


def _fast_record(s: Any) -> SpanRecord:
    events = s.events
    return SpanRecord(s.name, s.trace_id, s.span_id, s.parent.span_id if s.parent is not None else 0,
                      _KINDS.get(s.kind.value, "INTERNAL"), s.start_time, s.end_time or 0,
                      s.status_code.value != 2, s.description, s.attributes, tuple(events) if events else ())


_GROUP_KEYS = {"tenant": 0, "user": 1, "agent": 2, "model": 3}


def _hex_trace(tid: int) -> str:
    return format(tid, "032x")


def _hex_span(sid: int) -> str:
    return format(sid, "016x")


class TelemetryStore:
    """Recent spans, rollups and log records, in memory. Implements ``SpanProcessor``."""

    def __init__(self, max_spans: int = 5000, rollup_minutes: int = 1440, max_logs: int = 500,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_spans = max(10, max_spans)
        self.rollup_minutes = max(1, rollup_minutes)
        self._clock = clock
        self._lock = threading.Lock()
        self._spans: deque[Any] = deque()
        self._by_trace: dict[int, list[Any]] = {}
        self._errors: deque[Any] = deque(maxlen=500)
        self._logs: deque[dict[str, Any]] = deque(maxlen=max_logs)
        # minute -> {(tenant, user, agent, model): [calls, input_tokens, output_tokens, cost_usd]}
        self._rollups: dict[int, dict[tuple[str, str, str, str], list[float]]] = {}
        self.seen = 0
        self.evicted = 0
        self.resource: Any = None
        """The resource of the spans seen (one per process)."""
        self.live_sandboxes: Callable[[], dict[str, int]] | None = None
        """Set by the sandbox room: live sandboxes per tier, for the dashboard and gauges."""
        self.syncer: Callable[[], Any] | None = None
        """Moves spans waiting in the span pump here (set by ``setup_telemetry``)."""

    # -- SpanProcessor -----------------------------------------------------------------
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def _on_ending(self, span: Any) -> None:  # SDK >= 1.33 calls this on some processors
        pass

    def on_end(self, span: Any) -> None:
        rec = _record(span)
        if self.resource is None:
            self.resource = span.resource
        with self._lock:
            self._add(rec)

    def add_spans(self, spans: Iterable[Any]) -> None:
        """Keep finished ``FastSpan``s (the span pump hands them over in batches)."""
        recs = [_fast_record(s) for s in spans]
        with self._lock:
            for rec in recs:
                self._add(rec)

    def sync(self) -> None:
        """Take in every span finished so far (queries call this first: the pump moves spans
        here in batches, off the request path)."""
        syncer = self.syncer
        if syncer is not None:
            syncer()

    def _add(self, rec: SpanRecord) -> None:
        self.seen += 1
        if len(self._spans) >= self.max_spans:
            old = self._spans.popleft()
            self.evicted += 1
            lst = self._by_trace.get(old.trace_id)
            if lst:
                lst.remove(old) if lst[0] is not old else lst.pop(0)
                if not lst:
                    del self._by_trace[old.trace_id]
        self._spans.append(rec)
        tid = rec.trace_id
        lst = self._by_trace.get(tid)
        if lst is None:
            self._by_trace[tid] = [rec]
        else:
            lst.append(rec)
        if not rec.ok:
            self._errors.append(rec)
        if rec.attributes.get(sc.GEN_AI_OPERATION_NAME) in _USAGE_OPS:
            self._roll(rec, rec.attributes)

    def _roll(self, span: Any, attrs: Any) -> None:
        minute = int((span.end or time.time_ns()) // 60_000_000_000)
        bucket = self._rollups.get(minute)
        if bucket is None:
            bucket = self._rollups[minute] = {}
            floor = minute - self.rollup_minutes
            for m in [m for m in self._rollups if m <= floor]:
                del self._rollups[m]
        key = (str(attrs.get(sc.MYRIAD_TENANT, "")), str(attrs.get(sc.MYRIAD_USER, "")),
               str(attrs.get(sc.GEN_AI_AGENT_ID, "")),
               str(attrs.get(sc.GEN_AI_REQUEST_MODEL, attrs.get(sc.GEN_AI_RESPONSE_MODEL, ""))))
        row = bucket.get(key)
        if row is None:
            row = bucket[key] = [0, 0, 0, 0.0]
        row[0] += 1
        row[1] += int(attrs.get(sc.GEN_AI_USAGE_INPUT_TOKENS, 0) or 0)
        row[2] += int(attrs.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS, 0) or 0)
        row[3] += float(attrs.get(sc.MYRIAD_COST_USD, 0.0) or 0.0)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    # -- logs ----------------------------------------------------------------------------
    def log_handler(self, level: int = logging.WARNING) -> logging.Handler:
        """A ``logging`` handler that keeps recent records (with their trace ids) here."""
        return _StoreLogHandler(self, level)

    def add_log(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break logging
            message = str(record.msg)
        self._logs.append({
            "time": record.created, "level": record.levelname, "logger": record.name,
            "message": redact_text(message)[:2000],
            "trace_id": getattr(record, "otelTraceID", "0") or "0",
            "span_id": getattr(record, "otelSpanID", "0") or "0",
        })

    # -- queries -------------------------------------------------------------------------
    def _snapshot(self) -> list[Any]:
        self.sync()
        with self._lock:
            return list(self._spans)

    def _trace_spans(self, tid: int) -> list[Any]:
        self.sync()
        with self._lock:
            return list(self._by_trace.get(tid, ()))

    @staticmethod
    def _tenant_ok(span: Any, tenant: str | None) -> bool:
        if tenant is None:
            return True
        t = span.attributes.get(sc.MYRIAD_TENANT)
        return t is None or t == tenant

    def _visible_trace(self, spans: list[Any], tenant: str | None) -> bool:
        if tenant is None:
            return True
        return any(s.attributes.get(sc.MYRIAD_TENANT) == tenant for s in spans)

    def spans(self, name_prefix: str = "", tenant: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Recent finished spans (newest first) whose name starts with ``name_prefix``."""
        out = []
        for s in reversed(self._snapshot()):
            if s.name.startswith(name_prefix) and (tenant is None or
                                                   s.attributes.get(sc.MYRIAD_TENANT) == tenant):
                out.append(span_dict(s))
                if len(out) >= limit:
                    break
        return out

    def turns(self, tenant: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Recent ``invoke_agent`` spans, newest first, with their trace's model usage."""
        out = []
        for s in reversed(self._snapshot()):
            attrs = s.attributes or {}
            if attrs.get(sc.GEN_AI_OPERATION_NAME) != sc.OP_INVOKE_AGENT:
                continue
            if tenant is not None and attrs.get(sc.MYRIAD_TENANT) != tenant:
                continue
            d = span_dict(s)
            calls = inp = outp = 0
            cost = 0.0
            in_trace = self._trace_spans(s.trace_id)
            for c in in_trace:
                ca = c.attributes or {}
                if ca.get(sc.GEN_AI_OPERATION_NAME) in _USAGE_OPS and _descends(c, s, in_trace):
                    calls += 1
                    inp += int(ca.get(sc.GEN_AI_USAGE_INPUT_TOKENS, 0) or 0)
                    outp += int(ca.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS, 0) or 0)
                    cost += float(ca.get(sc.MYRIAD_COST_USD, 0.0) or 0.0)
            d.update(model_calls=calls, input_tokens=inp, output_tokens=outp, cost_usd=round(cost, 9),
                     agent=attrs.get(sc.GEN_AI_AGENT_NAME), agent_id=attrs.get(sc.GEN_AI_AGENT_ID))
            out.append(d)
            if len(out) >= limit:
                break
        return out

    def trace(self, trace_id: str, tenant: str | None = None) -> list[dict[str, Any]] | None:
        """Every stored span of a trace, by start time; None when unknown or not the tenant's."""
        try:
            tid = int(trace_id, 16)
        except ValueError:
            return None
        spans = self._trace_spans(tid)
        if not spans or not self._visible_trace(spans, tenant):
            return None
        return [span_dict(s) for s in sorted(spans, key=lambda s: s.start) if self._tenant_ok(s, tenant)]

    def usage_series(self, tenant: str | None = None, by: str = "model", bucket_minutes: int = 1,
                     since_minutes: int = 60) -> dict[str, Any]:
        """Calls, tokens and cost per ``bucket_minutes`` for the last ``since_minutes``,
        grouped by ``tenant``, ``user``, ``agent`` or ``model``."""
        if by not in _GROUP_KEYS:
            raise ValueError(f"by must be one of {', '.join(_GROUP_KEYS)}, got {by!r}")
        idx = _GROUP_KEYS[by]
        bucket_minutes = max(1, bucket_minutes)
        now_min = int(self._clock() // 60)
        first = now_min - since_minutes + 1
        first -= first % bucket_minutes
        self.sync()
        with self._lock:
            items = [(m, dict(b)) for m, b in self._rollups.items() if m >= first]
        groups: dict[str, dict[int, list[float]]] = {}
        for minute, bucket in items:
            b = minute - minute % bucket_minutes
            for key, row in bucket.items():
                if tenant is not None and key[0] != tenant:
                    continue
                g = groups.setdefault(key[idx] or "(none)", {})
                acc = g.setdefault(b, [0, 0, 0, 0.0])
                for i in range(4):
                    acc[i] += row[i]
        buckets = list(range(first, now_min + 1, bucket_minutes))
        series = []
        for name, rows in sorted(groups.items()):
            points = [{"t": b * 60, "calls": int(r[0]), "input_tokens": int(r[1]), "output_tokens": int(r[2]),
                       "cost_usd": round(r[3], 9)} for b in buckets for r in [rows.get(b, [0, 0, 0, 0.0])]]
            series.append({"key": name, "points": points,
                           "total_tokens": sum(p["input_tokens"] + p["output_tokens"] for p in points),
                           "cost_usd": round(sum(p["cost_usd"] for p in points), 9)})
        return {"by": by, "bucket_seconds": bucket_minutes * 60, "buckets": [b * 60 for b in buckets],
                "series": series}

    def errors(self, tenant: str | None = None, limit: int = 50) -> dict[str, Any]:
        """Recent failed spans and warnings/errors logged inside this tenant's traces."""
        spans = []
        self.sync()
        for s in reversed(list(self._errors)):
            if tenant is None or s.attributes.get(sc.MYRIAD_TENANT) == tenant or self._visible_trace(
                    self._trace_spans(s.trace_id), tenant):
                spans.append(span_dict(s))
                if len(spans) >= limit:
                    break
        logs = []
        for rec in reversed(list(self._logs)):
            tid = rec["trace_id"]
            if tenant is not None:
                if tid in ("0", "") or not self._visible_trace(self._trace_spans(int(tid, 16)), tenant):
                    continue
            logs.append(rec)
            if len(logs) >= limit:
                break
        return {"spans": spans, "logs": logs}

    def sandboxes(self, tenant: str | None = None) -> dict[str, Any]:
        """Per sandbox tier: runs, errors and duration percentiles of tool and sandbox spans."""
        tiers: dict[str, list[Any]] = {}
        for s in self._snapshot():
            attrs = s.attributes or {}
            tier = attrs.get(sc.MYRIAD_SANDBOX_TIER)
            if tier is None or (tenant is not None and attrs.get(sc.MYRIAD_TENANT) != tenant):
                continue
            tiers.setdefault(str(tier), []).append(s)
        live = {}
        if self.live_sandboxes is not None:
            try:
                live = dict(self.live_sandboxes())
            except Exception:  # a broken gauge must not break the dashboard
                live = {}
        out = {}
        for tier in sorted(set(tiers) | set(live)):
            spans = tiers.get(tier, [])
            durs = sorted((s.end - s.start) / 1e6 for s in spans)
            out[tier] = {"runs": len(spans), "errors": sum(not s.ok for s in spans),
                         "p50_ms": _pct(durs, 50), "p95_ms": _pct(durs, 95), "live": live.get(tier, 0)}
        return out

    def stats(self) -> dict[str, Any]:
        self.sync()
        with self._lock:
            return {"spans": len(self._spans), "traces": len(self._by_trace), "seen": self.seen,
                    "evicted": self.evicted, "max_spans": self.max_spans, "logs": len(self._logs)}


class _StoreLogHandler(logging.Handler):
    def __init__(self, store: TelemetryStore, level: int) -> None:
        super().__init__(level)
        self.store = store

    def emit(self, record: logging.LogRecord) -> None:
        self.store.add_log(record)


def _descends(child: SpanRecord, ancestor: SpanRecord, spans: Iterable[SpanRecord]) -> bool:
    by_id = {s.span_id: s for s in spans}
    p = child.parent_id
    for _ in range(64):
        if not p:
            return False
        if p == ancestor.span_id:
            return True
        nxt = by_id.get(p)
        p = nxt.parent_id if nxt is not None else 0
    return False


def _pct(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, int(round(q / 100 * (len(sorted_values) - 1))))
    return round(sorted_values[i], 3)


def span_dict(span: SpanRecord) -> dict[str, Any]:
    """A stored span as plain JSON-able data (what the dashboard reads)."""
    def plain(attrs: dict[str, Any]) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in attrs.items()}

    return {
        "trace_id": _hex_trace(span.trace_id),
        "span_id": _hex_span(span.span_id),
        "parent_id": _hex_span(span.parent_id) if span.parent_id else None,
        "name": span.name,
        "kind": span.kind,
        "start": span.start,
        "end": span.end,
        "duration_ms": round((span.end - span.start) / 1e6, 3),
        "status": "ok" if span.ok else "error",
        "error": span.error,
        "attributes": plain(span.attributes),
        "events": [{"name": n, "time": t, "attributes": plain(a)} for n, t, a in span.events],
    }


__all__ = ["TelemetryStore", "SpanRecord", "span_dict"]
