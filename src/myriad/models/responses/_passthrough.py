"""Passing a Responses API call through to an upstream that speaks it (OpenAI).

The gateway still owns the conversation: the upstream gets the whole expanded
input with ``store: false`` (never our ``previous_response_id``, which it does not
know), so fallbacks between a Responses upstream and a Chat Completions one work
mid-conversation. Streams are relayed event by event; the helpers here are what
the gateway's stream walk uses in place of its chat-chunk ones.
"""

from __future__ import annotations

from typing import Any, Mapping

from myriad.models.responses._request import ResponsesRequest
from myriad.models.types import Usage

_COMMITTING = frozenset({"response.output_text.delta", "response.refusal.delta", "response.output_item.added",
                         "response.function_call_arguments.delta", "response.completed", "response.incomplete"})
_EXTRA = ("include", "truncation", "service_tier", "prompt_cache_key", "safety_identifier", "top_logprobs")


def upstream_body(req: ResponsesRequest) -> dict[str, Any]:
    """The call as a Responses body for an upstream: the expanded conversation,
    nothing stored there. Item ids and statuses are ours, so they are left out."""
    body: dict[str, Any] = {
        "input": [{k: v for k, v in it.items() if k not in ("id", "status")} for it in req.items],
        "store": False, "parallel_tool_calls": req.parallel_tool_calls, "text": {"format": req.text_format},
    }
    if req.instructions:
        body["instructions"] = req.instructions
    if req.tools:
        body["tools"] = [{k: v for k, v in t.items() if v is not None} for t in req.tools]
        body["tool_choice"] = req.tool_choice
    for key in ("max_output_tokens", "temperature", "top_p", "user"):
        value = getattr(req, key)
        if value is not None:
            body[key] = value
    if req.reasoning:
        body["reasoning"] = {k: v for k, v in req.reasoning.items() if v is not None}
    for key in _EXTRA:
        if req.original.get(key) is not None:
            body[key] = req.original[key]
    return body


def as_ours(req: ResponsesRequest, response: dict[str, Any]) -> dict[str, Any]:
    """An upstream's response object as this call's: what the client asked to be
    stored and continued from, not what the upstream was asked."""
    response["store"] = req.store
    response["previous_response_id"] = req.previous_response_id
    if req.metadata:
        response["metadata"] = req.metadata
    return response


class PassthroughEvents:
    """Relays an upstream's Responses events (patched by ``as_ours``), keeping the
    final response for the store; the same interface as ``ResponseEvents``."""

    def __init__(self, req: ResponsesRequest) -> None:
        self.req = req
        self.response: dict[str, Any] | None = None
        self._latest: dict[str, Any] = {}
        self._seq = 0

    def start(self) -> list[dict[str, Any]]:
        return []

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        response = event.get("response")
        if isinstance(response, dict):
            self._latest = as_ours(self.req, response)
            if event.get("type") in ("response.completed", "response.incomplete"):
                self.response = response
        self._seq = max(self._seq, int(event.get("sequence_number") or 0) + 1)
        return [event]

    def finish(self) -> list[dict[str, Any]]:
        return []

    def fail(self, code: str, message: str) -> list[dict[str, Any]]:
        error = {"code": "server_error", "message": message}
        base = dict(self._latest, status="failed", error=error)
        events = [{"type": "error", "sequence_number": self._seq, "code": code, "message": message, "param": None},
                  {"type": "response.failed", "sequence_number": self._seq + 1, "response": base}]
        self.response = base
        return events


def event_commits(event: Mapping[str, Any]) -> bool:
    """Whether relaying this event commits the stream to its deployment (output began)."""
    return event.get("type") in _COMMITTING


def deliver_events(batch: list[dict[str, Any]], asked: str, call: Any) -> list[dict[str, Any]]:
    """Relabel the events with the model asked for and count into the pipeline's
    ``call`` (usage, streamed characters, the response id), as ``_deliver`` does for
    chat chunks."""
    text = call.output_text
    for event in batch:
        kind = event.get("type")
        if kind in ("response.output_text.delta", "response.function_call_arguments.delta"):
            delta = event.get("delta") or ""
            call.stream_chars += len(delta)
            if text is not None and kind == "response.output_text.delta":
                text.append(delta)
        response = event.get("response")
        if isinstance(response, dict):
            response["model"] = asked
            if call.response_id is None:
                call.response_id = response.get("id")
            if response.get("usage"):
                call.usage = Usage.from_openai(response["usage"])
            if kind == "response.incomplete":
                call.finish_reasons = ("length",)
            elif kind == "response.completed":
                call.finish_reasons = ("stop",)
    return batch


__all__ = ["upstream_body", "as_ours", "event_commits", "deliver_events", "PassthroughEvents"]
