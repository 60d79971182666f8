"""``POST /v1/messages`` on the simulated upstream: the Anthropic Messages shape,
so the Anthropic provider is tested against a real server rather than fixtures.

The request is mapped to the OpenAI shape the engine understands, and the engine's
reply is written back as an Anthropic message or Anthropic stream events.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Mapping

import orjson

from myriad.models.simulated._engine import Profile, Reply

_FINISH = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def to_openai_body(req: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic request -> OpenAI chat body (enough for the engine)."""
    messages: list[dict[str, Any]] = []
    system = req.get("system")
    if isinstance(system, list):
        system = " ".join(b.get("text", "") for b in system if isinstance(b, dict))
    if system:
        messages.append({"role": "system", "content": system})
    for m in req.get("messages") or []:
        content = m.get("content")
        if isinstance(content, str):
            messages.append({"role": m.get("role"), "content": content})
            continue
        texts, calls = [], []
        for b in content or []:
            t = b.get("type")
            if t == "text":
                texts.append(b.get("text", ""))
            elif t == "tool_use":
                calls.append({"id": b.get("id"), "type": "function",
                              "function": {"name": b.get("name"), "arguments": json.dumps(b.get("input") or {})}})
            elif t == "tool_result":
                c = b.get("content")
                if isinstance(c, list):
                    c = " ".join(x.get("text", "") for x in c if isinstance(x, dict))
                messages.append({"role": "tool", "tool_call_id": b.get("tool_use_id"), "content": c or ""})
        if texts or calls:
            msg: dict[str, Any] = {"role": m.get("role"), "content": " ".join(texts)}
            if calls:
                msg["tool_calls"] = calls
            messages.append(msg)
    body: dict[str, Any] = {"model": req.get("model"), "messages": messages, "max_tokens": req.get("max_tokens")}
    if req.get("tools"):
        body["tools"] = [{"type": "function", "function": {"name": t.get("name"), "parameters": t.get("input_schema")}}
                         for t in req["tools"]]
        choice = req.get("tool_choice") or {}
        if choice.get("type") == "any":
            body["tool_choice"] = "required"
        elif choice.get("type") == "tool":
            body["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif choice.get("type") == "none":
            body["tool_choice"] = "none"
    return body


def _content(reply: Reply) -> list[dict[str, Any]]:
    if reply.tool_call is not None:
        fn = reply.tool_call["function"]
        return [{"type": "tool_use", "id": reply.tool_call["id"].replace("call_", "toolu_"), "name": fn["name"],
                 "input": json.loads(fn["arguments"])}]
    return [{"type": "text", "text": reply.text}]


def message(mid: str, model: str, reply: Reply) -> bytes:
    return orjson.dumps({
        "id": mid, "type": "message", "role": "assistant", "model": model, "content": _content(reply),
        "stop_reason": _FINISH.get(reply.finish_reason, "end_turn"), "stop_sequence": None,
        "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens},
    })


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def stream(send: Any, mid: str, model: str, reply: Reply, profile: Profile) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
    if profile.ttft > 0:
        await asyncio.sleep(profile.ttft)
    start = _event("message_start", {"type": "message_start", "message": {
        "id": mid, "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": None,
        "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": 1}}})
    if reply.tool_call is not None:
        block = _content(reply)[0]
        out = start + _event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}})
        out += _event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "input_json_delta", "partial_json": json.dumps(block["input"])}})
        await send({"type": "http.response.body", "body": out, "more_body": True})
    else:
        out = start + _event("content_block_start", {"type": "content_block_start", "index": 0,
                                                     "content_block": {"type": "text", "text": ""}})
        gap = 1 / profile.tps if profile.tps > 0 else 0.0
        for i, tok in enumerate(reply.tokens):
            if i and gap:
                await send({"type": "http.response.body", "body": out, "more_body": True})
                out = b""
                await asyncio.sleep(gap)
            out += _event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                  "delta": {"type": "text_delta", "text": tok}})
        await send({"type": "http.response.body", "body": out, "more_body": True})
    tail = _event("content_block_stop", {"type": "content_block_stop", "index": 0})
    tail += _event("message_delta", {"type": "message_delta", "delta": {
        "stop_reason": _FINISH.get(reply.finish_reason, "end_turn"), "stop_sequence": None},
        "usage": {"output_tokens": reply.completion_tokens}})
    tail += _event("message_stop", {"type": "message_stop"})
    await send({"type": "http.response.body", "body": tail, "more_body": False})


__all__ = ["to_openai_body", "message", "stream"]
