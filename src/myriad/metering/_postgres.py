"""The PostgreSQL ledger: the SQLite ledger's contract, shared by every process and machine.

Same tables, same decisions (``_admission.py``), one transaction per state change.
What replaces SQLite's database-wide write lock (``BEGIN IMMEDIATE``) is a
*per-tenant* transaction-level advisory lock: every transaction that reads or writes
a tenant's budgets, limits, spend or holds first takes
``pg_advisory_xact_lock(<tenant key>)`` (several tenants: in sorted order, so two
batches never deadlock). Budgets and limits belong to one tenant, so a reservation
that holds its tenant's lock reads spent + reserved, checks, and adds its hold
before any other process can look; tenants never wait on each other. The lock is
released when the transaction ends, commit or crash (a killed client's session is
ended by the server), so a dead process never holds a budget.

- *Idempotent*: ``events.id`` UNIQUE, ``ON CONFLICT DO NOTHING``; rollups and spend
  only change when the insert added a row (same transaction).
- *Crash-safe*: a commit is durable when PostgreSQL acknowledges it (WAL, fsync by
  the server's settings); a killed client loses nothing committed and leaves no
  half-written transaction.
- *Sequence numbers* (``events.seq``, ``notices.seq``) are allocated under the
  tenant lock, so one tenant's events commit in ``seq`` order (a per-tenant export
  resumes by ``after_seq`` safely); across tenants a later-committing event may hold
  a smaller ``seq``.

Connections come from a bounded pool (``storage._pgpool``); a database that is down
or restarting makes calls fail at once with a ``StorageError`` naming it.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
import zlib
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from myriad.errors import Conflict, InvalidRequest, MyriadError, NotFound
from myriad.metering._admission import CHECKS, budget_exceeded
from myriad.metering._events import Subject, UsageEvent, from_us, iso, money_str, to_us
from myriad.metering._limits import MINUTE_US, Budget, BudgetStatus, Limit, period_start
from myriad.metering._postgres_schema import MIGRATIONS, SCHEMA_NAME
from myriad.metering._prices import PriceBook, PriceVersion
from myriad.metering._sqlite import (
    _FLAG_HARD,
    _FLAG_SOFT,
    HOUR_US,
    SWEEP_BATCH,
    SWEEP_EVERY_US,
    SQLiteLedger,
    _add,
    _check_manager,
    _none_if_blank,
)
from myriad.metering._store import BUCKETS, DIMENSIONS, AppendResult, Grant, Notice, ReservationRequest, StoredEvent, UsageQuery, UsageRow

log = logging.getLogger("myriad.metering")

_GLOBAL_LOCK = zlib.crc32(b"myriad.metering.prices")
_ROLLUP_COLUMN = {d: ('"user"' if d == "user" else d) for d in DIMENSIONS}
_BUCKET_FORMAT = {
    "hour": 'YYYY-MM-DD"T"HH24":00:00Z"',
    "day": 'YYYY-MM-DD"T00:00:00Z"',
    "month": 'YYYY-MM"-01T00:00:00Z"',
}
_PY_BUCKET_FORMAT = {"hour": "%Y-%m-%dT%H:00:00Z", "day": "%Y-%m-%dT00:00:00Z", "month": "%Y-%m-01T00:00:00Z"}
_BUDGET_COLS = 'id, tenant, "user", agent, period, hard_nanos, soft_nanos, managed_by'
_LIMIT_COLS = 'id, tenant, "user", agent, operation, kind, limit_value, managed_by'
_UPSERT_ROLLUP = (" DO UPDATE SET quantity_micro = t.quantity_micro + excluded.quantity_micro,"
                  " cost_nanos = t.cost_nanos + excluded.cost_nanos, lines = t.lines + excluded.lines")


def tenant_lock_key(tenant: str) -> int:
    """The advisory-lock key of a tenant's metering rows (a signed 64-bit int)."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(b"myriad.metering|" + tenant.encode(), digest_size=8).digest(), "big", signed=True)


