"""Durable state behind one protocol (``Storage``); SQLite is the embedded default.

This room imports no other Myriad room.
"""

from myriad.storage.interface import AgentRecord, AgentSQL, ScheduleRecord, Storage
from myriad.storage.sqlite import SQLiteStorage, connect

__all__ = ["AgentRecord", "AgentSQL", "ScheduleRecord", "Storage", "SQLiteStorage", "connect"]
