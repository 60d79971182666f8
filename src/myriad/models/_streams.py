"""Converting between a whole chat completion and its stream of chunks: replaying a
cached completion as a stream, and assembling a streamed one for the cache."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

CACHE = "cache"
"""The ``deployment`` of results served by the semantic cache."""


def replay_chunks(raw: Mapping[str, Any], want_usage: bool) -> Iterator[dict[str, Any]]:
    """A completed ``chat.completion`` as ``chat.completion.chunk`` dicts."""
    base = {"id": raw.get("id"), "object": "chat.completion.chunk", "created": raw.get("created"),
            "model": raw.get("model")}
    if raw.get("system_fingerprint"):
        base["system_fingerprint"] = raw["system_fingerprint"]
    choice = (raw.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    delta: dict[str, Any] = {"role": "assistant", "content": msg.get("content")}
    if msg.get("tool_calls"):
        delta["tool_calls"] = [dict(c, index=i) for i, c in enumerate(msg["tool_calls"])]
    yield {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}
    yield {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                "finish_reason": choice.get("finish_reason") or "stop"}]}
    if want_usage and raw.get("usage"):
        yield {**base, "choices": [], "usage": raw["usage"]}


class StreamAccumulator:
    """Collects a text stream into a completion (tool-call streams are not collected)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish: str | None = None
        self.first: Mapping[str, Any] | None = None
        self.usage: Any = None
        self.tools = False

    def add(self, chunk: Mapping[str, Any]) -> None:
        if self.first is None:
            self.first = chunk
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for c in chunk.get("choices") or ():
            delta = c.get("delta") or {}
            if delta.get("tool_calls"):
                self.tools = True
            if delta.get("content"):
                self.parts.append(delta["content"])
            if c.get("finish_reason"):
                self.finish = c["finish_reason"]

    def completion(self, model: str) -> dict[str, Any] | None:
        if self.tools or self.first is None or self.finish is None:
            return None
        out: dict[str, Any] = {
            "id": self.first.get("id"), "object": "chat.completion", "created": self.first.get("created"),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(self.parts)},
                         "logprobs": None, "finish_reason": self.finish}],
        }
        if self.first.get("system_fingerprint"):
            out["system_fingerprint"] = self.first["system_fingerprint"]
        if self.usage:
            out["usage"] = self.usage
        return out


__all__ = ["CACHE", "replay_chunks", "StreamAccumulator"]
