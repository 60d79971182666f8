"""One addressed instance inside the host: its turn lock, its connections, and the
output gate that holds outgoing frames until the instance's state is durable."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from myriad.agents.connection import Connection
from myriad import safe_json
from myriad.agents.naming import AgentRef
from myriad.errors import InvalidRequest

if TYPE_CHECKING:
    from myriad.agents.agent import Agent
    from myriad.storage import Storage


class _Slot:
    """Lives while the instance is resident or has open connections.

    Outgoing frames go through ``release``: they are appended to an outbox and sent by
    ``drain``, which first writes any pending state change. So no frame that follows a
    state change can reach a client before that change is durable.
    """

    __slots__ = (
        "ref", "cls", "agent", "lock", "connections", "last_active",
        "_storage", "_dirty", "_outbox", "_io_lock", "_kick", "hooks", "_drainer",
    )

    def __init__(self, ref: AgentRef, cls: "type[Agent]", storage: "Storage") -> None:
        self.ref = ref
        self.cls = cls
        self.agent: Agent | None = None
        self.lock = asyncio.Lock()  # the input gate: one turn at a time
        self.connections: dict[str, Connection] = {}
        self.last_active = time.monotonic()
        self._storage = storage
        self._dirty: bytes | None | bool = False  # False: clean; bytes/None: pending state
        self._outbox: list[tuple[str, Connection | None, frozenset[str] | set[str]]] = []
        self._io_lock = asyncio.Lock()
        self._kick = False
        self._drainer: asyncio.Task[None] | None = None
        self.hooks: list[tuple[Any, Connection | None]] = []

    # -- state -------------------------------------------------------------------
    def set_state(self, state: Any, source: Connection | None) -> None:
        try:
            text = safe_json.dumps_checked(state, "state")  # no NaN, no depth that breaks readers
        except (TypeError, ValueError, InvalidRequest) as e:
            raise InvalidRequest(f"agent state must be JSON-serialisable: {e}") from None
        assert self.agent is not None
        self.agent._state = state
        self._dirty = text.encode()
        exclude: frozenset[str] = frozenset((source.id,)) if source is not None else frozenset()
        self._outbox.append(('{"type":"cf_agent_state","state":' + text + "}", None, exclude))
        self.hooks.append((state, source))
        # Broadcast soon even if the turn goes on awaiting something slow. A callback,
        # not a task: most turns drain at their end before the loop gets to it.
        if not self._kick:
            self._kick = True
            asyncio.get_running_loop().call_soon(self._kick_drain)

    @property
    def pending(self) -> bool:
        return self._dirty is not False or bool(self._outbox) or self._sql_pending()

    def _sql_pending(self) -> bool:
        sql = self.agent._sql if self.agent is not None else None
        return sql is not None and sql.pending

    # -- the output gate ---------------------------------------------------------
    async def release(
        self, text: str, *, only: Connection | None = None, exclude: set[str] | frozenset[str] = frozenset()
    ) -> None:
        """Queue a frame (for one connection, or all but ``exclude``) and send it
        once pending state is durable."""
        self._outbox.append((text, only, exclude))
        await self.drain()

    async def drain(self) -> None:
        async with self._io_lock:
            # SQL writes are durable before what follows them, like state, and together with it
            sql = self.agent._sql if self._sql_pending() else None  # type: ignore[union-attr]
            if self._dirty is False and sql is not None:
                await sql.flush()
            if self._dirty is not False:
                data, self._dirty = self._dirty, False
                try:
                    await self._storage.save_state(self.ref.path, data, sql)  # type: ignore[arg-type]
                except BaseException:
                    if self._dirty is False:
                        self._dirty = data
                    raise
            box, self._outbox = self._outbox, []
            for text, only, exclude in box:
                if only is not None:
                    await only._send_now(text)
                else:
                    for conn in list(self.connections.values()):
                        if conn.id not in exclude:
                            await conn._send_now(text)

    def _kick_drain(self) -> None:
        self._kick = False
        if self.pending:
            # referenced by the slot until it finishes (a task nobody holds may be collected)
            self._drainer = asyncio.get_running_loop().create_task(self._drain_quietly())

    async def _drain_quietly(self) -> None:
        try:
            await self.drain()
        except Exception:
            pass  # the turn's own drain raises it to the turn


__all__: list[str] = []