class PostgresLedger:
    """``LedgerStore`` on PostgreSQL (``postgresql://user@host/db``). Thread-safe; shared by any
    number of processes and machines."""

    shared = True
    """Other processes may change this ledger: admission must ask the store, not a local view."""

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        synchronous: str = "NORMAL",
        pool_size: int = 8,
        connect_timeout: float = 5.0,
        migrate: bool = True,
        **_ignored: Any,
    ) -> None:
        from myriad.storage._pgpool import apply_migrations, open_pool

        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise InvalidRequest(f"synchronous must be NORMAL, FULL or EXTRA, got {synchronous!r}")
        self.url = url
        self._clock = clock
        # NORMAL (the ledger's default everywhere): a commit survives the death of any Myriad
        # process (it is in the server); FULL: it is also on the server's disk (fsync) before
        # the call returns, surviving a crash of the database machine too.
        sync = "on" if synchronous.upper() in ("FULL", "EXTRA") else "off"
        self._pool = open_pool(url, schema=SCHEMA_NAME, max_size=pool_size, timeout=connect_timeout, name="myriad-ledger",
                               session={"synchronous_commit": sync})
        try:
            if migrate:
                self._guard(lambda: apply_migrations(self._pool, "metering", MIGRATIONS), "cannot create the ledger's tables")
        except BaseException:
            self._pool.close()
            raise
        self._book = PriceBook()
        self._book_version = -1
        self._book_read_at = -1.0
        self._last_sweep: dict[str, int] = {}

    # -- plumbing ----------------------------------------------------------------

    def _now_us(self) -> int:
        return int(self._clock() * 1_000_000)

    def _guard(self, fn: Callable[[], Any], what: str) -> Any:
        """Run ``fn``; a database error becomes one clear ``StorageError``."""
        import psycopg
        from psycopg_pool import PoolTimeout

        from myriad.storage._pgpool import unavailable

        try:
            return fn()
        except MyriadError:
            raise
        except (psycopg.Error, PoolTimeout) as e:
            raise unavailable(e, self.url, what) from None

    @contextmanager
    def _tx(self, tenants: Iterable[str] = (), *, global_lock: bool = False) -> Iterator[Any]:
        """One transaction holding the advisory locks of ``tenants`` (sorted: no deadlocks)."""
        import psycopg
        from psycopg_pool import PoolTimeout

        from myriad.storage._pgpool import unavailable

        keys = sorted({tenant_lock_key(t) for t in tenants})
        if global_lock:
            keys.insert(0, _GLOBAL_LOCK)
        try:
            with self._pool.connection() as conn, conn.transaction():
                if keys:
                    conn.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k ORDER BY k", (keys,))
                yield conn
        except MyriadError:
            raise
        except (psycopg.Error, PoolTimeout) as e:
            raise unavailable(e, self.url, "metering ledger is unavailable") from None

    def close(self) -> None:
        self._pool.close()

    # -- prices ------------------------------------------------------------------

    def _current_book(self, db: Any) -> PriceBook:
        (latest,) = db.execute("SELECT COALESCE(MAX(version), 0) FROM price_versions").fetchone()
        if latest != self._book_version:
            rows = db.execute("SELECT version, body FROM price_versions ORDER BY version").fetchall()
            self._book = PriceBook(PriceVersion.from_json(json.loads(body), version=v) for v, body in rows)
            self._book_version = latest
        return self._book

    def price_book(self) -> PriceBook:
        """The price book, re-read at most once a second (pricing inside a write always re-checks)."""
        now = time.monotonic()
        if now - self._book_read_at < 1.0:
            return self._book
        with self._tx() as db:
            book = self._current_book(db)
        self._book_read_at = now
        return book

    def add_price_version(self, version: Mapping[str, Any]) -> PriceVersion:
        if not isinstance(version, Mapping):
            raise InvalidRequest("a price version must be an object")
        with self._tx(global_lock=True) as db:
            now = self._now_us()
            raw = dict(version)
            if raw.get("effective_at") is None:
                raw["effective_at"] = iso(from_us(now))
            latest, latest_eff, currency = db.execute(
                "SELECT MAX(version), MAX(effective_us), (SELECT currency FROM price_versions ORDER BY version LIMIT 1) FROM price_versions"
            ).fetchone()
            pv = PriceVersion.from_json(raw, version=(latest or 0) + 1)
            eff = to_us(pv.effective_at)
            if eff < now:
                raise InvalidRequest(
                    f"price changes are never retroactive: effective_at {iso(pv.effective_at)} is before now ({iso(from_us(now))})"
                )
            if latest_eff is not None and eff < latest_eff:
                raise InvalidRequest(
                    f"effective_at {iso(pv.effective_at)} is before the latest price version's ({iso(from_us(latest_eff))})"
                )
            if currency is not None and pv.currency != currency:
                raise InvalidRequest(f"price book currency is {currency}; a version in {pv.currency} cannot be added")
            db.execute(
                "INSERT INTO price_versions(version, effective_us, created_us, currency, body) VALUES (%s,%s,%s,%s,%s)",
                (pv.version, eff, now, pv.currency, json.dumps(pv.to_json())),
            )
            self._book_read_at = -1.0
            return pv

    # -- appending ---------------------------------------------------------------

    def append(self, events: Sequence[UsageEvent]) -> AppendResult:
        with self._tx({e.subject.tenant for e in events}) as db:
            appended, dups, cost, _ = self._append(db, events, self._now_us())
        return AppendResult(appended, dups, cost)

    def _append(
        self, db: Any, events: Sequence[UsageEvent], now: int, periods: Mapping[str, int] | None = None
    ) -> tuple[int, int, int, int]:
        """Insert new events, their rollups and budget spend (the caller holds their tenants' locks)."""
        if not events:
            return 0, 0, 0, 0
        book = self._current_book(db)
        priced = []
        for ev in events:
            t_us = to_us(ev.time)
            version, micro, costs = book.price(ev.usage, t_us)
            priced.append((ev, t_us, version, micro, costs))
        rows = [
            (ev.id, ev.subject.tenant, ev.subject.user, ev.subject.agent, t_us, now, ev.source, ev.type, ev.usage.model,
             ev.usage.deployment, version, sum(costs.values()), json.dumps(ev.to_cloudevent(), separators=(",", ":")),
             json.dumps({r: [micro[r], costs[r]] for r in micro}, separators=(",", ":")))
            for ev, t_us, version, micro, costs in priced
        ]
        inserted = self._insert_events(db, rows)
        appended = dups = total = tokens = 0
        budget_cache: dict[Subject, list[Budget]] = {}
        by_subject: dict[tuple[Any, ...], list[int]] = {}
        by_tenant: dict[tuple[Any, ...], list[int]] = {}
        charges: dict[tuple[str, int], list[Any]] = {}
        seen: set[str] = set()
        for ev, t_us, version, micro, costs in priced:
            if ev.id not in inserted or ev.id in seen:
                dups += 1
                continue
            seen.add(ev.id)
            cost = sum(costs.values())
            s = ev.subject
            model, dep = ev.usage.model or "", ev.usage.deployment or ""
            appended += 1
            total += cost
            tokens += ev.usage.tokens()
            hour = t_us - t_us % HOUR_US
            pv = version or 0
            for r, q in micro.items():
                _add(by_subject, (s.tenant, hour, s.user or "", s.agent or "", r, model, dep, pv), q, costs[r], 1)
                _add(by_tenant, (s.tenant, hour, r, model, dep, pv), q, costs[r], 1)
            if cost:
                if s not in budget_cache:
                    budget_cache[s] = self._matching_budgets(db, s)
                for b in budget_cache[s]:
                    ps = periods[b.id] if periods and b.id in periods else period_start(b.period, t_us)
                    charges.setdefault((b.id, ps), [b, 0])[1] += cost
        if by_subject:
            db.cursor().executemany(
                "INSERT INTO rollups AS t VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                ' ON CONFLICT(tenant, hour, "user", agent, resource, model, deployment, price_version)' + _UPSERT_ROLLUP,
                [k + tuple(v) for k, v in sorted(by_subject.items())])
            db.cursor().executemany(
                "INSERT INTO rollups_tenant AS t VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                " ON CONFLICT(tenant, hour, resource, model, deployment, price_version)" + _UPSERT_ROLLUP,
                [k + tuple(v) for k, v in sorted(by_tenant.items())])
        for (bid, ps), (b, cost) in sorted(charges.items(), key=lambda kv: kv[0]):
            self._charge(db, b, ps, cost, now)
        return appended, dups, total, tokens

    @staticmethod
    def _insert_events(db: Any, rows: list[tuple[Any, ...]]) -> set[str]:
        """Insert the events; the ids that were new (a replayed id is not returned)."""
        if len(rows) == 1:
            cur = db.execute(
                'INSERT INTO events(id, tenant, "user", agent, time_us, recorded_us, source, type, model, deployment,'
                " price_version, cost_nanos, body, lines) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                " ON CONFLICT(id) DO NOTHING RETURNING id", rows[0])
            return {r[0] for r in cur.fetchall()}
        cols = [list(c) for c in zip(*rows)]
        cur = db.execute(
            'INSERT INTO events(id, tenant, "user", agent, time_us, recorded_us, source, type, model, deployment,'
            " price_version, cost_nanos, body, lines)"
            " SELECT id, tenant, u, agent, t, r, source, type, model, dep, pv, cost, body, lines FROM unnest("
            "%s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::text[], %s::text[],"
            " %s::text[], %s::text[], %s::int[], %s::bigint[], %s::text[], %s::text[])"
            " WITH ORDINALITY AS x(id, tenant, u, agent, t, r, source, type, model, dep, pv, cost, body, lines, n)"
            " ORDER BY n ON CONFLICT(id) DO NOTHING RETURNING id", cols)
        return {r[0] for r in cur.fetchall()}

    def _charge(self, db: Any, b: Budget, ps: int, cost: int, now: int) -> None:
        spent, reserved, flags = db.execute(
            "INSERT INTO budget_usage AS t(budget_id, period_start, spent_nanos) VALUES (%s,%s,%s)"
            " ON CONFLICT(budget_id, period_start) DO UPDATE SET spent_nanos = t.spent_nanos + excluded.spent_nanos"
            " RETURNING spent_nanos, reserved_nanos, flags",
            (b.id, ps, cost),
        ).fetchone()
        soft, hard = b.soft_nanos, b.hard_nanos
        new_flags = flags
        if soft is not None and spent >= soft and not flags & _FLAG_SOFT:
            new_flags |= _FLAG_SOFT
            self._notice(db, now, b, ps, spent, "dev.myriad.budget.soft_limit_crossed")
        if hard is not None and spent > hard and not flags & _FLAG_HARD:
            new_flags |= _FLAG_HARD
            self._notice(db, now, b, ps, spent, "dev.myriad.budget.hard_limit_overrun")
        if new_flags != flags:
            db.execute("UPDATE budget_usage SET flags = %s WHERE budget_id = %s AND period_start = %s", (new_flags, b.id, ps))

    def _notice(self, db: Any, now: int, b: Budget, ps: int, spent: int, type_: str) -> None:
        body = BudgetStatus(b, ps, spent, 0).to_json()
        body.pop("reserved", None)
        db.execute("INSERT INTO notices(time_us, tenant, type, body) VALUES (%s,%s,%s,%s)",
                   (now, b.scope.tenant, type_, json.dumps(body)))
        log.warning("%s: %s budget %s (%s) spent %s of soft %s / hard %s", type_, b.scope.kind, b.id, b.period,
                    money_str(spent), body["soft"], body["hard"])

    # -- budgets and limits ------------------------------------------------------

    def _matching_budgets(self, db: Any, s: Subject) -> list[Budget]:
        rows = db.execute(
            f"SELECT {_BUDGET_COLS} FROM budgets WHERE tenant = %s AND (\"user\" IS NULL OR \"user\" = %s)"
            " AND (agent IS NULL OR agent = %s) ORDER BY id",
            (s.tenant, s.user, s.agent),
        ).fetchall()
        return [SQLiteLedger._budget_of(r) for r in rows]

    def _tenant_of(self, table: str, id_: str) -> str | None:
        with self._tx() as db:
            row = db.execute(f"SELECT tenant FROM {table} WHERE id = %s", (id_,)).fetchone()
        return None if row is None else str(row[0])

    def put_budget(self, budget: Budget) -> Budget:
        sc = budget.scope
        with self._tx({sc.tenant}) as db:
            row = db.execute("SELECT tenant, managed_by FROM budgets WHERE id = %s FOR UPDATE", (budget.id,)).fetchone()
            if row is not None and row[0] != sc.tenant:
                raise Conflict(f"budget id {budget.id} is taken")
            _check_manager(row, budget.managed_by, "budget", budget.id)
            db.execute(
                'INSERT INTO budgets(id, tenant, "user", agent, period, hard_nanos, soft_nanos, created_us, managed_by)'
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT(id) DO UPDATE SET \"user\"=excluded.\"user\", agent=excluded.agent,"
                " period=excluded.period, hard_nanos=excluded.hard_nanos, soft_nanos=excluded.soft_nanos,"
                " managed_by=excluded.managed_by",
                (budget.id, sc.tenant, sc.user, sc.agent, budget.period, budget.hard_nanos, budget.soft_nanos, self._now_us(),
                 budget.managed_by),
            )
        return budget

    def delete_budget(self, budget_id: str, tenant: str | None = None, managed_by: str | None = None) -> None:
        owner = tenant if tenant is not None else self._tenant_of("budgets", budget_id)
        if owner is None:
            raise NotFound(f"no budget {budget_id!r}")
        with self._tx({owner}) as db:
            if managed_by is not None:
                row = db.execute("SELECT tenant, managed_by FROM budgets WHERE id = %s AND tenant = %s",
                                 (budget_id, owner)).fetchone()
                _check_manager(row, managed_by, "budget", budget_id)
            cur = db.execute("DELETE FROM budgets WHERE id = %s AND tenant = %s", (budget_id, owner))
            if cur.rowcount == 0:
                raise NotFound(f"no budget {budget_id!r}")
            db.execute("DELETE FROM budget_usage WHERE budget_id = %s", (budget_id,))

    def budgets(self, tenant: str | None) -> list[Budget]:
        with self._tx() as db:
            if tenant is None:
                rows = db.execute(f"SELECT {_BUDGET_COLS} FROM budgets ORDER BY id").fetchall()
            else:
                rows = db.execute(f"SELECT {_BUDGET_COLS} FROM budgets WHERE tenant = %s ORDER BY id", (tenant,)).fetchall()
        return [SQLiteLedger._budget_of(r) for r in rows]

    def budget_status(self, tenant: str, subject: Subject | None = None) -> list[BudgetStatus]:
        now = self._now_us()
        with self._tx() as db:
            budgets = self._matching_budgets(db, subject) if subject else [
                SQLiteLedger._budget_of(r) for r in db.execute(
                    f"SELECT {_BUDGET_COLS} FROM budgets WHERE tenant = %s ORDER BY id", (tenant,)).fetchall()
            ]
            out = []
            for b in budgets:
                ps = period_start(b.period, now)
                row = db.execute(
                    "SELECT spent_nanos, reserved_nanos FROM budget_usage WHERE budget_id = %s AND period_start = %s", (b.id, ps)
                ).fetchone() or (0, 0)
                out.append(BudgetStatus(b, ps, row[0], row[1]))
        return out

    def _matching_limits(self, db: Any, s: Subject, operation: str) -> list[tuple[Limit, tuple[int, int]]]:
        rows = db.execute(
            f"SELECT {', '.join('l.' + c for c in _LIMIT_COLS.split(', '))}, COALESCE(st.tat_us, 0), COALESCE(st.in_use, 0)"
            " FROM limits l LEFT JOIN limit_state st ON st.limit_id = l.id"
            ' WHERE l.tenant = %s AND (l."user" IS NULL OR l."user" = %s) AND (l.agent IS NULL OR l.agent = %s) ORDER BY l.id',
            (s.tenant, s.user, s.agent),
        ).fetchall()
        out = []
        for r in rows:
            lim = SQLiteLedger._limit_of(r[:8])
            if lim.applies_to(operation):
                out.append((lim, (int(r[8]), int(r[9]))))
        return out

    def put_limit(self, limit: Limit) -> Limit:
        sc = limit.scope
        with self._tx({sc.tenant}) as db:
            row = db.execute("SELECT tenant, managed_by FROM limits WHERE id = %s", (limit.id,)).fetchone()
            if row is not None and row[0] != sc.tenant:
                raise Conflict(f"limit id {limit.id} is taken")
            _check_manager(row, limit.managed_by, "limit", limit.id)
            db.execute(
                'INSERT INTO limits(id, tenant, "user", agent, operation, kind, limit_value, managed_by) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)'
                ' ON CONFLICT(id) DO UPDATE SET "user"=excluded."user", agent=excluded.agent, operation=excluded.operation,'
                " kind=excluded.kind, limit_value=excluded.limit_value, managed_by=excluded.managed_by",
                (limit.id, sc.tenant, sc.user, sc.agent, limit.operation, limit.kind, limit.limit, limit.managed_by),
            )
        return limit

    def delete_limit(self, limit_id: str, tenant: str | None = None, managed_by: str | None = None) -> None:
        owner = tenant if tenant is not None else self._tenant_of("limits", limit_id)
        if owner is None:
            raise NotFound(f"no limit {limit_id!r}")
        with self._tx({owner}) as db:
            if managed_by is not None:
                row = db.execute("SELECT tenant, managed_by FROM limits WHERE id = %s AND tenant = %s",
                                 (limit_id, owner)).fetchone()
                _check_manager(row, managed_by, "limit", limit_id)
            cur = db.execute("DELETE FROM limits WHERE id = %s AND tenant = %s", (limit_id, owner))
            if cur.rowcount == 0:
                raise NotFound(f"no limit {limit_id!r}")
            db.execute("DELETE FROM limit_state WHERE limit_id = %s", (limit_id,))

    def limits(self, tenant: str | None) -> list[Limit]:
        with self._tx() as db:
            if tenant is None:
                rows = db.execute(f"SELECT {_LIMIT_COLS} FROM limits ORDER BY id").fetchall()
            else:
                rows = db.execute(f"SELECT {_LIMIT_COLS} FROM limits WHERE tenant = %s ORDER BY id", (tenant,)).fetchall()
        return [SQLiteLedger._limit_of(r) for r in rows]

    # -- reservations --------------------------------------------------------------

    def reserve(self, request: ReservationRequest) -> Grant:
        s = request.subject
        if not isinstance(request.operation, str) or not request.operation:
            raise InvalidRequest("operation must be a non-empty string such as 'model' or 'sandbox'")
        rid = request.id or "res_" + uuid.uuid4().hex
        with self._tx({s.tenant}) as db:
            now = self._now_us()
            self._sweep(db, s.tenant, now)
            book = self._current_book(db)
            amount = book.estimate_nanos(request.estimate, now) if request.estimate is not None else 0
            tokens = request.estimate.tokens() if request.estimate is not None else 0
            # 1. check everything under the tenant's lock; nothing is written until every check passed
            holds: list[tuple[str, int]] = []
            for b in self._matching_budgets(db, s):
                ps = period_start(b.period, now)
                spent, reserved = db.execute(
                    "SELECT spent_nanos, reserved_nanos FROM budget_usage WHERE budget_id = %s AND period_start = %s", (b.id, ps)
                ).fetchone() or (0, 0)
                hard = b.hard_nanos
                if hard is not None and spent + reserved + amount > hard:
                    raise budget_exceeded(b, ps, spent, reserved, amount)
                holds.append((b.id, ps))
            rates: list[tuple[str, int, int]] = []  # (limit id, new tat, tokens reserved)
            leases: list[str] = []
            for lim, state in self._matching_limits(db, s, request.operation):
                CHECKS[lim.kind](lim, state, now, tokens, rates, leases)
            # 2. hold
            cur = db.cursor()
            if amount and holds:
                cur.executemany(
                    "INSERT INTO budget_usage AS t(budget_id, period_start, reserved_nanos) VALUES (%s,%s,%s)"
                    " ON CONFLICT(budget_id, period_start) DO UPDATE SET reserved_nanos = t.reserved_nanos + excluded.reserved_nanos",
                    [(bid, ps, amount) for bid, ps in holds],
                )
            if rates:
                cur.executemany(
                    "INSERT INTO limit_state(limit_id, tat_us) VALUES (%s,%s) ON CONFLICT(limit_id) DO UPDATE SET tat_us = excluded.tat_us",
                    [(lid, tat) for lid, tat, _ in rates],
                )
            if leases:
                cur.executemany(
                    "INSERT INTO limit_state AS t(limit_id, in_use) VALUES (%s,1) ON CONFLICT(limit_id) DO UPDATE SET in_use = t.in_use + 1",
                    [(lid,) for lid in leases],
                )
            expires = now + int(request.ttl_s * 1_000_000)
            row = db.execute(
                'INSERT INTO reservations(id, tenant, "user", agent, operation, created_us, expires_us, amount_nanos, tokens,'
                " holds, rates, leases) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT(id) DO NOTHING RETURNING 1",
                (rid, s.tenant, s.user, s.agent, request.operation, now, expires, amount, tokens,
                 json.dumps(holds), json.dumps(rates), json.dumps(leases)),
            ).fetchone()
            if row is None:
                raise Conflict(f"reservation id {rid} was already used")
        return Grant(rid, s, request.operation, amount, tokens, from_us(expires))

    def _unhold(self, db: Any, row: Sequence[Any], actual_tokens: int | None) -> None:
        amount, holds, rates, leases = row
        cur = db.cursor()
        held = json.loads(holds)
        if amount and held:
            cur.executemany(
                "UPDATE budget_usage SET reserved_nanos = GREATEST(0, reserved_nanos - %s) WHERE budget_id = %s AND period_start = %s",
                [(amount, bid, ps) for bid, ps in held],
            )
        leased = json.loads(leases)
        if leased:
            cur.executemany("UPDATE limit_state SET in_use = GREATEST(0, in_use - 1) WHERE limit_id = %s", [(lid,) for lid in leased])
        if actual_tokens is not None:
            # give back (or take) the difference between reserved and actual tokens
            for lid, _tat, reserved_tokens in json.loads(rates):
                if reserved_tokens == 0 or actual_tokens == reserved_tokens:
                    continue
                lim = db.execute("SELECT limit_value FROM limits WHERE id = %s", (lid,)).fetchone()
                if lim is None:
                    continue
                delta = (actual_tokens - reserved_tokens) * MINUTE_US // lim[0]
                db.execute("UPDATE limit_state SET tat_us = tat_us + %s WHERE limit_id = %s", (delta, lid))

    def _sweep(self, db: Any, tenant: str, now: int) -> None:
        """Release the tenant's reservations whose holder died (at most once a second per tenant and store)."""
        if now - self._last_sweep.get(tenant, -SWEEP_EVERY_US) < SWEEP_EVERY_US:
            return
        if len(self._last_sweep) > 10_000:
            self._last_sweep.clear()
        self._last_sweep[tenant] = now
        rows = db.execute(
            "DELETE FROM reservations WHERE id IN (SELECT id FROM reservations WHERE tenant = %s AND expires_us < %s LIMIT %s)"
            " RETURNING amount_nanos, holds, rates, leases",
            (tenant, now, SWEEP_BATCH),
        ).fetchall()
        for row in rows:
            self._unhold(db, row, None)
        if rows:
            log.warning("released %d reservation(s) whose holders never settled them", len(rows))

    def _tenants_of(self, items: Sequence[tuple[str, Sequence[UsageEvent]]]) -> set[str]:
        tenants = {e.subject.tenant for _, events in items for e in events}
        ids = [rid for rid, _ in items]
        with self._tx() as db:
            tenants |= {r[0] for r in db.execute("SELECT DISTINCT tenant FROM reservations WHERE id = ANY(%s)", (ids,))}
        return tenants

    def settle(self, reservation_id: str, events: Sequence[UsageEvent]) -> AppendResult:
        return self.settle_many([(reservation_id, events)])[0]

    def settle_many(self, items: Sequence[tuple[str, Sequence[UsageEvent]]]) -> list[AppendResult]:
        """Settle many reservations in one transaction (empty events = release)."""
        if not items:
            return []
        with self._tx(self._tenants_of(items)) as db:
            now = self._now_us()
            return [self._settle(db, rid, events, now) for rid, events in items]

    def _settle(self, db: Any, reservation_id: str, events: Sequence[UsageEvent], now: int) -> AppendResult:
        # an open reservation is a row; settled, released and expired ones are gone
        row = db.execute(
            "DELETE FROM reservations WHERE id = %s RETURNING amount_nanos, holds, rates, leases", (reservation_id,)
        ).fetchone()
        periods = dict(json.loads(row[1])) if row is not None else None
        appended, dups, cost, tokens = self._append(db, events, now, periods) if events else (0, 0, 0, 0)
        overrun = 0
        if row is not None:
            self._unhold(db, row, tokens)
            overrun = max(0, cost - row[0])
        elif appended:
            log.info("settled %s after its hold was gone (expired or unknown); usage recorded", reservation_id)
        if overrun:
            log.warning("reservation %s cost %s more than it reserved", reservation_id, money_str(overrun))
        return AppendResult(appended, dups, cost, overrun)

    def release(self, reservation_id: str) -> None:
        self.settle_many([(reservation_id, [])])

    def renew(self, reservation_id: str, ttl_s: float) -> None:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE reservations SET expires_us = %s WHERE id = %s",
                (self._now_us() + int(ttl_s * 1_000_000), reservation_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no open reservation {reservation_id!r} (it was settled, released or expired)")

    def open_reservations(self, tenant: str | None = None) -> int:
        with self._tx() as db:
            if tenant is None:
                return int(db.execute("SELECT COUNT(*) FROM reservations").fetchone()[0])
            return int(db.execute("SELECT COUNT(*) FROM reservations WHERE tenant = %s", (tenant,)).fetchone()[0])

    # -- reading -----------------------------------------------------------------

    def totals(self, query: UsageQuery) -> list[UsageRow]:
        for d in query.group_by:
            if d not in DIMENSIONS:
                raise InvalidRequest(f"cannot group by {d!r}; choose from {', '.join(DIMENSIONS)}")
        if query.bucket is not None and query.bucket not in BUCKETS:
            raise InvalidRequest(f"bucket must be one of {', '.join(BUCKETS)}, got {query.bucket!r}")
        lo = to_us(query.start) if query.start else None
        hi = to_us(query.end) if query.end else None
        if lo is not None and hi is not None and hi <= lo:
            raise InvalidRequest("end must be after start")
        full_lo = None if lo is None else -(-lo // HOUR_US) * HOUR_US
        full_hi = None if hi is None else hi - hi % HOUR_US
        acc: dict[tuple[Any, ...], list[int]] = {}
        with self._tx() as db:
            if full_lo is not None and full_hi is not None and full_lo >= full_hi:
                self._raw_totals(db, query, lo, hi, acc)
            else:
                self._rollup_totals(db, query, full_lo, full_hi, acc)
                if lo is not None and full_lo is not None and lo < full_lo:
                    self._raw_totals(db, query, lo, full_lo, acc)
                if hi is not None and full_hi is not None and full_hi < hi:
                    self._raw_totals(db, query, full_hi, hi, acc)
        names = list(query.group_by) + (["bucket"] if query.bucket else [])
        rows = [UsageRow(dict(zip(names, k)), v[0], v[1], v[2]) for k, v in acc.items()]
        rows.sort(key=lambda r: tuple("" if v is None else str(v) for v in r.keys.values()))
        return rows

    @staticmethod
    def _filters(query: UsageQuery, cols: Mapping[str, str]) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        for name in ("tenant", "user", "agent", "resource", "model"):
            v = getattr(query, name)
            if v is not None:
                where.append(f"{cols[name]} = %s")
                args.append(v)
        return where, args

    def _rollup_totals(self, db: Any, q: UsageQuery, lo: int | None, hi: int | None, acc: dict[tuple[Any, ...], list[int]]) -> None:
        subject_level = bool({"user", "agent"} & set(q.group_by)) or q.user is not None or q.agent is not None
        table = "rollups" if subject_level else "rollups_tenant"
        cols = [_ROLLUP_COLUMN[d] for d in q.group_by]
        if q.bucket:
            cols.append(f"to_char(to_timestamp(hour / 1000000) AT TIME ZONE 'UTC', '{_BUCKET_FORMAT[q.bucket]}')")
        where, args = self._filters(q, _ROLLUP_COLUMN)
        if lo is not None:
            where.append("hour >= %s")
            args.append(lo)
        if hi is not None:
            where.append("hour < %s")
            args.append(hi)
        select = ", ".join(cols) + ", " if cols else ""
        sql = (
            f"SELECT {select}SUM(quantity_micro)::bigint, SUM(cost_nanos)::bigint, SUM(lines)::bigint FROM {table}"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + (f" GROUP BY {', '.join(str(i + 1) for i in range(len(cols)))}" if cols else "")
        )
        n = len(cols)
        for row in db.execute(sql, args):
            if row[n] is None:
                continue
            key = tuple(_none_if_blank(d, v) for d, v in zip(list(q.group_by) + ["bucket"], row[:n]))
            _add(acc, key, row[n], row[n + 1], row[n + 2])

    def _raw_totals(self, db: Any, q: UsageQuery, lo: int | None, hi: int | None, acc: dict[tuple[Any, ...], list[int]]) -> None:
        raw_cols = {"tenant": "e.tenant", "user": 'e."user"', "agent": "e.agent", "resource": "j.key", "model": "e.model",
                    "deployment": "e.deployment", "price_version": "e.price_version"}
        where, args = self._filters(q, raw_cols)
        if lo is not None:
            where.append("e.time_us >= %s")
            args.append(lo)
        if hi is not None:
            where.append("e.time_us < %s")
            args.append(hi)
        sql = (
            'SELECT e.tenant, e."user", e.agent, j.key, e.model, e.deployment, COALESCE(e.price_version, 0), e.time_us,'
            " (j.value->>0)::bigint, (j.value->>1)::bigint FROM events e, jsonb_each(e.lines::jsonb) j"
            + (f" WHERE {' AND '.join(where)}" if where else "")
        )
        fmt = _PY_BUCKET_FORMAT.get(q.bucket or "")
        for row in db.execute(sql, args):
            values = dict(zip(DIMENSIONS, row[:7]))
            key = tuple(values[d] for d in q.group_by)
            if fmt:
                key += (from_us(row[7]).strftime(fmt),)
            _add(acc, key, row[8], row[9], 1)

    def events(
        self, tenant: str | None, *, start: datetime | None = None, end: datetime | None = None, after_seq: int = 0, limit: int = 1000
    ) -> list[StoredEvent]:
        where, args = ["seq > %s"], [after_seq]
        if tenant is not None:
            where.append("tenant = %s")
            args.append(tenant)
        if start is not None:
            where.append("time_us >= %s")
            args.append(to_us(start))
        if end is not None:
            where.append("time_us < %s")
            args.append(to_us(end))
        with self._tx() as db:
            rows = db.execute(
                "SELECT seq, body, price_version, cost_nanos, lines, recorded_us FROM events WHERE "
                + " AND ".join(where) + " ORDER BY seq LIMIT %s", (*args, limit)
            ).fetchall()
        return [
            StoredEvent(seq, json.loads(body), pv, cost, {r: (v[0], v[1]) for r, v in json.loads(lines).items()}, rec)
            for seq, body, pv, cost, lines, rec in rows
        ]

    def notices(self, tenant: str | None, after_seq: int = 0, limit: int = 1000) -> list[Notice]:
        with self._tx() as db:
            if tenant is None:
                rows = db.execute("SELECT seq, time_us, tenant, type, body FROM notices WHERE seq > %s ORDER BY seq LIMIT %s",
                                  (after_seq, limit)).fetchall()
            else:
                rows = db.execute("SELECT seq, time_us, tenant, type, body FROM notices WHERE seq > %s AND tenant = %s"
                                  " ORDER BY seq LIMIT %s", (after_seq, tenant, limit)).fetchall()
        return [Notice(seq, t, ten, ty, json.loads(body)) for seq, t, ten, ty, body in rows]

    def count_events(self, tenant: str | None = None) -> int:
        with self._tx() as db:
            if tenant is None:
                return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
            return int(db.execute("SELECT COUNT(*) FROM events WHERE tenant = %s", (tenant,)).fetchone()[0])


__all__ = ["PostgresLedger", "tenant_lock_key"]
