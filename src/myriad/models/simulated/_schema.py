"""Example values that satisfy a JSON schema: the simulated models' tool arguments
and structured output (``response_format`` ``json_schema``/``json_object``).

Covers what clients generate (pydantic, zod, hand-written): ``$ref`` into
``$defs``/``definitions``, ``anyOf``/``oneOf``/``allOf``, ``enum``/``const``,
nullable type lists, nested objects and arrays, string formats and length and
number bounds. Deterministic: the same schema gives the same value.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

_MAX_DEPTH = 12
_FORMATS = {"date-time": "2026-01-01T00:00:00Z", "date": "2026-01-01", "time": "00:00:00",
            "email": "simulated@example.com", "uri": "https://example.com/simulated", "url": "https://example.com/simulated",
            "uuid": "00000000-0000-4000-8000-000000000000", "ipv4": "192.0.2.1", "ipv6": "2001:db8::1",
            "hostname": "example.com", "duration": "P1D"}


def example_value(schema: Any, root: Mapping[str, Any] | None = None, depth: int = 0) -> Any:
    """A value valid against ``schema`` (``root`` resolves ``$ref``)."""
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return None
    root = root if root is not None else schema
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return example_value(_resolve(ref, root), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            concrete = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")]
            return example_value((concrete or options)[0], root, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            part = _resolve(part["$ref"], root) if isinstance(part, Mapping) and "$ref" in part else part
            if isinstance(part, Mapping):
                merged = _merge(merged, part)
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        return example_value(_merge(merged, rest), root, depth + 1)
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((t for t in kind if t != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties") or {}
        required = schema.get("required")
        keys = required if isinstance(required, list) else list(props)
        return {k: example_value(props.get(k) or {}, root, depth + 1) for k in keys}
    if kind == "array":
        n = max(1, int(schema.get("minItems") or 0))
        if isinstance(schema.get("maxItems"), int):
            n = min(n, schema["maxItems"])
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list) and prefix:
            return [example_value(p, root, depth + 1) for p in prefix]
        return [example_value(schema.get("items") or {}, root, depth + 1) for _ in range(n)]
    if kind == "integer":
        return int(_bounded(schema, 1))
    if kind == "number":
        return float(_bounded(schema, 1.0))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    text = _FORMATS.get(str(schema.get("format")), "simulated")
    lo, hi = schema.get("minLength"), schema.get("maxLength")
    if isinstance(lo, int) and len(text) < lo:
        text = text + "x" * (lo - len(text))
    if isinstance(hi, int) and len(text) > hi:
        text = text[:hi]
    return text


def structured_text(response_format: Any, reply_text: str) -> str | None:
    """The JSON a simulated model answers under ``response_format``; None for text."""
    if not isinstance(response_format, Mapping):
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        return json.dumps(example_value(schema or {"type": "object"}))
    if kind == "json_object":
        return json.dumps({"simulated": True, "reply": reply_text})
    return None


def _resolve(ref: str, root: Mapping[str, Any]) -> Any:
    if not ref.startswith("#"):
        return {}
    node: Any = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        node = node.get(part) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        if k == "properties" and isinstance(out.get(k), Mapping) and isinstance(v, Mapping):
            out[k] = {**out[k], **v}
        elif k == "required" and isinstance(out.get(k), list) and isinstance(v, list):
            out[k] = out[k] + [x for x in v if x not in out[k]]
        else:
            out[k] = v
    return out


def _bounded(schema: Mapping[str, Any], default: float) -> float:
    lo = schema.get("minimum", schema.get("exclusiveMinimum"))
    hi = schema.get("maximum", schema.get("exclusiveMaximum"))
    value = default
    if isinstance(lo, (int, float)) and not isinstance(lo, bool) and value <= lo:
        value = lo + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0)
    if isinstance(hi, (int, float)) and not isinstance(hi, bool) and value > hi:
        value = hi - (1 if "exclusiveMaximum" in schema and "maximum" not in schema else 0)
    return value


__all__ = ["example_value", "structured_text"]
