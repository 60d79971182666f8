"""A counter per user: the smallest complete Myriad agent.

    myriad serve --agents examples.counter
"""

from starlette.responses import JSONResponse

from myriad import Agent, callable


class Counter(Agent):
    initial_state = {"n": 0}

    @callable()
    async def add(self, a: int, b: int) -> int:
        """Add a and b to the counter; returns the new value."""
        self.set_state({"n": self.state["n"] + a + b})
        return self.state["n"]

    @callable(streaming=True)
    async def count(self, stream, upto: int):
        """Stream 0..upto-1, then "done"."""
        for i in range(upto):
            await stream.send(i)
        await stream.end("done")

    def validate_state_change(self, state, source):
        if not isinstance(state, dict) or not isinstance(state.get("n"), int):
            raise ValueError("state must be {'n': int}")

    async def on_request(self, request):
        # GET /agents/counter/{name} -> the counter as JSON
        return JSONResponse({"name": self.name, "n": self.state["n"]})
