"""Admission checks shared by every ledger store: the budget refusal and the rate/concurrency checks.

Pure functions over numbers a store has read inside its write transaction, so a
PostgreSQL store makes exactly the same decisions as the SQLite one. Rate limits
are GCRA (generic cell rate algorithm): one "theoretical arrival time" per limit,
allowing a full minute's worth in a burst; concurrency limits count open holds.
"""

from __future__ import annotations

from typing import Callable, Sequence

from myriad.errors import BudgetExceeded, ConcurrencyLimited, RateLimited
from myriad.metering._events import from_us, iso, money_str
from myriad.metering._limits import MINUTE_US, Budget, BudgetStatus, Limit


def budget_exceeded(b: Budget, ps: int, spent: int, reserved: int, amount: int) -> BudgetExceeded:
    status = BudgetStatus(b, ps, spent, reserved)
    info = status.to_json()
    info["requested"] = money_str(amount)
    resets = f"; it resets at {info['resets_at']}" if info["resets_at"] else "; it does not reset"
    return BudgetExceeded(
        f"{b.scope.kind} budget {b.id} ({b.period}) would be exceeded: spent {info['spent']} + reserved {info['reserved']}"
        f" + this request {info['requested']} > hard limit {info['hard']}{resets}",
        details={"budget": info},
    )


def _check_rate(lim: Limit, state: Sequence[int], now: int, n: int, rates: list[tuple[str, int, int]], label: str) -> None:
    if n == 0:
        rates.append((lim.id, state[0], 0))
        return
    if n > lim.limit:
        raise RateLimited(
            f"this request needs {n} {label} but the {lim.scope.kind} limit {lim.id} allows {lim.limit} per minute",
            details={"limit": {**lim.to_json(), "requested": n}, "retry_after": None, "resets_at": None},
        )
    tat = max(state[0], now)
    new_tat = tat + n * MINUTE_US // lim.limit
    if new_tat - now > MINUTE_US:
        wait = new_tat - MINUTE_US - now
        resets = iso(from_us(now + wait))
        raise RateLimited(
            f"{lim.scope.kind} limit {lim.id}: {lim.limit} {label} per minute for {lim.operation!r} reached;"
            f" retry after {wait / 1e6:.3f}s ({resets})",
            details={"limit": {**lim.to_json(), "requested": n}, "retry_after": round(wait / 1e6, 3), "resets_at": resets},
        )
    rates.append((lim.id, new_tat, n if label == "tokens" else 0))


def _check_requests(lim: Limit, state: Sequence[int], now: int, tokens: int, rates: list[tuple[str, int, int]], leases: list[str]) -> None:
    _check_rate(lim, state, now, 1, rates, "requests")


def _check_tokens(lim: Limit, state: Sequence[int], now: int, tokens: int, rates: list[tuple[str, int, int]], leases: list[str]) -> None:
    _check_rate(lim, state, now, tokens, rates, "tokens")


def _check_concurrent(lim: Limit, state: Sequence[int], now: int, tokens: int, rates: list[tuple[str, int, int]], leases: list[str]) -> None:
    if state[1] + 1 > lim.limit:
        raise ConcurrencyLimited(
            f"{lim.scope.kind} limit {lim.id}: {lim.limit} concurrent {lim.operation!r} operations already in use;"
            " retry when one finishes",
            details={"limit": {**lim.to_json(), "in_use": state[1]}, "retry_after": None, "resets_at": None},
        )
    leases.append(lim.id)


CHECKS: dict[str, Callable[..., None]] = {
    "requests_per_minute": _check_requests,
    "tokens_per_minute": _check_tokens,
    "concurrent": _check_concurrent,
}


__all__ = ["CHECKS", "budget_exceeded"]
