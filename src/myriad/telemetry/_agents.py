"""The agent host's instrumentation: an ``invoke_agent {agent}`` span per turn and the
host gauges.

``AgentHost`` accepts this object as ``instrumentation`` (turn middleware: ``enter`` and
``exit`` with the turn's ``TurnInfo``),
at construction, with its turn method; nothing else in the host knows about
telemetry, and a host built without it runs exactly the code it always did. The
host is duck-typed (telemetry imports no other room): a turn is called as
``turn(slot, body)`` where ``slot.ref`` has ``tenant``, ``agent_class``, ``name``
and ``path``, and ``slot.agent`` is None while the instance is hibernated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from opentelemetry import context, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind

from myriad.telemetry import _fast as fast
from myriad.telemetry import semconv as sc
from myriad.telemetry._gateway import current_user, fail
from myriad.telemetry._tools import current_tenant

log = logging.getLogger("myriad.telemetry")


class AgentInstrumentation:
    """Wraps turns in spans and observes one host's gauges."""

    def __init__(self, telemetry: Any, refresh_interval: float = 60.0) -> None:
        self._tel = telemetry
        self._tracer = telemetry.tracer
        self._turn_duration = telemetry.instruments.turn_duration
        self.host: Any = None
        self.inflight = 0
        self.stored: dict[str, int] = {}
        self.refresh_interval = refresh_interval
        self._gauges = False

    # -- turn middleware (the host calls enter/exit with one TurnInfo per turn) -------------
    def enter(self, info: Any) -> None:
        """Start the turn's ``invoke_agent`` span and make it current while the turn runs."""
        ref = info.ref
        cls = ref.agent_class
        attrs = {sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT, sc.GEN_AI_AGENT_NAME: cls,
                 sc.GEN_AI_AGENT_ID: ref.path, sc.GEN_AI_CONVERSATION_ID: ref.path,
                 sc.MYRIAD_TENANT: ref.tenant, sc.MYRIAD_AGENT_WOKE: info.woke}
        user = current_user()
        if user:
            attrs[sc.MYRIAD_USER] = user
        span = fast.start(self._tracer, "invoke_agent " + cls, SpanKind.INTERNAL, attrs)
        info.state["telemetry"] = (span, context.attach(trace.set_span_in_context(span)),
                                   current_tenant.set(ref.tenant))
        self.inflight += 1

    def exit(self, info: Any) -> None:
        span, token, tenant_token = info.state.pop("telemetry")
        self.inflight -= 1
        current_tenant.reset(tenant_token)
        context.detach(token)
        mattrs = {sc.GEN_AI_AGENT_NAME: info.ref.agent_class}
        if info.error is not None:
            mattrs[sc.ERROR_TYPE] = fail(span, info.error)
        span.end()
        self._turn_duration.record(time.perf_counter() - info.started, mattrs)

    # -- gauges -----------------------------------------------------------------------
    def observe(self, host: Any) -> None:
        """Register the host gauges (resident and hibernated agents, wakes, queue depth,
        connections) as observable instruments read at collection time."""
        self.host = host
        if self._gauges:
            return
        self._gauges = True
        meter = self._tel.meter
        meter.create_observable_gauge(sc.MYRIAD_AGENTS_RESIDENT, [self._resident], unit="{agent}",
                                      description="Agent instances in memory, per class.")
        meter.create_observable_gauge(sc.MYRIAD_AGENTS_HIBERNATED, [self._hibernated], unit="{agent}",
                                      description="Stored agent instances not in memory, per class "
                                                  "(refreshed every minute).")
        meter.create_observable_counter(sc.MYRIAD_AGENTS_WAKES, [self._wakes], unit="{wake}",
                                        description="Instances woken from storage.")
        meter.create_observable_gauge(sc.MYRIAD_AGENTS_QUEUE_DEPTH, [self._queue], unit="{turn}",
                                      description="Turns admitted and not finished (waiting or running).")
        meter.create_observable_gauge(sc.MYRIAD_AGENTS_CONNECTIONS, [self._connections], unit="{connection}",
                                      description="Open client connections.")
        store = self._tel.store
        if store is not None:
            meter.create_observable_gauge(sc.MYRIAD_SANDBOXES_LIVE, [self._sandboxes], unit="{sandbox}",
                                          description="Live sandboxes per tier.")

    def resident_by_class(self) -> dict[str, int]:
        host = self.host
        if host is None:
            return {}
        fn = getattr(host, "resident_by_class", None)
        return dict(fn()) if fn is not None else {"*": int(getattr(host, "resident_count", 0))}

    def _resident(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(n, {sc.GEN_AI_AGENT_NAME: c}) for c, n in self.resident_by_class().items()]

    def _hibernated(self, options: CallbackOptions) -> list[Observation]:
        resident = self.resident_by_class()
        return [Observation(max(0, n - resident.get(c, 0)), {sc.GEN_AI_AGENT_NAME: c}) for c, n in self.stored.items()]

    def _wakes(self, options: CallbackOptions) -> list[Observation]:
        stats = getattr(self.host, "stats", None) or {}
        return [Observation(int(stats.get("wakes", 0)))]

    def _queue(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(self.inflight)]

    def _connections(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(int(getattr(self.host, "connection_count", 0) or 0))]

    def _sandboxes(self, options: CallbackOptions) -> list[Observation]:
        fn = self._tel.store.live_sandboxes
        if fn is None:
            return []
        return [Observation(n, {sc.MYRIAD_SANDBOX_TIER: t}) for t, n in fn().items()]

    async def refresh(self) -> None:
        """Re-count stored instances per class (for the hibernated gauge)."""
        storage = getattr(self.host, "storage", None)
        if storage is not None and hasattr(storage, "count_agents"):
            self.stored = dict(await storage.count_agents())

    async def refresh_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # storage hiccups must not kill the loop
                log.warning("could not count stored agents: %s", e)
            await asyncio.sleep(self.refresh_interval)


__all__ = ["AgentInstrumentation"]
