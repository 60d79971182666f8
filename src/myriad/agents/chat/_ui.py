"""AI SDK UI messages on the server: chunks applied to a message, messages turned
into an OpenAI chat request.

A UI message is ``{"id", "role", "parts": [...]}`` (AI SDK 5/6). The stream of a
reply is a list of UI message chunks (``start``, ``text-delta``, ``tool-input-
available`` ...); ``apply_chunk`` folds one into a message the way the AI SDK's
``processUIMessageStream`` does on the client, so the message the server persists is
the message the client shows.
"""

from __future__ import annotations

import json
from typing import Any

DENIED = "The user denied this tool call."


def is_tool_part(part: dict[str, Any]) -> bool:
    t = part.get("type")
    return isinstance(t, str) and (t.startswith("tool-") or t == "dynamic-tool")


def tool_name(part: dict[str, Any]) -> str:
    if part.get("type") == "dynamic-tool":
        return str(part.get("toolName", ""))
    return str(part.get("type", ""))[len("tool-"):]


class Accumulator:
    """Folds chunks into one assistant message (new, or continuing ``message``)."""

    __slots__ = ("message", "_open")

    def __init__(self, message: dict[str, Any]) -> None:
        self.message = message
        self._open: dict[str, dict[str, Any]] = {}  # "text:<id>" / "reasoning:<id>" -> part

    @property
    def parts(self) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = self.message.setdefault("parts", [])
        return parts

    def open_text_id(self) -> str | None:
        """The id of a text part still streaming (a reply cut mid-sentence)."""
        for key in self._open:
            if key.startswith("text:"):
                return key[5:]
        return None

    def tool_part(self, tool_call_id: str) -> dict[str, Any] | None:
        for part in self.parts:
            if is_tool_part(part) and part.get("toolCallId") == tool_call_id:
                return part
        return None

    def apply(self, chunk: dict[str, Any]) -> None:
        t = chunk.get("type")
        parts = self.parts
        if t == "start":
            if chunk.get("messageId"):
                self.message["id"] = chunk["messageId"]
            self._metadata(chunk)
        elif t in ("finish", "message-metadata"):
            self._metadata(chunk)
        elif t == "start-step":
            parts.append({"type": "step-start"})
        elif t in ("text-start", "reasoning-start"):
            kind = t.split("-")[0]
            part = {"type": kind, "text": "", "state": "streaming"}
            parts.append(part)
            self._open[f"{kind}:{chunk.get('id')}"] = part
        elif t in ("text-delta", "reasoning-delta"):
            part_or_none = self._open.get(f"{t.split('-')[0]}:{chunk.get('id')}")
            if part_or_none is not None:
                part_or_none["text"] += str(chunk.get("delta", ""))
        elif t in ("text-end", "reasoning-end"):
            part_or_none = self._open.pop(f"{t.split('-')[0]}:{chunk.get('id')}", None)
            if part_or_none is not None:
                part_or_none["state"] = "done"
        elif t == "tool-input-start":
            self._tool(chunk)["state"] = "input-streaming"
        elif t == "tool-input-available":
            part = self._tool(chunk)
            part["state"], part["input"] = "input-available", chunk.get("input")
        elif t == "tool-input-error":
            part = self._tool(chunk)
            part.update(state="output-error", input=chunk.get("input"), errorText=chunk.get("errorText", ""))
        elif t == "tool-approval-request":
            found = self.tool_part(str(chunk.get("toolCallId")))
            if found is not None:
                found["state"], found["approval"] = "approval-requested", {"id": chunk.get("approvalId")}
        elif t == "tool-output-available":
            found = self.tool_part(str(chunk.get("toolCallId")))
            if found is not None:
                found["state"], found["output"] = "output-available", chunk.get("output")
        elif t == "tool-output-error":
            found = self.tool_part(str(chunk.get("toolCallId")))
            if found is not None:
                found["state"], found["errorText"] = "output-error", chunk.get("errorText", "")
        elif t == "tool-output-denied":
            found = self.tool_part(str(chunk.get("toolCallId")))
            if found is not None:
                found["state"] = "output-denied"
        elif isinstance(t, str) and t.startswith("data-") and not chunk.get("transient"):
            parts.append({k: v for k, v in chunk.items() if k != "transient"})

    def _metadata(self, chunk: dict[str, Any]) -> None:
        meta = chunk.get("messageMetadata")
        if isinstance(meta, dict):
            self.message["metadata"] = {**(self.message.get("metadata") or {}), **meta}

    def _tool(self, chunk: dict[str, Any]) -> dict[str, Any]:
        call_id = str(chunk.get("toolCallId"))
        part = self.tool_part(call_id)
        if part is None:
            name = str(chunk.get("toolName", ""))
            part = ({"type": "dynamic-tool", "toolName": name} if chunk.get("dynamic")
                    else {"type": f"tool-{name}"})
            part.update(toolCallId=call_id, state="input-streaming", input=None)
            self.parts.append(part)
        return part


def text_of(message: dict[str, Any]) -> str:
    return "".join(str(p.get("text", "")) for p in message.get("parts") or () if p.get("type") == "text")


def to_openai(messages: list[dict[str, Any]], system: str | None = None) -> list[dict[str, Any]]:
    """UI messages as OpenAI chat messages. An assistant message becomes one
    assistant message per step (text and the step's tool calls) followed by the tool
    results; tool calls still waiting for a result or an approval are left out (a
    request may not carry an unanswered call)."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for message in messages:
        role = message.get("role")
        if role in ("user", "system"):
            out.append({"role": role, "content": text_of(message)})
        elif role == "assistant":
            steps: list[list[dict[str, Any]]] = [[]]
            for part in message.get("parts") or ():
                if part.get("type") == "step-start" and steps[-1]:
                    steps.append([])
                steps[-1].append(part)
            for step in steps:
                out.extend(_assistant_step(step))
    return out


def _assistant_step(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    text = "".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")
    calls, results = [], []
    for part in parts:
        if not is_tool_part(part):
            continue
        state = part.get("state")
        if state == "output-available":
            content = json.dumps(part.get("output"))
        elif state == "output-error":
            content = f"Error: {part.get('errorText', '')}"
        elif state == "output-denied" or (state == "approval-responded"
                                          and not (part.get("approval") or {}).get("approved")):
            content = DENIED
        else:
            continue
        call_id = str(part.get("toolCallId"))
        calls.append({"id": call_id, "type": "function",
                      "function": {"name": tool_name(part), "arguments": json.dumps(part.get("input") or {})}})
        results.append({"role": "tool", "tool_call_id": call_id, "content": content})
    if not text and not calls:
        return []
    msg: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        msg["tool_calls"] = calls
    return [msg, *results]


__all__ = ["Accumulator", "DENIED", "is_tool_part", "text_of", "to_openai", "tool_name"]
