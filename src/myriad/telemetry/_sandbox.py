"""Tracing the sandbox room as a hook on its events: ``sandboxes.add_hook(telemetry.sandbox_hook())``.

Duck-typed on the event's fields (telemetry imports no other room). For each event:

- ``open`` / ``fork`` / ``close`` / ``snapshot`` / ``restore``: a ``sandbox.{op}`` span with
  the tier and id (``open`` and ``close`` appear as ``sandbox.open`` / ``sandbox.close``);
- ``run`` / ``exec``: a ``sandbox.exec`` span, and ``start_process`` a
  ``sandbox.start_process`` span; for ``exec`` and ``start_process`` the process gets
  ``TRACEPARENT``/``BAGGAGE`` in its environment (the caller's own variables win);
- ``tool``: an ``execute_tool {name}`` span around a host tool that sandboxed code
  called (a child of the run's span).

The live-sandboxes-per-tier gauge reads the room itself (``telemetry.observe_sandboxes
(sandboxes.live_by_tier)``), not a count kept here.
"""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator

from myriad.telemetry import semconv as sc
from myriad.telemetry._tools import current_tenant, execute_tool, sandbox_span, trace_env

SPANS = {"open": "open", "fork": "fork", "close": "close", "snapshot": "snapshot", "restore": "restore",
         "run": "exec", "exec": "exec", "start_process": "start_process", "git_clone": "git_clone"}
"""Event kind -> span operation (``sandbox.{op}``); other kinds (file reads...) are not traced."""


def _tenant_of(owner: Any) -> str | None:
    t = current_tenant.get()
    if t:
        return t
    return owner.split("/", 1)[0] if isinstance(owner, str) and owner else None


class SandboxTracing:
    """The sandbox room's tracing hook (see the module docstring)."""

    def __init__(self, telemetry: Any) -> None:
        self._tracer = telemetry.tracer
        self._capture = telemetry.capture_content

    def __call__(self, event: Any) -> contextlib.AbstractAsyncContextManager[None]:
        if event.kind == "tool":
            return self._tool(event)
        if event.kind in SPANS:
            return self._span(event)
        return contextlib.nullcontext()

    @contextlib.asynccontextmanager
    async def _tool(self, event: Any) -> AsyncIterator[None]:
        with execute_tool(str(event.tool), tier=event.tier, tenant=_tenant_of(event.owner), arguments=event.arguments,
                          capture_content=self._capture, tracer=self._tracer):
            yield

    @contextlib.asynccontextmanager
    async def _span(self, event: Any) -> AsyncIterator[None]:
        attrs: dict[str, Any] = {}
        if event.kind == "run" and event.language:
            attrs["myriad.sandbox.language"] = event.language
        if event.kind == "close" and event.reason:
            attrs["myriad.sandbox.close_reason"] = event.reason
        with sandbox_span(SPANS[event.kind], tier=str(event.tier), sandbox_id=event.sandbox_id,
                          tenant=_tenant_of(event.owner), tracer=self._tracer, **attrs) as span:
            if event.kind in ("exec", "start_process"):
                for k, v in trace_env().items():
                    event.env.setdefault(k, v)
            yield
            if event.kind in ("open", "fork"):
                made = event.sandbox if event.kind == "open" else event.result
                span.set_attribute(sc.MYRIAD_SANDBOX_ID, str(getattr(made, "id", event.sandbox_id)))


__all__ = ["SandboxTracing"]
