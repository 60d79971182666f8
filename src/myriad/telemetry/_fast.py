"""Span attributes without the SDK's per-value validation, for attributes we build
ourselves (str, bool, int, float, tuples of str).

The SDK checks and copies every attribute value on ``start_span(attributes=...)`` and
``set_attributes`` (~2 us each; a gateway span has ~15). Values built here from known
types need none of that, so they go straight into the span's attribute dict when the
span is the SDK's own and still recording; any other span (a no-op one, another SDK)
gets the public API. Free text (captured prompts, error messages) still goes through
the public API, so the configured length limits apply to it.
"""

from __future__ import annotations

from typing import Any, Mapping


def put(span: Any, attrs: Mapping[str, Any]) -> None:
    """Set ``attrs`` on ``span`` (see module docstring)."""
    bounded = getattr(span, "_attributes", None)
    raw = getattr(bounded, "_dict", None)
    limit = getattr(bounded, "maxlen", None)
    if raw is not None and getattr(span, "_end_time", 1) is None and (limit is None or len(raw) + len(attrs) <= limit):
        raw.update(attrs)
    elif attrs:
        span.set_attributes(attrs)


def start(tracer: Any, name: str, kind: Any, attrs: Mapping[str, Any], context: Any = None) -> Any:
    """``tracer.start_span`` with ``attrs`` set by ``put`` (the sampler sees no attributes:
    the default parent-based sampler never looks at them)."""
    span = tracer.start_span(name, context=context, kind=kind)
    put(span, attrs)
    return span


__all__ = ["put", "start"]
