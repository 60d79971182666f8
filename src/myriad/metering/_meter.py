"""The ``Meter``: the one object other rooms call to admit, record and read usage.

::

    meter = Meter.open("sqlite:///var/myriad/metering.db")
    async with meter.reserve(subject, Usage.tokens_of("gpt-x", input=900, output=512), operation="model") as r:
        reply = await call_the_model(...)
        r.commit(Usage.from_openai(reply.usage, "gpt-x"))
    # leaving the block settles: actual usage is recorded, the unused hold released.
    # leaving without commit (e.g. an exception before any usage) releases everything.

Every store call runs on one worker thread owned by the meter (created on first
use, never at import), so the event loop never waits on the database lock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence, TypeVar

from myriad.errors import Conflict, InvalidRequest
from myriad.metering._events import EVENT_TYPE_PREFIX, Subject, Usage, UsageEvent, new_id
from myriad.metering._limits import Budget, BudgetStatus, Limit
from myriad.metering._prices import PriceVersion
from myriad.metering._store import AppendResult, Grant, LedgerStore, ReservationRequest, UsageQuery, UsageRow, open_store

T = TypeVar("T")
log = logging.getLogger("myriad.metering")


class Reservation:
    """An admission: budget held, rate counted, a concurrency slot taken.

    Use as ``async with`` (or plain ``with`` from a thread). Inside, call
    ``commit(usage)`` once with what was actually used; on exit that usage is
    recorded and the rest of the hold released. With no commit, exit releases all.
    The settled event's id defaults to the reservation id, so a retried settle
    counts once.
    """

    def __init__(self, meter: "Meter", request: ReservationRequest, *, source: str, type: str) -> None:
        self._meter = meter
        self.request = request
        self.grant: Grant | None = None
        self._source = source
        self._type = type
        self._events: list[UsageEvent] | None = None
        self.result: AppendResult | None = None

    @property
    def id(self) -> str:
        if self.grant is None:
            raise InvalidRequest("reservation has not been admitted yet (enter it with 'async with')")
        return self.grant.id

    def commit(
        self,
        usage: Usage | None = None,
        *,
        events: Sequence[UsageEvent] | None = None,
        id: str | None = None,
        time: datetime | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """Say what was actually used (once). It is written when the block exits."""
        if self._events is not None:
            raise Conflict(f"reservation {self.request.id} was already committed")
        if events is not None:
            self._events = list(events)
            return
        if usage is None:
            raise InvalidRequest("commit needs the actual usage (or events)")
        self._events = [
            UsageEvent(
                subject=self.request.subject,
                usage=usage,
                id=id or self.id,
                source=self._source,
                type=self._type,
                time=time or self._meter.now(),
                attributes=dict(attributes or {}),
            )
        ]

    @property
    def committed(self) -> bool:
        return self._events is not None

    # async
    async def __aenter__(self) -> "Reservation":
        try:
            self.grant = await self._meter._quick(self._meter.store.reserve, self.request)
        except asyncio.CancelledError:
            # the reservation may still be made by the worker thread: release it right after
            # (one worker, first in first out; releasing an unknown id is a no-op)
            if self.request.id and self._meter._pool is not None:
                self._meter._pool.submit(self._meter.store.release, self.request.id)
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._meter.settle_in_background and not self._meter.local and self.grant is not None and self.result is None:
            # the caller does not wait for the write; see Meter(settle_in_background=...)
            self._meter._enqueue_settle(self.grant.id, self._events or [])
            return
        await self._meter._quick(self._finish)

    async def start(self) -> "Reservation":
        """Admit without a ``with`` block (for holds that outlive one call, like a live sandbox)."""
        return await self.__aenter__()

    async def finish(self) -> None:
        """Settle (if committed) or release; the end of ``start()``. Idempotent."""
        await self.__aexit__(None, None, None)

    async def renew(self, ttl_s: float) -> None:
        """Keep a long-lived hold (a live sandbox) from expiring."""
        await self._meter._run(self._meter.store.renew, self.id, ttl_s)

    # sync (threads, or code that is not async)
    def __enter__(self) -> "Reservation":
        self.grant = self._meter.store.reserve(self.request)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._finish()

    def _finish(self) -> None:
        if self.grant is None or self.result is not None:
            return
        if self._events:
            self.result = self._meter.store.settle(self.grant.id, self._events)
        else:
            self._meter.store.release(self.grant.id)
            self.result = AppendResult(0, 0, 0)


class Meter:
    """Admission, recording and reading of usage, over one ``LedgerStore``."""

    def __init__(
        self,
        store: LedgerStore,
        *,
        source: str = "/myriad",
        default_ttl_s: float = 900.0,
        clock: Callable[[], float] = time.time,
        settle_in_background: bool = False,
        flush_interval: float = 0.02,
    ) -> None:
        if not getattr(store, "shared", True):
            # this process owns the ledger: admission in memory, usage in group commits
            from myriad.metering._local import LocalLedger

            store = LocalLedger(store, clock=clock, flush_interval=flush_interval)
        self.store = store
        self.local = not getattr(store, "shared", True)
        """Admission runs in memory (``LocalLedger``), no database round trip per call."""
        self.clock = clock
        self.source = source
        self.default_ttl_s = default_ttl_s
        self.settle_in_background = settle_in_background
        """Settle reservations after the caller has moved on, many per transaction.

        Takes the settle transaction off the caller's latency and batches writes; the
        price: usage settled in the last moments before a crash is lost (its hold is
        released when the reservation's TTL passes), so the ledger can under-count.
        Budgets still hold under races (holds stay until settled)."""
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._settle_queue: list[tuple[str, list[UsageEvent]]] = []
        self._settle_wake: asyncio.Event | None = None
        self._settler: asyncio.Task[None] | None = None
        self._settling = 0

    @classmethod
    def open(
        cls,
        url: str,
        *,
        source: str = "/myriad",
        default_ttl_s: float = 900.0,
        clock: Callable[[], float] = time.time,
        flush_interval: float = 0.02,
        **store_options: Any,
    ) -> "Meter":
        """A meter over the ledger at ``url`` (see ``open_store``); ``clock`` is shared with the store."""
        return cls(open_store(url, clock=clock, **store_options), source=source, default_ttl_s=default_ttl_s, clock=clock,
                   flush_interval=flush_interval)

    def now(self) -> datetime:
        """The meter's current time (event timestamps)."""
        return datetime.fromtimestamp(self.clock(), timezone.utc)

    @classmethod
    def from_settings(cls, settings: Any) -> "Meter":
        """A meter from ``Settings`` (its ``metering`` section and ``data_dir``)."""
        m = settings.metering
        storage = getattr(settings, "storage", None)
        database = getattr(storage, "database", None)  # --database: the ledger goes there too
        url = m.ledger_url or database or f"sqlite:///{(settings.data_dir / 'metering.db').resolve()}"
        options: dict[str, Any] = {"synchronous": m.synchronous}
        if not url.startswith("sqlite:") and storage is not None:
            options.update(pool_size=max(2, storage.pool_size // 2), connect_timeout=storage.connect_timeout)
        if url.startswith("sqlite:"):
            options["shared"] = bool(getattr(m, "shared_ledger", False))
        meter = cls.open(url, default_ttl_s=m.reservation_ttl, flush_interval=float(getattr(m, "flush_interval", 0.02)),
                         **options)
        meter.settle_in_background = bool(getattr(m, "settle_in_background", False))
        if m.price_file:
            meter.load_prices(m.price_file)
        return meter

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a (blocking) store call on the meter's worker thread and await it."""
        return await self._run(fn, *args, **kwargs)

    async def _quick(self, fn: Callable[..., T], *args: Any) -> T:
        """A short store call (admission, settle, append): inline when the ledger is free.

        An uncontended SQLite write transaction takes ~0.1-0.3 ms, less than two
        thread hops; when another thread or process holds the write lock the call
        goes to the worker thread, so the loop never waits on a lock.
        """
        nowait = getattr(self.store, "call_nowait", None)
        if nowait is not None:
            from myriad.metering._sqlite import WouldBlock

            try:
                return nowait(fn, *args)  # type: ignore[no-any-return]
            except WouldBlock:
                pass
        return await self._run(fn, *args)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="myriad-meter")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    # -- background settling ---------------------------------------------------------

    def _enqueue_settle(self, reservation_id: str, events: list[UsageEvent]) -> None:
        self._settle_queue.append((reservation_id, events))
        if self._settler is None or self._settler.done():
            self._settle_wake = asyncio.Event()
            self._settler = asyncio.get_running_loop().create_task(self._settle_loop(), name="myriad-meter-settle")
        assert self._settle_wake is not None
        self._settle_wake.set()

    async def _settle_loop(self) -> None:
        assert self._settle_wake is not None
        while True:
            await self._settle_wake.wait()
            self._settle_wake.clear()
            while self._settle_queue:
                batch, self._settle_queue = self._settle_queue[:512], self._settle_queue[512:]
                self._settling = len(batch)
                try:
                    await self._run(self.store.settle_many, batch)
                except Exception as e:  # noqa: BLE001 - retry: settling is idempotent (event ids, hold rows)
                    log.warning("background settle of %d reservation(s) failed, retrying: %s", len(batch), e)
                    self._settle_queue[:0] = batch
                    await asyncio.sleep(0.5)
                finally:
                    self._settling = 0

    async def drain(self) -> None:
        """Wait until every background settle has been written."""
        while self._settle_queue or self._settling:
            if self._settle_wake is not None:
                self._settle_wake.set()
            await asyncio.sleep(0.002)

    async def aclose(self) -> None:
        """Write pending background settles, then ``close``."""
        await self.drain()
        if self._settler is not None:
            self._settler.cancel()
            try:
                await self._settler
            except asyncio.CancelledError:
                pass
            self._settler = None
        self.close()

    def close(self) -> None:
        """Stop the worker thread and close the ledger (``aclose`` also writes pending settles)."""
        if self._settle_queue:
            log.warning("closing the meter with %d unsettled reservation(s); use aclose()", len(self._settle_queue))
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.store.close()

    # -- admission -------------------------------------------------------------------

    def reserve(
        self,
        subject: Subject,
        estimate: Usage | None = None,
        *,
        operation: str = "model",
        ttl_s: float | None = None,
        id: str | None = None,
        source: str | None = None,
    ) -> Reservation:
        """Admit an operation that may use up to ``estimate``; raises ``BudgetExceeded`` / ``RateLimited`` on entry."""
        req = ReservationRequest(subject, estimate, operation, ttl_s or self.default_ttl_s, id or new_id("res_"))
        return Reservation(self, req, source=source or f"{self.source}/{operation}", type=EVENT_TYPE_PREFIX + operation.split(".")[0])

    def hold(self, subject: Subject, operation: str, *, ttl_s: float | None = None) -> Reservation:
        """A zero-cost admission that only takes a concurrency slot (a live sandbox, a resident agent)."""
        return self.reserve(subject, None, operation=operation, ttl_s=ttl_s)

    # -- recording -------------------------------------------------------------------

    def event(
        self,
        subject: Subject,
        usage: Usage,
        *,
        id: str | None = None,
        type: str = "generic",
        source: str | None = None,
        time: datetime | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> UsageEvent:
        """Build a usage event stamped with this meter's source."""
        return UsageEvent(
            subject=subject,
            usage=usage,
            id=id or new_id("ev_"),
            source=source or self.source,
            type=type if "." in type else EVENT_TYPE_PREFIX + type,
            time=time or self.now(),
            attributes=dict(attributes or {}),
        )

    async def record(self, subject: Subject, usage: Usage, **kw: Any) -> AppendResult:
        """Record usage that needed no admission (agent turns, storage, egress bytes)."""
        return await self._quick(self.store.append, [self.event(subject, usage, **kw)])

    async def record_events(self, events: Sequence[UsageEvent]) -> AppendResult:
        """Record events (e.g. CloudEvents posted by a trusted emitter); replays count once."""
        return await self._run(self.store.append, list(events))

    def record_sync(self, subject: Subject, usage: Usage, **kw: Any) -> AppendResult:
        return self.store.append([self.event(subject, usage, **kw)])

    # -- configuration ---------------------------------------------------------------

    def add_prices(self, version: Mapping[str, Any]) -> PriceVersion:
        """Append a price version (``{"effective_at", "currency", "prices": [...]}``)."""
        return self.store.add_price_version(version)

    def ensure_prices(self, version: Mapping[str, Any]) -> PriceVersion | None:
        """Append ``version`` unless the ledger already has it; returns the new version or None.

        With ``effective_at``: skipped if a version starts at that time. Without it
        ("these prices from now on"): skipped if equal to the latest version, so
        syncing the same prices at every start-up adds nothing.
        """
        from myriad.metering._events import parse_time, to_us
        from myriad.metering._prices import Price

        book = self.store.price_book()
        eff = version.get("effective_at")
        if eff is not None:
            if to_us(parse_time(eff)) in {to_us(v.effective_at) for v in book.versions}:
                return None
        elif book.latest is not None:
            wanted = {Price.from_json(p) for p in version.get("prices") or []}
            if wanted == set(book.latest.prices) and version.get("currency", "USD") == book.latest.currency:
                return None
        return self.store.add_price_version(version)

    def load_prices(self, path: str) -> list[PriceVersion]:
        """``ensure_prices`` for every version of a JSON/TOML price file (``{"versions": [...]}``)."""
        from myriad.metering._prices import load_price_file

        added = [self.ensure_prices(raw) for raw in load_price_file(path)]
        return [v for v in added if v is not None]

    def set_budget(self, budget: Budget) -> Budget:
        return self.store.put_budget(budget)

    def set_limit(self, limit: Limit) -> Limit:
        return self.store.put_limit(limit)

    # -- reading ---------------------------------------------------------------------

    async def spend(self, subject: Subject) -> list[BudgetStatus]:
        """The budgets that cover ``subject`` and where each stands (for ``agent.usage``)."""
        return await self._run(self.store.budget_status, subject.tenant, subject)

    async def totals(self, query: UsageQuery) -> list[UsageRow]:
        return await self._run(self.store.totals, query)

    def query(self, tenant: str | None, **kw: Any) -> UsageQuery:
        """Shorthand for ``UsageQuery(tenant, ...)``."""
        return replace(UsageQuery(tenant), **kw)


__all__ = ["Meter", "Reservation"]
