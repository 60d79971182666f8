"""The ledger's storage protocol, its result types, and the registry of implementations.

A ``LedgerStore`` is synchronous and thread-safe; every method that changes state
is one database transaction, so a crash leaves either all of it or none of it.
The ``Meter`` runs store calls off the event loop. Implementations register by
URL scheme in ``STORES``: ``sqlite:///path/to/metering.db`` (embedded default) and
``postgresql://user@host/db`` (``_postgres.py``: shared by processes and machines;
a per-tenant advisory lock where SQLite takes its file's write lock).
The PostgreSQL ledger is always ``shared`` (see ``LedgerStore``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from myriad.errors import ConfigError
from myriad.metering._events import Subject, Usage, UsageEvent, from_us, iso, money_str
from myriad.metering._limits import Budget, BudgetStatus, Limit
from myriad.metering._prices import PriceBook, PriceVersion

DIMENSIONS = ("tenant", "user", "agent", "resource", "model", "deployment", "price_version")
BUCKETS = ("hour", "day", "month")


@dataclass(frozen=True)
class AppendResult:
    """What an append did: new events counted, replays ignored, the cost they added."""

    appended: int
    duplicates: int
    cost_nanos: int
    overrun_nanos: int = 0
    """For a settled reservation: how much actual cost exceeded the reserved amount."""

    @property
    def cost(self) -> str:
        return money_str(self.cost_nanos)


@dataclass(frozen=True)
class ReservationRequest:
    """Ask to admit an operation for ``subject`` that may cost up to ``estimate``."""

    subject: Subject
    estimate: Usage | None
    operation: str = "*"
    ttl_s: float = 900.0
    id: str | None = None


@dataclass(frozen=True)
class Grant:
    """An admitted reservation: ``amount_nanos`` is held on every matching budget."""

    id: str
    subject: Subject
    operation: str
    amount_nanos: int
    tokens: int
    expires_at: datetime


@dataclass(frozen=True)
class UsageQuery:
    """Filter and grouping for totals and time series.

    ``start``/``end`` are a half-open window; ``bucket`` adds a time dimension.
    ``tenant=None`` means every tenant (operators only; the API always sets it).
    """

    tenant: str | None
    user: str | None = None
    agent: str | None = None
    resource: str | None = None
    model: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    group_by: tuple[str, ...] = ("resource",)
    bucket: str | None = None


@dataclass(frozen=True)
class UsageRow:
    """One group of a totals query."""

    keys: Mapping[str, Any]
    quantity_micro: int
    cost_nanos: int
    lines: int
    """How many (event, resource) records were summed."""

    def to_json(self) -> dict[str, Any]:
        from myriad.metering._events import quantity_str

        d = dict(self.keys)
        d.update({"quantity": quantity_str(self.quantity_micro), "cost": money_str(self.cost_nanos), "lines": self.lines})
        return d


@dataclass(frozen=True)
class StoredEvent:
    """An event as the ledger holds it, with its sequence number and price."""

    seq: int
    cloudevent: Mapping[str, Any]
    price_version: int | None
    cost_nanos: int
    lines: Mapping[str, tuple[int, int]]
    """resource -> (quantity micro-units, cost nanos)"""
    recorded_us: int

    @property
    def time(self) -> str:
        return str(self.cloudevent["time"])


@dataclass(frozen=True)
class Notice:
    """Something an operator should see: a soft limit crossed, a hard one overrun."""

    seq: int
    time_us: int
    tenant: str
    type: str
    body: Mapping[str, Any] = field(default_factory=dict)

    def to_cloudevent(self) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": f"notice-{self.seq}",
            "source": "/myriad/metering",
            "type": self.type,
            "subject": f"tenant/{self.tenant}",
            "time": iso(from_us(self.time_us)),
            "datacontenttype": "application/json",
            "data": dict(self.body),
        }


@runtime_checkable
class LedgerStore(Protocol):
    """Durable, append-only usage ledger with budgets, limits and prices.

    ``shared``: True when other processes may admit against the same ledger (PostgreSQL;
    SQLite opened with ``shared=True``), so every ``reserve`` must be the store's own
    atomic transaction. False when this process owns it: the ``Meter`` then keeps the
    admission state in memory in front of it (``LocalLedger``) and writes settled
    usage in group commits. A store without the attribute counts as shared.
    """

    shared: bool

    def append(self, events: Sequence[UsageEvent]) -> AppendResult:
        """Record events; an id already recorded is ignored (counted once)."""
        ...

    def reserve(self, request: ReservationRequest) -> Grant:
        """Atomically check budgets and limits and hold the estimated cost, or raise."""
        ...

    def settle(self, reservation_id: str, events: Sequence[UsageEvent]) -> AppendResult:
        """Record the actual usage of a reservation and release what it held."""
        ...

    def settle_many(self, items: Sequence[tuple[str, Sequence[UsageEvent]]]) -> list[AppendResult]:
        """``settle`` for many reservations in one transaction (empty events = release)."""
        ...

    def release(self, reservation_id: str) -> None:
        """Give back everything a reservation held, recording no usage."""
        ...

    def renew(self, reservation_id: str, ttl_s: float) -> None:
        """Push back a reservation's expiry (long-lived holds such as a live sandbox)."""
        ...

    def add_price_version(self, version: Mapping[str, Any]) -> PriceVersion:
        """Append a price version; one effective before now or before the latest is refused."""
        ...

    def price_book(self) -> PriceBook: ...

    def put_budget(self, budget: Budget) -> Budget: ...

    def delete_budget(self, budget_id: str, tenant: str | None = None, managed_by: str | None = None) -> None: ...

    def budgets(self, tenant: str | None) -> list[Budget]: ...

    def budget_status(self, tenant: str, subject: Subject | None = None) -> list[BudgetStatus]: ...

    def put_limit(self, limit: Limit) -> Limit: ...

    def delete_limit(self, limit_id: str, tenant: str | None = None, managed_by: str | None = None) -> None: ...

    def limits(self, tenant: str | None) -> list[Limit]: ...

    def totals(self, query: UsageQuery) -> list[UsageRow]: ...

    def events(
        self, tenant: str | None, *, start: datetime | None = None, end: datetime | None = None, after_seq: int = 0, limit: int = 1000
    ) -> list[StoredEvent]: ...

    def notices(self, tenant: str | None, after_seq: int = 0, limit: int = 1000) -> list[Notice]: ...

    def count_events(self, tenant: str | None = None) -> int: ...

    def close(self) -> None: ...


