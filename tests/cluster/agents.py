"""Agents for the cluster tests: a counter whose every add is acknowledged only once durable."""

from myriad import Agent, callable


class Tally(Agent):
    initial_state = {"n": 0, "log": []}

    @callable()
    async def add(self, k: int) -> int:
        self.set_state({"n": self.state["n"] + k, "log": (self.state["log"] + [k])[-50:]})
        return int(self.state["n"])

    @callable()
    async def where(self) -> int:
        import os

        return os.getpid()

    @callable()
    async def slow_add(self, k: int, delay: float) -> int:
        """Wait, then add: the write happens ``delay`` seconds into the turn."""
        import asyncio

        await asyncio.sleep(delay)
        self.set_state({"n": self.state["n"] + k, "log": (self.state["log"] + [k])[-50:]})
        return int(self.state["n"])

    @callable()
    async def ask(self, question: str) -> str:
        """One model call (the simulated provider): a turn whose trace reaches the gateway."""
        return str((await self.models.chat(question)).text)
