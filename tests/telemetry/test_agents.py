"""The host hook: an invoke_agent span per turn, model calls beneath it, gauges."""

from __future__ import annotations

import pytest

from myriad.agents import Agent, AgentHost, AgentRef, callable
from myriad.models import Gateway
from myriad.settings import AgentSettings
from myriad.telemetry import semconv as sc


class Helper(Agent):
    initial_state = {"n": 0}

    @callable()
    async def ask(self, q: str) -> str:
        r = await self.models.chat(q)
        self.set_state({"n": self.state["n"] + 1})
        return r.text

    @callable()
    async def explode(self) -> None:
        raise RuntimeError("kaboom password=hunter22")


@pytest.fixture
async def traced_host(storage, tel):
    h = AgentHost(storage, AgentSettings(hibernate_after=3600), models=tel.instrument_gateway(Gateway.simulated()),
                  instrumentation=tel.instrument_host())
    h.register(Helper)
    await h.start()
    yield h
    await h.stop()


async def test_turn_span_is_the_parent_of_model_calls(traced_host, tel):
    ref = AgentRef("acme", "helper", "ann")
    await traced_host.call(ref, "ask", ["hi"])
    await traced_host.call(ref, "ask", ["again"])
    turns = [s for s in tel.store._snapshot() if s.name == "invoke_agent helper"]
    chats = [s for s in tel.store._snapshot() if s.name.startswith("chat ")]
    assert len(turns) == 2 and len(chats) == 2
    for turn, chat in zip(turns, chats):
        assert chat.parent_id == turn.span_id and chat.trace_id == turn.trace_id
    a = turns[0].attributes
    assert a[sc.GEN_AI_OPERATION_NAME] == "invoke_agent" and a[sc.GEN_AI_AGENT_NAME] == "helper"
    assert a[sc.GEN_AI_AGENT_ID] == "acme/helper/ann" == a[sc.GEN_AI_CONVERSATION_ID]
    assert a[sc.MYRIAD_TENANT] == "acme"
    assert a[sc.MYRIAD_AGENT_WOKE] is True and turns[1].attributes[sc.MYRIAD_AGENT_WOKE] is False
    (listed,) = tel.store.turns("acme", limit=1)
    assert listed["model_calls"] == 1 and listed["input_tokens"] > 0


async def test_failed_turn_is_an_error_span_with_redacted_message(traced_host, tel):
    with pytest.raises(RuntimeError):
        await traced_host.call(AgentRef("acme", "helper", "bob"), "explode")
    (span,) = [s for s in tel.store._snapshot() if s.name == "invoke_agent helper"]
    assert not span.ok and span.attributes[sc.ERROR_TYPE] == "RuntimeError"
    assert "hunter22" not in span.error and "kaboom" in span.error


async def test_gauges(traced_host, tel):
    for name in ("a", "b", "c"):
        await traced_host.call(AgentRef("acme", "helper", name), "ask", ["x"])
    assert traced_host.hibernate_idle(0) == 3
    await traced_host.call(AgentRef("acme", "helper", "a"), "ask", ["x"])
    await tel._host_instr.refresh()
    snap = tel.metrics_snapshot()
    value = lambda name: [p["value"] for p in snap[name]["points"]]  # noqa: E731
    assert value(sc.MYRIAD_AGENTS_RESIDENT) == [1]
    assert value(sc.MYRIAD_AGENTS_HIBERNATED) == [2]
    assert value(sc.MYRIAD_AGENTS_WAKES) == [4]
    assert value(sc.MYRIAD_AGENTS_QUEUE_DEPTH) == [0]
    assert sum(p["count"] for p in snap[sc.MYRIAD_TURN_DURATION]["points"]) == 4


async def test_host_without_instrumentation_is_untouched(storage):
    h = AgentHost(storage)
    assert h._turn.__func__ is AgentHost._turn