STORES: dict[str, str] = {
    "sqlite": "myriad.metering._sqlite:SQLiteLedger",
    "postgresql": "myriad.metering._postgres:PostgresLedger",
    "postgres": "myriad.metering._postgres:PostgresLedger",
}
"""URL scheme -> ``module:Class`` of a ``LedgerStore`` taking ``(url, **options)``."""


def open_store(url: str, **options: Any) -> LedgerStore:
    """Open the ledger at ``url`` (``sqlite:///abs/path.db``, ``sqlite:relative.db``, ``sqlite://:memory:``)."""
    scheme = url.split(":", 1)[0] if ":" in url else ""
    target = STORES.get(scheme)
    if target is None:
        raise ConfigError(f"metering ledger URL {url!r}: unknown scheme {scheme!r}; known: {', '.join(sorted(STORES))}")
    module, _, name = target.partition(":")
    cls: Callable[..., LedgerStore] = getattr(importlib.import_module(module), name)
    return cls(url, **options)


__all__ = [
    "AppendResult",
    "BUCKETS",
    "DIMENSIONS",
    "Grant",
    "LedgerStore",
    "Notice",
    "ReservationRequest",
    "STORES",
    "StoredEvent",
    "UsageQuery",
    "UsageRow",
    "open_store",
]
