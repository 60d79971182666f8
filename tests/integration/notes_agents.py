"""An agent that writes a state change and an SQL row per call (storage crash tests)."""

from myriad import Agent, callable


class Notes(Agent):
    initial_state = {"n": 0}

    async def on_start(self) -> None:
        self.sql("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")

    @callable()
    async def add(self, text: str) -> int:
        """Insert a row and count it in the state; returns the count."""
        self.sql("INSERT INTO notes (text) VALUES (?)", text)
        self.set_state({"n": self.state["n"] + 1})
        return self.state["n"]

    @callable()
    async def texts(self) -> list[str]:
        return [r["text"] for r in self.sql("SELECT text FROM notes ORDER BY id")]
