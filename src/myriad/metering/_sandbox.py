"""Metering the sandbox room as a hook on its events: ``sandboxes.add_hook(SandboxMetering(meter))``.

The sandbox room announces every operation (``myriad.sandbox.events``); this hook
(duck-typed on the event's fields: metering imports no other room):

- ``open`` (also a fork's child): takes a ``sandbox.live`` slot (``ConcurrencyLimited``
  when the owner's concurrent limit is full); its reservation id is
  ``sandbox.live:<instance>``, so it can be given back by id even by the next process;
- ``run`` / ``exec``: reserved at the worst case (``timeout`` x ``cpu`` cores, memory for
  ``timeout``), charged what was used, also when the command timed out or failed: CPU
  from the container's cgroup (everything it ran since the last charge, background
  processes included), else wall time x cores as a bound;
- ``usage``: CPU used outside any operation (background processes), recorded;
- ``close`` (any reason, ``crashed`` included after a restart): the slot back, and the
  CPU used since the last charge recorded.

``egress_hook(meter)`` is an egress-proxy hook that counts each outbound request
(``egress.requests``) against the sandbox's owner.

Owners are strings; ``subject_of_owner`` maps them to a ``Subject``: an agent path
``tenant/class/name`` is charged to that agent of that tenant, anything else is a
tenant name. A ``charging(subject)`` block around the call takes precedence.
"""

from __future__ import annotations

import contextlib
from decimal import Decimal
from typing import Any, AsyncIterator, Awaitable, Callable

from myriad.metering._events import Resources, Subject, Usage
from myriad.metering._meter import Meter, Reservation
from myriad.metering._wrap import current_subject


def subject_of_owner(owner: Any) -> Subject:
    """An agent ref (``.tenant``, ``.path``) or an agent path ``tenant/class/name`` -> that agent;
    any other string -> that tenant. An enclosing ``charging(subject)`` wins."""
    ctx = current_subject()
    if ctx is not None:
        return ctx
    tenant, path = getattr(owner, "tenant", None), getattr(owner, "path", None)
    if isinstance(tenant, str) and isinstance(path, str):
        return Subject(tenant, agent=path)
    owner = str(owner)
    if "/" in owner:
        return Subject(owner.split("/", 1)[0], agent=owner)
    return Subject(owner or "default")


class SandboxMetering:
    """The sandbox room's metering hook (see the module docstring)."""

    CHARGED = frozenset({"run", "exec"})

    def __init__(self, meter: Meter, *, subject_of: Callable[[Any], Subject] = subject_of_owner,
                 live_operation: str = "sandbox.live", live_ttl_s: float = 86_400.0,
                 default_timeout_s: float = 30.0, default_memory_mb: int = 128) -> None:
        self.meter = meter
        self.subject_of = subject_of
        self.live_operation = live_operation
        self.live_ttl_s = live_ttl_s
        self.default_timeout_s = default_timeout_s
        self.default_memory_mb = default_memory_mb
        self._holds: dict[str, Reservation] = {}  # instance -> its live slot

    def __call__(self, event: Any) -> contextlib.AbstractAsyncContextManager[None]:
        kind = event.kind
        if kind in self.CHARGED:
            return self._charged(event)
        if kind == "open":
            return self._open(event)
        if kind == "close":
            return self._close(event)
        if kind == "usage":
            return self._usage(event)
        return contextlib.nullcontext()

    def _shape(self, event: Any) -> tuple[float, float, int]:
        limits = event.limits
        t = event.timeout or getattr(limits, "timeout", None) or self.default_timeout_s
        cpu = getattr(limits, "cpu", None) or 1.0
        mem = getattr(limits, "memory_mb", None) or self.default_memory_mb
        return float(t), float(cpu), int(mem)

    @contextlib.asynccontextmanager
    async def _open(self, event: Any) -> AsyncIterator[None]:
        hold = self.meter.reserve(self.subject_of(event.owner), None, operation=self.live_operation,
                                  ttl_s=self.live_ttl_s, id=self._hold_id(event.instance))
        await hold.start()
        try:
            yield
        except BaseException:
            await hold.finish()
            raise
        self._holds[event.instance] = hold

    def _hold_id(self, instance: str) -> str:
        return f"{self.live_operation}:{instance}"

    @contextlib.asynccontextmanager
    async def _close(self, event: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            hold = self._holds.pop(event.instance, None)
            if hold is not None:
                await hold.finish()
            elif event.instance:  # held by a process that died: give the slot back by id
                await self.meter.run(self.meter.store.release, self._hold_id(event.instance))
            await self._record_cpu(event)

    @contextlib.asynccontextmanager
    async def _usage(self, event: Any) -> AsyncIterator[None]:
        yield
        await self._record_cpu(event)

    async def _record_cpu(self, event: Any) -> None:
        if event.cpu_ms:
            await self.meter.record(
                self.subject_of(event.owner),
                Usage({Resources.sandbox(event.tier, "cpu_ms"): event.cpu_ms}),
                type="sandbox",
                attributes={"sandbox": event.sandbox_id, "why": event.reason or event.kind},
            )

    @contextlib.asynccontextmanager
    async def _charged(self, event: Any) -> AsyncIterator[None]:
        timeout, cpu, mem = self._shape(event)
        gb = Decimal(mem) / 1024
        est = Usage.sandbox_run(event.tier, cpu_ms=timeout * 1000 * cpu, wall_ms=timeout * 1000,
                                memory_gb_s=gb * Decimal(str(timeout)))
        # a crashed host's run reservation is released by its TTL: keep it near the run's bound
        async with self.meter.reserve(self.subject_of(event.owner), est, operation=f"sandbox.{event.kind}",
                                      ttl_s=timeout + 60) as r:
            try:
                yield
            finally:
                # what the result reports when there is one (so a run reconciles with it), else
                # the wall time up to the timeout or failure
                reported = getattr(event.result, "duration_ms", None)
                wall = float(reported if reported is not None else event.wall_ms or 0)
                cpu_ms = event.cpu_ms if event.cpu_ms is not None else wall * cpu
                r.commit(Usage.sandbox_run(event.tier, cpu_ms=float(cpu_ms), wall_ms=wall,
                                           memory_gb_s=gb * Decimal(str(wall)) / 1000),
                         attributes={"sandbox": event.sandbox_id,
                                     **({"error": type(event.error).__name__} if event.error else {})})


def egress_hook(meter: Meter, subject_of: Callable[[Any], Subject] = subject_of_owner) -> Callable[[Any], Awaitable[None]]:
    """An egress-proxy hook recording one ``egress.requests`` per outbound request (with host and scheme)."""

    async def hook(request: Any) -> None:
        await meter.record(
            subject_of(getattr(request, "owner", "default")),
            Usage({Resources.EGRESS_REQUESTS: 1}),
            type="egress",
            source=f"{meter.source}/sandbox/egress",
            attributes={"sandbox": getattr(request, "sandbox_id", None), "host": getattr(request, "host", None),
                        "scheme": getattr(request, "scheme", None)},
        )

    return hook


__all__ = ["SandboxMetering", "egress_hook", "subject_of_owner"]
