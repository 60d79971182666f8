"""``POST /v1/responses`` on the simulated upstream: the OpenAI Responses API, so
the gateway's pass-through to upstreams that speak it is tested against a real
server. The request is translated with ``myriad.models.responses`` (the gateway's
own translation), answered by the engine, and written back as a response object
or its typed stream events.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from myriad.models.responses import ResponseEvents, ResponsesRequest, output_items, response_object, sse
from myriad.models.responses._ids import new_id
from myriad.models.simulated._engine import Profile, Reply
from myriad.models.types import Usage


def _message(reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None if reply.tool_call else reply.text}
    if reply.tool_call:
        message["tool_calls"] = [reply.tool_call]
    return message


def _usage(reply: Reply) -> Usage:
    c = reply.completion_tokens
    return Usage(reply.prompt_tokens, c, reply.prompt_tokens + c)


def response(req: ResponsesRequest, model: str, reply: Reply) -> dict[str, Any]:
    """The non-streamed answer."""
    return response_object(req, response_id=new_id("resp"), created_at=int(time.time()), model=model,
                           output=output_items(_message(reply), reply.finish_reason), usage=_usage(reply),
                           finish_reason=reply.finish_reason)


async def stream(send: Any, req: ResponsesRequest, model: str, reply: Reply, profile: Profile,
                 stall_after_first: float | None, sleep: Any) -> None:
    """The typed events, one write per token (after ``ttft``, at ``tps``)."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
    events = ResponseEvents(req, model)
    if profile.ttft > 0:
        await asyncio.sleep(profile.ttft)
    out = events.start()
    if reply.tool_call is not None:
        out += events.feed({"choices": [{"delta": {"tool_calls": [dict(reply.tool_call, index=0)]}}]})
        pieces: tuple[str, ...] = ()
    else:
        pieces = reply.tokens or ("",)
        out += events.feed({"choices": [{"delta": {"content": pieces[0]}}]})
    await send({"type": "http.response.body", "body": sse(out), "more_body": True})
    if stall_after_first is not None:
        await sleep(stall_after_first)
        return
    gap = 1 / profile.tps if profile.tps > 0 else 0.0
    for piece in pieces[1:]:
        if gap:
            await asyncio.sleep(gap)
        await send({"type": "http.response.body", "body": sse(events.feed({"choices": [{"delta": {"content": piece}}]})),
                    "more_body": True})
    events.feed({"choices": [{"delta": {}, "finish_reason": reply.finish_reason}], "usage": _usage(reply).to_openai()})
    await send({"type": "http.response.body", "body": sse(events.finish()), "more_body": False})


__all__ = ["response", "stream"]
