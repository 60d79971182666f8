"""``InstrumentedSandboxes``: the host's sandboxes wrapped in lifecycle and exec spans.

Duck-typed like the gateway wrapper (telemetry imports no other room): it wraps an
object with ``open``/``open_for``/``get``/``list``/``close``/``fork``, and the
sandboxes it returns (``run``, ``exec``, ``start_process``, ``close``):

- ``sandbox.open`` / ``sandbox.fork`` / ``sandbox.close`` spans with the tier and id;
- ``sandbox.exec`` around ``run`` (Code Mode / snippets) and ``exec`` / ``start_process``
  (containers), whose processes get ``TRACEPARENT``/``BAGGAGE`` in their environment;
- ``execute_tool {name}`` around each host tool that sandboxed code calls (tools passed
  to ``open(tools=...)``);
- the live-sandboxes-per-tier gauge, counted from the sandboxes this wrapper handed out.

Everything else passes through to the wrapped object.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from myriad.telemetry import semconv as sc
from myriad.telemetry._tools import current_tenant, execute_tool, sandbox_span, trace_env


def _tenant_of(owner: Any) -> str | None:
    t = current_tenant.get()
    if t:
        return t
    tenant = getattr(owner, "tenant", None)
    if isinstance(tenant, str):
        return tenant
    return owner if isinstance(owner, str) else None


class InstrumentedSandbox:
    """One sandbox whose runs and lifecycle are traced."""

    def __init__(self, box: Any, tracer: Any, tenant: str | None) -> None:
        object.__setattr__(self, "_box", box)
        object.__setattr__(self, "_tracer", tracer)
        object.__setattr__(self, "_tenant", tenant)

    @property
    def wrapped(self) -> Any:
        return self._box

    def __getattr__(self, name: str) -> Any:
        return getattr(self._box, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._box, name, value)

    def _span(self, op: str, **attrs: Any) -> Any:
        return sandbox_span(op, tier=str(getattr(self._box, "tier", "unknown")), sandbox_id=getattr(self._box, "id", None),
                            tenant=self._tenant, tracer=self._tracer, **attrs)

    async def run(self, code: str, **kwargs: Any) -> Any:
        language = kwargs.get("language")
        extra = {"myriad.sandbox.language": language} if language else {}
        with self._span("exec", **extra):
            return await self._box.run(code, **kwargs)

    async def exec(self, cmd: Any, **kwargs: Any) -> Any:
        with self._span("exec"):
            kwargs["env"] = {**trace_env(), **(kwargs.get("env") or {})}
            return await self._box.exec(cmd, **kwargs)

    async def start_process(self, cmd: Any, **kwargs: Any) -> Any:
        with self._span("start_process"):
            kwargs["env"] = {**trace_env(), **(kwargs.get("env") or {})}
            return await self._box.start_process(cmd, **kwargs)

    async def close(self) -> None:
        with self._span("close"):
            await self._box.close()


class InstrumentedSandboxes:
    """The host's ``Sandboxes`` with every sandbox it returns traced."""

    def __init__(self, inner: Any, telemetry: Any) -> None:
        self._inner = inner
        self._tracer = telemetry.tracer
        self._capture = telemetry.capture_content
        self._handed: dict[int, Any] = {}
        telemetry.observe_sandboxes(self.live_by_tier)

    @property
    def wrapped(self) -> Any:
        return self._inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def live_by_tier(self) -> dict[str, int]:
        """Open sandboxes handed out through this wrapper, per tier."""
        out: dict[str, int] = {}
        for key, box in list(self._handed.items()):
            if getattr(box, "closed", False):
                self._handed.pop(key, None)
                continue
            tier = str(getattr(box, "tier", "unknown"))
            out[tier] = out.get(tier, 0) + 1
        return out

    def _wrap(self, box: Any, owner: Any) -> Any:
        if box is None or isinstance(box, InstrumentedSandbox):
            return box
        self._handed[id(box)] = box
        return InstrumentedSandbox(box, self._tracer, _tenant_of(owner))

    def _tools(self, tools: Any, owner: Any) -> Any:
        if not tools:
            return tools
        tracer, capture, tenant = self._tracer, self._capture, _tenant_of(owner)

        def traced(t: Any) -> Any:
            fn: Callable[..., Any] | None = getattr(t, "fn", None)
            if fn is None or not dataclasses.is_dataclass(t) or getattr(fn, "__myriad_traced__", False):
                return t
            name = str(getattr(t, "name", "tool"))

            async def call(**args: Any) -> Any:
                with execute_tool(name, tenant=tenant, arguments=args, capture_content=capture, tracer=tracer):
                    return await fn(**args)

            call.__myriad_traced__ = True  # type: ignore[attr-defined]
            return dataclasses.replace(t, fn=call)  # type: ignore[type-var]

        return [traced(t) for t in tools]

    async def open(self, **kwargs: Any) -> Any:
        owner = kwargs.get("owner", "default")
        if kwargs.get("tools"):
            kwargs["tools"] = self._tools(kwargs["tools"], owner)
        with sandbox_span("open", tier=str(kwargs.get("tier") or "auto"), tenant=_tenant_of(owner),
                          tracer=self._tracer) as span:
            box = await self._inner.open(**kwargs)
            span.set_attribute(sc.MYRIAD_SANDBOX_TIER, str(getattr(box, "tier", "unknown")))
            span.set_attribute(sc.MYRIAD_SANDBOX_ID, str(getattr(box, "id", "")))
        return self._wrap(box, owner)

    async def open_for(self, owner: Any, request: Any) -> Any:
        tier = request.get("tier") if isinstance(request, dict) else None
        with sandbox_span("open", tier=str(tier or "auto"), tenant=_tenant_of(owner), tracer=self._tracer) as span:
            box = await self._inner.open_for(owner, request)
            span.set_attribute(sc.MYRIAD_SANDBOX_TIER, str(getattr(box, "tier", "unknown")))
            span.set_attribute(sc.MYRIAD_SANDBOX_ID, str(getattr(box, "id", "")))
        return self._wrap(box, owner)

    def get(self, owner: Any, id: str) -> Any:
        return self._wrap(self._inner.get(owner, id), owner)

    def list(self, owner: Any) -> list[Any]:
        return [self._wrap(b, owner) for b in self._inner.list(owner)]

    async def close(self, owner: Any, id: str) -> None:
        try:
            tier = str(getattr(self._inner.get(owner, id), "tier", "unknown"))
        except Exception:  # unknown ids are the inner close's to report
            tier = "unknown"
        with sandbox_span("close", tier=tier, sandbox_id=id, tenant=_tenant_of(owner), tracer=self._tracer):
            await self._inner.close(owner, id)

    async def fork(self, owner: Any, id: str, **kwargs: Any) -> Any:
        with sandbox_span("fork", tier="container", sandbox_id=id, tenant=_tenant_of(owner), tracer=self._tracer):
            box = await self._inner.fork(owner, id, **kwargs)
        return self._wrap(box, owner)


__all__ = ["InstrumentedSandboxes", "InstrumentedSandbox"]
