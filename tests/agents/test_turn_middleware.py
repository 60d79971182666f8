"""Turn middleware: one ``TurnInfo`` per turn, enter in order, exit in reverse, the
error (if any) on the info; a wrapper with only ``wrap_turn`` still wraps."""

from __future__ import annotations

import pytest

from myriad.agents import Agent, AgentHost, AgentRef, TurnInfo, callable
from myriad.settings import AgentSettings


class Echo(Agent):
    @callable()
    async def echo(self, x):
        if x == "boom":
            raise ValueError("boom")
        return x


class Seen:
    def __init__(self, name: str, log: list) -> None:
        self.name, self.log = name, log

    def enter(self, info: TurnInfo) -> None:
        self.log.append(("enter", self.name, info.ref.path, info.woke))

    def exit(self, info: TurnInfo) -> None:
        self.log.append(("exit", self.name, type(info.error).__name__ if info.error else None))


async def test_each_turn_is_one_turn_info_seen_by_every_middleware(storage):
    log: list = []
    host = AgentHost(storage, AgentSettings(hibernate_after=3600), instrumentation=[Seen("a", log), Seen("b", log)])
    host.register(Echo)
    await host.start()
    ref = AgentRef("acme", "echo", "e1")
    try:
        assert await host.call(ref, "echo", ["hi"]) == "hi"
        with pytest.raises(Exception):
            await host.call(ref, "echo", ["boom"])
    finally:
        await host.stop()
    assert log == [("enter", "a", ref.path, True), ("enter", "b", ref.path, True), ("exit", "b", None), ("exit", "a", None),
                   ("enter", "a", ref.path, False), ("enter", "b", ref.path, False),
                   ("exit", "b", "ValueError"), ("exit", "a", "ValueError")]
