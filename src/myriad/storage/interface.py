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
Its writes are durable once ``flush()`` returns (a no-op for a local file); the
host's output gate calls it before it releases any frame that follows them.

Fences (cluster mode): a backend may be given a ``Fence``; every write to an agent's
rows (state, schedules, SQL pages) then checks the fence's condition in the same
transaction, and fails with ``myriad.errors.FencedOut`` when it does not hold, so a
process that lost an agent's lease can never overwrite the new owner's writes.
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
    has_sql: bool = False
    """The instance has a per-agent SQL database stored off this machine (PostgreSQL), so
    the host opens it (``open_agent_sql``) when it wakes the instance."""


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
    key: str | None = None
    """Identity of an idempotent schedule (method, when and payload): adding one whose
    key an agent already has returns the existing one. None: always a new row."""


@runtime_checkable
class AgentSQL(Protocol):
    """An instance's private SQL database."""

    def execute(self, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Run one statement; rows as dicts. Writes are durable once ``flush()`` returns."""

    @property
    def pending(self) -> bool:
        """Writes not yet durable (``flush()`` would do work)."""

    async def flush(self) -> None:
        """Make every write so far durable (the output gate awaits this)."""

    def close(self) -> None: ...


@runtime_checkable
class Fence(Protocol):
    """A condition every write to an agent's rows must meet, checked in the write's own
    transaction (cluster mode: "this process still holds the agent's lease, with this
    fencing token"). ``condition(path)`` returns an SQL boolean expression and its
    parameters (``%s`` placeholders), evaluated by the backend; when it is not true the
    write is not made and ``FencedOut`` is raised."""

    def condition(self, path: str) -> tuple[str, tuple[Any, ...]]: ...


class Storage(Protocol):
    """Durable state for the agent runtime (see the module docstring)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    # agents
    async def load_agent(self, path: str) -> AgentRecord | None: ...

    async def create_agent(self, record: AgentRecord) -> None:
        """Insert the row if absent (idempotent)."""

    async def save_state(self, path: str, state: bytes | None, sql: AgentSQL | None = None) -> None:
        """Store the state; with ``sql``, also make its pending writes durable, atomically
        with the state (a turn's state and SQL are durable together or not at all)."""

    async def delete_agent(self, path: str) -> None:
        """Remove the row, its schedules and its SQL database (and those of its sub-agents)."""

    async def count_agents(self, tenant: str | None = None) -> dict[str, int]:
        """Stored instances per agent class (optionally for one tenant)."""

    # schedules
    async def add_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        """Store it; when ``record.key`` is set and the agent already has a schedule with
        that key, store nothing and return that one."""

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None: ...

    async def delete_schedule(self, schedule_id: str, *, owner: str | None = None) -> bool:
        """Remove it; with ``owner``, only while ``owner`` still holds its claim (a claimant
        that lost its claim to another, paused past its lease, settles nothing)."""

    async def list_schedules(self, path: str) -> list[ScheduleRecord]: ...

    async def due_schedules(self, now: float, limit: int) -> list[ScheduleRecord]:
        """Schedules with ``next_run <= now``, earliest first."""

    async def claim_due(self, now: float, limit: int, owner: str, lease: float) -> list[ScheduleRecord]:
        """Due schedules that no live claimant holds, now claimed by ``owner`` until
        ``now + lease``: no other process gets them until that passes or
        ``update_schedule`` / ``delete_schedule`` releases them."""

    async def renew_claims(self, owner: str, ids: list[str], until: float) -> None:
        """Extend ``owner``'s claims on ``ids`` (firings still running)."""

    async def next_due(self) -> float | None:
        """The earliest ``next_run`` of any schedule, or None."""

    async def update_schedule(self, schedule_id: str, next_run: float, attempts: int, *,
                              owner: str | None = None) -> bool:
        """Move it to ``next_run`` (and release any claim on it); with ``owner``, only
        while ``owner`` still holds its claim. False if nothing was updated."""

    # per-agent SQL
    def agent_sql(self, path: str) -> AgentSQL:
        """The instance's database, created empty if it has none (``has_sql`` false)."""

    async def open_agent_sql(self, path: str) -> AgentSQL:
        """The instance's existing database (``has_sql`` true), fetched if not local."""


__all__ = ["AgentRecord", "ScheduleRecord", "AgentSQL", "Fence", "Storage"]
