"""Agents reach the gateway as ``self.models``, bound to their tenant and path."""

from __future__ import annotations

from myriad.agents import Agent, AgentRef, callable
from myriad.models import Gateway, UsageRecord


class Writer(Agent):
    initial_state = {"drafts": 0}

    @callable()
    async def draft(self, topic: str) -> dict:
        reply = await self.models.chat(f"Write about {topic}")
        streamed = await self.models.stream_text([{"role": "user", "content": f"Write about {topic}"}],
                                                 model="sim-small")
        vecs = await self.models.embed([topic, reply.text])
        self.set_state({"drafts": self.state["drafts"] + 1})
        return {"text": reply.text, "same": streamed == reply.text, "tokens": reply.usage.total_tokens,
                "dims": len(vecs.vectors[0]), "id": reply.raw["id"]}


async def test_agent_uses_models(host):
    seen: list[UsageRecord] = []
    gateway = Gateway.simulated(on_usage=seen.append)
    host.models = gateway
    host.register(Writer)
    out = await host.call(AgentRef("acme", "writer", "w1"), "draft", ["tides"])
    assert out["text"].startswith("[simulated sim-small] You said: Write about tides.")
    assert out["same"] and out["tokens"] > 16 and out["dims"] == 384
    ref = AgentRef("acme", "writer", "w1")
    assert [(r.tenant, r.agent, r.operation) for r in seen] == [
        ("acme", ref.path, "chat"), ("acme", ref.path, "chat"), ("acme", ref.path, "embeddings")]
