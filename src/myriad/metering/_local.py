"""Admission in memory, usage written in group commits: the ledger of a process that
owns its (SQLite) ledger file.

``LocalLedger(store)`` is a ``LedgerStore`` in front of a store that is not shared
(``store.shared`` is False). While the process lives, its memory is the source of
truth for admission: budgets' spent and reserved amounts, rate-limit state and
concurrency leases. So ``reserve``, ``settle`` and ``release`` are a few dict
operations under one lock — no SQLite round trip on the request path — and stay
atomic (one lock around check-and-hold: a budget is never overspent, whatever the
interleaving of tasks and threads). Settled usage is queued and written by one
thread in group commits (one transaction per ``flush_interval``, 20 ms by default),
with the same rollups, budget spend and notices the store writes for ``append``.

A store that says it is shared (PostgreSQL, or SQLite opened with ``shared=True``
because several processes write it) is never put behind this view: the ``Meter``
then admits through the store's own atomic transaction.

What ``kill -9`` loses (and nothing else; tested in tests/metering/test_local.py):

- usage settled in the last ``flush_interval`` plus one commit (at most that many
  milliseconds of usage events; they were never written, so the ledger under-counts
  them and the next process's budgets start that much lower);
- holds of calls in flight (they were never written: nothing to expire later);
- rate-limit windows (a restarted process allows one more minute's burst).

Never lost: anything written before (a flush is one transaction: all of it or none).

Reads that must see every settled event (``totals``, ``events``, ``notices``,
``count_events``, ``budget_status``) first write the queue. Budgets and limits are
read once per tenant and re-read every ``config_ttl`` seconds by the group-commit
thread (so a budget set by another process, e.g. ``myriad usage budget set`` from a
shell, applies within that time); a change made through this view applies at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

from myriad.errors import Conflict, InvalidRequest, NotFound
from myriad.metering._admission import CHECKS, budget_exceeded
from myriad.metering._events import Subject, UsageEvent, from_us, to_us
from myriad.metering._limits import MINUTE_US, Budget, BudgetStatus, Limit, period_start
from myriad.metering._prices import PriceBook, PriceVersion
from myriad.metering._store import AppendResult, Grant, LedgerStore, Notice, ReservationRequest, StoredEvent, UsageQuery, UsageRow

log = logging.getLogger("myriad.metering")

SWEEP_EVERY_US = 1_000_000
RECENT_IDS = 100_000
"""Event ids remembered to count a replay once in memory (the ledger dedupes forever)."""


@dataclass
class _Tenant:
    budgets: list[Budget]
    limits: list[Limit]
    loaded_at: float


@dataclass
class _Hold:
    subject: Subject
    operation: str
    amount: int
    keys: list[tuple[str, int]]
    rates: list[tuple[str, int, int]]
    limits: dict[str, int]
    leases: list[str]
    expires_us: int


class LocalLedger:
    """A ``LedgerStore`` whose admission runs in memory over a store this process owns."""

    shared = False

    def __init__(self, store: LedgerStore, *, clock: Callable[[], float] = time.time, flush_interval: float = 0.02,
                 config_ttl: float = 2.0, max_batch: int = 2048) -> None:
        if getattr(store, "shared", True):
            raise InvalidRequest("LocalLedger needs a store that is not shared between processes")
        self.store = store
        self.clock = clock
        self.flush_interval = flush_interval
        self.config_ttl = config_ttl
        self.max_batch = max_batch
        self._lock = threading.Lock()  # the in-memory state
        self._flush_lock = threading.Lock()  # one writer at a time; taken before _lock
        self._tenants: dict[str, _Tenant] = {}
        self._usage: dict[tuple[str, int], list[int]] = {}  # (budget, period start) -> [spent, reserved]
        self._limit_state: dict[str, list[int]] = {}  # limit id -> [tat_us, in_use]
        self._open: dict[str, _Hold] = {}
        self._pending: list[UsageEvent] = []
        self._recent: set[str] = set()
        self._recent_order: deque[str] = deque()
        self._book: PriceBook | None = None
        self._last_sweep = 0
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stop = False
        self.flushes = 0
        """Group commits written (for tests and stats)."""
        self.flushed = 0
        self.flush_cpu_s = 0.0
        """CPU seconds the group commits took (thread time), for benches."""

    # -- plumbing ------------------------------------------------------------------

    def _now_us(self) -> int:
        return int(self.clock() * 1_000_000)

    def call_nowait(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run now: nothing here waits on the database (the ``Meter`` skips its thread hop)."""
        return fn(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # store-specific extras (e.g. SQLite's path)
        return getattr(self.store, name)

    def _price_book(self) -> PriceBook:
        if self._book is None:
            self._book = self.store.price_book()
        return self._book

    def _tenant(self, tenant: str) -> _Tenant:
        """The tenant's budgets and limits, (re)read when missing or older than ``config_ttl``.
        Called without ``_lock``; writes the queue first so the budgets' spend it reads is whole."""
        t = self._tenants.get(tenant)
        if t is not None:  # refreshed every config_ttl by the group-commit thread, not here
            return t
        with self._flush_lock, self._lock:
            self._write_pending_locked()
            budgets, limits = self.store.budgets(tenant), self.store.limits(tenant)
            for st in self.store.budget_status(tenant):
                self._usage.setdefault((st.budget.id, st.period_start_us), [st.spent_nanos, 0])
            self._book = self.store.price_book()
            t = self._tenants[tenant] = _Tenant(budgets, limits, time.monotonic())
        return t

    def _ensure_usage(self, tenant: str, cfg: _Tenant, subject: Subject | None) -> None:
        """Read the current period's spend of the budgets covering ``subject`` that memory
        does not hold yet (a new period, a new budget). Called without ``_lock``; the queue
        is written first, under both locks, so the spend read is whole and nothing is
        charged meanwhile."""
        now = self._now_us()
        missing = [(b.id, period_start(b.period, now)) for b in cfg.budgets
                   if (subject is None or b.scope.covers(subject)) and (b.id, period_start(b.period, now)) not in self._usage]
        if not missing:
            return
        with self._flush_lock, self._lock:
            self._write_pending_locked()
            spent = {(st.budget.id, st.period_start_us): st.spent_nanos for st in self.store.budget_status(tenant)}
            for key in missing:
                self._usage.setdefault(key, [spent.get(key, 0), 0])

    def _usage_of(self, b: Budget, ps: int) -> list[int]:
        """[spent, reserved] of a budget's period (called with ``_lock``, after ``_ensure_usage``)."""
        u = self._usage.get((b.id, ps))
        if u is None:  # the period turned between _ensure_usage and now: the store has its spend
            self._write_pending_locked()
            spent = next((st.spent_nanos for st in self.store.budget_status(b.scope.tenant)
                          if st.budget.id == b.id and st.period_start_us == ps), 0)
            u = self._usage[(b.id, ps)] = [spent, 0]
        return u

    # -- admission -----------------------------------------------------------------

    def reserve(self, request: ReservationRequest) -> Grant:
        import uuid

        s = request.subject
        if not isinstance(request.operation, str) or not request.operation:
            raise InvalidRequest("operation must be a non-empty string such as 'model' or 'sandbox'")
        rid = request.id or "res_" + uuid.uuid4().hex
        cfg = self._tenant(s.tenant)
        self._ensure_usage(s.tenant, cfg, s)
        with self._lock:
            now = self._now_us()
            if now - self._last_sweep >= SWEEP_EVERY_US:
                self._sweep(now)
            if rid in self._open:
                raise Conflict(f"reservation id {rid} was already used")
            est = request.estimate
            amount = self._price_book().estimate_nanos(est, now) if est is not None else 0
            tokens = est.tokens() if est is not None else 0
            holds: list[tuple[str, int]] = []
            cells: list[list[int]] = []
            for b in cfg.budgets:
                if not b.scope.covers(s):
                    continue
                ps = period_start(b.period, now)
                u = self._usage_of(b, ps)
                hard = b.hard_nanos
                if hard is not None and u[0] + u[1] + amount > hard:
                    raise budget_exceeded(b, ps, u[0], u[1], amount)
                holds.append((b.id, ps))
                cells.append(u)
            rates: list[tuple[str, int, int]] = []
            leases: list[str] = []
            limits: dict[str, int] = {}
            for lim in cfg.limits:
                if not lim.scope.covers(s) or not lim.applies_to(request.operation):
                    continue
                state = self._limit_state.setdefault(lim.id, [0, 0])
                CHECKS[lim.kind](lim, state, now, tokens, rates, leases)
                limits[lim.id] = lim.limit
            # every check passed: hold
            if amount:
                for u in cells:
                    u[1] += amount
            for lid, tat, _ in rates:
                self._limit_state[lid][0] = tat
            for lid in leases:
                self._limit_state[lid][1] += 1
            expires = now + int(request.ttl_s * 1_000_000)
            self._open[rid] = _Hold(s, request.operation, amount, holds, rates, limits, leases, expires)
        return Grant(rid, s, request.operation, amount, tokens, from_us(expires))

    def _unhold(self, h: _Hold, actual_tokens: int | None) -> None:
        if h.amount:
            for key in h.keys:
                u = self._usage.get(key)
                if u is not None:
                    u[1] = max(0, u[1] - h.amount)
        for lid in h.leases:
            st = self._limit_state.get(lid)
            if st is not None:
                st[1] = max(0, st[1] - 1)
        if actual_tokens is not None:
            for lid, _tat, reserved_tokens in h.rates:
                if reserved_tokens == 0 or actual_tokens == reserved_tokens:
                    continue
                st = self._limit_state.get(lid)
                if st is not None and lid in h.limits:
                    st[0] += (actual_tokens - reserved_tokens) * MINUTE_US // h.limits[lid]

    def _sweep(self, now: int) -> None:
        self._last_sweep = now
        dead = [rid for rid, h in self._open.items() if h.expires_us < now]
        for rid in dead:
            self._unhold(self._open.pop(rid), None)
        if dead:
            log.warning("released %d reservation(s) whose holders never settled them", len(dead))

    def _charge(self, events: Sequence[UsageEvent]) -> tuple[int, int, int, int]:
        """Price events, add them to the budgets' spend in memory and to the write queue
        (called with ``_lock``). Returns (appended, duplicates, cost, tokens)."""
        book = self._price_book()
        appended = dups = total = tokens = 0
        for ev in events:
            if ev.id in self._recent:
                dups += 1
                continue
            self._recent.add(ev.id)
            self._recent_order.append(ev.id)
            if len(self._recent_order) > RECENT_IDS:
                self._recent.discard(self._recent_order.popleft())
            t_us = to_us(ev.time)
            _, _, costs = book.price(ev.usage, t_us)
            cost = sum(costs.values())
            appended += 1
            total += cost
            tokens += ev.usage.tokens()
            self._pending.append(ev)
            if cost:
                t = self._tenants.get(ev.subject.tenant)
                if t is not None:
                    for b in t.budgets:
                        if b.scope.covers(ev.subject):
                            u = self._usage.get((b.id, period_start(b.period, t_us)))
                            if u is not None:  # not in memory: the store has it once the queue is written
                                u[0] += cost
        if len(self._pending) >= self.max_batch:
            self._wake.set()
        return appended, dups, total, tokens

    def settle(self, reservation_id: str, events: Sequence[UsageEvent]) -> AppendResult:
        return self.settle_many([(reservation_id, events)])[0]

    def settle_many(self, items: Sequence[tuple[str, Sequence[UsageEvent]]]) -> list[AppendResult]:
        out = []
        with self._lock:
            for rid, events in items:
                h = self._open.pop(rid, None)
                appended, dups, cost, tokens = self._charge(events) if events else (0, 0, 0, 0)
                overrun = 0
                if h is not None:
                    self._unhold(h, tokens)
                    overrun = max(0, cost - h.amount)
                out.append(AppendResult(appended, dups, cost, overrun))
        self._start_flusher()
        return out

    def release(self, reservation_id: str) -> None:
        with self._lock:
            h = self._open.pop(reservation_id, None)
            if h is not None:
                self._unhold(h, 0)

    def renew(self, reservation_id: str, ttl_s: float) -> None:
        with self._lock:
            h = self._open.get(reservation_id)
            if h is None:
                raise NotFound(f"no open reservation {reservation_id!r} (it was settled, released or expired)")
            h.expires_us = self._now_us() + int(ttl_s * 1_000_000)

    def append(self, events: Sequence[UsageEvent]) -> AppendResult:
        for ev in events:  # the tenant's budgets in memory, so its spend counts at once
            self._tenant(ev.subject.tenant)
        with self._lock:
            appended, dups, cost, _ = self._charge(events)
        self._start_flusher()
        return AppendResult(appended, dups, cost)

    def open_reservations(self, tenant: str | None = None) -> int:
        with self._lock:
            return sum(1 for h in self._open.values() if tenant is None or h.subject.tenant == tenant)

    # -- the group commit ------------------------------------------------------------

    def _start_flusher(self) -> None:
        if self._thread is None and not self._stop:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._flush_loop, name="myriad-ledger-flush", daemon=True)
                    self._thread.start()

    def _flush_loop(self) -> None:
        refreshed = time.monotonic()
        while not self._stop:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self.flush()
                if time.monotonic() - refreshed >= self.config_ttl:
                    refreshed = time.monotonic()
                    self._refresh_config()
            except Exception as e:  # noqa: BLE001 - never die: the queue is kept and retried
                log.warning("writing %d usage event(s) to the ledger failed, retrying: %s", len(self._pending), e)
                time.sleep(0.5)

    def _refresh_config(self) -> None:
        """Re-read the known tenants' budgets, limits and prices (another process may have
        changed them); off the request path. A new budget's spend is read when first needed."""
        for tenant in list(self._tenants):
            budgets, limits = self.store.budgets(tenant), self.store.limits(tenant)
            with self._lock:
                if tenant in self._tenants:
                    self._tenants[tenant] = _Tenant(budgets, limits, time.monotonic())
        book = self.store.price_book()
        with self._lock:
            self._book = book

    def flush(self) -> int:
        """Write every queued event now (one transaction); returns how many."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return 0
            cpu = time.thread_time()
            try:
                self.store.append(batch)
            except BaseException:
                with self._lock:
                    self._pending[:0] = batch
                raise
            self.flushes += 1
            self.flushed += len(batch)
            self.flush_cpu_s += time.thread_time() - cpu
            return len(batch)

    def _write_pending_locked(self) -> None:
        """Write the queue while holding ``_lock`` (and ``_flush_lock``, or nobody else flushes)."""
        if self._pending:
            batch, self._pending = self._pending, []
            try:
                self.store.append(batch)
            except BaseException:
                self._pending[:0] = batch
                raise
            self.flushes += 1

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()
        self.store.close()

    # -- configuration (through to the store; this view re-reads the tenant) ---------

    def _changed(self, tenant: str | None) -> None:
        with self._lock:
            if tenant is None:
                self._tenants.clear()
            else:
                self._tenants.pop(tenant, None)

    def add_price_version(self, version: Mapping[str, Any]) -> PriceVersion:
        v = self.store.add_price_version(version)
        self._book = None
        return v

    def price_book(self) -> PriceBook:
        return self.store.price_book()

    def put_budget(self, budget: Budget) -> Budget:
        self.flush()
        out = self.store.put_budget(budget)
        self._changed(budget.scope.tenant)
        return out

    def delete_budget(self, budget_id: str, tenant: str | None = None, managed_by: str | None = None) -> None:
        self.flush()
        self.store.delete_budget(budget_id, tenant, managed_by)
        with self._lock:
            for key in [k for k in self._usage if k[0] == budget_id]:
                del self._usage[key]
        self._changed(tenant)

    def budgets(self, tenant: str | None) -> list[Budget]:
        return self.store.budgets(tenant)

    def budget_status(self, tenant: str, subject: Subject | None = None) -> list[BudgetStatus]:
        cfg = self._tenant(tenant)
        self._ensure_usage(tenant, cfg, subject)
        out = []
        with self._lock:
            now = self._now_us()
            for b in cfg.budgets:
                if subject is not None and not b.scope.covers(subject):
                    continue
                ps = period_start(b.period, now)
                u = self._usage_of(b, ps)
                out.append(BudgetStatus(b, ps, u[0], u[1]))
        return out

    def put_limit(self, limit: Limit) -> Limit:
        out = self.store.put_limit(limit)
        self._changed(limit.scope.tenant)
        return out

    def delete_limit(self, limit_id: str, tenant: str | None = None, managed_by: str | None = None) -> None:
        self.store.delete_limit(limit_id, tenant, managed_by)
        with self._lock:
            self._limit_state.pop(limit_id, None)
        self._changed(tenant)

    def limits(self, tenant: str | None) -> list[Limit]:
        return self.store.limits(tenant)

    # -- reading (the queue first, so a read sees every settled event) ---------------

    def totals(self, query: UsageQuery) -> list[UsageRow]:
        self.flush()
        return self.store.totals(query)

    def events(self, tenant: str | None, *, start: datetime | None = None, end: datetime | None = None,
               after_seq: int = 0, limit: int = 1000) -> list[StoredEvent]:
        self.flush()
        return self.store.events(tenant, start=start, end=end, after_seq=after_seq, limit=limit)

    def notices(self, tenant: str | None, after_seq: int = 0, limit: int = 1000) -> list[Notice]:
        self.flush()
        return self.store.notices(tenant, after_seq, limit)

    def count_events(self, tenant: str | None = None) -> int:
        self.flush()
        return self.store.count_events(tenant)


__all__ = ["LocalLedger"]
