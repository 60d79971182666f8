"""Chat Completions chunks in, the Responses API's typed stream events out.

The events and their order are OpenAI's (``openai.types.responses.*Event``):
``response.created``, ``response.in_progress``, then per output item
``response.output_item.added``, for text ``response.content_part.added`` /
``response.output_text.delta`` ... ``response.output_text.done`` /
``response.content_part.done``, for a function call
``response.function_call_arguments.delta`` ... ``.done``, then
``response.output_item.done``; last ``response.completed`` (or
``response.incomplete`` when the output was cut short, or ``error`` and
``response.failed`` when the upstream failed mid-stream). Every event carries a
``sequence_number``.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import orjson

from myriad.models.responses._ids import new_id
from myriad.models.responses._output import response_object
from myriad.models.responses._request import ResponsesRequest
from myriad.models.types import Usage

Event = dict[str, Any]


def sse(events: list[Event]) -> bytes:
    """Events as server-sent events (``event:`` names the type, as OpenAI does)."""
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


class _Item:
    __slots__ = ("index", "data", "part", "tool_index")

    def __init__(self, index: int, data: dict[str, Any], tool_index: int | None = None) -> None:
        self.index = index
        self.data = data
        self.part: dict[str, Any] | None = None  # the content part being streamed (messages)
        self.tool_index = tool_index


class ResponseEvents:
    """Translates one chat stream into Responses events. Feed it chunks; it keeps
    the finished output and usage for storing the response afterwards."""

    def __init__(self, req: ResponsesRequest, model: str, response_id: str | None = None) -> None:
        self.req = req
        self.model = model
        self.id = response_id or new_id("resp")
        self.created_at = int(time.time())
        self.output: list[dict[str, Any]] = []
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.response: dict[str, Any] | None = None
        """The final response object, once ``finish`` or ``fail`` ran."""
        self._seq = 0
        self._open: _Item | None = None

    def _ev(self, type_: str, **fields: Any) -> Event:
        e = {"type": type_, "sequence_number": self._seq, **fields}
        self._seq += 1
        return e

    def _snapshot(self, status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
        return response_object(self.req, response_id=self.id, created_at=self.created_at, model=self.model,
                               output=list(self.output), usage=self.usage if status != "in_progress" else None,
                               finish_reason=self.finish_reason, status=status, error=error)

    def start(self) -> list[Event]:
        snapshot = self._snapshot("in_progress")  # serialised before anything changes it: one object for both
        return [self._ev("response.created", response=snapshot), self._ev("response.in_progress", response=snapshot)]

    def feed(self, chunk: Mapping[str, Any]) -> list[Event]:
        """Events for one ``chat.completion.chunk``."""
        out: list[Event] = []
        if chunk.get("usage"):
            self.usage = Usage.from_openai(chunk["usage"])
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out += self._text("output_text", delta["content"])
            if delta.get("refusal"):
                out += self._text("refusal", delta["refusal"])
            for call in delta.get("tool_calls") or ():
                out += self._tool_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def finish(self) -> list[Event]:
        """Close what is open and complete the response."""
        out = self._close()
        status = "incomplete" if self.finish_reason in ("length", "content_filter") else "completed"
        self.response = self._snapshot(status)
        out.append(self._ev(f"response.{status}", response=self.response))
        return out

    def fail(self, code: str, message: str) -> list[Event]:
        """The upstream failed after the stream began: ``error``, then ``response.failed``."""
        error = {"code": "server_error" if code not in ("rate_limit_exceeded",) else code, "message": message}
        self.response = self._snapshot("failed", error)
        return [self._ev("error", code=code, message=message, param=None),
                self._ev("response.failed", response=self.response)]

    # ------------------------------------------------------------------ items

    def _add(self, data: dict[str, Any], tool_index: int | None = None) -> tuple[_Item, Event]:
        item = _Item(len(self.output), data, tool_index)
        self.output.append(data)
        self._open = item
        return item, self._ev("response.output_item.added", output_index=item.index, item=_copy(data))

    def _text(self, kind: str, text: str) -> list[Event]:
        out: list[Event] = []
        item = self._open
        if item is None or item.data["type"] != "message":
            out += self._close()
            item, added = self._add({"type": "message", "id": new_id("msg"), "status": "in_progress",
                                     "role": "assistant", "content": []})
            out.append(added)
        if item.part is None or item.part["type"] != kind:
            out += self._close_part(item)
            item.part = ({"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                         if kind == "output_text" else {"type": "refusal", "refusal": ""})
            item.data["content"].append(item.part)
            out.append(self._ev("response.content_part.added", item_id=item.data["id"], output_index=item.index,
                                content_index=len(item.data["content"]) - 1, part=dict(item.part, **{
                                    "text" if kind == "output_text" else "refusal": ""})))
        key = "text" if kind == "output_text" else "refusal"
        item.part[key] += text
        fields: dict[str, Any] = {"logprobs": []} if kind == "output_text" else {}
        out.append(self._ev(f"response.{kind}.delta", item_id=item.data["id"], output_index=item.index,
                            content_index=len(item.data["content"]) - 1, delta=text, **fields))
        return out

    def _close_part(self, item: _Item) -> list[Event]:
        part = item.part
        if part is None:
            return []
        item.part = None
        ci = len(item.data["content"]) - 1
        common = {"item_id": item.data["id"], "output_index": item.index, "content_index": ci}
        if part["type"] == "output_text":
            done = self._ev("response.output_text.done", **common, text=part["text"], logprobs=[])
        else:
            done = self._ev("response.refusal.done", **common, refusal=part["refusal"])
        return [done, self._ev("response.content_part.done", **common, part=dict(part))]

    def _tool_delta(self, call: Mapping[str, Any]) -> list[Event]:
        out: list[Event] = []
        index = call.get("index", 0)
        item = self._open
        fn = call.get("function") or {}
        if item is None or item.tool_index != index:
            out += self._close()
            item, added = self._add({"type": "function_call", "id": new_id("fc"),
                                     "call_id": call.get("id") or new_id("call"), "name": fn.get("name") or "",
                                     "arguments": "", "status": "in_progress"}, tool_index=index)
            out.append(added)
        args = fn.get("arguments")
        if args:
            item.data["arguments"] += args
            out.append(self._ev("response.function_call_arguments.delta", item_id=item.data["id"],
                                output_index=item.index, delta=args))
        return out

    def _close(self) -> list[Event]:
        item = self._open
        if item is None:
            return []
        self._open = None
        out: list[Event] = []
        status = "incomplete" if self.finish_reason in ("length", "content_filter") else "completed"
        if item.data["type"] == "message":
            out += self._close_part(item)
        else:
            out.append(self._ev("response.function_call_arguments.done", item_id=item.data["id"],
                                output_index=item.index, name=item.data["name"], arguments=item.data["arguments"]))
            status = "completed"
        item.data["status"] = status
        out.append(self._ev("response.output_item.done", output_index=item.index, item=_copy(item.data)))
        return out


def _copy(item: dict[str, Any]) -> dict[str, Any]:
    # events are serialised after the whole batch was fed: copy what later chunks mutate
    if "content" in item:
        return {**item, "content": [dict(p) for p in item["content"]]}
    return dict(item)


__all__ = ["ResponseEvents", "Event", "sse"]
