"""Span attributes without per-value validation, for attributes we build ourselves
(str, bool, int, float, tuples of str).

Values built here from known types need no cleaning, so they go straight into the
span's attribute dict when the span is a ``FastSpan`` (ours) or the SDK's own and
still recording; any other span (a no-op one, another implementation) gets the
public API. Free text (captured prompts, error messages) still goes through the
public API.
"""

from __future__ import annotations

from typing import Any, Mapping

from myriad.telemetry._span import FastSpan, FastTracer


def put(span: Any, attrs: Mapping[str, Any]) -> None:
    """Set ``attrs`` on ``span`` (see module docstring)."""
    if type(span) is FastSpan:
        if span.end_time is None:
            span.attributes.update(attrs)
        return
    bounded = getattr(span, "_attributes", None)
    raw = getattr(bounded, "_dict", None)
    limit = getattr(bounded, "maxlen", None)
    if raw is not None and getattr(span, "_end_time", 1) is None and (limit is None or len(raw) + len(attrs) <= limit):
        raw.update(attrs)
    elif attrs:
        span.set_attributes(attrs)


def start(tracer: Any, name: str, kind: Any, attrs: dict[str, Any], context: Any = None) -> Any:
    """``tracer.start_span`` with ``attrs`` (which the span then owns) taken as they are."""
    if type(tracer) is FastTracer:
        return tracer.start_trusted(name, kind, attrs, context)
    span = tracer.start_span(name, context=context, kind=kind)
    put(span, attrs)
    return span


__all__ = ["put", "start"]
