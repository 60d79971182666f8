"""Single activation on a shard: its lease, the activations it holds, and the fence.

``Activations`` is three things for one shard incarnation:

- the **lease keeper**: it registers the incarnation and renews its lease by
  heartbeat; it also keeps a *local* deadline (monotonic, measured from before each
  renewal was sent), so a shard that was paused (SIGSTOP) or cut off knows on waking
  that its lease may be gone, before it runs any turn, without asking anyone;
- a **turn wrapper** (``wrap_turn``) on the ``AgentHost``: before an instance wakes,
  its root address is acquired in the directory (``Directory.acquire``); an address
  that another live shard holds raises ``AgentMoved`` (the front door goes there);
- the storage **fence** (``condition``, the ``myriad.storage.Fence`` protocol): every
  write of an agent's rows carries "this shard still holds this address with this
  token, and its lease holds", checked by PostgreSQL in the write's transaction.

When a write is fenced out, or the lease is found lost, the instance(s) are dropped
from memory and their connections closed with 1012, so clients reconnect through a
front door to the new owner.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Awaitable, Callable, TypeVar

from myriad.cluster.directory import FENCE_SQL, Directory, root_path
from myriad.errors import AgentElsewhere, FencedOut, MyriadError

log = logging.getLogger("myriad.cluster")
T = TypeVar("T")

MOVED_PREFIX = "agent is active on shard "


class AgentMoved(AgentElsewhere):
    """This shard does not hold the address (another live shard does, or this one is
    draining or lost its lease); the front door re-routes. ``holder`` may be empty."""

    def __init__(self, holder: str) -> None:
        super().__init__(MOVED_PREFIX + (holder or "(none: place it again)"), details={"holder": holder})
        self.holder = holder


class Activations:
    """The lease, activations and fence of one shard incarnation (see the module doc)."""

    def __init__(self, directory: Directory, name: str, node: str, address: str, pid: int,
                 *, heartbeat: float | None = None, margin: float = 0.25) -> None:
        self.directory = directory
        self.name, self.node, self.address, self.pid = name, node, address, pid
        self.heartbeat_every = heartbeat or directory.ttl / 4
        self.margin = margin
        self.incarnation = 0
        self.shard_id = ""
        self.tokens: dict[str, int] = {}
        self.draining = False
        self.deadline = 0.0
        self.host: Any = None
        self.load: Callable[[], dict[str, Any]] = dict
        self.stats = {"acquired": 0, "moved": 0, "fenced": 0, "leases_lost": 0}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_load: dict[str, Any] = {}
        self._handling = asyncio.Lock()
        self._drained = False

    # -- the lease -----------------------------------------------------------------
    def valid(self) -> bool:
        """The lease surely holds now (by the local clock, with a margin)."""
        return time.monotonic() < self.deadline - self.margin

    async def start(self) -> None:
        await self._register()
        self._loop = asyncio.get_running_loop()
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_forever, name=f"lease-{self.name}", daemon=True)
        self._thread.start()

    async def stop(self, *, retire: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
            self._thread = None
        for task in list(self._tasks):
            task.cancel()
        if retire and self.shard_id:
            try:
                await self.directory.retire(self.shard_id)
            except MyriadError as e:  # pragma: no cover - the lease simply expires
                log.warning("could not retire shard %s: %s", self.shard_id, e)

    async def _register(self) -> None:
        self.incarnation += 1
        self.shard_id = f"{self.name}@{int(time.time() * 1000):x}.{self.incarnation}"
        self.tokens.clear()
        self.deadline = await self.directory.register(self.shard_id, self.node, self.address, self.pid)
        self.draining = False
        self._drained = False
        log.info("shard %s serving at %s", self.shard_id, self.address)

    def _renew_forever(self) -> None:
        """The lease renewer, on its own thread and connection: a shard whose event
        loop is saturated by turns must not lose its lease for that."""
        conn = None
        while not self._stop.wait(self.heartbeat_every):
            shard = self.shard_id
            try:
                if conn is None or conn.closed:
                    conn = self.directory.connect_sync()
                renewed = self.directory.heartbeat_sync(conn, shard, self._load_now())
            except Exception as e:  # the database may be restarting: the local deadline protects us
                log.warning("shard %s heartbeat failed: %s", shard, e)
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass
                    conn = None
                if not self.valid() and self.tokens:
                    self._signal("lost", shard)
                continue
            if renewed is None:
                self._signal("lost", shard)
                continue
            if shard == self.shard_id:
                self.deadline = renewed[0]
                if renewed[1] and not self._drained:
                    self._signal("drain", shard)
                elif not renewed[1] and self.draining:  # the drain was undone
                    self.draining = self._drained = False
        if conn is not None:
            conn.close()

    def _load_now(self) -> dict[str, Any]:
        try:  # read from another thread: a dict may change size under us; then send the last one
            self._last_load = {**self.load(), **self.stats}
        except Exception:
            pass
        return self._last_load

    def _signal(self, what: str, shard: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def run() -> None:
            task = loop.create_task(self._handle(what, shard))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        loop.call_soon_threadsafe(run)

    async def _handle(self, what: str, shard: str) -> None:
        async with self._handling:
            if shard != self.shard_id:
                return  # about an incarnation already replaced
            try:
                if what == "lost":
                    await self._lost("lease gone or unrenewable")
                    await self._register()
                elif what == "drain" and not self._drained:
                    self.draining = True
                    await self._drain()
            except Exception as e:
                log.error("shard %s could not handle %s: %s", self.shard_id, what, e)

    async def beat(self) -> None:
        """Renew the lease once from the event loop (tests; the renewer thread does it
        in service)."""
        renewed = await self.directory.heartbeat(self.shard_id, self.load())
        if renewed is None:
            await self._handle("lost", self.shard_id)
            return
        self.deadline, draining = renewed
        if draining and not self._drained:
            await self._handle("drain", self.shard_id)
        elif not draining and self.draining:
            self.draining = self._drained = False

    async def _lost(self, why: str) -> None:
        self.stats["leases_lost"] += 1
        held = len(self.tokens)
        self.tokens.clear()
        dropped = await self.host.drop_all(1012, "shard lost its lease; reconnect") if self.host else 0
        log.warning("shard %s lost its lease (%s): dropped %d instances, %d activations",
                    self.shard_id, why, dropped, held)

    async def _drain(self) -> None:
        """Hand every agent back: flush, close connections (clients reconnect
        elsewhere), release the activations."""
        self._drained = True
        dropped = await self.host.drop_all(1012, "node draining; reconnect", flush=True) if self.host else 0
        self.tokens.clear()
        released = await self.directory.release(self.shard_id)
        log.info("shard %s drained: %d instances, %d activations released", self.shard_id, dropped, released)

    # -- activations ---------------------------------------------------------------
    async def ensure(self, path: str) -> int:
        """The fencing token for ``path``'s root, acquiring it if needed; raises
        ``AgentMoved`` when this shard may not hold it."""
        root = root_path(path)
        token = self.tokens.get(root)
        if token is not None and self.valid():
            return token
        if not self.valid() or self.draining:
            raise AgentMoved("")
        holder, token = await self.directory.acquire(root, self.shard_id)
        if holder != self.shard_id:
            self.stats["moved"] += 1
            raise AgentMoved(holder)
        self.tokens[root] = token
        self.stats["acquired"] += 1
        return token

    def wrap_turn(self, turn: Callable[[Any, Any], Awaitable[T]], host: Any) -> Callable[[Any, Any], Awaitable[T]]:
        """The host's turn, run only while this shard holds the address."""
        self.host = host

        async def fenced_turn(slot: Any, body: Any) -> T:
            try:
                await self.ensure(slot.ref.path)
            except AgentMoved:
                if slot.agent is None and not slot.connections and not slot.lock.locked():
                    await host.drop(slot.ref)  # do not keep an empty slot for an address held elsewhere
                raise
            try:
                return await turn(slot, body)
            except FencedOut:
                self.stats["fenced"] += 1
                self.tokens.pop(root_path(slot.ref.path), None)
                await host.drop(slot.ref, 1012, "agent moved to another shard; reconnect")
                raise AgentMoved("") from None

        # Deleting an agent is not a turn but writes its rows: it too needs the activation.
        delete = host.delete

        async def fenced_delete(ref: Any) -> None:
            await self.ensure(ref.path)
            await delete(ref)

        host.delete = fenced_delete
        return fenced_turn

    # -- the fence (myriad.storage.Fence) -------------------------------------------
    def condition(self, path: str) -> tuple[str, tuple[Any, ...]]:
        """SQL that is true while this shard holds ``path``'s root with its token."""
        if not self.valid():
            return "false", ()  # our own clock already says the lease may be gone
        root = root_path(path)
        return FENCE_SQL, (root, self.shard_id, self.tokens.get(root, -1))


__all__ = ["Activations", "AgentMoved", "MOVED_PREFIX"]
