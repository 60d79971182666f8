"""Cheap token estimates, shared by the gateway and the simulated upstream.

The gateway needs a prompt-size estimate before it calls anyone (context-window
fallback, tpm headroom, budget reservation) and cannot afford a real tokenizer on
the hot path. Four characters per token is the usual rule of thumb for English
with BPE tokenizers; it errs high for code and low for CJK, which is why the
context-window check keeps a safety margin rather than trusting it exactly.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

CHARS_PER_TOKEN = 4
PER_MESSAGE_OVERHEAD = 4


def estimate_text_tokens(text: str) -> int:
    """Approximate BPE tokens in ``text`` (at least 1 for non-empty text)."""
    if not text:
        return 0
    return max(1, (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN)


def content_text(content: Any) -> str:
    """The text of an OpenAI message ``content`` (a string or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, Mapping):
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    out.append(part["text"])
            elif isinstance(part, str):
                out.append(part)
        return " ".join(out)
    return str(content)


def last_user_text(messages: Iterable[Mapping[str, Any]]) -> str:
    """The text of the last ``user`` message ("" when there is none)."""
    for m in reversed(list(messages)):
        if m.get("role") == "user":
            return content_text(m.get("content"))
    return ""


def estimate_message_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Approximate prompt tokens for a list of OpenAI chat messages."""
    total = 0
    for m in messages:
        total += PER_MESSAGE_OVERHEAD + estimate_text_tokens(content_text(m.get("content")))
        calls = m.get("tool_calls")
        if calls:
            for c in calls:
                fn = c.get("function") or {}
                total += estimate_text_tokens(str(fn.get("name", ""))) + estimate_text_tokens(
                    str(fn.get("arguments", ""))
                )
    return total


__all__ = ["estimate_text_tokens", "estimate_message_tokens", "content_text", "last_user_text"]
