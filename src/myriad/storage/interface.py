"""The storage protocol: everything the agent runtime keeps durable.

A backend stores three things for the runtime:

- one row per agent instance: its address (``path``) and its state as JSON bytes;
- the schedules (alarms) of every instance, queryable by due time;
- a private SQL database per instance (``agent_sql``), which no other instance can see.

Every method that writes returns only once the write is durable against a crash of
the host process (the output gate relies on that). Methods are ``async`` so a
network database (PostgreSQL) can implement the same protocol; the SQLite backend
finishes them without yielding. ``agent_sql`` is synchronous on purpose, like a
Durable Object's ``ctx.storage.sql``: it is a local database next to the instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """One stored agent instance."""

    path: str
    tenant: str
    agent_class: str
    name: str
    state: bytes | None
    created: float
    updated: float


@dataclass(slots=True)
class ScheduleRecord:
    """One stored schedule: call ``method(payload)`` on the agent at ``path``."""

    id: str
    path: str
    tenant: str
    agent_class: str
    name: str
    method: str
    payload: str  # JSON text
    kind: str  # "delayed" | "scheduled" | "cron"
    cron: str | None
    next_run: float  # unix seconds
    attempts: int
    created: float


@runtime_checkable
class AgentSQL(Protocol):
    """An instance's private SQL database."""

    def execute(self, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Run one statement; rows as dicts. Writes are durable when it returns."""

    def close(self) -> None: ...


class Storage(Protocol):
    """Durable state for the agent runtime (see the module docstring)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    # agents
    async def load_agent(self, path: str) -> AgentRecord | None: ...

    async def create_agent(self, record: AgentRecord) -> None:
        """Insert the row if absent (idempotent)."""

    async def save_state(self, path: str, state: bytes | None) -> None: ...

    async def delete_agent(self, path: str) -> None:
        """Remove the row, its schedules and its SQL database (and those of its sub-agents)."""

    async def count_agents(self, tenant: str | None = None) -> dict[str, int]:
        """Stored instances per agent class (optionally for one tenant)."""

    # schedules
    async def add_schedule(self, record: ScheduleRecord) -> None: ...

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None: ...

    async def delete_schedule(self, schedule_id: str) -> bool: ...

    async def list_schedules(self, path: str) -> list[ScheduleRecord]: ...

    async def due_schedules(self, now: float, limit: int) -> list[ScheduleRecord]:
        """Schedules with ``next_run <= now``, earliest first."""

    async def next_due(self) -> float | None:
        """The earliest ``next_run`` of any schedule, or None."""

    async def update_schedule(self, schedule_id: str, next_run: float, attempts: int) -> None: ...

    # per-agent SQL
    def agent_sql(self, path: str) -> AgentSQL: ...


__all__ = ["AgentRecord", "ScheduleRecord", "AgentSQL", "Storage"]
