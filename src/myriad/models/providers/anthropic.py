"""Anthropic Messages API, translated to and from the OpenAI chat shape.

``base_url`` follows the OpenAI convention and includes the version segment
(default ``https://api.anthropic.com/v1``); requests go to ``{base_url}/messages``
with ``x-api-key`` and ``anthropic-version`` (deployment option
``anthropic_version``, default ``2023-06-01``).

What translates: system/developer messages -> ``system``; text and image parts;
assistant ``tool_calls`` <-> ``tool_use`` blocks; ``tool`` messages ->
``tool_result`` blocks (consecutive ones merged, as Anthropic wants alternating
roles); tools, ``tool_choice``, ``stop``, ``temperature``, ``top_p``,
``max_tokens``; stop reasons; usage including cache reads. What does not: ``n > 1``,
``logprobs``, ``response_format`` (ignored), and there is no embeddings API.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any, AsyncIterator, Mapping

import orjson

from myriad.errors import InvalidRequest, UpstreamError
from myriad.models._tokens import content_text
from myriad.models.config import Deployment
from myriad.models.providers._http import HTTPClient
from myriad.models.types import Usage

DEFAULT_BASE_URL = "https://api.anthropic.com/v1"
DEFAULT_MAX_TOKENS = 4096
_STOP = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
         "pause_turn": "stop", "refusal": "content_filter"}
_ids = itertools.count(1)


class AnthropicProvider:
    def __init__(self, deployment: Deployment, api_key: str | None) -> None:
        headers = {"anthropic-version": str(deployment.options.get("anthropic_version", "2023-06-01"))}
        if api_key:
            headers["x-api-key"] = api_key
        self.http = HTTPClient(deployment.base_url or DEFAULT_BASE_URL, headers, deployment.name)
        self.name = deployment.name
        self.max_tokens = int(deployment.options.get("max_tokens", DEFAULT_MAX_TOKENS))

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        resp = await self.http.post_json("/messages", to_anthropic(body, self.max_tokens))
        return from_anthropic(resp, body["model"])

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        req = to_anthropic(body, self.max_tokens)
        req["stream"] = True
        tr = StreamTranslator(body["model"])
        async for events in self.http.post_sse("/messages", req):
            batch: list[dict[str, Any]] = []
            for event, data in events:
                try:
                    payload = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise UpstreamError(f"{self.name}: malformed event from Anthropic") from None
                batch += tr.feed(event or payload.get("type", ""), payload)
                if tr.done:
                    break
            if batch:
                yield batch
            if tr.done:
                return

    async def embed(self, model: str, texts: list[str], dimensions: int | None = None
                    ) -> tuple[list[list[float]], Usage]:
        raise InvalidRequest(f"{self.name}: Anthropic has no embeddings API; deploy an embedding model instead")

    async def aclose(self) -> None:
        await self.http.aclose()


# ------------------------------------------------------------------ request


def to_anthropic(body: Mapping[str, Any], default_max_tokens: int = DEFAULT_MAX_TOKENS) -> dict[str, Any]:
    """An OpenAI chat body as an Anthropic Messages body."""
    system: list[str] = []
    msgs: list[dict[str, Any]] = []

    def push(role: str, blocks: list[dict[str, Any]]) -> None:
        if msgs and msgs[-1]["role"] == role:
            msgs[-1]["content"].extend(blocks)
        else:
            msgs.append({"role": role, "content": blocks})

    for m in body["messages"]:
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(content_text(m.get("content")))
        elif role == "user":
            push("user", _blocks(m.get("content")))
        elif role == "assistant":
            blocks = _blocks(m.get("content"))
            for call in m.get("tool_calls") or ():
                fn = call.get("function") or {}
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except json.JSONDecodeError:
                    raise InvalidRequest(f"tool call {call.get('id')} has arguments that are not JSON") from None
                blocks.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": args})
            push("assistant", blocks or [{"type": "text", "text": ""}])
        elif role == "tool":
            push("user", [{"type": "tool_result", "tool_use_id": m.get("tool_call_id"),
                           "content": content_text(m.get("content"))}])
        else:
            raise InvalidRequest(f"message role {role!r} cannot be sent to Anthropic")
    out: dict[str, Any] = {
        "model": body["model"],
        "messages": msgs,
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens,
    }
    if system:
        out["system"] = "\n\n".join(s for s in system if s)
    for k in ("temperature", "top_p"):
        if body.get(k) is not None:
            out[k] = body[k]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("tools"):
        out["tools"] = [_tool(t) for t in body["tools"]]
        choice = _tool_choice(body.get("tool_choice"))
        if choice:
            out["tool_choice"] = choice
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    return out


def _blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    out = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            out.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            if url.startswith("data:"):
                meta, _, data = url.partition(",")
                media = meta[5:].split(";")[0]
                out.append({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
            else:
                out.append({"type": "image", "source": {"type": "url", "url": url}})
        else:
            raise InvalidRequest(f"content part type {kind!r} cannot be sent to Anthropic")
    return out


def _tool(t: Mapping[str, Any]) -> dict[str, Any]:
    fn = t.get("function") or {}
    if t.get("type") != "function" or not fn.get("name"):
        raise InvalidRequest("tools must be {'type': 'function', 'function': {'name', 'parameters'}}")
    out = {"name": fn["name"], "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
    if fn.get("description"):
        out["description"] = fn["description"]
    return out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None or choice == "auto":
        return {"type": "auto"} if choice else None
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, Mapping) and (choice.get("function") or {}).get("name"):
        return {"type": "tool", "name": choice["function"]["name"]}
    raise InvalidRequest(f"tool_choice {choice!r} is not understood")


# ------------------------------------------------------------------ response


def usage_to_openai(u: Mapping[str, Any]) -> dict[str, Any]:
    cached = int(u.get("cache_read_input_tokens") or 0)
    prompt = int(u.get("input_tokens") or 0) + cached + int(u.get("cache_creation_input_tokens") or 0)
    completion = int(u.get("output_tokens") or 0)
    return Usage(prompt, completion, prompt + completion, cached).to_openai()


def from_anthropic(resp: Mapping[str, Any], model: str) -> dict[str, Any]:
    """An Anthropic Messages response as an OpenAI chat completion."""
    texts, calls = [], []
    for block in resp.get("content") or ():
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"), "arguments": json.dumps(block.get("input") or {})}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": resp.get("id") or f"chatcmpl-anth-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": _STOP.get(resp.get("stop_reason") or "end_turn", "stop")}],
        "usage": usage_to_openai(resp.get("usage") or {}),
    }


class StreamTranslator:
    """Anthropic stream events in, OpenAI chunks out."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = f"chatcmpl-anth-{next(_ids)}"
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}
        self.tool_index: dict[int, int] = {}
        self.done = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    def feed(self, event: str, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        if event == "message_start":
            msg = data.get("message") or {}
            self.id = msg.get("id") or self.id
            self.usage.update(msg.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if event == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                i = self.tool_index.setdefault(int(data.get("index", 0)), len(self.tool_index))
                return [self._chunk({"tool_calls": [{"index": i, "id": block.get("id"), "type": "function",
                                                     "function": {"name": block.get("name"), "arguments": ""}}]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if event == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                i = self.tool_index.get(int(data.get("index", 0)), 0)
                return [self._chunk({"tool_calls": [{"index": i, "function": {
                    "arguments": delta.get("partial_json", "")}}]})]
            return []
        if event == "message_delta":
            self.usage.update(data.get("usage") or {})
            reason = (data.get("delta") or {}).get("stop_reason")
            return [self._chunk({}, _STOP.get(reason, "stop"))] if reason else []
        if event == "message_stop":
            self.done = True
            return [{"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                     "choices": [], "usage": usage_to_openai(self.usage)}]
        if event == "error":
            err = data.get("error") or {}
            raise UpstreamError(f"Anthropic stream error: {err.get('type')}: {err.get('message')}")
        return []  # ping, content_block_stop, unknown future events


__all__ = ["AnthropicProvider", "to_anthropic", "from_anthropic", "StreamTranslator"]
