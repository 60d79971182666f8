"""A handle to another agent instance (a sub-agent), used from inside an agent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable

from myriad.agents.naming import AgentRef

if TYPE_CHECKING:
    from myriad.agents.host import AgentHost


class AgentHandle:
    """Calls go through the target's own turn queue: ``await handle.add(1, 2)`` or
    ``await handle.call("add", 1, 2)``. Do not call back into the calling agent from
    the target (that turn would wait for the caller's, which waits for it)."""

    def __init__(self, host: "AgentHost", ref: AgentRef) -> None:
        self._host = host
        self.ref = ref

    async def call(self, method: str, *args: Any) -> Any:
        return await self._host.call(self.ref, method, list(args))

    async def state(self) -> Any:
        return await self._host.get_state(self.ref)

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        if method.startswith("_"):
            raise AttributeError(method)

        async def invoke(*args: Any) -> Any:
            return await self.call(method, *args)

        return invoke

    def __repr__(self) -> str:
        return f"<AgentHandle {self.ref.path}>"


__all__ = ["AgentHandle"]
