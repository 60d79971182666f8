"""The Responses API's response object, built from a chat completion.

Shapes follow the ``openai`` package's ``openai.types.responses`` models
(``Response``, ``ResponseOutputMessage``, ``ResponseFunctionToolCall``,
``ResponseUsage``), which is what every client parses.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from myriad.models.responses._ids import new_id
from myriad.models.responses._request import ResponsesRequest
from myriad.models.types import Usage

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_usage(usage: Usage | None) -> dict[str, Any] | None:
    """Chat usage in the Responses API's names."""
    if usage is None:
        return None
    return {"input_tokens": usage.prompt_tokens, "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": usage.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.total_tokens or usage.prompt_tokens + usage.completion_tokens}


def message_item(text: str, *, item_id: str | None = None, status: str = "completed",
                 refusal: str | None = None) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text or refusal is None:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"type": "message", "id": item_id or new_id("msg"), "status": status, "role": "assistant",
            "content": content}


def function_call_item(call: Mapping[str, Any], *, item_id: str | None = None,
                       status: str = "completed") -> dict[str, Any]:
    fn = call.get("function") or {}
    return {"type": "function_call", "id": item_id or new_id("fc"), "call_id": call.get("id") or new_id("call"),
            "name": fn.get("name") or "", "arguments": fn.get("arguments") or "", "status": status}


def output_items(message: Mapping[str, Any], finish_reason: str | None) -> list[dict[str, Any]]:
    """The output items of one assistant chat message: its text (or refusal), then
    one ``function_call`` per tool call."""
    status = "incomplete" if finish_reason in _INCOMPLETE else "completed"
    out = []
    text = message.get("content") or ""
    if not isinstance(text, str):
        text = "".join(p.get("text", "") for p in text if isinstance(p, Mapping))
    refusal = message.get("refusal")
    if text or refusal:
        out.append(message_item(text, status=status, refusal=refusal))
    for call in message.get("tool_calls") or ():
        out.append(function_call_item(call))
    return out


def response_object(req: ResponsesRequest, *, response_id: str, created_at: int, model: str,
                    output: list[dict[str, Any]], usage: Usage | None, finish_reason: str | None,
                    status: str | None = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole ``response`` object; ``status`` defaults from ``finish_reason``."""
    incomplete = _INCOMPLETE.get(finish_reason or "")
    if status is None:
        status = "incomplete" if incomplete else "completed"
    done = status in ("completed", "incomplete", "failed")
    return {
        "id": response_id, "object": "response", "created_at": created_at, "status": status,
        "completed_at": int(time.time()) if done and status != "failed" else None,
        "background": False, "error": error,
        "incomplete_details": {"reason": incomplete} if status == "incomplete" else None,
        "model": model, "output": output, "usage": response_usage(usage), "service_tier": "default",
        **req.echo(),
    }


def output_text(output: list[dict[str, Any]]) -> str:
    """All output text, joined (what the SDKs call ``output_text``)."""
    return "".join(p.get("text", "") for it in output if it.get("type") == "message"
                   for p in it.get("content", ()) if p.get("type") == "output_text")


__all__ = ["response_usage", "message_item", "function_call_item", "output_items", "response_object", "output_text"]
