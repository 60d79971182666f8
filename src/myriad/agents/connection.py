"""A client connection to an agent instance, held by the host.

Connections belong to the host, not to the instance: when an instance hibernates its
connections stay open, and the next frame wakes it. A transport (the WebSocket server)
implements ``Transport``; tests can use any object with the same two methods.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from myriad.agents.slot import _Slot


current_caller: ContextVar[Any] = ContextVar("myriad_current_caller", default=None)
"""Who started the running turn (the server's authenticated principal), or None
(schedules, startup). Sub-agent calls inherit it."""


class Transport(Protocol):
    async def send_text(self, text: str) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class Connection:
    """One client (one ``_pk``) connected to one agent instance.

    ``state`` is per-connection data the agent may keep (it survives hibernation of the
    agent, not a reconnect). ``readonly`` connections may call methods but not set state.
    """

    __slots__ = ("id", "state", "readonly", "query", "principal", "_transport", "_slot", "closed", "protocol")

    def __init__(self, id: str, transport: Transport, query: dict[str, str] | None = None,
                 principal: Any = None) -> None:
        self.id = id
        self.principal = principal
        """Who opened this connection (set by the server after authentication)."""
        self.state: Any = None
        self.readonly = False
        self.query = query or {}
        self._transport = transport
        self._slot: _Slot | None = None
        self.closed = False
        self.protocol: dict[str, Any] = {}
        """Per-connection bookkeeping of protocol extensions (the chat frames' resume
        handshake); not the agent's (that is ``state``)."""

    def set_state(self, state: Any) -> None:
        self.state = state

    async def send(self, message: Any) -> None:
        """Send a message (str, or anything JSON-serialisable) to this client.

        Held back until the agent's pending state is durable (the output gate).
        """
        text = message if isinstance(message, str) else json.dumps(message)
        if self._slot is not None:
            await self._slot.release(text, only=self)
        else:
            await self._send_now(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            try:
                await self._transport.close(code, reason)
            except Exception:  # the peer may already be gone
                pass

    async def _send_now(self, text: str) -> None:
        if self.closed:
            return
        try:
            await self._transport.send_text(text)
        except Exception:
            # A dead peer must not fail the turn of the agent that broadcasts to it.
            self.closed = True

    def __repr__(self) -> str:
        return f"<Connection {self.id}>"


__all__ = ["Connection", "Transport", "current_caller"]
