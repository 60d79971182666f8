"""The ``Agent`` base class and the ``@callable`` decorator.

An agent is a plain Python class; the host creates one instance per address
(tenant, class, name), runs one turn at a time on it, persists its state before any
reply that follows a change, and drops it from memory when idle (hibernation)::

    class Counter(Agent):
        initial_state = {"n": 0}

        @callable()
        async def add(self, a: int, b: int) -> int:
            self.set_state({"n": self.state["n"] + a + b})
            return self.state["n"]
"""

from __future__ import annotations

import copy
import inspect
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, ClassVar, TypeVar

from myriad.agents import protocol
from myriad.agents.connection import Connection, current_caller
from myriad.agents.naming import AgentRef, kebab
from myriad.errors import InvalidRequest

if TYPE_CHECKING:
    from datetime import datetime

    from myriad.agents.handle import AgentHandle
    from myriad.agents.host import AgentHost
    from myriad.agents.slot import _Slot
    from myriad.agents.mcp_client import McpClient
    from myriad.agents.schedules import Schedule
    from myriad.storage import AgentSQL

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


@dataclass(frozen=True, slots=True)
class CallableSpec:
    """What ``@callable`` records on a method."""

    streaming: bool
    description: str
    signature: inspect.Signature


def callable(*, streaming: bool = False, description: str = "") -> Callable[[F], F]:  # noqa: A001
    """Mark an async method as callable by clients (RPC).

    With ``streaming=True`` the method receives a ``StreamingResponse`` as its first
    argument after ``self`` and sends chunks with ``await stream.send(x)``.
    """

    def mark(fn: F) -> F:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@callable method {fn.__qualname__} must be 'async def'")
        fn.__myriad_callable__ = CallableSpec(  # type: ignore[attr-defined]
            streaming=streaming,
            description=description or (inspect.getdoc(fn) or ""),
            signature=inspect.signature(fn),
        )
        return fn  # type: ignore[return-value]  # mypy loses F through iscoroutinefunction

    return mark


class StreamingResponse:
    """The channel of a streaming RPC: ``send`` chunks, then ``end`` (once)."""

    __slots__ = ("_slot", "_conn", "_id", "closed")

    def __init__(self, slot: "_Slot", conn: Connection | None, rpc_id: str) -> None:
        self._slot, self._conn, self._id = slot, conn, rpc_id
        self.closed = False

    async def send(self, chunk: Any) -> None:
        if self.closed:
            raise InvalidRequest("stream already ended")
        await self._emit({"type": "rpc", "id": self._id, "success": True, "result": chunk, "done": False})

    async def end(self, final: Any = None) -> None:
        if self.closed:
            raise InvalidRequest("stream already ended")
        self.closed = True
        await self._emit({"type": "rpc", "id": self._id, "success": True, "result": final, "done": True})

    async def _emit(self, frame: dict[str, Any]) -> None:
        if self._conn is not None:
            await self._slot.release(json.dumps(frame), only=self._conn)


