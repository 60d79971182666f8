"""Durable state behind one protocol (``Storage``): SQLite is the embedded default,
PostgreSQL (``storage.postgres``) the shared one.

This room imports no other Myriad room.
"""

from myriad.storage.interface import AgentRecord, AgentSQL, Fence, ScheduleRecord, Storage
from myriad.storage.postgres import Migrations, PostgresStorage
from myriad.storage.sqlite import SQLiteStorage, connect

__all__ = ["AgentRecord", "AgentSQL", "Fence", "ScheduleRecord", "Storage", "SQLiteStorage", "PostgresStorage",
           "Migrations", "connect"]
