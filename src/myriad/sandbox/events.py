"""Sandbox operations as typed events, delivered to hooks (metering, tracing, audit).

Every public operation of the sandbox room (``Sandboxes.open`` / ``fork`` / ``close``
/ ``snapshot`` / ``restore``, and each sandbox's ``run`` / ``exec`` /
``start_process`` / ``pause`` / file operations ...) runs inside
``hooks.around(event)``; things the host does on its own (a sandbox reaped or
evicted, CPU used by background processes, sandboxes found dead after a crash) are
``hooks.emit(event)``. A hook is a callable returning an async context manager::

    @contextlib.asynccontextmanager
    async def hook(event: SandboxEvent) -> AsyncIterator[None]:
        ...            # before: may refuse by raising (a budget, a concurrency slot)
        yield          # the operation runs; an exception it raises comes out here
        ...            # after: event.result, event.cpu_ms, event.wall_ms are set

There is no proxy around the room to forget a method: the operations themselves
emit (``tests/sandbox/test_events.py`` fails when a public operation does not).
Hooks run in the order added; the first one is outermost.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, AsyncContextManager, AsyncIterator, Callable, Literal

from myriad.sandbox.interface import Limits

EventKind = Literal[
    "open", "fork", "close", "run", "exec", "start_process", "kill_process", "wait_process", "pause", "resume",
    "snapshot", "restore", "delete_snapshot", "read_file", "write_file", "list_files", "mkdir", "delete_file",
    "exists", "git_clone", "tool", "usage",
]
"""``open`` is a new sandbox (also a fork's child); ``close`` is any end (see ``reason``);
``usage`` reports resources used outside any operation (background processes)."""

CloseReason = Literal["deleted", "idle", "lifetime", "evicted", "shutdown", "crashed", "closed"]


@dataclass(eq=False)
class SandboxEvent:
    """One operation (or one thing that happened) in the sandbox room."""

    kind: EventKind
    owner: str
    sandbox_id: str
    tier: str
    instance: str = ""
    """Unique among every sandbox this data directory ever had (ids are per owner)."""
    limits: Limits | None = None
    timeout: float | None = None
    """run / exec: the wall-clock bound in force (seconds)."""
    language: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    """exec / start_process: hooks may add variables (a trace context) before the process starts."""
    source_id: str | None = None
    """fork (and the child's open): the sandbox forked from."""
    snapshot_id: str | None = None
    tool: str | None = None
    arguments: Any = None
    reason: CloseReason | None = None
    sandbox: Any = None
    """The sandbox concerned (after ``open``: the new one)."""
    # -- filled in as the operation ends ------------------------------------------------
    result: Any = None
    error: BaseException | None = None
    wall_ms: float | None = None
    cpu_ms: float | None = None
    """CPU used since the last event that reported it (containers: read from the cgroup;
    includes background processes). ``None`` when the tier cannot measure it."""
    scratch: dict[Any, Any] = field(default_factory=dict)
    """Private state of hooks between their before and after halves."""


SandboxHook = Callable[[SandboxEvent], AsyncContextManager[Any]]


class Hooks:
    """The ordered hooks of one ``Sandboxes`` (shared with every sandbox it makes)."""

    def __init__(self, hooks: tuple[SandboxHook, ...] | list[SandboxHook] = ()) -> None:
        self._hooks: list[SandboxHook] = list(hooks)

    def add(self, hook: SandboxHook) -> None:
        self._hooks.append(hook)

    def remove(self, hook: SandboxHook) -> None:
        self._hooks.remove(hook)

    def __len__(self) -> int:
        return len(self._hooks)

    @contextlib.asynccontextmanager
    async def around(self, event: SandboxEvent) -> AsyncIterator[SandboxEvent]:
        """Run the operation inside every hook (the operation fills ``event`` as it ends)."""
        if not self._hooks:
            yield event
            return
        async with contextlib.AsyncExitStack() as stack:
            for hook in self._hooks:
                await stack.enter_async_context(hook(event))
            try:
                yield event
            except BaseException as e:
                event.error = e
                raise

    async def emit(self, event: SandboxEvent) -> None:
        """Deliver something that already happened (it cannot be refused)."""
        for hook in self._hooks:
            with contextlib.suppress(Exception):  # a failing hook must not stop the others
                async with hook(event):
                    pass


NO_HOOKS = Hooks()
"""What a sandbox made outside ``Sandboxes`` emits to (nothing); never add to it."""


__all__ = ["CloseReason", "EventKind", "Hooks", "NO_HOOKS", "SandboxEvent", "SandboxHook"]
