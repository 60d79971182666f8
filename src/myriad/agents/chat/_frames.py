"""The chat frames of ``@cloudflare/ai-chat`` 0.12 / ``agents`` 0.32 (``agents/chat``).

Names and shapes are protocol facts read from those packages' published sources
(``agents/dist/chat``, ``ws-chat-transport``); docs/chat-protocol.md lists them all.
"""

from __future__ import annotations

import json
from typing import Any

# client -> server
USE_CHAT_REQUEST = "cf_agent_use_chat_request"
CHAT_REQUEST_CANCEL = "cf_agent_chat_request_cancel"
CHAT_CLEAR = "cf_agent_chat_clear"
CHAT_MESSAGES = "cf_agent_chat_messages"  # also server -> client
STREAM_RESUME_REQUEST = "cf_agent_stream_resume_request"
STREAM_RESUME_ACK = "cf_agent_stream_resume_ack"
TOOL_RESULT = "cf_agent_tool_result"
TOOL_APPROVAL = "cf_agent_tool_approval"

# server -> client
USE_CHAT_RESPONSE = "cf_agent_use_chat_response"
STREAM_RESUMING = "cf_agent_stream_resuming"
STREAM_RESUME_NONE = "cf_agent_stream_resume_none"
MESSAGE_UPDATED = "cf_agent_message_updated"


def response(request_id: str, body: str = "", *, done: bool = False, seq: int | None = None,
             continuation: bool = False, **extra: Any) -> str:
    """One ``cf_agent_use_chat_response`` frame: ``body`` is one UI message chunk as
    JSON text (empty on terminal frames)."""
    frame: dict[str, Any] = {"type": USE_CHAT_RESPONSE, "id": request_id, "body": body, "done": done}
    if seq is not None:
        frame["seq"] = seq
    if continuation:
        frame["continuation"] = True
    frame.update(extra)
    return json.dumps(frame)


def messages(msgs: list[dict[str, Any]], **extra: Any) -> str:
    return json.dumps({"type": CHAT_MESSAGES, "messages": msgs, **extra})


def resuming(request_id: str, probe_id: str | None) -> str:
    frame: dict[str, Any] = {"type": STREAM_RESUMING, "id": request_id}
    if probe_id:
        frame["probeId"] = probe_id
    return json.dumps(frame)


def resume_none(probe_id: str | None) -> str:
    frame: dict[str, Any] = {"type": STREAM_RESUME_NONE, "reason": "idle"}
    if probe_id:
        frame["probeId"] = probe_id
    return json.dumps(frame)


def message_updated(message: dict[str, Any]) -> str:
    return json.dumps({"type": MESSAGE_UPDATED, "message": message})


CLEAR = json.dumps({"type": CHAT_CLEAR})
