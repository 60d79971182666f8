"""The agent host: addressing, the turn queue, wake and hibernation.

``AgentHost`` owns every instance on this process. An event for an address (a
WebSocket frame, an RPC, an HTTP request, a schedule firing, a sub-agent call) becomes
a *turn*: it waits for the instance's input gate (one turn at a time), wakes the
instance from storage if it is hibernated, runs, and releases its output only once
the state it changed is durable. Idle instances leave memory after
``hibernate_after`` seconds; a cap on resident instances evicts the least recently
used idle ones first. Connections stay open across hibernation.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable, TypeVar

from myriad import safe_json
from myriad.agents import protocol
from myriad.agents.agent import Agent, StreamingResponse, initial_state_of
from myriad.agents.connection import Connection, current_caller
from myriad.agents.naming import AgentRef
from myriad.agents.protocol import RpcError
from myriad.agents.schedules import Scheduler
from myriad.agents.slot import _Slot
from myriad.errors import InvalidRequest, NotFound, UnknownAgent
from myriad.settings import AgentSettings
from myriad.storage import AgentRecord, Storage

log = logging.getLogger("myriad.agents")
T = TypeVar("T")

class TurnInfo:
    """One agent turn as every turn middleware sees it (built once per turn)."""

    __slots__ = ("ref", "woke", "started", "error", "state")

    def __init__(self, ref: AgentRef, woke: bool) -> None:
        self.ref = ref
        self.woke = woke
        """The instance was not in memory: this turn wakes (or creates) it."""
        self.started = time.perf_counter()
        self.error: BaseException | None = None
        self.state: dict[str, Any] = {}
        """Scratch space, one key per middleware (a span, a context token)."""


class AgentHost:
    """Every agent instance on this process, behind one turn queue per instance."""

    def __init__(
        self,
        storage: Storage,
        settings: AgentSettings | None = None,
        *,
        models: Any = None,
        sandboxes: Any = None,
        meter: Any = None,
        identity: Any = None,
        instrumentation: Any = None,
    ) -> None:
        self.storage = storage
        self.settings = settings or AgentSettings()
        self.models = models
        self.sandboxes = sandboxes
        self.meter = meter
        self.identity = identity
        self.classes: dict[str, type[Agent]] = {}
        self.scheduler = Scheduler(self, storage, self.settings)
        self._slots: dict[str, _Slot] = {}
        self._resident: OrderedDict[str, _Slot] = OrderedDict()
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._task_owner: dict[str, str] = {}  # task key -> agent path
        self.stats = {"wakes": 0, "hibernations": 0, "turns": 0, "turn_errors": 0}
        # Steps of work a turn started (a chat reply's chunks) run under the same input
        # gate and the same wrap_turn wrappers (the cluster fence), but are not turns to
        # the instrumentation: one reply is one turn in metering and telemetry.
        self._step: Callable[[_Slot, Callable[[Agent], Awaitable[Any]]], Awaitable[Any]] = self._run_turn
        # Cross-cutting turn behaviour (telemetry's invoke_agent span, metering's turn
        # count) is turn middleware: each sees one TurnInfo per turn (enter in order, exit
        # in reverse). An object with only ``wrap_turn`` still wraps the turn. None: no cost.
        self._turn_mw: list[Any] = []
        wrappers = instrumentation if isinstance(instrumentation, (list, tuple)) else [instrumentation]
        for wrapper in wrappers:
            if wrapper is None:
                continue
            if hasattr(wrapper, "enter") and hasattr(wrapper, "exit"):
                self._turn_mw.append(wrapper)
                observe = getattr(wrapper, "observe", None)
                if observe is not None:
                    observe(self)
            else:
                self._turn = wrapper.wrap_turn(self._turn, self)  # type: ignore[method-assign]

    # -- registry ----------------------------------------------------------------
    def register(self, cls: type[Agent]) -> type[Agent]:
        """Serve ``cls`` at ``/agents/{kebab(cls)}/...``."""
        if not (isinstance(cls, type) and issubclass(cls, Agent)):
            raise TypeError(f"{cls!r} is not an Agent subclass")
        name = cls.kebab_name()
        existing = self.classes.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"two agent classes map to /agents/{name}: {existing.__qualname__} and {cls.__qualname__}")
        self.classes[name] = cls
        return cls

    def agent_class(self, kebab_name: str) -> type[Agent]:
        cls = self.classes.get(kebab_name)
        if cls is None:
            known = ", ".join(sorted(self.classes)) or "none"
            raise UnknownAgent(f"unknown agent class {kebab_name!r} (served here: {known})")
        return cls

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        await self.scheduler.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    def spawn(self, key: str, work: Awaitable[Any], *, owner: AgentRef | None = None) -> "asyncio.Task[Any]":
        """Run ``work`` in the background under ``key`` (one per key), owned by the
        host: kept referenced, findable with ``task(key)``, cancelled at ``stop`` (and
        when ``owner``'s instance is dropped or deleted). Work that must touch an
        instance does so in turns (``run``)."""
        task: "asyncio.Task[Any]" = asyncio.get_running_loop().create_task(work)  # type: ignore[arg-type]
        self._tasks[key] = task
        if owner is not None:
            self._task_owner[key] = owner.path

        def forget(t: "asyncio.Task[Any]") -> None:
            if self._tasks.get(key) is t:
                del self._tasks[key]
                self._task_owner.pop(key, None)

        task.add_done_callback(forget)
        return task

    def task(self, key: str) -> "asyncio.Task[Any] | None":
        """The live background task spawned under ``key``, if any."""
        return self._tasks.get(key)

    def _cancel_tasks_of(self, ref: AgentRef) -> None:
        for key, path in list(self._task_owner.items()):
            if path == ref.path and key in self._tasks:
                self._tasks[key].cancel()

    async def stop(self) -> None:
        await self.scheduler.stop()
        for task in list(self._tasks.values()):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
        for slot in list(self._slots.values()):
            try:
                await slot.drain()
            except Exception as e:  # pragma: no cover - reported, not raised, at shutdown
                log.error("could not flush %s at shutdown: %s", slot.ref.path, e)
            for conn in list(slot.connections.values()):
                await conn.close(1001, "host shutting down")
            self._close_sql(slot)

    def wrap_turn(self, wrapper: Any) -> None:
        """Add one more turn wrapper (``wrapper.wrap_turn(turn, host)``), outermost.
        It also wraps the steps of ``run_step``."""
        self._turn = wrapper.wrap_turn(self._turn, self)  # type: ignore[method-assign]
        self._step = wrapper.wrap_turn(self._step, self)

    async def drop(self, ref: AgentRef, code: int = 1012, reason: str = "", *, flush: bool = False) -> None:
        """Forget an instance held in memory without hibernating it through storage:
        its activation moved elsewhere (cluster mode). Its connections close with
        ``code`` (1012: clients reconnect and reach the new owner). With ``flush``,
        pending state is written first (a drain); without, it is discarded (a write
        would be refused anyway)."""
        self._cancel_tasks_of(ref)  # its background work (a chat reply) resumes at the new owner
        slot = self._slots.get(ref.path)
        if slot is None:
            return
        if flush:
            async with slot.lock:
                try:
                    await slot.drain()
                except Exception as e:
                    log.error("could not flush %s before handing it over: %s", ref.path, e)
        slot._dirty, slot._outbox = False, []
        for conn in list(slot.connections.values()):
            conn._slot = None
            await conn.close(code, reason)
        slot.connections.clear()
        self._close_sql(slot)
        slot.agent = None
        self._resident.pop(ref.path, None)
        self._slots.pop(ref.path, None)

    async def drop_all(self, code: int = 1012, reason: str = "", *, flush: bool = False) -> int:
        """``drop`` every instance in memory; returns how many there were."""
        slots = list(self._slots.values())
        for slot in slots:
            await self.drop(slot.ref, code, reason, flush=flush)
        return len(slots)

    @property
    def resident_count(self) -> int:
        return len(self._resident)

    def resident_by_class(self, tenant: str | None = None) -> dict[str, int]:
        """Instances in memory per agent class (of one tenant, or all)."""
        out: dict[str, int] = {}
        for slot in list(self._resident.values()):
            if tenant is None or slot.ref.tenant == tenant:
                out[slot.ref.agent_class] = out.get(slot.ref.agent_class, 0) + 1
        return out

    @property
    def connection_count(self) -> int:
        return sum(len(s.connections) for s in self._slots.values())

    # -- the turn ----------------------------------------------------------------
    def _slot(self, ref: AgentRef) -> _Slot:
        slot = self._slots.get(ref.path)
        if slot is None:
            slot = _Slot(ref, self.agent_class(ref.agent_class), self.storage)
            self._slots[ref.path] = slot
        return slot

    async def _turn(self, slot: _Slot, body: Callable[[Agent], Awaitable[T]]) -> T:
        mw = self._turn_mw
        if not mw:
            return await self._run_turn(slot, body)
        info = TurnInfo(slot.ref, slot.agent is None)
        for m in mw:
            m.enter(info)
        try:
            return await self._run_turn(slot, body)
        except BaseException as e:
            info.error = e
            raise
        finally:
            for m in reversed(mw):
                m.exit(info)

    async def _run_turn(self, slot: _Slot, body: Callable[[Agent], Awaitable[T]]) -> T:
        async with slot.lock:
            agent = slot.agent
            if agent is None:
                agent = await self._wake(slot)
            else:
                self._resident.move_to_end(slot.ref.path)
            self.stats["turns"] += 1
            try:
                result = await body(agent)
                while slot.hooks:
                    state, source = slot.hooks.pop(0)
                    await agent.on_state_changed(state, source)
                return result
            except Exception as e:
                self.stats["turn_errors"] += 1
                slot.hooks.clear()
                if not isinstance(e, RpcError):
                    await self._report(agent, e)
                raise
            finally:
                try:
                    await slot.drain()
                finally:
                    slot.last_active = time.monotonic()

    async def _report(self, agent: Agent, error: BaseException) -> None:
        try:
            await agent.on_error(error)
        except Exception as e:  # an on_error that fails must not hide the original error
            log.error("on_error of %s failed: %s", agent._slot.ref.path, e)

    async def _wake(self, slot: _Slot) -> Agent:
        ref, cls = slot.ref, slot.cls
        record = await self.storage.load_agent(ref.path)
        if record is None:
            state = initial_state_of(cls)
            now = time.time()
            await self.storage.create_agent(
                AgentRecord(ref.path, ref.tenant, ref.agent_class, ref.name,
                            None if state is None else json.dumps(state).encode(), now, now)
            )
        else:
            state = None if record.state is None else json.loads(record.state)
        agent = cls.__new__(cls)
        agent._slot, agent._host, agent._state, agent._sql = slot, self, state, None
        if record is not None and record.has_sql:  # stored off this machine: fetch before the turn
            agent._sql = await self.storage.open_agent_sql(ref.path)
        agent.__init__()  # type: ignore[misc]  # attributes first, so __init__ may read state
        slot.agent = agent
        self._resident[ref.path] = slot
        self.stats["wakes"] += 1
        if len(self._resident) > self.settings.max_resident:
            self._evict_lru(len(self._resident) - self.settings.max_resident)
        try:
            await agent.on_start()
        except Exception:
            self._evict(slot)
            raise
        return agent

    # -- hibernation -------------------------------------------------------------
    def _evict(self, slot: _Slot) -> bool:
        if slot.lock.locked() or slot.pending or slot.agent is None:
            return False
        self._close_sql(slot)
        slot.agent = None
        self._resident.pop(slot.ref.path, None)
        self.stats["hibernations"] += 1
        if not slot.connections:
            self._slots.pop(slot.ref.path, None)
        return True

    def _evict_lru(self, n: int) -> None:
        victims: list[_Slot] = []
        for slot in self._resident.values():
            if len(victims) >= n:
                break
            if not slot.lock.locked():
                victims.append(slot)
        for slot in victims:
            self._evict(slot)

    def hibernate_idle(self, idle_for: float | None = None) -> int:
        """Hibernate every resident instance idle for ``idle_for`` seconds (default:
        the configured ``hibernate_after``). Returns how many left memory."""
        cutoff = time.monotonic() - (self.settings.hibernate_after if idle_for is None else idle_for)
        victims: list[_Slot] = []
        for slot in self._resident.values():  # least recently used first
            if slot.last_active > cutoff:
                break
            victims.append(slot)
        return sum(self._evict(s) for s in victims)

    async def _sweep_forever(self) -> None:
        interval = min(1.0, max(0.05, self.settings.hibernate_after / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                self.hibernate_idle()
            except Exception as e:  # pragma: no cover
                log.error("hibernation sweep failed: %s", e)

    def _close_sql(self, slot: _Slot) -> None:
        agent = slot.agent
        if agent is not None and agent._sql is not None:
            agent._sql.close()
            agent._sql = None

    # -- events ------------------------------------------------------------------
    async def connect(self, ref: AgentRef, conn: Connection) -> None:
        """A client connected: send identity, state and MCP frames, then ``on_connect``."""
        slot = self._slot(ref)

        async def body(agent: Agent) -> None:
            old = slot.connections.get(conn.id)
            if old is not None and old is not conn:
                old._slot = None
                await old.close(1000, "replaced by a new connection with the same id")
            conn._slot = slot
            slot.connections[conn.id] = conn
            has_state = agent.state is not None
            # A base class's own connect frames (the chat conversation) come first, so
            # a client that waits for identity before sending has them already.
            await agent._connected(conn)
            await slot.release(protocol.identity_frame(ref.name, ref.agent_class, has_state), only=conn)
            if has_state:
                await slot.release(protocol.state_frame(json.dumps(agent.state)), only=conn)
            await slot.release(agent._mcp_frame(), only=conn)
            await agent.on_connect(conn)

        token = current_caller.set(conn.principal)
        try:
            await self._turn(slot, body)
        finally:
            current_caller.reset(token)

    async def disconnect(self, ref: AgentRef, conn: Connection, code: int = 1000, reason: str = "") -> None:
        slot = self._slots.get(ref.path)
        if slot is None or slot.connections.get(conn.id) is not conn:
            return
        del slot.connections[conn.id]
        conn.closed = True
        if slot.cls.on_close is not Agent.on_close:
            try:
                await self._turn(slot, lambda agent: agent.on_close(conn, code, reason))
            except Exception:
                pass  # reported through on_error
        elif slot.agent is None and not slot.connections and not slot.lock.locked():
            self._slots.pop(ref.path, None)

    async def frame(self, ref: AgentRef, conn: Connection, text: str) -> None:
        """One frame from a client: an RPC, a client state set, a frame the agent's
        class speaks (``Agent._frames``, e.g. the chat frames), or anything else
        (``on_message``). Errors go back to the client; they never propagate."""
        slot = self._slot(ref)
        try:
            frame = protocol.parse_frame(text)
        except safe_json.JSONLimitExceeded as e:  # too deep, NaN, ...: refused, named; the socket stays
            await conn.send({"type": "error", "error": e.message})
            return
        kind = frame.kind
        token = current_caller.set(conn.principal)
        try:
            if kind == protocol.RPC:
                await self._turn(slot, lambda agent: self._rpc(agent, slot, conn, frame.data or {}))
            elif kind == protocol.STATE:
                await self._turn(slot, lambda agent: self._client_state(agent, slot, conn, frame.data or {}))
            elif kind is not None and kind in slot.cls._frames:
                handler = slot.cls._frames[kind]
                await self._turn(slot, lambda agent: getattr(agent, handler)(conn, frame.data))
            else:
                await self._turn(slot, lambda agent: agent.on_message(conn, text))
        except Exception:
            pass  # already answered to the client and reported through on_error
        finally:
            current_caller.reset(token)

    async def _client_state(self, agent: Agent, slot: _Slot, conn: Connection, msg: dict[str, Any]) -> None:
        if conn.readonly:
            await slot.release(protocol.STATE_READONLY, only=conn)
            return
        state = msg.get("state")
        try:
            verdict = agent.validate_state_change(state, conn)
            if inspect.isawaitable(verdict):
                await verdict
        except Exception:
            await slot.release(protocol.STATE_REJECTED, only=conn)
            return
        try:
            slot.set_state(state, source=conn)
        except InvalidRequest:
            await slot.release(protocol.STATE_REJECTED, only=conn)

    async def _rpc(self, agent: Agent, slot: _Slot, conn: Connection, msg: dict[str, Any]) -> None:
        rpc_id = msg.get("id")
        method = msg.get("method")
        try:
            stream = StreamingResponse(slot, conn, rpc_id)  # type: ignore[arg-type]
            result = await protocol.invoke(agent, method, protocol.rpc_args(msg.get("args")), stream)
            if not stream.closed:  # a plain method (a streaming one has ended its stream)
                try:
                    text = protocol.rpc_result(rpc_id, result)
                except RpcError:
                    raise RpcError(f"Result of {method} is not JSON-serialisable") from None
                await slot.release(text, only=conn)
        except Exception as e:
            if not isinstance(e, RpcError):
                await self._report(agent, e)
            await slot.release(protocol.rpc_error(rpc_id, str(e) or type(e).__name__), only=conn)

    # -- calls from the server and from other agents ------------------------------
    async def call(self, ref: AgentRef, method: str, args: list[Any] | None = None, *, caller: Any = None) -> Any:
        """Call a ``@callable`` method as one turn. A streaming method's chunks are
        collected: the result is ``{"chunks": [...], "result": final}``. ``caller``
        (default: the current turn's) is what the agent sees as ``self.caller``."""
        slot = self._slot(ref)

        async def body(agent: Agent) -> Any:
            collector = _Collector(slot)
            result = await protocol.invoke(agent, method, list(args or []), collector)
            if collector.closed:
                return {"chunks": collector.chunks, "result": collector.final}
            return result

        return await self._as(caller, self._turn(slot, body))

    async def request(self, ref: AgentRef, request: Any, *, caller: Any = None) -> Any:
        """Plain HTTP to the agent: ``on_request`` as one turn."""
        return await self._as(caller, self._turn(self._slot(ref), lambda agent: agent.on_request(request)))

    @staticmethod
    async def _as(caller: Any, turn: Awaitable[T]) -> T:
        if caller is None:
            return await turn
        token = current_caller.set(caller)
        try:
            return await turn
        finally:
            current_caller.reset(token)

    async def run(self, ref: AgentRef, body: Callable[[Agent], Awaitable[T]], *, caller: Any = None) -> T:
        """Run arbitrary code as a turn of the instance (schedules, MCP calls, tests, admin);
        ``caller`` is what the agent sees as ``self.caller``."""
        return await self._as(caller, self._turn(self._slot(ref), body))

    async def run_step(self, ref: AgentRef, body: Callable[[Agent], Awaitable[T]]) -> T:
        """Run a step of work an earlier turn started (a chat reply's next chunks) under
        the instance's input gate, waking it if needed. Not a turn of its own to
        metering and telemetry (the turn that started the work was counted)."""
        result: T = await self._step(self._slot(ref), body)
        return result

    async def get_state(self, ref: AgentRef) -> Any:
        slot = self._slots.get(ref.path)
        if slot is not None and slot.agent is not None:
            return slot.agent.state
        self.agent_class(ref.agent_class)
        record = await self.storage.load_agent(ref.path)
        if record is None:
            raise NotFound(f"agent {ref.agent_class}/{ref.name} does not exist")
        return None if record.state is None else json.loads(record.state)

    async def delete(self, ref: AgentRef) -> None:
        """Destroy an instance: close its connections, drop its state, schedules and SQL."""
        self._cancel_tasks_of(ref)
        slot = self._slots.get(ref.path)
        if slot is not None:
            async with slot.lock:
                for conn in list(slot.connections.values()):
                    await conn.close(1000, "agent deleted")
                slot.connections.clear()
                self._close_sql(slot)
                slot.agent = None
                slot._dirty, slot._outbox = False, []
                self._resident.pop(ref.path, None)
                self._slots.pop(ref.path, None)
        await self.storage.delete_agent(ref.path)


class _Collector(StreamingResponse):
    """A stream whose chunks are kept (for calls that are not over a WebSocket)."""

    __slots__ = ("chunks", "final")

    def __init__(self, slot: _Slot) -> None:
        super().__init__(slot, None, "")
        self.chunks: list[Any] = []
        self.final: Any = None

    async def _emit(self, frame: dict[str, Any]) -> None:
        if frame["done"]:
            self.final = frame["result"]
        else:
            self.chunks.append(frame["result"])


__all__ = ["AgentHost", "RpcError", "TurnInfo"]
