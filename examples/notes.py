"""An agent that is an MCP server: each user's notes, as tools, a resource and a prompt.

    python -m myriad serve --agents examples.notes
    # any MCP client: http://127.0.0.1:8787/mcp/notes/alice  (Authorization: Bearer <key>)
    # one scratchpad per MCP session:   http://127.0.0.1:8787/mcp/scratchpad
"""

from myriad import Agent
from myriad import mcp


class Notes(Agent):
    """One user's notes, searchable by any MCP client."""

    async def on_start(self) -> None:
        self.sql("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")

    @mcp.tool()
    async def add_note(self, text: str) -> dict:
        """Save a note; returns its id and how many notes there are now."""
        self.sql("INSERT INTO notes (text) VALUES (?)", text)
        n = self.sql("SELECT count(*) AS n FROM notes")[0]["n"]
        self.set_state({"notes": n})
        return {"id": self.sql("SELECT max(id) AS id FROM notes")[0]["id"], "count": n}

    @mcp.tool()
    async def search(self, query: str, limit: int = 5) -> list[str]:
        """Notes containing ``query`` (case-insensitive), newest first."""
        rows = self.sql("SELECT text FROM notes WHERE text LIKE ? ORDER BY id DESC LIMIT ?", f"%{query}%", limit)
        return [r["text"] for r in rows]

    @mcp.resource("notes://all", description="Every note, one per line")
    async def all_notes(self) -> str:
        return "\n".join(r["text"] for r in self.sql("SELECT text FROM notes ORDER BY id"))

    @mcp.prompt()
    async def summarize(self, topic: str) -> str:
        """A prompt asking a model to summarize the notes about ``topic``."""
        found = await self.search(topic, 20)
        return f"Summarize my notes about {topic}:\n" + "\n".join(f"- {t}" for t in found)


@mcp.per_session
class Scratchpad(Agent):
    """A scratchpad that lives as long as one MCP session (Cloudflare's ``McpAgent`` shape):
    each client that connects to ``/mcp/scratchpad`` gets its own instance, and ending the
    session deletes it."""

    @mcp.tool()
    async def jot(self, text: str) -> list[str]:
        """Add a line to this session's scratchpad; returns every line so far."""
        lines = [*(self.state or {}).get("lines", []), text]
        self.set_state({"lines": lines})
        return lines
