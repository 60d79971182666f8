"""Metering the sandbox room by wrapping: ``MeteredSandboxes(sandboxes, meter)``.

``MeteredSandboxes`` wraps the host's ``Sandboxes`` (duck-typed: ``open``,
``open_for``, ``get``, ``list``, ``close``; everything else passes through), so every
sandbox it hands out is a ``MeteredSandbox`` whose ``run`` / ``exec`` calls are
reserved from the sandbox's limits and charged after, and, when a ``concurrent``
limit on ``sandbox.live`` exists, each live sandbox holds a slot until it is closed.

``egress_hook(meter)`` is an egress-proxy hook that counts each outbound request
(``egress.requests``) against the sandbox's owner.

Owners are strings; ``subject_of_owner`` maps them to a ``Subject``: an agent path
``tenant/class/name`` is charged to that agent of that tenant, anything else is a
tenant name. A ``charging(subject)`` block around the call takes precedence.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Awaitable, Callable

from myriad.metering._events import Resources, Subject, Usage
from myriad.metering._meter import Meter, Reservation
from myriad.metering._wrap import _require_subject, current_subject


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


class MeteredSandbox:
    """A sandbox whose ``run`` (and ``exec``) calls are reserved from its limits and charged after.

    Worst case per call: ``timeout`` seconds of wall time, ``timeout x cpu`` cores of
    CPU, ``memory_mb`` for ``timeout``. Actual: ``duration_ms`` of the result as
    wall time; ``cpu_ms`` if the result reports it, else wall time x cores as a
    bound; memory at its limit for the wall time (GB-s the way serverless bills).
    """

    METERED = ("run", "exec")

    def __init__(
        self,
        inner: Any,
        meter: Meter,
        subject: Subject | None = None,
        *,
        default_timeout_s: float = 30.0,
        default_memory_mb: int = 128,
        subject_of: Callable[[], Subject | None] = current_subject,
    ) -> None:
        self.inner = inner
        self.meter = meter
        self.subject = subject
        self.default_timeout_s = default_timeout_s
        self.default_memory_mb = default_memory_mb
        self.subject_of = subject_of

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # noqa: D105 - isinstance(box, ContainerSandbox) keeps working through the wrapper
        return type(self.inner)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name in self.METERED and callable(attr):
            return self._wrap(attr)
        return attr

    def _limits(self, timeout: float | None) -> tuple[str, float, float, int]:
        limits = getattr(self.inner, "limits", None)
        tier = str(getattr(self.inner, "tier", "sandbox"))
        t = timeout or getattr(limits, "timeout", None) or self.default_timeout_s
        cpu = getattr(limits, "cpu", None) or 1.0
        mem = getattr(limits, "memory_mb", None) or self.default_memory_mb
        return tier, float(t), float(cpu), int(mem)

    def _wrap(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            subject = self.subject or _require_subject(self.subject_of)
            tier, timeout, cpu, mem = self._limits(kwargs.get("timeout"))
            gb = Decimal(mem) / 1024
            est = Usage.sandbox_run(tier, cpu_ms=timeout * 1000 * cpu, wall_ms=timeout * 1000,
                                    memory_gb_s=gb * Decimal(str(timeout)))
            async with self.meter.reserve(subject, est, operation=f"sandbox.{getattr(fn, '__name__', 'run')}") as r:
                result = await fn(*args, **kwargs)
                wall = float(getattr(result, "duration_ms", 0) or 0)
                cpu_ms = getattr(result, "cpu_ms", None)
                r.commit(Usage.sandbox_run(
                    tier,
                    cpu_ms=float(cpu_ms) if cpu_ms is not None else wall * cpu,
                    wall_ms=wall,
                    memory_gb_s=gb * Decimal(str(wall)) / 1000,
                ), attributes={"sandbox": getattr(self.inner, "id", None)})
                return result

        return call


class MeteredSandboxes:
    """The host's ``Sandboxes`` with every sandbox it returns metered (and live ones counted)."""

    def __init__(
        self,
        inner: Any,
        meter: Meter,
        *,
        subject_of: Callable[[Any], Subject] = subject_of_owner,
        live_operation: str = "sandbox.live",
    ) -> None:
        self.inner = inner
        self.meter = meter
        self.subject_of = subject_of
        self.live_operation = live_operation
        self._holds: dict[tuple[str, str], Reservation] = {}
        self._owners: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _wrap(self, box: Any, owner: Any) -> Any:
        # charge the owner the caller named (a sandbox opened without an id may report another)
        if box is None or isinstance(box, MeteredSandbox):
            return box
        return MeteredSandbox(box, self.meter, self.subject_of(owner))

    async def _hold(self, owner: Any, make: Callable[[], Awaitable[Any]], id: Any = None) -> Any:
        if id is not None and (_key(owner), str(id)) in self._holds:
            return self._wrap(await make(), owner)  # reopening a live sandbox takes no second slot
        hold = await self.meter.hold(self.subject_of(owner), self.live_operation,
                                     ttl_s=float(getattr(getattr(self.inner, "settings", None), "max_lifetime", 0) or 86_400)
                                     ).start()
        try:
            box = await make()
        except BaseException:
            await hold.finish()
            raise
        key = (_key(owner), str(getattr(box, "id", "")))
        if key in self._holds:  # an existing sandbox was returned: it already holds a slot
            await hold.finish()
        else:
            self._holds[key] = hold
            self._owners[key[0]] = owner
        return self._wrap(box, owner)

    async def open(self, **kwargs: Any) -> Any:
        """``Sandboxes.open``: takes a live-sandbox slot (``ConcurrencyLimited`` when full)."""
        owner = kwargs.get("owner", "default")
        return await self._hold(owner, lambda: self.inner.open(**kwargs), kwargs.get("id"))

    async def open_for(self, owner: Any, request: Any) -> Any:
        rid = request.get("id") if isinstance(request, dict) else None
        return await self._hold(owner, lambda: self.inner.open_for(owner, request), rid)

    def get(self, owner: Any, id: str) -> Any:
        return self._wrap(self.inner.get(owner, id), owner)

    def list(self, owner: Any) -> list[Any]:
        return [self._wrap(b, owner) for b in self.inner.list(owner)]

    async def close(self, owner: Any, id: str) -> None:
        try:
            await self.inner.close(owner, id)
        finally:
            hold = self._holds.pop((_key(owner), id), None)
            if hold is not None:
                await hold.finish()

    async def release_closed(self) -> int:
        """Give back the slots of sandboxes that ended on their own (reaped, evicted); returns how many."""
        freed = 0
        for key, hold in list(self._holds.items()):
            owner = self._owners.get(key[0], key[0])
            live = {str(getattr(b, "id", "")) for b in self.inner.list(owner)}
            if key[1] not in live:
                del self._holds[key]
                await hold.finish()
                freed += 1
        return freed


def _key(owner: Any) -> str:
    path = getattr(owner, "path", None)
    return path if isinstance(path, str) else str(owner)


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


__all__ = ["MeteredSandbox", "MeteredSandboxes", "egress_hook", "subject_of_owner"]
