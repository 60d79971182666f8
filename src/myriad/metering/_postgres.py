"""The PostgreSQL ledger: the SQLite ledger's contract, shared by every process and machine.

Same tables, same decisions (``_admission.py``), one transaction per state change.
What replaces SQLite's database-wide write lock (``BEGIN IMMEDIATE``) is a
*per-tenant* transaction-level advisory lock: every transaction that reads or writes
a tenant's budgets, limits, spend or holds first takes
``pg_advisory_xact_lock(hashtextextended('myriad.metering|' || tenant, 0))`` (several tenants: in sorted order, so two
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

Connections come from a bounded pool (``myriad.storage.postgres.sync_pool``); a
database that is down or restarting makes a call fail with ``DatabaseUnavailable``
(503, one line naming it) within ``connect_timeout``, and the pool reconnects by
itself when it is back.
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


_LOCK_TENANTS = ("SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT hashtextextended('myriad.metering|' || t, 0) AS k"
                 " FROM unnest(%s::text[]) AS t ORDER BY 1) AS s")
"""Lock the tenants (a text[] parameter) in key order; every writer of a tenant's rows takes it first."""
_LOCK_TENANTS_AND_RESERVATIONS = (
    "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT hashtextextended('myriad.metering|' || t, 0) AS k FROM"
    " (SELECT unnest(%s::text[]) AS t UNION SELECT tenant FROM reservations WHERE id = ANY(%s::text[])) AS x ORDER BY 1) AS s")
_SWEEP = ("DELETE FROM reservations WHERE id IN (SELECT id FROM reservations WHERE tenant = %s AND expires_us < %s LIMIT %s)"
          " RETURNING amount_nanos, holds, rates, leases")
_BUDGETS_WITH_USAGE = (
    "SELECT b.id, b.tenant, b.\"user\", b.agent, b.period, b.hard_nanos, b.soft_nanos, b.managed_by,"
    " COALESCE(u.spent_nanos, 0), COALESCE(u.reserved_nanos, 0) FROM budgets b LEFT JOIN budget_usage u"
    " ON u.budget_id = b.id AND u.period_start = CASE b.period WHEN 'day' THEN %s WHEN 'month' THEN %s ELSE 0 END"
    " WHERE b.tenant = %s AND (b.\"user\" IS NULL OR b.\"user\" = %s) AND (b.agent IS NULL OR b.agent = %s) ORDER BY b.id")
_LIMITS_WITH_STATE = (
    "SELECT l.id, l.tenant, l.\"user\", l.agent, l.operation, l.kind, l.limit_value, l.managed_by,"
    " COALESCE(st.tat_us, 0), COALESCE(st.in_use, 0) FROM limits l LEFT JOIN limit_state st ON st.limit_id = l.id"
    " WHERE l.tenant = %s AND (l.\"user\" IS NULL OR l.\"user\" = %s) AND (l.agent IS NULL OR l.agent = %s) ORDER BY l.id")
_INSERT_EVENTS = (
    'INSERT INTO events(id, tenant, "user", agent, time_us, recorded_us, source, type, model, deployment,'
    " price_version, cost_nanos, body, lines)"
    " SELECT id, tenant, u, agent, t, r, source, type, model, dep, pv, cost, body, lines FROM unnest("
    "%s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::text[], %s::text[],"
    " %s::text[], %s::text[], %s::int[], %s::bigint[], %s::text[], %s::text[])"
    " WITH ORDINALITY AS x(id, tenant, u, agent, t, r, source, type, model, dep, pv, cost, body, lines, n)"
    " ORDER BY n ON CONFLICT(id) DO NOTHING RETURNING id")
_ROLLUP_KEY = 'tenant, hour, "user", agent, resource, model, deployment, price_version'
_ROLLUP_TENANT_KEY = "tenant, hour, resource, model, deployment, price_version"
_ROLLUP_CASTS = ("text[]", "bigint[]", "text[]", "text[]", "text[]", "text[]", "text[]", "int[]", "bigint[]", "bigint[]", "bigint[]")
_ROLLUP_TENANT_CASTS = ("text[]", "bigint[]", "text[]", "text[]", "text[]", "int[]", "bigint[]", "bigint[]", "bigint[]")


