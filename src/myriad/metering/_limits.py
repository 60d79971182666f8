"""Budgets, rate limits and concurrency limits: what they are, not how they are kept.

A ``Budget`` caps *money* spent by a scope (a tenant, a user of it, or an agent of
it) per period (``day``/``month`` in UTC, or ``total``). ``hard`` refuses admission
(402) when spent + reserved + the new reservation would pass it; ``soft`` records a
notice and logs a warning the first time spend crosses it in a period.

A ``Limit`` caps *rate* or *concurrency* for a scope and an operation
(``model``, ``sandbox``, ... or ``*``): ``requests_per_minute`` and
``tokens_per_minute`` (a GCRA token bucket that allows one minute's worth in a
burst) and ``concurrent`` (open reservations or holds at once). Refusals are 429.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Mapping

from myriad.errors import InvalidRequest
from myriad.metering._events import Subject, _decimal, from_us, iso, money_str, to_nanos, to_us

PERIODS = ("day", "month", "total")
LIMIT_KINDS = ("requests_per_minute", "tokens_per_minute", "concurrent")
MINUTE_US = 60_000_000


def period_start(period: str, t_us: int) -> int:
    """Start (µs since epoch, UTC) of the ``period`` containing ``t_us``; 0 for ``total``."""
    if period == "total":
        return 0
    if period == "day":
        return t_us - t_us % 86_400_000_000
    if period == "month":
        t = from_us(t_us)
        return to_us(datetime(t.year, t.month, 1, tzinfo=timezone.utc))
    raise InvalidRequest(f"budget period must be one of {', '.join(PERIODS)}, got {period!r}")


def period_end(period: str, start_us: int) -> int | None:
    """End of the period that starts at ``start_us`` (None for ``total``)."""
    if period == "total":
        return None
    if period == "day":
        return start_us + 86_400_000_000
    t = from_us(start_us)
    y, m = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return to_us(datetime(y, m, 1, tzinfo=timezone.utc))


@dataclass(frozen=True)
class Scope:
    """What a budget or limit covers: a whole tenant, one user, one agent (or user+agent)."""

    tenant: str
    user: str | None = None
    agent: str | None = None

    def covers(self, s: Subject) -> bool:
        return (
            self.tenant == s.tenant
            and (self.user is None or self.user == s.user)
            and (self.agent is None or self.agent == s.agent)
        )

    def to_json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "user": self.user, "agent": self.agent}

    @property
    def kind(self) -> str:
        return "agent" if self.agent is not None else "user" if self.user is not None else "tenant"


@dataclass(frozen=True)
class Budget:
    """A money cap for a scope and period. Amounts are in the price book's currency."""

    scope: Scope
    period: str = "month"
    hard: Decimal | str | int | None = None
    """Refuse admission past this amount (a number or decimal string; kept as ``Decimal``)."""
    soft: Decimal | str | int | None = None
    id: str = field(default_factory=lambda: "bud_" + uuid.uuid4().hex[:16])
    managed_by: str = "operator"
    """``operator`` (CLI, config) or ``tenant`` (its own API key); a tenant cannot change an operator's budget."""

    def __post_init__(self) -> None:
        if self.period not in PERIODS:
            raise InvalidRequest(f"budget period must be one of {', '.join(PERIODS)}, got {self.period!r}")
        if self.hard is None and self.soft is None:
            raise InvalidRequest("a budget needs a hard limit, a soft limit, or both")
        for name in ("hard", "soft"):
            v = getattr(self, name)
            if v is not None:
                d = _decimal(v, f"budget {name} limit")
                if d < 0:
                    raise InvalidRequest(f"budget {name} limit must not be negative")
                object.__setattr__(self, name, d)

    @property
    def hard_nanos(self) -> int | None:
        return None if self.hard is None else to_nanos(self.hard)

    @property
    def soft_nanos(self) -> int | None:
        return None if self.soft is None else to_nanos(self.soft)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scope": self.scope.to_json(),
            "period": self.period,
            "hard": None if self.hard_nanos is None else money_str(self.hard_nanos),
            "soft": None if self.soft_nanos is None else money_str(self.soft_nanos),
            "managed_by": self.managed_by,
        }


@dataclass(frozen=True)
class Limit:
    """A rate or concurrency cap for a scope and an operation (``*`` = every operation)."""

    scope: Scope
    kind: str
    limit: int
    operation: str = "*"
    id: str = field(default_factory=lambda: "lim_" + uuid.uuid4().hex[:16])
    managed_by: str = "operator"
    """``operator`` or ``tenant``, as for budgets."""

    def __post_init__(self) -> None:
        if self.kind not in LIMIT_KINDS:
            raise InvalidRequest(f"limit kind must be one of {', '.join(LIMIT_KINDS)}, got {self.kind!r}")
        if not isinstance(self.limit, int) or isinstance(self.limit, bool) or self.limit <= 0:
            raise InvalidRequest(f"limit must be a positive integer, got {self.limit!r}")

    def applies_to(self, operation: str) -> bool:
        return self.operation == "*" or self.operation == operation or operation.startswith(self.operation + ".")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "scope": self.scope.to_json(), "kind": self.kind, "limit": self.limit,
                "operation": self.operation, "managed_by": self.managed_by}


@dataclass(frozen=True)
class BudgetStatus:
    """A budget's standing in its current period."""

    budget: Budget
    period_start_us: int
    spent_nanos: int
    reserved_nanos: int

    @property
    def resets_at(self) -> datetime | None:
        end = period_end(self.budget.period, self.period_start_us)
        return None if end is None else from_us(end)

    @property
    def remaining_nanos(self) -> int | None:
        h = self.budget.hard_nanos
        return None if h is None else max(0, h - self.spent_nanos - self.reserved_nanos)

    def to_json(self) -> dict[str, Any]:
        d = self.budget.to_json()
        d.update(
            {
                "period_start": iso(from_us(self.period_start_us)) if self.budget.period != "total" else None,
                "resets_at": iso(self.resets_at) if self.resets_at else None,
                "spent": money_str(self.spent_nanos),
                "reserved": money_str(self.reserved_nanos),
                "remaining": None if self.remaining_nanos is None else money_str(self.remaining_nanos),
            }
        )
        return d


def scope_from_json(d: Mapping[str, Any]) -> Scope:
    if not isinstance(d, Mapping) or not isinstance(d.get("tenant"), str):
        raise InvalidRequest("scope needs a string 'tenant' (and optionally 'user', 'agent')")
    return Scope(d["tenant"], d.get("user"), d.get("agent"))


__all__ = ["Budget", "BudgetStatus", "Limit", "Scope", "PERIODS", "LIMIT_KINDS", "period_start", "period_end"]
