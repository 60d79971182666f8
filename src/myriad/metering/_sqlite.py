"""The SQLite ledger: WAL, one write transaction per state change, rollups in the same transaction.

Why it is safe:

- *Idempotent*: ``events.id`` is UNIQUE and inserted with ``ON CONFLICT DO NOTHING``;
  rollups and budget spend are only touched when the insert added a row, in the
  same transaction, so a replayed event changes nothing.
- *Crash-safe*: an event, its rollups and its budget spend commit together or not
  at all (WAL). With ``synchronous=NORMAL`` (default) a killed *process* loses no
  committed transaction; ``synchronous=FULL`` also survives power loss.
- *Race-free budgets*: ``reserve`` runs under ``BEGIN IMMEDIATE`` (the database
  write lock, shared by every thread and process using the file), reads spent +
  reserved, and either refuses or adds its hold before anyone else can look.

The schema uses plain upserts and no SQLite-only tricks beyond ``json_each`` for the
raw edge of a time window, so a PostgreSQL store can mirror it (``FOR UPDATE`` on
the ``budget_usage`` rows in place of the database lock).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import orjson

from myriad.errors import Conflict, InvalidRequest, NotFound, PermissionDenied, StorageError
from myriad.metering._events import Subject, UsageEvent, from_us, iso, money_str, to_us
from myriad.metering._admission import CHECKS, budget_exceeded
from myriad.metering._limits import MINUTE_US, Budget, BudgetStatus, Limit, Scope, period_start
from myriad.metering._prices import PriceBook, PriceVersion
from myriad.metering._sqlite_schema import SCHEMA as _SCHEMA
from myriad.metering._sqlite_schema import migrate
from myriad.metering._store import (
    BUCKETS,
    DIMENSIONS,
    AppendResult,
    Grant,
    Notice,
    ReservationRequest,
    StoredEvent,
    UsageQuery,
    UsageRow,
)

log = logging.getLogger("myriad.metering")

HOUR_US = 3_600_000_000
SCHEMA_VERSION = 4
SWEEP_BATCH = 256
SWEEP_EVERY_US = 1_000_000
CHECKPOINT_EVERY_S = 0.25
WAL_LIMIT_BYTES = 32 * 2**20


_FLAG_SOFT = 1
_FLAG_HARD = 2

# group-by dimension -> rollup column / raw row key (never an if/elif on strings)
_ROLLUP_COLUMN = {d: d for d in DIMENSIONS}
_BUCKET_FORMAT = {"hour": "%Y-%m-%dT%H:00:00Z", "day": "%Y-%m-%dT00:00:00Z", "month": "%Y-%m-01T00:00:00Z"}


def _path_of(url: str | Path) -> str:
    if isinstance(url, Path):
        return str(url)
    if url.startswith("sqlite:///"):
        return "/" + url[len("sqlite:///"):]
    if url.startswith("sqlite://"):
        return url[len("sqlite://"):] or ":memory:"
    if url.startswith("sqlite:"):
        return url[len("sqlite:"):]
    return url


class WouldBlock(Exception):
    """The ledger is busy right now; make the call from a worker thread instead."""


class SQLiteLedger:
    """``LedgerStore`` on one SQLite file. Thread-safe; many processes may share the file."""

    def __init__(
        self,
        url: str | Path,
        *,
        synchronous: str = "NORMAL",
        busy_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        background_checkpoint: bool = True,
        shared: bool = True,
    ) -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise InvalidRequest(f"synchronous must be NORMAL, FULL or EXTRA, got {synchronous!r}")
        self.path = _path_of(url)
        self.shared = shared
        """Whether other processes write this file too. When False (one process owns it, as
        ``myriad serve`` does its data directory) the ``Meter`` admits in memory in front of
        it (``LocalLedger``); when True every admission is this file's own transaction."""
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.RLock()
        self._nowait = False
        self._busy_ms = int(busy_timeout_s * 1000)
        self._last_sweep = -SWEEP_EVERY_US
        self._checkpointer: threading.Thread | None = None
        self._stop = threading.Event()
        self._dirty = False
        self._background_checkpoint = background_checkpoint and self.path != ":memory:"
        try:
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._db.execute("PRAGMA page_size = 1024")  # only takes effect on a new file: fewer WAL bytes per commit
            self._retry(lambda: self._db.execute("PRAGMA journal_mode = WAL"))
            self._db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            if background_checkpoint:
                # checkpoints (which fsync) run on a thread of ours, never inside a caller's commit
                self._db.execute("PRAGMA wal_autocheckpoint = 0")
            with self._write() as db:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                migrate(db)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as e:
            raise StorageError(f"cannot open metering ledger {self.path}: {e}") from None
        self._book = PriceBook()
        self._book_version = -1
        self._book_read_at = -1.0

    # -- plumbing ----------------------------------------------------------------

    def _now_us(self) -> int:
        return int(self._clock() * 1_000_000)

    @staticmethod
    def _retry(fn: Callable[[], Any], attempts: int = 50) -> Any:
        for i in range(attempts):
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or i == attempts - 1:
                    raise
                time.sleep(0.02)

    def call_nowait(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a short store call now if the ledger is free, else raise ``WouldBlock``.

        Lets an event loop skip the thread hop when nobody holds the write lock; a
        busy ledger (another thread or process mid-transaction) is never waited on here.
        """
        if not self._lock.acquire(blocking=False):
            raise WouldBlock()
        try:
            self._nowait = True
            return fn(*args, **kwargs)
        finally:
            self._nowait = False
            self._lock.release()

    def _begin(self) -> None:
        if not self._nowait:
            self._db.execute("BEGIN IMMEDIATE")
            return
        self._db.execute("PRAGMA busy_timeout = 0")
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise WouldBlock() from None
            raise
        finally:
            self._db.execute(f"PRAGMA busy_timeout = {self._busy_ms}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._begin()
            except sqlite3.Error as e:
                raise StorageError(f"metering ledger is unavailable: {e}") from None
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                self._db.execute("ROLLBACK")
                raise StorageError(f"metering ledger commit failed: {e}") from None
            self._dirty = True
            if self._checkpointer is None and self._background_checkpoint:
                self._start_checkpointer()

    def _start_checkpointer(self) -> None:
        wal = Path(self.path + "-wal")

        def loop() -> None:
            conn = sqlite3.connect(self.path, timeout=self._busy_ms / 1000, isolation_level=None)
            try:
                while not self._stop.wait(CHECKPOINT_EVERY_S):
                    if self._dirty:
                        self._dirty = False
                        try:
                            # PASSIVE never blocks writers but never catches a steady writer either;
                            # past WAL_LIMIT_BYTES, TRUNCATE resets the WAL (writers wait briefly)
                            big = wal.exists() and wal.stat().st_size > WAL_LIMIT_BYTES
                            conn.execute(f"PRAGMA wal_checkpoint({'TRUNCATE' if big else 'PASSIVE'})")
                        except (sqlite3.Error, OSError) as e:  # never break the host; the next round retries
                            log.warning("metering ledger checkpoint failed: %s", e)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()

        self._checkpointer = threading.Thread(target=loop, name="myriad-ledger-checkpoint", daemon=True)
        self._checkpointer.start()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    def close(self) -> None:
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
        with self._lock:
            self._db.close()

    # -- prices ------------------------------------------------------------------

    def _current_book(self, db: sqlite3.Connection) -> PriceBook:
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
        with self._read() as db:
            book = self._current_book(db)
        self._book_read_at = now
        return book

    def add_price_version(self, version: Mapping[str, Any]) -> PriceVersion:
        if not isinstance(version, Mapping):
            raise InvalidRequest("a price version must be an object")
        with self._write() as db:
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
                "INSERT INTO price_versions(version, effective_us, created_us, currency, body) VALUES (?,?,?,?,?)",
                (pv.version, eff, now, pv.currency, json.dumps(pv.to_json())),
            )
            self._book_read_at = -1.0
            return pv

    # -- appending ---------------------------------------------------------------

    def append(self, events: Sequence[UsageEvent]) -> AppendResult:
        with self._write() as db:
            appended, dups, cost, _ = self._append(db, events, self._now_us())
        return AppendResult(appended, dups, cost)

    def _append(
        self, db: sqlite3.Connection, events: Sequence[UsageEvent], now: int, periods: Mapping[str, int] | None = None
    ) -> tuple[int, int, int, int]:
        """Insert new events, their rollups and budget spend. ``periods`` pins the budget
        period per budget id (a settled reservation is charged where it was held)."""
        book = self._current_book(db)
        appended = dups = total = tokens = 0
        budget_cache: dict[Subject, list[Budget]] = {}
        # deltas for the whole batch, written with one statement per table
        by_subject: dict[tuple[Any, ...], list[int]] = {}
        by_tenant: dict[tuple[Any, ...], list[int]] = {}
        charges: dict[tuple[str, int], list[Any]] = {}
        for ev in events:
            t_us = to_us(ev.time)
            version, micro, costs = book.price(ev.usage, t_us)
            cost = sum(costs.values())
            s = ev.subject
            model, dep = ev.usage.model or "", ev.usage.deployment or ""
            cur = db.execute(
                "INSERT INTO events(id, tenant, user, agent, time_us, recorded_us, source, type, model, deployment,"
                " price_version, cost_nanos, body, lines) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO NOTHING",
                (
                    ev.id, s.tenant, s.user, s.agent, t_us, now, ev.source, ev.type, ev.usage.model, ev.usage.deployment,
                    version, cost, orjson.dumps(ev.to_cloudevent(), default=str).decode(),
                    orjson.dumps({r: [micro[r], costs[r]] for r in micro}).decode(),
                ),
            )
            if cur.rowcount == 0:
                dups += 1
                continue
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
        upsert = (" ON CONFLICT DO UPDATE SET quantity_micro = quantity_micro + excluded.quantity_micro,"
                  " cost_nanos = cost_nanos + excluded.cost_nanos, lines = lines + excluded.lines")
        db.executemany("INSERT INTO rollups VALUES (?,?,?,?,?,?,?,?,?,?,?)" + upsert, [k + tuple(v) for k, v in by_subject.items()])
        db.executemany("INSERT INTO rollups_tenant VALUES (?,?,?,?,?,?,?,?,?)" + upsert,
                       [k + tuple(v) for k, v in by_tenant.items()])
        for (bid, ps), (b, cost) in charges.items():
            self._charge(db, b, ps, cost, now)
        return appended, dups, total, tokens

    def _charge(self, db: sqlite3.Connection, b: Budget, ps: int, cost: int, now: int) -> None:
        spent, reserved, flags = db.execute(
            "INSERT INTO budget_usage(budget_id, period_start, spent_nanos) VALUES (?,?,?) ON CONFLICT DO UPDATE"
            " SET spent_nanos = spent_nanos + excluded.spent_nanos RETURNING spent_nanos, reserved_nanos, flags",
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
            db.execute("UPDATE budget_usage SET flags = ? WHERE budget_id = ? AND period_start = ?", (new_flags, b.id, ps))

    def _notice(self, db: sqlite3.Connection, now: int, b: Budget, ps: int, spent: int, type_: str) -> None:
        body = BudgetStatus(b, ps, spent, 0).to_json()
        body.pop("reserved", None)
        db.execute("INSERT INTO notices(time_us, tenant, type, body) VALUES (?,?,?,?)", (now, b.scope.tenant, type_, json.dumps(body)))
        log.warning("%s: %s budget %s (%s) spent %s of soft %s / hard %s", type_, b.scope.kind, b.id, b.period,
                    money_str(spent), body["soft"], body["hard"])

    # -- budgets and limits ------------------------------------------------------

    @staticmethod
    def _budget_of(row: Sequence[Any]) -> Budget:
        id_, tenant, user, agent, period, hard, soft, managed_by = row
        return Budget(
            Scope(tenant, user, agent), period,
            None if hard is None else money_str(hard), None if soft is None else money_str(soft), id=id_,
            managed_by=managed_by,
        )

    def _matching_budgets(self, db: sqlite3.Connection, s: Subject) -> list[Budget]:
        rows = db.execute(
            "SELECT id, tenant, user, agent, period, hard_nanos, soft_nanos, managed_by FROM budgets"
            " WHERE tenant = ? AND (user IS NULL OR user = ?) AND (agent IS NULL OR agent = ?) ORDER BY id",
            (s.tenant, s.user, s.agent),
        ).fetchall()
        return [self._budget_of(r) for r in rows]

    def put_budget(self, budget: Budget) -> Budget:
        sc = budget.scope
        with self._write() as db:
            row = db.execute("SELECT tenant, managed_by FROM budgets WHERE id = ?", (budget.id,)).fetchone()
            if row is not None and row[0] != sc.tenant:
                raise Conflict(f"budget id {budget.id} is taken")
            _check_manager(row, budget.managed_by, "budget", budget.id)
            db.execute(
                "INSERT INTO budgets(id, tenant, user, agent, period, hard_nanos, soft_nanos, created_us, managed_by)"
                " VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET user=excluded.user, agent=excluded.agent,"
                " period=excluded.period, hard_nanos=excluded.hard_nanos, soft_nanos=excluded.soft_nanos,"
                " managed_by=excluded.managed_by",
                (budget.id, sc.tenant, sc.user, sc.agent, budget.period, budget.hard_nanos, budget.soft_nanos, self._now_us(),
                 budget.managed_by),
            )
        return budget

    def delete_budget(self, budget_id: str, tenant: str | None = None, managed_by: str | None = None) -> None:
        with self._write() as db:
            if managed_by is not None:
                row = db.execute("SELECT tenant, managed_by FROM budgets WHERE id = ? AND (? IS NULL OR tenant = ?)",
                                 (budget_id, tenant, tenant)).fetchone()
                _check_manager(row, managed_by, "budget", budget_id)
            cur = db.execute("DELETE FROM budgets WHERE id = ? AND (? IS NULL OR tenant = ?)", (budget_id, tenant, tenant))
            if cur.rowcount == 0:
                raise NotFound(f"no budget {budget_id!r}")
            db.execute("DELETE FROM budget_usage WHERE budget_id = ?", (budget_id,))

    def budgets(self, tenant: str | None) -> list[Budget]:
        with self._read() as db:
            rows = db.execute(
                "SELECT id, tenant, user, agent, period, hard_nanos, soft_nanos, managed_by FROM budgets WHERE ? IS NULL OR tenant = ? ORDER BY id",
                (tenant, tenant),
            ).fetchall()
        return [self._budget_of(r) for r in rows]

    def budget_status(self, tenant: str, subject: Subject | None = None) -> list[BudgetStatus]:
        now = self._now_us()
        with self._read() as db:
            budgets = self._matching_budgets(db, subject) if subject else [
                self._budget_of(r) for r in db.execute(
                    "SELECT id, tenant, user, agent, period, hard_nanos, soft_nanos, managed_by FROM budgets WHERE tenant = ? ORDER BY id", (tenant,)
                ).fetchall()
            ]
            out = []
            for b in budgets:
                ps = period_start(b.period, now)
                row = db.execute(
                    "SELECT spent_nanos, reserved_nanos FROM budget_usage WHERE budget_id = ? AND period_start = ?", (b.id, ps)
                ).fetchone() or (0, 0)
                out.append(BudgetStatus(b, ps, row[0], row[1]))
        return out

    @staticmethod
    def _limit_of(row: Sequence[Any]) -> Limit:
        id_, tenant, user, agent, operation, kind, value, managed_by = row
        return Limit(Scope(tenant, user, agent), kind, value, operation, id=id_, managed_by=managed_by)

    def _matching_limits(self, db: sqlite3.Connection, s: Subject, operation: str) -> list[Limit]:
        rows = db.execute(
            "SELECT id, tenant, user, agent, operation, kind, limit_value, managed_by FROM limits"
            " WHERE tenant = ? AND (user IS NULL OR user = ?) AND (agent IS NULL OR agent = ?) ORDER BY id",
            (s.tenant, s.user, s.agent),
        ).fetchall()
        return [lim for lim in map(self._limit_of, rows) if lim.applies_to(operation)]

    def put_limit(self, limit: Limit) -> Limit:
        sc = limit.scope
        with self._write() as db:
            row = db.execute("SELECT tenant, managed_by FROM limits WHERE id = ?", (limit.id,)).fetchone()
            if row is not None and row[0] != sc.tenant:
                raise Conflict(f"limit id {limit.id} is taken")
            _check_manager(row, limit.managed_by, "limit", limit.id)
            db.execute(
                "INSERT INTO limits(id, tenant, user, agent, operation, kind, limit_value, managed_by) VALUES (?,?,?,?,?,?,?,?)"
                " ON CONFLICT(id) DO UPDATE SET user=excluded.user, agent=excluded.agent, operation=excluded.operation,"
                " kind=excluded.kind, limit_value=excluded.limit_value, managed_by=excluded.managed_by",
                (limit.id, sc.tenant, sc.user, sc.agent, limit.operation, limit.kind, limit.limit, limit.managed_by),
            )
        return limit

    def delete_limit(self, limit_id: str, tenant: str | None = None, managed_by: str | None = None) -> None:
        with self._write() as db:
            if managed_by is not None:
                row = db.execute("SELECT tenant, managed_by FROM limits WHERE id = ? AND (? IS NULL OR tenant = ?)",
                                 (limit_id, tenant, tenant)).fetchone()
                _check_manager(row, managed_by, "limit", limit_id)
            cur = db.execute("DELETE FROM limits WHERE id = ? AND (? IS NULL OR tenant = ?)", (limit_id, tenant, tenant))
            if cur.rowcount == 0:
                raise NotFound(f"no limit {limit_id!r}")
            db.execute("DELETE FROM limit_state WHERE limit_id = ?", (limit_id,))

    def limits(self, tenant: str | None) -> list[Limit]:
        with self._read() as db:
            rows = db.execute(
                "SELECT id, tenant, user, agent, operation, kind, limit_value, managed_by FROM limits WHERE ? IS NULL OR tenant = ? ORDER BY id",
                (tenant, tenant),
            ).fetchall()
        return [self._limit_of(r) for r in rows]

    # -- reservations --------------------------------------------------------------

    def reserve(self, request: ReservationRequest) -> Grant:
        import uuid

        s = request.subject
        if not isinstance(request.operation, str) or not request.operation:
            raise InvalidRequest("operation must be a non-empty string such as 'model' or 'sandbox'")
        rid = request.id or "res_" + uuid.uuid4().hex
        with self._write() as db:
            now = self._now_us()
            self._sweep(db, now)
            book = self._current_book(db)
            amount = book.estimate_nanos(request.estimate, now) if request.estimate is not None else 0
            tokens = request.estimate.tokens() if request.estimate is not None else 0
            # 1. check everything; nothing is written until every check passed
            holds: list[tuple[str, int]] = []
            for b in self._matching_budgets(db, s):
                ps = period_start(b.period, now)
                spent, reserved = db.execute(
                    "SELECT spent_nanos, reserved_nanos FROM budget_usage WHERE budget_id = ? AND period_start = ?", (b.id, ps)
                ).fetchone() or (0, 0)
                hard = b.hard_nanos
                if hard is not None and spent + reserved + amount > hard:
                    raise budget_exceeded(b, ps, spent, reserved, amount)
                holds.append((b.id, ps))
            rates: list[tuple[str, int, int]] = []  # (limit id, new tat, tokens reserved)
            leases: list[str] = []
            for lim in self._matching_limits(db, s, request.operation):
                state = db.execute("SELECT tat_us, in_use FROM limit_state WHERE limit_id = ?", (lim.id,)).fetchone() or (0, 0)
                CHECKS[lim.kind](lim, state, now, tokens, rates, leases)
            # 2. hold
            if amount:
                db.executemany(
                    "INSERT INTO budget_usage(budget_id, period_start, reserved_nanos) VALUES (?,?,?) ON CONFLICT DO UPDATE"
                    " SET reserved_nanos = reserved_nanos + excluded.reserved_nanos",
                    [(bid, ps, amount) for bid, ps in holds],
                )
            db.executemany(
                "INSERT INTO limit_state(limit_id, tat_us) VALUES (?,?) ON CONFLICT DO UPDATE SET tat_us = excluded.tat_us",
                [(lid, tat) for lid, tat, _ in rates],
            )
            db.executemany(
                "INSERT INTO limit_state(limit_id, in_use) VALUES (?,1) ON CONFLICT DO UPDATE SET in_use = in_use + 1",
                [(lid,) for lid in leases],
            )
            expires = now + int(request.ttl_s * 1_000_000)
            try:
                db.execute(
                    "INSERT INTO reservations(id, tenant, user, agent, operation, created_us, expires_us, amount_nanos, tokens,"
                    " holds, rates, leases) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (rid, s.tenant, s.user, s.agent, request.operation, now, expires, amount, tokens,
                     json.dumps(holds), json.dumps(rates), json.dumps(leases)),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"reservation id {rid} was already used") from None
        return Grant(rid, s, request.operation, amount, tokens, from_us(expires))

    def _unhold(self, db: sqlite3.Connection, row: Sequence[Any], actual_tokens: int | None) -> None:
        amount, holds, rates, leases = row
        if amount:
            db.executemany(
                "UPDATE budget_usage SET reserved_nanos = MAX(0, reserved_nanos - ?) WHERE budget_id = ? AND period_start = ?",
                [(amount, bid, ps) for bid, ps in json.loads(holds)],
            )
        db.executemany(
            "UPDATE limit_state SET in_use = MAX(0, in_use - 1) WHERE limit_id = ?", [(lid,) for lid in json.loads(leases)]
        )
        if actual_tokens is not None:
            # give back (or take) the difference between reserved and actual tokens
            for lid, _tat, reserved_tokens in json.loads(rates):
                if reserved_tokens == 0 or actual_tokens == reserved_tokens:
                    continue
                lim = db.execute("SELECT limit_value FROM limits WHERE id = ?", (lid,)).fetchone()
                if lim is None:
                    continue
                delta = (actual_tokens - reserved_tokens) * MINUTE_US // lim[0]
                db.execute("UPDATE limit_state SET tat_us = tat_us + ? WHERE limit_id = ?", (delta, lid))

    def _sweep(self, db: sqlite3.Connection, now: int) -> None:
        """Release reservations whose holder died (at most once a second per store)."""
        if now - self._last_sweep < SWEEP_EVERY_US:
            return
        self._last_sweep = now
        rows = db.execute(
            "SELECT id, amount_nanos, holds, rates, leases FROM reservations WHERE expires_us < ? LIMIT ?",
            (now, SWEEP_BATCH),
        ).fetchall()
        for rid, *rest in rows:
            self._unhold(db, rest, None)
            db.execute("DELETE FROM reservations WHERE id = ?", (rid,))
        if rows:
            log.warning("released %d reservation(s) whose holders never settled them", len(rows))

    def settle(self, reservation_id: str, events: Sequence[UsageEvent]) -> AppendResult:
        with self._write() as db:
            return self._settle(db, reservation_id, events, self._now_us())

    def settle_many(self, items: Sequence[tuple[str, Sequence[UsageEvent]]]) -> list[AppendResult]:
        """Settle many reservations in one transaction (empty events = release)."""
        with self._write() as db:
            now = self._now_us()
            return [self._settle(db, rid, events, now) for rid, events in items]

    def _settle(self, db: sqlite3.Connection, reservation_id: str, events: Sequence[UsageEvent], now: int) -> AppendResult:
        # an open reservation is a row; settled, released and expired ones are gone
        row = db.execute(
            "SELECT amount_nanos, holds, rates, leases FROM reservations WHERE id = ?", (reservation_id,)
        ).fetchone()
        periods = dict(json.loads(row[1])) if row is not None else None
        appended, dups, cost, tokens = self._append(db, events, now, periods) if events else (0, 0, 0, 0)
        overrun = 0
        if row is not None:
            self._unhold(db, row, tokens)
            overrun = max(0, cost - row[0])
            db.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))
        elif appended:
            log.info("settled %s after its hold was gone (expired or unknown); usage recorded", reservation_id)
        if overrun:
            log.warning("reservation %s cost %s more than it reserved", reservation_id, money_str(overrun))
        return AppendResult(appended, dups, cost, overrun)

    def release(self, reservation_id: str) -> None:
        with self._write() as db:
            row = db.execute(
                "SELECT amount_nanos, holds, rates, leases FROM reservations WHERE id = ?", (reservation_id,)
            ).fetchone()
            if row is None:
                return
            self._unhold(db, row, 0)
            db.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))

    def renew(self, reservation_id: str, ttl_s: float) -> None:
        with self._write() as db:
            cur = db.execute(
                "UPDATE reservations SET expires_us = ? WHERE id = ?",
                (self._now_us() + int(ttl_s * 1_000_000), reservation_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no open reservation {reservation_id!r} (it was settled, released or expired)")

    def open_reservations(self, tenant: str | None = None) -> int:
        with self._read() as db:
            return int(db.execute(
                "SELECT COUNT(*) FROM reservations WHERE ? IS NULL OR tenant = ?", (tenant, tenant)
            ).fetchone()[0])

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
        # whole hours come from rollups; the ragged edges of the window from raw events
        full_lo = None if lo is None else -(-lo // HOUR_US) * HOUR_US
        full_hi = None if hi is None else hi - hi % HOUR_US
        acc: dict[tuple[Any, ...], list[int]] = {}
        with self._read() as db:
            if full_lo is not None and full_hi is not None and full_lo >= full_hi:
                self._raw_totals(db, query, lo, hi, acc)
            else:
                self._rollup_totals(db, query, full_lo, full_hi, acc)
                if lo is not None and lo < full_lo:  # type: ignore[operator]
                    self._raw_totals(db, query, lo, full_lo, acc)
                if hi is not None and full_hi < hi:  # type: ignore[operator]
                    self._raw_totals(db, query, full_hi, hi, acc)
        names = list(query.group_by) + (["bucket"] if query.bucket else [])
        rows = [UsageRow(dict(zip(names, k)), v[0], v[1], v[2]) for k, v in acc.items()]
        rows.sort(key=lambda r: tuple("" if v is None else str(v) for v in r.keys.values()))
        return rows

    @staticmethod
    def _filters(query: UsageQuery, cols: Mapping[str, str], blank: Any) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        for name in ("tenant", "user", "agent", "resource", "model"):
            v = getattr(query, name)
            if v is not None:
                where.append(f"{cols[name]} = ?")
                args.append(v)
        return where, args

    def _rollup_totals(self, db: sqlite3.Connection, q: UsageQuery, lo: int | None, hi: int | None, acc: dict[tuple[Any, ...], list[int]]) -> None:
        # the tenant-level table is far smaller; use it when no user/agent is asked about
        subject_level = bool({"user", "agent"} & set(q.group_by)) or q.user is not None or q.agent is not None
        table = "rollups" if subject_level else "rollups_tenant"
        cols = [_ROLLUP_COLUMN[d] for d in q.group_by]
        if q.bucket:
            cols.append(f"strftime('{_BUCKET_FORMAT[q.bucket]}', hour / 1000000, 'unixepoch')")
        where, args = self._filters(q, _ROLLUP_COLUMN, "")
        if lo is not None:
            where.append("hour >= ?")
            args.append(lo)
        if hi is not None:
            where.append("hour < ?")
            args.append(hi)
        select = ", ".join(cols) + ", " if cols else ""
        sql = (
            f"SELECT {select}SUM(quantity_micro), SUM(cost_nanos), SUM(lines) FROM {table}"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + (f" GROUP BY {', '.join(str(i + 1) for i in range(len(cols)))}" if cols else "")
        )
        n = len(cols)
        for row in db.execute(sql, args):
            if row[n] is None:
                continue
            key = tuple(_none_if_blank(d, v) for d, v in zip(list(q.group_by) + ["bucket"], row[:n]))
            _add(acc, key, row[n], row[n + 1], row[n + 2])

    def _raw_totals(self, db: sqlite3.Connection, q: UsageQuery, lo: int | None, hi: int | None, acc: dict[tuple[Any, ...], list[int]]) -> None:
        raw_cols = {"tenant": "e.tenant", "user": "e.user", "agent": "e.agent", "resource": "j.key", "model": "e.model",
                    "deployment": "e.deployment", "price_version": "e.price_version"}
        where, args = self._filters(q, raw_cols, None)
        if lo is not None:
            where.append("e.time_us >= ?")
            args.append(lo)
        if hi is not None:
            where.append("e.time_us < ?")
            args.append(hi)
        sql = (
            "SELECT e.tenant, e.user, e.agent, j.key, e.model, e.deployment, COALESCE(e.price_version, 0), e.time_us,"
            " json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]') FROM events e, json_each(e.lines) j"
            + (f" WHERE {' AND '.join(where)}" if where else "")
        )
        fmt = _BUCKET_FORMAT.get(q.bucket or "")
        for row in db.execute(sql, args):
            values = dict(zip(DIMENSIONS, row[:7]))
            key = tuple(values[d] for d in q.group_by)
            if fmt:
                key += (from_us(row[7]).strftime(fmt),)
            _add(acc, key, row[8], row[9], 1)

    def events(
        self, tenant: str | None, *, start: datetime | None = None, end: datetime | None = None, after_seq: int = 0, limit: int = 1000
    ) -> list[StoredEvent]:
        lo = to_us(start) if start else None
        hi = to_us(end) if end else None
        with self._read() as db:
            rows = db.execute(
                "SELECT seq, body, price_version, cost_nanos, lines, recorded_us FROM events WHERE seq > ?"
                " AND (? IS NULL OR tenant = ?) AND (? IS NULL OR time_us >= ?) AND (? IS NULL OR time_us < ?)"
                " ORDER BY seq LIMIT ?",
                (after_seq, tenant, tenant, lo, lo, hi, hi, limit),
            ).fetchall()
        return [
            StoredEvent(seq, json.loads(body), pv, cost, {r: (v[0], v[1]) for r, v in json.loads(lines).items()}, rec)
            for seq, body, pv, cost, lines, rec in rows
        ]

    def notices(self, tenant: str | None, after_seq: int = 0, limit: int = 1000) -> list[Notice]:
        with self._read() as db:
            rows = db.execute(
                "SELECT seq, time_us, tenant, type, body FROM notices WHERE seq > ? AND (? IS NULL OR tenant = ?) ORDER BY seq LIMIT ?",
                (after_seq, tenant, tenant, limit),
            ).fetchall()
        return [Notice(seq, t, ten, ty, json.loads(body)) for seq, t, ten, ty, body in rows]

    def count_events(self, tenant: str | None = None) -> int:
        with self._read() as db:
            return int(db.execute("SELECT COUNT(*) FROM events WHERE ? IS NULL OR tenant = ?", (tenant, tenant)).fetchone()[0])


def _check_manager(row: Sequence[Any] | None, actor: str, what: str, id_: str) -> None:
    """A tenant may change only what a tenant set; operators may change anything."""
    if row is not None and actor == "tenant" and row[1] != "tenant":
        raise PermissionDenied(f"{what} {id_} was set by the operator; a tenant API key cannot change or remove it")


def _none_if_blank(dim: str, v: Any) -> Any:
    if dim == "price_version":
        return v or None
    return None if v == "" else v


def _add(acc: dict[tuple[Any, ...], list[int]], key: tuple[Any, ...], q: int, c: int, n: int) -> None:
    cur = acc.get(key)
    if cur is None:
        acc[key] = [q, c, n]
    else:
        cur[0] += q
        cur[1] += c
        cur[2] += n


__all__ = ["SQLiteLedger", "WouldBlock"]
