"""Reminders: schedules that survive restarts and wake a hibernated agent.

    myriad serve --agents examples.reminders

`remind_in(seconds, text)` stores a schedule; when it fires, the agent records the
reminder in its own SQL database and broadcasts it to connected clients.
"""

from myriad import Agent, callable


class Reminders(Agent):
    initial_state = {"fired": 0}

    async def on_start(self):
        self.sql("CREATE TABLE IF NOT EXISTS reminders (at TEXT DEFAULT CURRENT_TIMESTAMP, text TEXT)")

    @callable()
    async def remind_in(self, seconds: float, text: str) -> dict:
        """Schedule a reminder `seconds` from now."""
        schedule = await self.schedule(seconds, "fire", {"text": text})
        return schedule.to_json()

    @callable()
    async def remind_cron(self, cron: str, text: str) -> dict:
        """Schedule a recurring reminder, e.g. '*/5 * * * *'."""
        schedule = await self.schedule(cron, "fire", {"text": text})
        return schedule.to_json()

    @callable()
    async def pending(self) -> list:
        return [s.to_json() for s in await self.list_schedules()]

    @callable()
    async def cancel(self, schedule_id: str) -> bool:
        return await self.cancel_schedule(schedule_id)

    @callable()
    async def history(self) -> list:
        return self.sql("SELECT at, text FROM reminders ORDER BY rowid")

    async def fire(self, payload: dict) -> None:
        self.sql("INSERT INTO reminders (text) VALUES (?)", payload["text"])
        self.set_state({"fired": self.state["fired"] + 1})
        await self.broadcast({"type": "reminder", "text": payload["text"]})
