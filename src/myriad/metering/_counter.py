"""Counting high-rate, low-value usage (turns, WebSocket messages) without a transaction each.

A model call is worth a durable reservation; a WebSocket message is not. The agent
host calls ``counter.add(subject, Resources.AGENT_WS_MESSAGES)`` (a dict update) and
the counter writes one event per subject per flush, every ``flush_every_s``
seconds, on the meter's worker thread::

    counter = UsageCounter(meter, flush_every_s=5)
    counter.start()                      # a task on the running loop
    counter.add(Subject(ref.tenant, agent=ref.path), Resources.AGENT_TURNS)
    await counter.stop()                 # flushes what is left

A batch keeps its event ids until the ledger accepted it, so a failed flush is
retried with the same ids and cannot count twice. The price of not paying a
transaction per message: a crash loses at most the last ``flush_every_s`` of counts.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

from myriad.metering._events import new_id, Subject, Usage, UsageEvent
from myriad.metering._meter import Meter
from myriad.metering._store import AppendResult

log = logging.getLogger("myriad.metering")


class UsageCounter:
    """In-memory tallies per subject and resource, flushed to the ledger as usage events."""

    def __init__(self, meter: Meter, *, flush_every_s: float = 5.0, source: str = "/myriad/agents",
                 type: str = "agent") -> None:
        self.meter = meter
        self.flush_every_s = flush_every_s
        self.source = source
        self.type = type
        self._counts: dict[Subject, dict[str, Decimal]] = {}
        self._pending: list[UsageEvent] = []
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def add(self, subject: Subject, resource: str, n: int | Decimal = 1) -> None:
        """Count ``n`` of ``resource`` for ``subject`` (cheap: no I/O)."""
        per = self._counts.setdefault(subject, {})
        per[resource] = per.get(resource, Decimal(0)) + Decimal(n)

    @property
    def pending(self) -> int:
        """Subjects with counts not yet written."""
        return len(self._counts) + len(self._pending)

    async def flush(self) -> AppendResult:
        """Write everything counted so far (one event per subject)."""
        async with self._lock:
            counts, self._counts = self._counts, {}
            now = self.meter.now()
            self._pending += [
                UsageEvent(subject, Usage(dict(q)), id=new_id("cnt_"), source=self.source,
                           type=f"dev.myriad.usage.{self.type}", time=now)
                for subject, q in counts.items() if any(q.values())
            ]
            if not self._pending:
                return AppendResult(0, 0, 0)
            result = await self.meter.record_events(self._pending)
            self._pending = []  # accepted: only now may the ids be forgotten
            return result

    def start(self) -> None:
        """Flush every ``flush_every_s`` seconds on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="myriad-usage-counter")

    async def stop(self) -> None:
        """Stop the periodic flush and write what is left."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_every_s)
            try:
                await self.flush()
            except Exception as e:  # noqa: BLE001 - keep counting; the batch is retried with its ids
                log.warning("usage counter flush failed (will retry): %s", e)


__all__ = ["UsageCounter"]