class _StaleBook(Exception):
    """The price book changed since the events were priced; price them again."""



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
        from myriad.storage.postgres import Migrations, migrate as run_migrations, probe, sync_pool

        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise InvalidRequest(f"synchronous must be NORMAL, FULL or EXTRA, got {synchronous!r}")
        self.url = url
        self._clock = clock
        # NORMAL (the ledger's default everywhere): a commit survives the death of any Myriad
        # process (it is in the server); FULL: it is also on the server's disk (fsync) before
        # the call returns, surviving a crash of the database machine too.
        sync = "on" if synchronous.upper() in ("FULL", "EXTRA") else "off"
        probe(url, connect_timeout)  # a bad URL or a refused connection: one clear line, now
        if migrate:
            run_migrations(url, [Migrations("metering", MIGRATIONS)], timeout=connect_timeout)
        self._pool = sync_pool(url, max_size=pool_size, timeout=connect_timeout, name="myriad-ledger",
                               search_path=SCHEMA_NAME, session={"synchronous_commit": sync})
        self._pool.open(wait=False)
        self._book = PriceBook()
        self._book_version = -1
        self._book_read_at = -1.0
        self._last_sweep: dict[str, int] = {}

    # -- plumbing ----------------------------------------------------------------

    def _now_us(self) -> int:
        return int(self._clock() * 1_000_000)

    @contextmanager
    def _tx(self, tenants: Iterable[str] = (), *, global_lock: bool = False) -> Iterator[Any]:
        """One transaction holding the advisory locks of ``tenants`` (sorted: no deadlocks)."""
        import psycopg
        from psycopg_pool import PoolTimeout

        from myriad.storage.postgres import live_connection, translate

        names = sorted(set(tenants))
        try:
            with live_connection(self._pool) as conn, conn.transaction():
                if global_lock:
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_GLOBAL_LOCK,))
                if names:
                    conn.execute(_LOCK_TENANTS, (names,))
                yield conn
        except MyriadError:
            raise
        except psycopg.errors.UniqueViolation as e:
            raise Conflict(str(e).splitlines()[0]) from None
        except (psycopg.Error, PoolTimeout) as e:
            translate(e, self.url)

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

    # -- the hot path: reserve, settle, append in two or three round trips ----------------
    #
    # Each is a few multi-statement scripts sent as one message each (psycopg's
    # ClientCursor binds parameters client-side; every statement still gets its own
    # snapshot, so whatever follows the lock statement sees what the lock's previous
    # holder committed). The transaction is opened by the first script and committed
    # by the last; any error rolls it back before the connection goes back to the pool.

    @contextmanager
    def _script_tx(self) -> Iterator[Callable[..., list[list[Any] | None]]]:
        import psycopg
        from psycopg_pool import PoolTimeout

        from myriad.storage.postgres import live_connection, translate

        try:
            with live_connection(self._pool) as conn:
                cur = psycopg.ClientCursor(conn)

                def run(sql: str, params: Sequence[Any] = ()) -> list[list[Any] | None]:
                    cur.execute(sql, params)
                    out: list[list[Any] | None] = []
                    while True:
                        out.append(cur.fetchall() if cur.description is not None else None)
                        if not cur.nextset():
                            return out

                try:
                    yield run
                except BaseException:
                    if conn.pgconn.transaction_status != 0 and not conn.closed:  # 0 = idle
                        conn.execute("ROLLBACK")
                    raise
                if conn.pgconn.transaction_status != 0:
                    conn.execute("ROLLBACK")
                    raise RuntimeError("metering transaction left open (a bug)")
        except MyriadError:
            raise
        except psycopg.errors.UniqueViolation as e:
            raise Conflict(str(e).splitlines()[0]) from None
        except (psycopg.Error, PoolTimeout) as e:
            translate(e, self.url)

    def _book_at(self, run: Callable[..., list[list[Any] | None]], latest: int) -> PriceBook:
        if latest != self._book_version:
            (rows,) = run("SELECT version, body FROM price_versions ORDER BY version")
            self._book = PriceBook(PriceVersion.from_json(json.loads(body), version=v) for v, body in rows or [])
            self._book_version = latest
        return self._book

    def reserve(self, request: ReservationRequest) -> Grant:
        s = request.subject
        if not isinstance(request.operation, str) or not request.operation:
            raise InvalidRequest("operation must be a non-empty string such as 'model' or 'sandbox'")
        rid = request.id or "res_" + uuid.uuid4().hex
        now = self._now_us()
        reads = _BUDGETS_WITH_USAGE + "; " + _LIMITS_WITH_STATE
        read_args = (period_start("day", now), period_start("month", now), s.tenant, s.user, s.agent, s.tenant, s.user, s.agent)
        sweep = now - self._last_sweep.get(s.tenant, -SWEEP_EVERY_US) >= SWEEP_EVERY_US
        try:
            with self._script_tx() as run:
                # round trip 1: lock the tenant, the price book's version, (expired holds), budgets and limits
                res = run("BEGIN; " + _LOCK_TENANTS + "; SELECT COALESCE(MAX(version), 0) FROM price_versions; "
                          + (_SWEEP + "; " if sweep else "") + reads,
                          ([s.tenant], *((s.tenant, now, SWEEP_BATCH) if sweep else ()), *read_args))
                latest = res[2][0][0]  # type: ignore[index]
                if sweep:
                    self._note_sweep(s.tenant, now)
                    expired = res[3] or []
                    if expired:
                        self._unhold_script(run, [(row, None) for row in expired], commit=False)
                        res = res[:3] + [None] + run(reads, read_args)
                budget_rows, limit_rows = res[-2] or [], res[-1] or []
                book = self._book_at(run, latest)
                amount = book.estimate_nanos(request.estimate, now) if request.estimate is not None else 0
                tokens = request.estimate.tokens() if request.estimate is not None else 0
                # check everything; nothing is written until every check passed
                holds: list[tuple[str, int]] = []
                for r in budget_rows:
                    b = SQLiteLedger._budget_of(r[:8])
                    ps = period_start(b.period, now)
                    spent, reserved = int(r[8]), int(r[9])
                    if b.hard_nanos is not None and spent + reserved + amount > b.hard_nanos:
                        raise budget_exceeded(b, ps, spent, reserved, amount)
                    holds.append((b.id, ps))
                rates: list[tuple[str, int, int]] = []  # (limit id, new tat, tokens reserved)
                leases: list[str] = []
                for r in limit_rows:
                    lim = SQLiteLedger._limit_of(r[:8])
                    if lim.applies_to(request.operation):
                        CHECKS[lim.kind](lim, (int(r[8]), int(r[9])), now, tokens, rates, leases)
                # round trip 2: hold, and commit
                sql: list[str] = []
                args: list[Any] = []
                if amount and holds:
                    sql.append("INSERT INTO budget_usage AS t(budget_id, period_start, reserved_nanos)"
                               " SELECT b, p, %s FROM unnest(%s::text[], %s::bigint[]) AS x(b, p)"
                               " ON CONFLICT(budget_id, period_start) DO UPDATE SET reserved_nanos = t.reserved_nanos + excluded.reserved_nanos")
                    args += [amount, [h[0] for h in holds], [h[1] for h in holds]]
                if rates:
                    sql.append("INSERT INTO limit_state(limit_id, tat_us) SELECT * FROM unnest(%s::text[], %s::bigint[])"
                               " ON CONFLICT(limit_id) DO UPDATE SET tat_us = excluded.tat_us")
                    args += [[r[0] for r in rates], [r[1] for r in rates]]
                if leases:
                    sql.append("INSERT INTO limit_state AS t(limit_id, in_use) SELECT x, 1 FROM unnest(%s::text[]) AS x"
                               " ON CONFLICT(limit_id) DO UPDATE SET in_use = t.in_use + 1")
                    args.append(leases)
                expires = now + int(request.ttl_s * 1_000_000)
                sql.append('INSERT INTO reservations(id, tenant, "user", agent, operation, created_us, expires_us, amount_nanos,'
                           " tokens, holds, rates, leases) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)")
                args += [rid, s.tenant, s.user, s.agent, request.operation, now, expires, amount, tokens,
                         json.dumps(holds), json.dumps(rates), json.dumps(leases)]
                run("; ".join(sql) + "; COMMIT", args)
        except Conflict:
            raise Conflict(f"reservation id {rid} was already used") from None
        return Grant(rid, s, request.operation, amount, tokens, from_us(expires))

    def _note_sweep(self, tenant: str, now: int) -> None:
        if len(self._last_sweep) > 10_000:
            self._last_sweep.clear()
        self._last_sweep[tenant] = now

    @staticmethod
    def _unhold_script(run: Callable[..., list[list[Any] | None]], rows: Sequence[tuple[Sequence[Any], int | None]],
                       *, commit: bool, extra: tuple[list[str], list[Any]] | None = None) -> list[list[Any] | None]:
        """Give back what ``rows`` (amount, holds, rates, leases) held, in one script.

        ``actual_tokens`` per row (None: an expired hold) moves the token-rate limits by
        the difference between reserved and actual tokens."""
        budget: dict[tuple[str, int], int] = {}
        lease: dict[str, int] = {}
        diffs: tuple[list[str], list[int]] = ([], [])
        for (amount, holds, rates, leases), actual in rows:
            if amount:
                for bid, ps in json.loads(holds):
                    budget[(bid, ps)] = budget.get((bid, ps), 0) + amount
            for lid in json.loads(leases):
                lease[lid] = lease.get(lid, 0) + 1
            if actual is not None:
                for lid, _tat, reserved_tokens in json.loads(rates):
                    if reserved_tokens and actual != reserved_tokens:
                        diffs[0].append(lid)
                        diffs[1].append(actual - reserved_tokens)
        sql, args = (list(extra[0]), list(extra[1])) if extra else ([], [])
        if budget:
            keys = sorted(budget)
            sql.append("UPDATE budget_usage u SET reserved_nanos = GREATEST(0, u.reserved_nanos - x.a)"
                       " FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS x(b, p, a)"
                       " WHERE u.budget_id = x.b AND u.period_start = x.p")
            args += [[k[0] for k in keys], [k[1] for k in keys], [budget[k] for k in keys]]
        if lease:
            keys2 = sorted(lease)
            sql.append("UPDATE limit_state s SET in_use = GREATEST(0, s.in_use - x.n) FROM unnest(%s::text[], %s::bigint[]) AS x(l, n)"
                       " WHERE s.limit_id = x.l")
            args += [keys2, [lease[k] for k in keys2]]
        if diffs[0]:
            sql.append("UPDATE limit_state s SET tat_us = s.tat_us + d.delta FROM (SELECT x.l, SUM(floor(x.d::numeric * %s"
                       " / lim.limit_value))::bigint AS delta FROM unnest(%s::text[], %s::bigint[]) AS x(l, d)"
                       " JOIN limits lim ON lim.id = x.l GROUP BY x.l) d WHERE s.limit_id = d.l")
            args += [MINUTE_US, diffs[0], diffs[1]]
        if commit:
            sql.append("COMMIT")
        if not sql:
            return []
        return run("; ".join(sql), args)

    def append(self, events: Sequence[UsageEvent]) -> AppendResult:
        (r,) = self._apply([(None, events)])
        return AppendResult(r.appended, r.duplicates, r.cost_nanos)

    def settle(self, reservation_id: str, events: Sequence[UsageEvent]) -> AppendResult:
        return self._apply([(reservation_id, events)])[0]

    def settle_many(self, items: Sequence[tuple[str, Sequence[UsageEvent]]]) -> list[AppendResult]:
        """Settle many reservations in one transaction (empty events = release)."""
        return self._apply(list(items)) if items else []

    def release(self, reservation_id: str) -> None:
        self._apply([(reservation_id, [])])

    def _apply(self, items: Sequence[tuple[str | None, Sequence[UsageEvent]]]) -> list[AppendResult]:
        """Settle reservations (id) or append events (None) in one transaction, in three round trips."""
        for _attempt in range(3):
            try:
                return self._apply_once(items)
            except _StaleBook:
                continue  # another process added a price version: price again with it
        raise RuntimeError("the price book kept changing during a settle")

    def _apply_once(self, items: Sequence[tuple[str | None, Sequence[UsageEvent]]]) -> list[AppendResult]:
        now = self._now_us()
        book = self._book
        priced = []  # (item index, event, t_us, version, micro, costs)
        for i, (_rid, events) in enumerate(items):
            for ev in events:
                t_us = to_us(ev.time)
                version, micro, costs = book.price(ev.usage, t_us)
                priced.append((i, ev, t_us, version, micro, costs))
        tenants = sorted({p[1].subject.tenant for p in priced})
        rids = [rid for rid, _ in items if rid]
        with self._script_tx() as run:
            # round trip 1: lock every tenant involved, take the reservations, insert the events
            sql = ["BEGIN", _LOCK_TENANTS_AND_RESERVATIONS, "SELECT COALESCE(MAX(version), 0) FROM price_versions",
                   'DELETE FROM reservations WHERE id = ANY(%s::text[]) RETURNING id, amount_nanos, holds, rates, leases']
            args: list[Any] = [tenants, rids, rids]
            if priced:
                rows = [
                    (ev.id, ev.subject.tenant, ev.subject.user, ev.subject.agent, t_us, now, ev.source, ev.type, ev.usage.model,
                     ev.usage.deployment, version, sum(costs.values()), json.dumps(ev.to_cloudevent(), separators=(",", ":")),
                     json.dumps({r: [micro[r], costs[r]] for r in micro}, separators=(",", ":")))
                    for _i, ev, t_us, version, micro, costs in priced
                ]
                sql.append(_INSERT_EVENTS)
                args += [list(c) for c in zip(*rows)]
                sql.append(f"SELECT {_BUDGET_COLS} FROM budgets WHERE tenant = ANY(%s::text[]) ORDER BY id")
                args.append(tenants)
            res = run("; ".join(sql), args)
            if res[2][0][0] != self._book_version:  # type: ignore[index]
                run("ROLLBACK")
                self._book_at(run, res[2][0][0])  # type: ignore[index]
                raise _StaleBook()
            held = {r[0]: r[1:] for r in res[3] or []}
            inserted = {r[0] for r in res[4] or []} if priced else set()
            budgets = [SQLiteLedger._budget_of(r) for r in res[5] or []] if priced else []
            # the settled reservations, in the caller's order (an id listed twice is settled once)
            taken: dict[int, Sequence[Any]] = {}
            for i, (rid, _events) in enumerate(items):
                if rid and rid in held:
                    taken[i] = held.pop(rid)
            results = [[0, 0, 0, 0] for _ in items]  # appended, duplicates, cost, tokens
            by_subject: dict[tuple[Any, ...], list[int]] = {}
            by_tenant: dict[tuple[Any, ...], list[int]] = {}
            charges: dict[tuple[str, int], list[Any]] = {}
            seen: set[str] = set()
            for i, ev, t_us, version, micro, costs in priced:
                if ev.id not in inserted or ev.id in seen:
                    results[i][1] += 1
                    continue
                seen.add(ev.id)
                cost = sum(costs.values())
                s = ev.subject
                model, dep = ev.usage.model or "", ev.usage.deployment or ""
                results[i][0] += 1
                results[i][2] += cost
                results[i][3] += ev.usage.tokens()
                hour = t_us - t_us % HOUR_US
                pv = version or 0
                for r, q in micro.items():
                    _add(by_subject, (s.tenant, hour, s.user or "", s.agent or "", r, model, dep, pv), q, costs[r], 1)
                    _add(by_tenant, (s.tenant, hour, r, model, dep, pv), q, costs[r], 1)
                if cost:
                    periods = dict(json.loads(taken[i][1])) if i in taken else {}
                    for b in budgets:
                        if b.scope.covers(s):
                            ps = periods.get(b.id, period_start(b.period, t_us))
                            charges.setdefault((b.id, ps), [b, 0])[1] += cost
            # round trip 2: rollups, spend, give back the holds (and commit, unless a threshold may need a notice)
            sql, args = [], []
            for table, acc, keycols in (("rollups", by_subject, _ROLLUP_KEY), ("rollups_tenant", by_tenant, _ROLLUP_TENANT_KEY)):
                if acc:
                    keys = sorted(acc)
                    n = len(keys[0])
                    casts = _ROLLUP_CASTS if table == "rollups" else _ROLLUP_TENANT_CASTS
                    sql.append(f"INSERT INTO {table} AS t SELECT * FROM unnest({', '.join('%s::' + c for c in casts)})"
                               f" ON CONFLICT({keycols})" + _UPSERT_ROLLUP)
                    args += [[k[j] for k in keys] for j in range(n)] + [[acc[k][j] for k in keys] for j in range(3)]
            ckeys = sorted(charges)
            watch = [k for k in ckeys if charges[k][0].soft_nanos is not None or charges[k][0].hard_nanos is not None]
            if ckeys:
                sql.append("INSERT INTO budget_usage AS t(budget_id, period_start, spent_nanos)"
                           " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[])"
                           " ON CONFLICT(budget_id, period_start) DO UPDATE SET spent_nanos = t.spent_nanos + excluded.spent_nanos"
                           " RETURNING budget_id, period_start, spent_nanos, flags")
                args += [[k[0] for k in ckeys], [k[1] for k in ckeys], [charges[k][1] for k in ckeys]]
            unholds = [(row, results[i][3]) for i, row in taken.items()]
            res2 = self._unhold_script(run, unholds, commit=not watch, extra=(sql, args))
            notices: list[str] = []
            nargs: list[Any] = []
            if ckeys:
                spent_rows = next(r for r in res2 if r is not None)  # the only statement that returns rows
                for bid, ps, spent, flags in spent_rows:
                    b = charges[(bid, ps)][0]
                    new_flags = flags
                    for flag, crossed, type_ in (
                        (_FLAG_SOFT, b.soft_nanos is not None and spent >= b.soft_nanos, "dev.myriad.budget.soft_limit_crossed"),
                        (_FLAG_HARD, b.hard_nanos is not None and spent > b.hard_nanos, "dev.myriad.budget.hard_limit_overrun"),
                    ):
                        if crossed and not flags & flag:
                            new_flags |= flag
                            notices.append("INSERT INTO notices(time_us, tenant, type, body) VALUES (%s,%s,%s,%s)")
                            nargs += [now, b.scope.tenant, type_, json.dumps(self._notice_body(b, ps, spent, type_))]
                    if new_flags != flags:
                        notices.append("UPDATE budget_usage SET flags = %s WHERE budget_id = %s AND period_start = %s")
                        nargs += [new_flags, bid, ps]
            if watch:
                # round trip 3: the notices a crossed threshold calls for, and commit
                run("; ".join(notices + ["COMMIT"]), nargs)
        out = []
        for i, (rid, _events) in enumerate(items):
            appended, dups, cost, _tokens = results[i]
            overrun = max(0, cost - int(taken[i][0])) if i in taken else 0
            if rid and i not in taken and appended:
                log.info("settled %s after its hold was gone (expired or unknown); usage recorded", rid)
            if overrun:
                log.warning("reservation %s cost %s more than it reserved", rid, money_str(overrun))
            out.append(AppendResult(appended, dups, cost, overrun))
        return out

    @staticmethod
    def _notice_body(b: Budget, ps: int, spent: int, type_: str) -> dict[str, Any]:
        body = BudgetStatus(b, ps, spent, 0).to_json()
        body.pop("reserved", None)
        log.warning("%s: %s budget %s (%s) spent %s of soft %s / hard %s", type_, b.scope.kind, b.id, b.period,
                    money_str(spent), body["soft"], body["hard"])
        return body

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
        where: list[str] = ["seq > %s"]
        args: list[Any] = [after_seq]
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


__all__ = ["PostgresLedger"]
