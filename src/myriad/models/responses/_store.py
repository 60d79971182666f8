"""Stored responses, per tenant, with an expiry: what ``previous_response_id``,
``item_reference`` and ``GET/DELETE /v1/responses/{id}`` read.

``ResponseStore`` is the plug-in point; ``MemoryResponseStore`` keeps them in this
process (bounded per tenant, oldest dropped first, expired on read).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol


@dataclass
class StoredResponse:
    response: dict[str, Any]
    """The response object as returned to the client."""
    input_items: list[dict[str, Any]]
    """This call's input items (``GET /v1/responses/{id}/input_items``)."""
    conversation: list[dict[str, Any]]
    """Every item up to and including this response's output: the next call's history."""
    expires_at: float = 0.0
    items: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.items:
            self.items = {it["id"]: it for it in self.conversation if isinstance(it.get("id"), str)}


class ResponseStore(Protocol):
    def put(self, tenant: str | None, stored: StoredResponse) -> None: ...

    def get(self, tenant: str | None, response_id: str) -> StoredResponse | None: ...

    def delete(self, tenant: str | None, response_id: str) -> bool: ...

    def item(self, tenant: str | None, item_id: str) -> dict[str, Any] | None:
        """An input or output item of any stored response of ``tenant``."""
        ...


class MemoryResponseStore:
    """Responses in memory: ``ttl`` seconds each, at most ``max_per_tenant`` per
    tenant (the oldest go first). Lost on restart."""

    def __init__(self, ttl: float = 24 * 3600, max_per_tenant: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_per_tenant = max_per_tenant
        self._clock = clock
        self._tenants: dict[str | None, OrderedDict[str, StoredResponse]] = {}
        self._items: dict[str | None, dict[str, str]] = {}
        """item id -> the id of the newest stored response that holds it, per tenant."""

    def put(self, tenant: str | None, stored: StoredResponse) -> None:
        stored.expires_at = self._clock() + self.ttl
        rows = self._tenants.setdefault(tenant, OrderedDict())
        index = self._items.setdefault(tenant, {})
        rid = stored.response["id"]
        rows[rid] = stored
        for item_id in stored.items:
            index[item_id] = rid
        while len(rows) > self.max_per_tenant:
            _, old = rows.popitem(last=False)
            self._forget(tenant, old)

    def get(self, tenant: str | None, response_id: str) -> StoredResponse | None:
        rows = self._tenants.get(tenant)
        stored = rows.get(response_id) if rows else None
        if stored is None:
            return None
        if stored.expires_at <= self._clock():
            self.delete(tenant, response_id)
            return None
        return stored

    def delete(self, tenant: str | None, response_id: str) -> bool:
        rows = self._tenants.get(tenant)
        if not rows or response_id not in rows:
            return False
        self._forget(tenant, rows.pop(response_id))
        return True

    def item(self, tenant: str | None, item_id: str) -> dict[str, Any] | None:
        rid = self._items.get(tenant, {}).get(item_id)
        stored = self.get(tenant, rid) if rid else None
        return stored.items.get(item_id) if stored else None

    def _forget(self, tenant: str | None, stored: StoredResponse) -> None:
        index = self._items.get(tenant, {})
        rid = stored.response["id"]
        for item_id in stored.items:
            if index.get(item_id) == rid:
                del index[item_id]


__all__ = ["StoredResponse", "ResponseStore", "MemoryResponseStore"]
