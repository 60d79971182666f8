"""What the two database-backed response stores share: a write buffer in front of the
database, readable at once from this process.

``put`` only buffers; ``flush`` writes what is buffered in one transaction (blocking:
``Responses`` calls it in a worker thread); ``put_now`` writes one response at once in
its own transaction and, if the database refuses, leaves it buffered for the next
flush. A response taken by a flush stays readable until its transaction committed; a
flush that fails puts its batch back. Subclasses say how rows are read and written
(``_read``, ``_find_item``, ``_write``, ``_remove``, ``_close``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from myriad.models.responses._store import StoredResponse

log = logging.getLogger("myriad.models.responses")

Key = tuple[str, str]
"""(tenant or "", response id)."""


class BufferedResponseStore:
    """The ``ResponseStore`` contract over a database (see the module docstring)."""

    buffered = True
    """``put`` buffers; call ``flush`` (blocking) to write (``Responses`` does, in a thread)."""
    blocking = False
    """Whether a read may wait on the network (PostgreSQL): callers on an event loop use a thread."""

    def __init__(self, ttl: float, max_per_tenant: int, clock: Callable[[], float] = time.time) -> None:
        self.ttl = ttl
        self.max_per_tenant = max_per_tenant
        self._clock = clock
        self._lock = threading.Lock()  # guards the buffers
        self._pending: dict[Key, StoredResponse] = {}
        self._writing: dict[Key, StoredResponse] = {}
        """Taken from ``_pending`` by a flush, readable until committed."""
        self._flushes = 0

    # ------------------------------------------------------------------ what subclasses provide

    def _read(self, tenant: str, response_id: str) -> StoredResponse | None:
        raise NotImplementedError

    def _find_item(self, tenant: str, item_id: str) -> str | None:
        """The id of the newest stored response of ``tenant`` holding item ``item_id``."""
        raise NotImplementedError

    def _write(self, batch: dict[Key, StoredResponse], now: float, housekeeping: bool) -> None:
        """Insert ``batch`` in one transaction; with ``housekeeping``, also drop expired rows."""
        raise NotImplementedError

    def _remove(self, tenant: str, response_id: str) -> bool:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ the protocol

    def put(self, tenant: str | None, stored: StoredResponse) -> None:
        stored.expires_at = self._clock() + self.ttl
        with self._lock:
            self._pending[(tenant or "", stored.response["id"])] = stored

    def get(self, tenant: str | None, response_id: str) -> StoredResponse | None:
        key = (tenant or "", response_id)
        with self._lock:
            stored = self._pending.get(key) or self._writing.get(key)
        if stored is None:
            stored = self._read(*key)
            if stored is None:
                return None
        return stored if stored.expires_at > self._clock() else None

    def delete(self, tenant: str | None, response_id: str) -> bool:
        key = (tenant or "", response_id)
        with self._lock:
            buffered = self._pending.pop(key, None) is not None
            writing = self._writing.pop(key, None) is not None
        found = self._remove(*key)
        return buffered or writing or found

    def item(self, tenant: str | None, item_id: str) -> dict[str, Any] | None:
        with self._lock:
            for stored in (*self._pending.values(), *self._writing.values()):
                if item_id in stored.items and stored.expires_at > self._clock():
                    return stored.items[item_id]
        rid = self._find_item(tenant or "", item_id)
        found = self.get(tenant, rid) if rid else None
        return found.items.get(item_id) if found else None

    # ------------------------------------------------------------------ writing

    def pending(self) -> int:
        """Responses buffered and not yet written."""
        return len(self._pending)

    def flush(self) -> int:
        """Write what is buffered in one transaction (blocking); returns how many."""
        with self._lock:
            batch, self._pending = self._pending, {}
            self._writing.update(batch)
        if not batch:
            return 0
        self._commit(batch)
        return len(batch)

    def put_now(self, tenant: str | None, stored: StoredResponse) -> bool:
        """Store ``stored`` and write it at once (blocking); False if the database refused
        (it stays buffered, readable here, for the next ``flush``)."""
        stored.expires_at = self._clock() + self.ttl
        key = (tenant or "", stored.response["id"])
        with self._lock:
            self._writing[key] = stored
        try:
            self._commit({key: stored})
        except Exception as e:  # noqa: BLE001 - kept buffered; the caller's flusher retries
            log.warning("could not write stored response %s now (%s); it stays buffered", key[1], e)
            return False
        return True

    def _commit(self, batch: dict[Key, StoredResponse]) -> None:
        self._flushes += 1
        try:
            self._write(batch, self._clock(), housekeeping=self._flushes % 64 == 1)
        except BaseException:
            with self._lock:  # not lost: the next flush tries again
                for key, stored in batch.items():
                    if self._writing.pop(key, None) is not None:
                        self._pending.setdefault(key, stored)
            raise
        with self._lock:
            for key in batch:
                self._writing.pop(key, None)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._close()


__all__ = ["BufferedResponseStore", "Key"]