class Agent:
    """Base class of every agent. Subclass it; override the hooks you need.

    Attributes the host provides: ``name``, ``ref`` (the full address),
    ``state`` (read-only view; change it with ``set_state``), ``connections``.
    """

    initial_state: Any = None
    """The state a new instance starts with (deep-copied per instance)."""

    _frames: ClassVar[dict[str, str]] = {}
    """Frame types this class speaks beyond RPC and state (``type`` -> method name,
    called as ``method(connection, frame_dict)`` in a turn). ``ChatAgent`` uses it."""

    # set by the host; declared for type checkers
    _slot: "_Slot"
    _host: "AgentHost"
    _state: Any
    _sql: "AgentSQL | None"

    # -- identity --------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._slot.ref.name

    @property
    def ref(self) -> AgentRef:
        return self._slot.ref

    @property
    def caller(self) -> Any:
        """Who started this turn: the server's authenticated principal (tenant, key,
        scopes, and for delegated tokens the whole chain), or None for schedules."""
        return current_caller.get()

    @classmethod
    def kebab_name(cls) -> str:
        return kebab(cls.__name__)

    # -- state -----------------------------------------------------------------
    @property
    def state(self) -> Any:
        return self._state

    def set_state(self, state: Any) -> None:
        """Replace the state. It is durable before any reply that follows is released,
        then broadcast to every connection."""
        self._slot.set_state(state, source=None)

    def validate_state_change(self, state: Any, source: Connection | None) -> Any:
        """Raise to reject a state change (a client's rejection gets ``cf_agent_state_error``).
        May be ``async``."""

    async def on_state_changed(self, state: Any, source: Connection | None) -> None:
        """Called after a state change is accepted (``source`` is None for server-side changes)."""

    # -- per-agent SQL ---------------------------------------------------------
    def sql(self, query: str, *params: Any) -> list[dict[str, Any]]:
        """Run SQL on this instance's private database; rows as dicts.

        Writes are durable before any reply or frame that follows them is released (the
        output gate; with PostgreSQL, the file's changed pages are shipped there first).
        No other instance can see this database.
        """
        if self._sql is None:
            self._sql = self._host.storage.agent_sql(self._slot.ref.path)
        return self._sql.execute(query, params)

    # -- connections -----------------------------------------------------------
    @property
    def connections(self) -> list[Connection]:
        return list(self._slot.connections.values())

    def get_connection(self, connection_id: str) -> Connection | None:
        return self._slot.connections.get(connection_id)

    async def broadcast(self, message: Any, exclude: list[str] | None = None) -> None:
        """Send a message to every connection (except the ids in ``exclude``)."""
        text = message if isinstance(message, str) else json.dumps(message)
        await self._slot.release(text, exclude=set(exclude or ()))

    # -- schedules -------------------------------------------------------------
    async def schedule(self, when: "float | int | datetime | str", method: str, payload: Any = None, *,
                       new: bool = False) -> "Schedule":
        """Call ``method(payload)`` later: ``when`` is a delay in seconds, a datetime,
        or a cron string. Persisted; survives restarts; fires at least once.

        Idempotent: while this agent has a pending schedule with the same ``when``,
        ``method`` and ``payload``, that one is returned and nothing is added (so a
        ``schedule("0 9 * * *", ...)`` in ``on_start`` does not pile up cron rows).
        ``new=True`` always adds another."""
        return await self._host.scheduler.add(self, when, method, payload, new=new)

    async def cancel_schedule(self, schedule_id: str) -> bool:
        return await self._host.scheduler.cancel(self._slot.ref, schedule_id)

    async def list_schedules(self) -> "list[Schedule]":
        return await self._host.scheduler.list(self._slot.ref)

    # -- sub-agents ------------------------------------------------------------
    async def sub_agent(self, cls: "type[Agent]", name: str) -> "AgentHandle":
        """A handle to the child instance ``name`` of class ``cls``, owned by this one."""
        from myriad.agents.handle import AgentHandle

        self._host.register(cls)
        return AgentHandle(self._host, self._slot.ref.child(cls.kebab_name(), name))

    # -- rooms the host provides -----------------------------------------------
    @property
    def models(self) -> Any:
        """The model gateway, bound to this agent (``await self.models.chat(...)``)."""
        models = self._host.models
        if models is None:
            raise InvalidRequest("no model gateway is configured on this host")
        bind = getattr(models, "for_agent", None)
        if bind is None:
            return models
        ref = self._slot.ref
        return bind(ref.tenant, ref.path)

    @property
    def identity(self) -> Any:
        """The host's identity service (``myriad.identity``): this agent's workload
        token, token exchange on a user's behalf, signed outbound requests."""
        if self._host.identity is None:
            raise InvalidRequest("no identity service is configured on this host")
        return self._host.identity

    @property
    def mcp(self) -> "McpClient":
        """This instance's MCP client: connect to remote MCP servers and call their tools
        (``myriad.agents.mcp_client``)."""
        client = self.__dict__.get("_mcp_client")
        if client is None:
            from myriad.agents.mcp_client import McpClient

            client = self.__dict__["_mcp_client"] = McpClient(self)
        return client

    def _mcp_frame(self) -> str:
        """The ``cf_agent_mcp_servers`` frame sent on connect: this agent's MCP
        connections once it has used MCP in this activation or opened its SQL (an
        agent that never did gets the empty frame without creating a database)."""
        client = self.__dict__.get("_mcp_client")
        if client is None and self._sql is None:
            return protocol.MCP_FRAME
        return json.dumps(self.mcp.frame())

    async def usage(self) -> Any:
        """This agent's budgets and where each stands (``myriad.metering.BudgetStatus``),
        so an agent can plan around what it may still spend. Empty without metering."""
        meter = self._host.meter
        if meter is None:
            return []
        from myriad.metering import Subject

        ref = self._slot.ref
        return await meter.spend(Subject(ref.tenant, agent=ref.path))

    def sandbox(self, **options: Any) -> Any:
        """Open a sandbox owned by this agent (see ``myriad.sandbox``)."""
        sandboxes = self._host.sandboxes
        if sandboxes is None:
            raise InvalidRequest("no sandbox manager is configured on this host")
        return sandboxes.open(owner=self._slot.ref, **options)

    # -- lifecycle hooks -------------------------------------------------------
    async def on_start(self) -> None:
        """Called when the instance is created or woken from hibernation."""

    async def on_connect(self, connection: Connection) -> None:
        """A client connected (after identity and state were sent)."""

    async def _connected(self, connection: Connection) -> None:
        """What a base class sends on connect, before the identity frame (``ChatAgent``
        sends the conversation, so it is there when the client is ready)."""

    async def on_message(self, connection: Connection, message: str) -> None:
        """A frame that is not part of the protocol (RPC, state) arrived. The default
        ignores it, as the Cloudflare base agent does (no reply a client would not
        understand)."""

    async def on_close(self, connection: Connection, code: int, reason: str) -> None:
        """A client disconnected."""

    async def on_request(self, request: Any) -> Any:
        """Plain HTTP to the agent's URL. Return a Starlette ``Response``, or any
        JSON-serialisable value (sent as JSON)."""
        from myriad.errors import NotFound

        raise NotFound(f"agent {self.kebab_name()} does not handle HTTP requests (it has no on_request)")

    async def on_error(self, error: BaseException) -> None:
        """A turn raised. The default logs it."""
        import logging

        logging.getLogger("myriad.agents").error(
            "agent %s: %s: %s", self._slot.ref.path, type(error).__name__, error
        )


def initial_state_of(cls: type[Agent]) -> Any:
    return copy.deepcopy(cls.initial_state)


__all__ = ["Agent", "callable", "CallableSpec", "StreamingResponse", "initial_state_of"]
