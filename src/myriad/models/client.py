"""What an agent holds as ``self.models``: the gateway, bound to its tenant and agent.

>>> reply = await self.models.chat("Summarise this thread", model="sim-small")
>>> reply.text, reply.usage.total_tokens, reply.raw["id"]
>>> async for chunk in self.models.stream([{"role": "user", "content": "hi"}]):
...     print(chunk.text, end="")
>>> vectors = (await self.models.embed(["a", "b"])).vectors
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, AsyncIterator, Sequence

from myriad.errors import InvalidRequest
from myriad.models.types import ChatChunk, ChatResult, EmbeddingResult

if TYPE_CHECKING:
    from myriad.models.gateway import Gateway

Messages = str | Sequence[dict[str, Any]]


class ModelsClient:
    """The agent-facing facade. Usage is attributed to ``tenant`` / ``agent``."""

    def __init__(self, gateway: Gateway, tenant: str | None = None, agent: str | None = None,
                 default_model: str | None = None) -> None:
        self.gateway = gateway
        self.tenant = tenant
        self.agent = agent
        self.default_model = default_model

    def _body(self, messages: Messages, model: str | None, params: dict[str, Any]) -> dict[str, Any]:
        if isinstance(messages, str):
            msgs: list[dict[str, Any]] = [{"role": "user", "content": messages}]
        elif isinstance(messages, Sequence) and all(isinstance(m, dict) for m in messages):
            msgs = [m for m in messages if isinstance(m, dict)]
        else:
            raise InvalidRequest("messages must be a string or a list of {'role', 'content'} dicts")
        body = {"messages": msgs, **params}
        m = model or self.default_model
        if m:
            body["model"] = m
        return body

    async def chat(self, messages: Messages, model: str | None = None, **params: Any) -> ChatResult:
        """One completion. ``params`` are OpenAI chat parameters (tools, temperature, ...)."""
        return await self.gateway.chat(self._body(messages, model, params), tenant=self.tenant, agent=self.agent)

    async def stream(self, messages: Messages, model: str | None = None, **params: Any
                     ) -> AsyncIterator[ChatChunk]:
        """Stream a completion; each chunk has ``.text`` (the delta) and ``.raw``."""
        body = self._body(messages, model, params)
        async for chunk in self.gateway.chat_stream(body, tenant=self.tenant, agent=self.agent):
            yield chunk

    async def stream_text(self, messages: Messages, model: str | None = None, **params: Any) -> str:
        """Stream a completion and return its whole text (what a turn usually wants)."""
        parts = [c.text async for c in self.stream(messages, model, **params)]
        return "".join(parts)

    async def embed(self, texts: str | list[str], model: str | None = None,
                    dimensions: int | None = None) -> EmbeddingResult:
        """Vectors for ``texts`` (a string embeds as a list of one)."""
        batch = [texts] if isinstance(texts, str) else texts
        return await self.gateway.embed(batch, model=model, tenant=self.tenant, agent=self.agent,
                                        dimensions=dimensions)

    async def record_outcome(self, prompt: str, *, weak_ok: bool) -> None:
        """Tell the strong/weak router whether the weak model's answer to ``prompt`` was
        good enough (it learns from this tenant's own traffic)."""
        await self.gateway.record_outcome(prompt, weak_ok=weak_ok, tenant=self.tenant)


__all__ = ["ModelsClient", "Messages"]
