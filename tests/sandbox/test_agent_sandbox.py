"""Agents reach sandboxes as ``self.sandbox(...)``; each agent owns its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from myriad.agents import Agent, AgentHost, AgentRef, callable
from myriad.sandbox import Sandboxes
from myriad.settings import AgentSettings
from myriad.storage import SQLiteStorage
from tests.sandbox.conftest import make_settings


async def price_of(sku: str) -> float:
    """Price of a product."""
    return {"apple": 0.5, "pear": 0.75}[sku]


class Shopper(Agent):
    @callable()
    async def total(self, skus: list[str]) -> Any:
        box = await self.sandbox(needs={"tools"}, tools=[price_of], id="code")
        res = await box.run(
            f"const prices = await Promise.all({skus!r}.map(sku => tools.price_of({{sku}})));"
            "globalThis.calls = (globalThis.calls || 0) + 1;"
            "return {total: prices.reduce((a, b) => a + b, 0), calls}"
        )
        return res.value

    @callable()
    async def shell(self, cmd: str) -> Any:
        box = await self.sandbox(needs={"filesystem", "binaries"}, id="dev")
        return (await box.exec(cmd)).stdout


@pytest.fixture
async def agent_host(tmp_path: Path):
    storage = SQLiteStorage(tmp_path / "data")
    await storage.open()
    sandboxes = Sandboxes(make_settings(tmp_path))
    host = AgentHost(storage, AgentSettings(hibernate_after=3600), sandboxes=sandboxes)
    host.register(Shopper)
    await host.start()
    yield host, sandboxes
    await host.stop()
    await sandboxes.aclose()
    await storage.close()


async def test_agent_code_mode_and_warm_isolate(agent_host) -> None:
    host, sandboxes = agent_host
    ann = AgentRef("acme", "shopper", "ann")
    assert await host.call(ann, "total", [["apple", "pear", "apple"]]) == {"total": 1.75, "calls": 1}
    assert await host.call(ann, "total", [["pear"]]) == {"total": 0.75, "calls": 2}  # same warm isolate
    bob = AgentRef("acme", "shopper", "bob")
    assert await host.call(bob, "total", [["pear"]]) == {"total": 0.75, "calls": 1}  # bob's own isolate
    assert {s.owner for s in sandboxes.list("acme/shopper/ann")} == {"acme/shopper/ann"}


@pytest.mark.integration
async def test_agent_container_is_private(agent_host) -> None:
    host, _ = agent_host
    ann, bob = AgentRef("acme", "shopper", "ann"), AgentRef("acme", "shopper", "bob")
    await host.call(ann, "shell", ["echo ann-was-here > note"])
    assert await host.call(ann, "shell", ["cat note"]) == "ann-was-here\n"
    assert await host.call(bob, "shell", ["cat note 2>&1 || true"]) != "ann-was-here\n"



async def test_idle_isolates_are_closed(tmp_path: Path) -> None:
    sandboxes = Sandboxes(make_settings(tmp_path, isolate_idle_timeout=0.05))
    try:
        box = await sandboxes.open(needs={"javascript"}, owner=AgentRef("acme", "shopper", "ann"), id="warm")
        assert (await box.run("globalThis.n = 41; return n + 1")).value == 42
        assert await sandboxes.reap() == []  # just used: stays warm
        import asyncio

        await asyncio.sleep(0.1)
        assert await sandboxes.reap() == ["warm"]
        assert sandboxes.list("acme/shopper/ann") == []
        again = await sandboxes.open(needs={"javascript"}, owner=AgentRef("acme", "shopper", "ann"), id="warm")
        assert (await again.run("return typeof globalThis.n")).value == "undefined"  # a fresh isolate
    finally:
        await sandboxes.aclose()
