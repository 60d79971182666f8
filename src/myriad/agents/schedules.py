"""Schedules (alarms): call an agent method later, durably, at least once.

A schedule is a row in storage until it has run successfully (or, for cron, forever,
moved to its next time). One loop per host sleeps until the earliest due row, claims
the due ones (a lease of ``CLAIM_LEASE`` seconds, renewed while a firing runs, so
any number of hosts sharing one database never fire a row twice while its claimant
lives), fires each as a turn of its agent (waking it if hibernated), and on failure
retries with exponential backoff, up to ``schedule_max_attempts``. A host killed
mid-fire leaves a claim that expires; the schedule then fires again (on a shared
database, on another host; embedded, after restart): at least once, never lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from myriad.agents.naming import AgentRef
from myriad.errors import AgentElsewhere, InvalidRequest, UnknownAgent
from myriad.settings import AgentSettings
from myriad.storage import ScheduleRecord, Storage

if TYPE_CHECKING:
    from myriad.agents.agent import Agent
    from myriad.agents.host import AgentHost

log = logging.getLogger("myriad.agents.schedules")
_MAX_BACKOFF = 300.0
_IDLE_WAIT = 30.0
CLAIM_LEASE = 60.0
"""Seconds a claim on a due schedule lasts unless renewed (renewed every third of it)."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """A pending call, as an agent sees it."""

    id: str
    method: str
    payload: Any
    kind: str  # "delayed" | "scheduled" | "cron"
    cron: str | None
    time: datetime  # next run, UTC
    attempts: int

    @classmethod
    def from_record(cls, r: ScheduleRecord) -> "Schedule":
        return cls(r.id, r.method, json.loads(r.payload), r.kind, r.cron,
                   datetime.fromtimestamp(r.next_run, timezone.utc), r.attempts)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "callback": self.method, "payload": self.payload, "type": self.kind,
                "cron": self.cron, "time": self.time.isoformat(), "attempts": self.attempts}


def next_cron(expr: str, after: float) -> float:
    """The next time (unix seconds, UTC) a cron expression fires after ``after``."""
    from croniter import croniter

    if not croniter.is_valid(expr):
        raise InvalidRequest(f"invalid cron expression {expr!r} (expected 5 fields, e.g. '*/5 * * * *')")
    return float(croniter(expr, datetime.fromtimestamp(after, timezone.utc)).get_next(float))


def parse_when(when: Any, now: float) -> tuple[str, float, str | None]:
    """``(kind, next_run, cron)`` for a delay in seconds, a datetime or a cron string."""
    if isinstance(when, bool):
        raise InvalidRequest("schedule time must be seconds, a datetime or a cron string, not a bool")
    if isinstance(when, (int, float)):
        if when < 0:
            raise InvalidRequest("schedule delay must be >= 0 seconds")
        return "delayed", now + float(when), None
    if isinstance(when, datetime):
        ts = (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
        return "scheduled", ts, None
    if isinstance(when, str):
        return "cron", next_cron(when, now), when
    raise InvalidRequest(f"schedule time must be seconds, a datetime or a cron string, got {type(when).__name__}")


class Scheduler:
    """The per-host loop that fires due schedules."""

    def __init__(self, host: "AgentHost", storage: Storage, settings: AgentSettings) -> None:
        self._host = host
        self._storage = storage
        self._settings = settings
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[str] = set()
        self._fires: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.fired = 0
        self.owner = uuid.uuid4().hex  # this host's name on its claims
        self.lease = getattr(settings, "schedule_lease", CLAIM_LEASE)
        self._renewed = 0.0
        self.max_firing = 64  # schedules this host fires at once

    async def add(self, agent: "Agent", when: Any, method: str, payload: Any, *, new: bool = False) -> Schedule:
        if not isinstance(method, str) or not callable(getattr(type(agent), method, None)) or method.startswith("_"):
            raise InvalidRequest(f"cannot schedule {method!r}: {type(agent).__name__} has no such method")
        try:
            payload_text = json.dumps(payload)
        except (TypeError, ValueError) as e:
            raise InvalidRequest(f"schedule payload must be JSON-serialisable: {e}") from None
        now = time.time()
        kind, next_run, cron = parse_when(when, now)
        ref = agent.ref
        # the identity of "the same schedule": what the caller asked for, not when it was asked
        spec = cron if kind == "cron" else (repr(float(when)) if kind == "delayed" else repr(next_run))
        key = None if new else hashlib.sha256(
            json.dumps([method, kind, spec, payload_text]).encode()).hexdigest()[:32]
        record = ScheduleRecord(uuid.uuid4().hex, ref.path, ref.tenant, ref.agent_class, ref.name,
                                method, payload_text, kind, cron, next_run, 0, now, key)
        stored = await self._storage.add_schedule(record)
        self._wakeup.set()
        return Schedule.from_record(stored)

    async def cancel(self, ref: AgentRef, schedule_id: str) -> bool:
        record = await self._storage.get_schedule(schedule_id)
        if record is None or record.path != ref.path:
            return False
        return await self._storage.delete_schedule(schedule_id)

    async def list(self, ref: AgentRef) -> list[Schedule]:
        return [Schedule.from_record(r) for r in await self._storage.list_schedules(ref.path)]

    # -- the loop ----------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        # A flag as well as cancel(): Python 3.11's wait_for can swallow a cancellation
        # that races with the event it waits on.
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for t in list(self._fires):
            t.cancel()
        if self._fires:
            await asyncio.gather(*self._fires, return_exceptions=True)

    async def _loop(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            try:
                now = time.time()
                if self._in_flight and now - self._renewed > self.lease / 3:
                    await self._storage.renew_claims(self.owner, list(self._in_flight), now + self.lease)
                    self._renewed = now
                # claim only what can fire now: a claim waiting behind hundreds of others
                # for a connection could outlive its lease and be taken by another host
                room = self.max_firing - len(self._in_flight)
                claimed = await self._storage.claim_due(now, room, self.owner, self.lease) if room > 0 else []
                if claimed:
                    self._renewed = now
                for record in claimed:
                    if record.id not in self._in_flight:
                        self._in_flight.add(record.id)
                        task = asyncio.get_running_loop().create_task(self._fire(record))
                        self._fires.add(task)
                        task.add_done_callback(self._fires.discard)
                if len(self._in_flight) >= self.max_firing:
                    delay = self.lease / 3  # full: each finished firing sets the wakeup event
                else:
                    nxt = await self._storage.next_due()
                    # add() sets the wakeup event, so an idle host need not poll every second;
                    # the cap only bounds how long a clock jump can delay a firing.
                    delay = _IDLE_WAIT if nxt is None else min(_IDLE_WAIT, max(0.005, nxt - time.time()))
                if self._in_flight:
                    delay = min(delay, self.lease / 3)
            except Exception as e:  # storage trouble: log and try again shortly
                log.error("schedule loop: %s", e)
                delay = 1.0
            if self._stopping:
                break
            try:
                await asyncio.wait_for(self._wakeup.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def _fire(self, record: ScheduleRecord) -> None:
        async def settle(next_run: float | None, attempts: int) -> None:
            # only while this host still holds the claim: one paused past its lease (whose
            # schedule another host has since claimed and fired) must not move or drop it
            if next_run is None:
                settled = await self._storage.delete_schedule(record.id, owner=self.owner)
            else:
                settled = await self._storage.update_schedule(record.id, next_run, attempts, owner=self.owner)
            if not settled:
                log.info("schedule %s: not settled here (cancelled meanwhile, or claimed by another host "
                         "after this one's claim expired)", record.id)

        try:
            ref = AgentRef.from_path(record.path)
            payload = json.loads(record.payload)
            try:
                await self._host.run(ref, lambda agent: getattr(agent, record.method)(payload))
            except AgentElsewhere:
                # Cluster mode: another shard holds the agent. Not a failed attempt: put it
                # back (claims released) for a claimant that can fire it; once only.
                await settle(time.time() + 0.2, record.attempts)
                return
            except UnknownAgent:
                log.error("schedule %s: agent class %s is not served here; keeping it", record.id, record.agent_class)
                await settle(time.time() + 60, record.attempts)
                return
            except Exception as e:
                attempts = record.attempts + 1
                if attempts >= self._settings.schedule_max_attempts:
                    log.error("schedule %s (%s.%s) failed %d times, dropping it: %s",
                              record.id, record.path, record.method, attempts, e)
                    await settle(None, 0)
                else:
                    backoff = min(_MAX_BACKOFF, self._settings.schedule_backoff * 2 ** (attempts - 1))
                    await settle(time.time() + backoff, attempts)
                return
            self.fired += 1
            if record.kind == "cron" and record.cron:
                await settle(next_cron(record.cron, time.time()), 0)
            else:
                await settle(None, 0)
        finally:
            self._in_flight.discard(record.id)
            self._wakeup.set()


__all__ = ["Schedule", "Scheduler", "parse_when", "next_cron"]
