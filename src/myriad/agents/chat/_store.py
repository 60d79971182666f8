"""A chat agent's durable records, in its own SQL database.

- ``cf_chat_messages``: the conversation (UI messages as JSON, in order).
- ``cf_chat_streams``: one row per reply (a request id), ``streaming`` until it ends
  (``completed``, ``aborted``, ``error``). A ``streaming`` row with no producer in
  this process is a reply cut by a crash or restart: it is picked up and finished.
- ``cf_chat_chunks``: every chunk of a reply, numbered, written before it is sent,
  so a reconnecting client is replayed exactly what was sent, without gaps.
- ``cf_chat_context``: the last request's client tools and custom body, which
  continuations (after a tool result or an approval) reuse.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable

SQL = Callable[..., list[dict[str, Any]]]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS cf_chat_messages (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id TEXT UNIQUE NOT NULL, message TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS cf_chat_streams (request_id TEXT PRIMARY KEY, message_id TEXT,"
    " status TEXT NOT NULL, continuation INTEGER NOT NULL, created REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS cf_chat_chunks (request_id TEXT NOT NULL, seq INTEGER NOT NULL,"
    " body TEXT NOT NULL, PRIMARY KEY (request_id, seq))",
    "CREATE TABLE IF NOT EXISTS cf_chat_context (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


@dataclass(frozen=True, slots=True)
class StreamRow:
    request_id: str
    message_id: str | None
    status: str
    continuation: bool


class ChatStore:
    """Typed access to the tables above through an agent's ``sql``."""

    __slots__ = ("_sql",)

    def __init__(self, sql: SQL) -> None:
        self._sql = sql
        for statement in _SCHEMA:
            sql(statement)

    # -- messages ------------------------------------------------------------------
    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(r["message"]) for r in self._sql("SELECT message FROM cf_chat_messages ORDER BY seq")]

    def upsert(self, message: dict[str, Any]) -> None:
        self._sql("INSERT INTO cf_chat_messages (id, message) VALUES (?, ?)"
                  " ON CONFLICT(id) DO UPDATE SET message = excluded.message",
                  str(message["id"]), json.dumps(message))

    def replace_all(self, messages: list[dict[str, Any]]) -> None:
        """The client's view of the conversation becomes the stored one: new and
        changed messages are written, ones it no longer has (regenerate) deleted."""
        keep = [str(m["id"]) for m in messages]
        stored = {r["id"] for r in self._sql("SELECT id FROM cf_chat_messages")}
        for gone in stored - set(keep):
            self._sql("DELETE FROM cf_chat_messages WHERE id = ?", gone)
        for message in messages:
            self.upsert(message)

    def clear(self) -> None:
        for table in ("cf_chat_messages", "cf_chat_streams", "cf_chat_chunks", "cf_chat_context"):
            self._sql(f"DELETE FROM {table}")

    # -- streams -------------------------------------------------------------------
    def start(self, request_id: str, message_id: str | None, continuation: bool) -> None:
        # Only the newest finished reply stays replayable; older chunks go.
        self._sql("DELETE FROM cf_chat_chunks WHERE request_id IN"
                  " (SELECT request_id FROM cf_chat_streams WHERE status != 'streaming')")
        self._sql("DELETE FROM cf_chat_streams WHERE status != 'streaming'")
        self._sql("INSERT OR REPLACE INTO cf_chat_streams VALUES (?, ?, 'streaming', ?, ?)",
                  request_id, message_id, int(continuation), time.time())

    def active(self) -> StreamRow | None:
        rows = self._sql("SELECT * FROM cf_chat_streams WHERE status = 'streaming' ORDER BY created LIMIT 1")
        return _row(rows[0]) if rows else None

    def streaming(self) -> list[StreamRow]:
        """Every reply still streaming or queued, oldest first."""
        return [_row(r) for r in self._sql("SELECT * FROM cf_chat_streams WHERE status = 'streaming' ORDER BY created")]

    def stream(self, request_id: str) -> StreamRow | None:
        rows = self._sql("SELECT * FROM cf_chat_streams WHERE request_id = ?", request_id)
        return _row(rows[0]) if rows else None

    def set_message_id(self, request_id: str, message_id: str) -> None:
        self._sql("UPDATE cf_chat_streams SET message_id = ? WHERE request_id = ?", message_id, request_id)

    def finish(self, request_id: str, status: str) -> None:
        self._sql("UPDATE cf_chat_streams SET status = ? WHERE request_id = ?", status, request_id)

    def append_many(self, request_id: str, first_seq: int, bodies: list[str]) -> None:
        """Store chunks ``first_seq``, ``first_seq + 1``, ... of a reply in one statement
        (one transaction): durable when this returns."""
        rows = ", ".join("(?, ?, ?)" for _ in bodies)
        params: list[Any] = []
        for i, body in enumerate(bodies):
            params += [request_id, first_seq + i, body]
        self._sql(f"INSERT INTO cf_chat_chunks (request_id, seq, body) VALUES {rows}", *params)

    def chunks(self, request_id: str) -> list[str]:
        return [r["body"] for r in self._sql(
            "SELECT body FROM cf_chat_chunks WHERE request_id = ? ORDER BY seq", request_id)]

    # -- request context -------------------------------------------------------------
    def set_context(self, key: str, value: Any) -> None:
        self._sql("INSERT OR REPLACE INTO cf_chat_context VALUES (?, ?)", key, json.dumps(value))

    def context(self, key: str) -> Any:
        rows = self._sql("SELECT value FROM cf_chat_context WHERE key = ?", key)
        return json.loads(rows[0]["value"]) if rows else None


def _row(r: dict[str, Any]) -> StreamRow:
    return StreamRow(r["request_id"], r["message_id"], r["status"], bool(r["continuation"]))


__all__ = ["ChatStore", "StreamRow"]
