"""Chat agents: ``ChatAgent`` speaks the chat frames of Cloudflare's
``@cloudflare/ai-chat`` (``useAgentChat``, ``WebSocketChatTransport``), keeps the
conversation in the agent's own SQL and streams replies that survive reconnects,
hibernation and host restarts. See docs/chat-protocol.md."""

from myriad.agents.chat._tools import ToolSpec, tool
from myriad.agents.chat.agent import ChatAgent, ChatTurn

__all__ = ["ChatAgent", "ChatTurn", "ToolSpec", "tool"]
