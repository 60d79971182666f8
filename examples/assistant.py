"""A chat-style assistant: one conversation per user, kept in the agent's own SQL.

    myriad serve --agents examples.assistant

With no model provider configured, Myriad serves SIMULATED models (deterministic
text, realistic latency) so this runs with no API key; point `[models] config` at a
deployment file to use a real provider. `ask` streams the reply token by token.
"""

from myriad import Agent, callable


class Assistant(Agent):
    initial_state = {"turns": 0, "model": None}

    async def on_start(self):
        self.sql("CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, role TEXT, content TEXT)")

    def _history(self, limit: int = 20) -> list[dict]:
        rows = self.sql("SELECT role, content FROM messages ORDER BY id DESC LIMIT ?", limit)
        return [{"role": r["role"], "content": r["content"]} for r in reversed(rows)]

    @callable(streaming=True)
    async def ask(self, stream, question: str):
        """Ask a question; the answer streams back, then the full text."""
        self.sql("INSERT INTO messages (role, content) VALUES ('user', ?)", question)
        messages = [{"role": "system", "content": "You are a helpful assistant."}, *self._history()]
        parts, model = [], None
        async for chunk in self.models.stream(messages):
            if chunk.text:
                parts.append(chunk.text)
                await stream.send(chunk.text)
            model = chunk.raw.get("model", model)
        answer = "".join(parts)
        self.sql("INSERT INTO messages (role, content) VALUES ('assistant', ?)", answer)
        self.set_state({"turns": self.state["turns"] + 1, "model": model})
        await stream.end(answer)

    @callable()
    async def history(self) -> list:
        """The conversation so far."""
        return self._history(limit=1000)

    @callable()
    async def reset(self) -> None:
        self.sql("DELETE FROM messages")
        self.set_state({"turns": 0, "model": None})
