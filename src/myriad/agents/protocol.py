"""The agents wire protocol: frames in, frames out, and the one RPC path.

Every frame a client sends is parsed here once (``parse_frame``); every protocol
frame the host sends is built here (``identity_frame``, ``rpc_result`` ...). RPC has
one dispatch path, ``invoke``, used by WebSocket ``rpc`` frames, the HTTP admin
door (``POST /v1/agents/{class}/{name}/rpc``) and sub-agent calls alike: resolve the
method, check it is ``@callable``, bind the arguments, call it, check the result is
JSON. The frames are those of the Cloudflare Agents SDK client (see
``shared/PROTOCOL.md`` and ``docs/chat-protocol.md`` for the chat extension).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from myriad import safe_json
from myriad.errors import InvalidRequest

if TYPE_CHECKING:
    from myriad.agents.agent import Agent, CallableSpec, StreamingResponse

RPC = "rpc"
STATE = "cf_agent_state"


class RpcError(InvalidRequest):
    """An RPC the protocol answers with ``success: false`` (unknown method, bad args)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame from a client: ``kind`` is its ``type`` when it is a JSON object
    with a string ``type`` (else None), ``data`` the parsed object (else None)."""

    text: str
    kind: str | None
    data: dict[str, Any] | None


def parse_frame(text: str) -> Frame:
    """Parse a client frame once. Anything that is not a JSON object with a string
    ``type`` is still a frame (``kind`` None): it goes to the agent's ``on_message``.
    A JSON object past ``myriad.safe_json``'s limits (depth, NaN/Infinity) raises
    ``JSONLimitExceeded`` instead (the door answers it with an error frame)."""
    if text[:1] != "{":
        return Frame(text, None, None)
    try:
        data = safe_json.loads(text, "frame")
    except safe_json.JSONLimitExceeded:
        raise
    except safe_json.InvalidJSON:
        return Frame(text, None, None)
    if not isinstance(data, dict):
        return Frame(text, None, None)
    kind = data.get("type")
    return Frame(text, kind if isinstance(kind, str) else None, data)


# -- frames the host sends -------------------------------------------------------

MCP_FRAME = json.dumps(
    {"type": "cf_agent_mcp_servers", "mcp": {"servers": {}, "tools": [], "prompts": [], "resources": []}}
)
STATE_READONLY = '{"type":"cf_agent_state_error","error":"Connection is readonly"}'
STATE_REJECTED = '{"type":"cf_agent_state_error","error":"State update rejected"}'


def identity_frame(name: str, agent: str, state_follows: bool) -> str:
    frame: dict[str, Any] = {"type": "cf_agent_identity", "name": name, "agent": agent}
    if state_follows:
        frame["stateFollows"] = True
    return json.dumps(frame)


def state_frame(state_json: str) -> str:
    """A state frame around already-serialised state (serialised once per change)."""
    return '{"type":"cf_agent_state","state":' + state_json + "}"


def rpc_result(rpc_id: Any, result: Any, *, done: bool = True) -> str:
    """``success: true`` (a plain call's answer, or one chunk of a stream when not done).
    Raises ``RpcError`` when ``result`` is not JSON-serialisable."""
    try:
        return json.dumps({"type": RPC, "id": rpc_id, "success": True, "result": result, "done": done})
    except (TypeError, ValueError):
        raise RpcError("Result is not JSON-serialisable") from None


def rpc_error(rpc_id: Any, error: str) -> str:
    return json.dumps({"type": RPC, "id": rpc_id, "success": False, "error": error})


# -- the one RPC path ------------------------------------------------------------

def resolve(agent: "Agent", method: Any) -> "tuple[CallableSpec, Callable[..., Awaitable[Any]]]":
    """The ``@callable`` method ``method`` of ``agent``, or ``RpcError`` with the
    message the npm client shows."""
    if not isinstance(method, str) or not method:
        raise RpcError("RPC method must be a non-empty string")
    attr = getattr(type(agent), method, None)
    if attr is None or method.startswith("_"):
        raise RpcError(f"Method {method} does not exist")
    spec = getattr(attr, "__myriad_callable__", None)
    if spec is None:
        raise RpcError(f"Method {method} is not callable")
    return spec, getattr(agent, method)


def rpc_args(args: Any) -> list[Any]:
    """The ``args`` of an RPC frame or body: a list (absent or null means none)."""
    if args is None:
        return []
    if not isinstance(args, list):
        raise RpcError("RPC args must be a list")
    return args


async def invoke(agent: "Agent", method: Any, args: list[Any], stream: "StreamingResponse | None") -> Any:
    """Call ``method(*args)`` on ``agent``. A streaming method gets ``stream`` first
    (which the caller provides; it is ended with None if the method did not end it)
    and the call returns None; a plain method's result is returned."""
    spec, fn = resolve(agent, method)
    if spec.streaming:
        if stream is None:  # pragma: no cover - every caller passes one
            raise RpcError(f"Method {method} streams; call it over a WebSocket")
        _bind(method, spec, [stream, *args])
        await fn(stream, *args)
        if not stream.closed:
            await stream.end(None)
        return None
    _bind(method, spec, args)
    return await fn(*args)


def _bind(method: str, spec: "CallableSpec", args: list[Any]) -> None:
    try:
        spec.signature.bind(None, *args)
    except TypeError as e:
        raise RpcError(f"Wrong arguments for {method}: {e}") from None


__all__ = [
    "Frame",
    "MCP_FRAME",
    "RPC",
    "RpcError",
    "STATE",
    "STATE_READONLY",
    "STATE_REJECTED",
    "identity_frame",
    "invoke",
    "parse_frame",
    "resolve",
    "rpc_args",
    "rpc_error",
    "rpc_result",
    "state_frame",
]
