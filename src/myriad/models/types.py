"""The values that cross the gateway's boundary.

Requests stay OpenAI-shaped dicts (so tools, response_format and whatever a
provider adds next pass through untouched); results are small dataclasses that
keep the raw OpenAI-shaped payload next to the fields people actually read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Usage:
    """Token counts of one call (OpenAI's names)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @classmethod
    def from_openai(cls, usage: Mapping[str, Any] | None) -> "Usage":
        if not usage:
            return cls()
        if "input_tokens" in usage and "prompt_tokens" not in usage:  # the Responses API's names
            usage = {"prompt_tokens": usage.get("input_tokens"), "completion_tokens": usage.get("output_tokens"),
                     "total_tokens": usage.get("total_tokens"),
                     "prompt_tokens_details": usage.get("input_tokens_details")}
        p = int(usage.get("prompt_tokens") or 0)
        c = int(usage.get("completion_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        cdet = usage.get("completion_tokens_details") or {}
        return cls(p, c, int(usage.get("total_tokens") or p + c), int(details.get("cached_tokens") or 0),
                   int(cdet.get("reasoning_tokens") or 0) if isinstance(cdet, Mapping) else 0)

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                               "total_tokens": self.total_tokens}
        if self.cached_tokens:
            out["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        if self.reasoning_tokens:
            out["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return out


@dataclass
class ChatResult:
    """A finished chat completion."""

    raw: dict[str, Any]
    """The OpenAI-shaped response body, as a client of ``/v1/chat/completions`` sees it."""
    model: str
    """The model (alias) that was asked for."""
    deployment: str
    """The deployment that answered."""
    attempts: int = 1
    cached: bool = False

    @property
    def message(self) -> dict[str, Any]:
        choices = self.raw.get("choices") or [{}]
        return choices[0].get("message") or {}

    @property
    def text(self) -> str:
        """The assistant's text (empty when it only called tools)."""
        return self.message.get("content") or ""

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        return list(self.message.get("tool_calls") or [])

    @property
    def finish_reason(self) -> str | None:
        choices = self.raw.get("choices") or [{}]
        reason: str | None = choices[0].get("finish_reason")
        return reason

    @property
    def usage(self) -> Usage:
        return Usage.from_openai(self.raw.get("usage"))


@dataclass
class ChatChunk:
    """One streamed chunk (OpenAI ``chat.completion.chunk`` shape in ``raw``)."""

    raw: dict[str, Any]
    deployment: str = ""

    @property
    def text(self) -> str:
        """The text delta (empty for role-only, tool-call and usage chunks)."""
        choices = self.raw.get("choices")
        if not choices:
            return ""
        return (choices[0].get("delta") or {}).get("content") or ""

    @property
    def finish_reason(self) -> str | None:
        choices = self.raw.get("choices")
        return choices[0].get("finish_reason") if choices else None

    @property
    def usage(self) -> Usage | None:
        u = self.raw.get("usage")
        return Usage.from_openai(u) if u else None


@dataclass
class EmbeddingResult:
    """Vectors for a list of texts, in input order."""

    vectors: list[list[float]]
    model: str
    deployment: str = ""
    usage: Usage = field(default_factory=Usage)

    def to_openai(self, encoding_format: str = "float") -> dict[str, Any]:
        import base64
        import struct

        def enc(v: list[float]) -> Any:
            if encoding_format == "base64":
                return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode("ascii")
            return v

        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": enc(v)} for i, v in enumerate(self.vectors)],
            "model": self.model,
            "usage": {"prompt_tokens": self.usage.prompt_tokens, "total_tokens": self.usage.total_tokens},
        }


@dataclass(frozen=True)
class UsageRecord:
    """What one call consumed, handed to the gateway's usage hook (for metering)."""

    tenant: str | None
    agent: str | None
    model: str
    deployment: str
    usage: Usage
    cost_usd: float
    latency_s: float
    operation: str = "chat"
    cached: bool = False


__all__ = ["Usage", "ChatResult", "ChatChunk", "EmbeddingResult", "UsageRecord"]
