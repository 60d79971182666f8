"""GenAI semantic-convention helpers: OpenAI-shaped requests and responses to ``gen_ai.*``
attributes, and messages to the conventions' structured content (opt-in, redacted).

These are plain functions over dicts, usable by any instrumentation (the gateway
wrapper uses them; an agent framework adapter could too).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from myriad.telemetry import semconv as sc
from myriad.telemetry._redact import redact_text, redact_value

_REQUEST_PARAMS = (
    ("max_tokens", sc.GEN_AI_REQUEST_MAX_TOKENS),
    ("max_completion_tokens", sc.GEN_AI_REQUEST_MAX_TOKENS),
    ("temperature", sc.GEN_AI_REQUEST_TEMPERATURE),
    ("top_p", sc.GEN_AI_REQUEST_TOP_P),
    ("seed", sc.GEN_AI_REQUEST_SEED),
)


def request_attributes(operation: str, model: str, body: Mapping[str, Any] | None = None, *,
                       stream: bool = False) -> dict[str, Any]:
    """Attributes known before the call: operation, requested model, sampling parameters."""
    attrs: dict[str, Any] = {sc.GEN_AI_OPERATION_NAME: operation, sc.GEN_AI_REQUEST_MODEL: model}
    if body and len(body) > 1:  # only messages (and model): nothing more to read
        for key, name in _REQUEST_PARAMS:
            v = body.get(key)
            if v is not None and type(v) in (int, float):
                attrs[name] = v
        n = body.get("n")
        if type(n) is int and n != 1:
            attrs[sc.GEN_AI_REQUEST_CHOICE_COUNT] = n
        fmt = body.get("response_format")
        if isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema"):
            attrs[sc.GEN_AI_OUTPUT_TYPE] = "json"
    if stream:
        attrs[sc.GEN_AI_REQUEST_STREAM] = True
    return attrs


def response_attributes(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes of an OpenAI-shaped chat response (or the last chunk of a stream)."""
    attrs: dict[str, Any] = {}
    if raw.get("id"):
        attrs[sc.GEN_AI_RESPONSE_ID] = str(raw["id"])
    reasons = [c.get("finish_reason") for c in raw.get("choices") or () if c.get("finish_reason")]
    if reasons:
        attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
    attrs.update(usage_attributes(raw.get("usage")))
    return attrs


def usage_attributes(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """``gen_ai.usage.*`` from an OpenAI ``usage`` object."""
    if not usage:
        return {}
    attrs = {sc.GEN_AI_USAGE_INPUT_TOKENS: int(usage.get("prompt_tokens") or 0),
             sc.GEN_AI_USAGE_OUTPUT_TOKENS: int(usage.get("completion_tokens") or 0)}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    if cached:
        attrs[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = int(cached)
    return attrs


def _parts(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, str):
        if content:
            parts.append({"type": "text", "content": content})
    elif isinstance(content, list):
        for p in content:
            if isinstance(p, Mapping) and p.get("type") == "text":
                parts.append({"type": "text", "content": p.get("text", "")})
            elif isinstance(p, Mapping):
                parts.append({"type": str(p.get("type", "unknown"))})
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        parts.append({"type": "tool_call", "id": call.get("id"), "name": fn.get("name"),
                      "arguments": fn.get("arguments")})
    if message.get("role") == "tool":
        return [{"type": "tool_call_response", "id": message.get("tool_call_id"),
                 "response": content if isinstance(content, str) else parts}]
    return parts


def input_messages(messages: Iterable[Mapping[str, Any]]) -> str:
    """``gen_ai.input.messages``: the conventions' JSON shape, credentials redacted."""
    out = [{"role": m.get("role"), "parts": _parts(m)} for m in messages if isinstance(m, Mapping)]
    return redact_text(json.dumps(redact_value(out), ensure_ascii=False, default=str))


def output_messages(choices: Iterable[Mapping[str, Any]]) -> str:
    """``gen_ai.output.messages`` from OpenAI ``choices``, credentials redacted."""
    out = []
    for c in choices:
        msg = c.get("message") or c.get("delta") or {}
        out.append({"role": msg.get("role") or "assistant", "parts": _parts(msg),
                    "finish_reason": c.get("finish_reason")})
    return redact_text(json.dumps(redact_value(out), ensure_ascii=False, default=str))


def error_type(error: BaseException) -> str:
    """``error.type``: Myriad's stable error code when there is one, else the class name."""
    code = getattr(error, "code", None)
    return code if isinstance(code, str) and code else type(error).__qualname__


__all__ = ["request_attributes", "response_attributes", "usage_attributes", "input_messages",
           "output_messages", "error_type"]
