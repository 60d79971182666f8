"""The agent ``myriad bench scale`` drives: every turn changes state (a durable write)."""

from myriad.agents import Agent, callable


class ScaleAgent(Agent):
    initial_state = {"n": 0}

    @callable()
    async def add(self, k: int) -> int:
        self.set_state({"n": self.state["n"] + k})
        return int(self.state["n"])
