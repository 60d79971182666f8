"""``Sandboxes``: the one entry point. Picks a tier, keeps sandboxes by (owner, id).

``await sandboxes.open(needs={"filesystem"}, limits=Limits(memory_mb=256))`` returns
the lightest registered tier whose capabilities cover ``needs``; naming a tier that
cannot meet them is a ``TierUnavailable`` (never a silent upgrade), and a tier this
machine cannot run is a ``SandboxUnavailable`` naming the missing piece.

Sandboxes are kept per ``(owner, id)``: opening the same pair again returns the live
one (a warm isolate, like Cloudflare's ``LOADER.get``). Isolates are cached LRU up
to ``warm_isolates``; containers live until deleted, idle past ``idle_timeout`` or
older than ``max_lifetime`` (a reaper task checks every few seconds). Owners are
opaque strings: the server uses the tenant, agents use their ``ref.path``; nothing
is found across owners.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from myriad.errors import InvalidRequest, NotFound, PermissionDenied, RateLimited, SandboxError, SandboxUnavailable, TierUnavailable
from myriad.sandbox.container import ContainerSandbox, ContainerTier
from myriad.sandbox.egress import EgressPolicy, EgressProxy
from myriad.sandbox.events import CloseReason, Hooks, SandboxEvent, SandboxHook
from myriad.sandbox.interface import CAPABILITIES, Limits, Sandbox, Tier
from myriad.sandbox.isolate import IsolateTier, isolate_limit
from myriad.sandbox.journal import LiveJournal, alive, host_tag

def _isolate_tier(s: "Sandboxes") -> Tier:
    return IsolateTier(s.settings)


def _container_tier(s: "Sandboxes") -> Tier:
    return ContainerTier(s.settings, s.root, s.egress, explicit_root=bool(getattr(s.settings, "root", "")))


TIERS: dict[str, Callable[["Sandboxes"], Tier]] = {"isolate": _isolate_tier, "container": _container_tier}
"""Tier factories by name; add one here to plug in a new tier."""

_PARTIAL = ".partial-"
_NOTHING = contextlib.nullcontext()  # reusable: an async context manager that does nothing
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass
class Snapshot:
    """A saved copy of a container workspace."""

    id: str
    owner: str
    sandbox_id: str
    created_at: float
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "sandbox_id": self.sandbox_id, "created_at": self.created_at, "bytes": self.bytes}


def _defaults(settings: Any) -> tuple[Limits, Limits]:
    """Host defaults for (containers, isolates); they are also the ceilings."""
    container = Limits(
        timeout=settings.timeout, memory_mb=settings.memory_mb, cpu=settings.cpu, pids=settings.pids,
        output_bytes=settings.output_bytes, idle_timeout=settings.idle_timeout, max_lifetime=settings.max_lifetime,
        disk_mb=int(getattr(settings, "disk_mb", 0) or 0) or None,
    )
    isolate = Limits(timeout=settings.timeout, memory_mb=settings.isolate_memory_mb, output_bytes=settings.output_bytes)
    return container, isolate


class Sandboxes:
    """Opens, finds and closes sandboxes of every tier for one host."""

    def __init__(self, settings: Any = None, *, data_dir: str | Path = ".myriad", egress: EgressProxy | None = None,
                 tiers: Iterable[str] | None = None, reap_interval: float = 5.0) -> None:
        if settings is None:
            from myriad.settings import SandboxSettings

            settings = SandboxSettings()
        self.settings = settings
        self.root = Path(settings.root) if settings.root else Path(data_dir) / "sandboxes"
        operator_private = list(getattr(settings, "egress_allow_private", None) or [])
        self.egress = egress or EgressProxy(allow_private=operator_private)
        if egress is not None and not egress.allow_private:
            egress.allow_private = [a.strip().lower().rstrip(".") for a in operator_private]
        self._tier_names = list(tiers) if tiers is not None else list(TIERS)
        self._tiers: dict[str, Tier] = {}
        self._container_defaults, self._isolate_defaults = _defaults(settings)
        self._live: dict[tuple[str, str], Sandbox] = {}
        self._isolates: OrderedDict[tuple[str, str], float] = OrderedDict()  # key -> last used (monotonic)
        self._isolates_of: dict[str, OrderedDict[tuple[str, str], float]] = {}  # tenant -> its isolates, LRU first
        self._snapshots: dict[str, Snapshot] = {}
        self._open_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._reap_interval = reap_interval
        self._journal = LiveJournal(self.root / "_live")
        self.events = Hooks([self._journal_hook])
        """Where every operation is announced: ``sandboxes.events.add(hook)`` (see ``events.py``)."""
        self._recovery: asyncio.Task[list[SandboxEvent]] | None = None

    def add_hook(self, hook: SandboxHook) -> None:
        """Add a hook that sees every sandbox operation (metering, tracing, audit)."""
        self.events.add(hook)

    def _journal_hook(self, event: SandboxEvent) -> Any:
        if event.kind != "open" and event.kind != "close":
            return _NOTHING  # runs, tool calls...: nothing to record, no generator per event
        return self._journal_record(event)

    @contextlib.asynccontextmanager
    async def _journal_record(self, event: SandboxEvent) -> Any:
        yield  # after the operation: only what succeeded is recorded
        # one short line, flushed (not fsynced) to the page cache: cheaper inline than a thread hop
        if event.kind == "open":
            self._journal.opened(event.instance, event.owner, event.sandbox_id, event.tier)
        elif event.kind == "close" and event.instance and event.reason != "crashed":  # not ours
            self._journal.closed(event.instance)

    # -- recovery after a crash ---------------------------------------------------------

    def start(self) -> None:
        """Begin recovering what a dead host left (called once the event loop runs); opening a
        sandbox waits for it, so no tenant is refused a slot its dead sandboxes still hold."""
        if self._recovery is None:
            self._recovery = asyncio.ensure_future(self.recover())

    async def recover(self) -> builtins.list[SandboxEvent]:
        """For every sandbox whose host process died (kill -9, power loss): remove what is left
        (``ContainerTier.sweep``) and emit its ``close`` with ``reason="crashed"`` and the CPU its
        cgroup used since it was last charged, so hooks give back its slot and charge that work."""
        swept: dict[str, Any] = {}
        if "container" in self._tier_names:
            try:
                t = self.tier("container")
                await asyncio.to_thread(t.check)
                swept = {s.instance: s for s in getattr(t, "swept", [])}
            except (SandboxUnavailable, SandboxError, OSError):
                pass
        await asyncio.to_thread(self._sweep_partial_snapshots)
        out = []
        for tag, records in await asyncio.to_thread(self._journal.dead):
            for rec in records:
                dead = swept.pop(rec["instance"], None)
                out.append(SandboxEvent("close", owner=rec["owner"], sandbox_id=rec["id"], tier=rec["tier"],
                                        instance=rec["instance"], reason="crashed",
                                        cpu_ms=dead.cpu_ms if dead is not None else None))
            await asyncio.to_thread(self._journal.forget, tag)
        for dead in swept.values():  # left by a host that kept no journal
            out.append(SandboxEvent("close", owner=dead.owner, sandbox_id=dead.id, tier="container",
                                    instance=dead.instance, reason="crashed", cpu_ms=dead.cpu_ms))
        for event in out:
            await self.events.emit(event)
        return out

    def _sweep_partial_snapshots(self) -> builtins.list[str]:
        """Remove snapshot copies a dead host left unfinished."""
        removed = []
        base = self.root / "_snapshots"
        for p in base.glob(f"{_PARTIAL}*") if base.is_dir() else []:
            tag = "-".join(p.name[len(_PARTIAL):].split("-", 2)[:2])  # <pid>-<start time>-<snapshot id>
            if not alive(tag):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
        return removed

    async def _recovered(self) -> None:
        if self._recovery is not None and not self._recovery.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._recovery)

    def live_by_tier(self) -> dict[str, int]:
        """Open sandboxes per tier (the ``myriad.sandboxes.live`` gauge)."""
        out: dict[str, int] = {}
        for sandbox in list(self._live.values()):
            if not sandbox.closed:
                out[sandbox.tier] = out.get(sandbox.tier, 0) + 1
        return out

    # -- tiers --------------------------------------------------------------------------

    def tier(self, name: str) -> Tier:
        """The tier called ``name`` (made on first use)."""
        if name not in self._tier_names or name not in TIERS:
            raise TierUnavailable(f"unknown sandbox tier {name!r}; this host has {', '.join(self._tier_names)}")
        if name not in self._tiers:
            self._tiers[name] = TIERS[name](self)
        return self._tiers[name]

    def choose(self, needs: Iterable[str] = (), tier: str | None = None) -> Tier:
        """The lightest tier covering ``needs`` (or check that ``tier`` does)."""
        wanted = set(needs or ())
        unknown = wanted - set(CAPABILITIES)
        if unknown:
            raise InvalidRequest(f"unknown need(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(CAPABILITIES))}")
        if tier is not None:
            t = self.tier(tier)
            missing = wanted - t.capabilities
            if missing:
                raise TierUnavailable(
                    f"the {tier} tier cannot provide {', '.join(sorted(missing))}; "
                    f"ask for the container tier or drop those needs",
                    details={"tier": tier, "missing": sorted(missing)},
                )
            return t
        candidates = sorted((self.tier(n) for n in self._tier_names if n in TIERS), key=lambda t: t.weight)
        for t in candidates:
            if wanted <= t.capabilities:
                return t
        raise TierUnavailable(f"no sandbox tier on this host provides {', '.join(sorted(wanted))}")

    # -- open / get / close -------------------------------------------------------------

    async def open(self, *, needs: Iterable[str] = (), tier: str | None = None, limits: Limits | None = None,
                   owner: Any = "default", id: str | None = None, tools: Any = None,
                   network: EgressPolicy | bool | dict[str, Any] | None = None) -> Sandbox:
        """Open (or, for a known ``(owner, id)``, return) a sandbox.

        ``needs`` are capability names (``CAPABILITIES``); granting ``network``
        implies the ``network`` need. ``limits`` may only tighten the host's.
        ``owner`` is a string (the server passes the tenant) or anything with a
        ``path`` (an agent's ``AgentRef``: each agent owns its own sandboxes).
        """
        owner = owner_key(owner)
        needs = set(needs or ())
        policy = network if isinstance(network, EgressPolicy) or network is None else EgressPolicy.from_json(network)
        if policy is not None:
            needs.add("network")
            outside = policy.private_outside(getattr(self.settings, "egress_allow_private", None) or [])
            if outside:
                raise PermissionDenied(
                    f"network.allow_private names {', '.join(outside)}, which the operator has not opened: reaching "
                    "non-public addresses is an operator decision (sandbox.egress_allow_private), not a sandbox's",
                    details={"not_permitted": outside})
        if tools:
            needs.add("tools")
        if id is not None and not (isinstance(id, str) and _ID.match(id)):
            raise InvalidRequest("sandbox id must be 1-64 letters, digits, '-' or '_'")
        key = (owner, id) if id is not None else None
        if key is not None:
            lock = self._open_locks.setdefault(key, asyncio.Lock())
            async with lock:
                existing = self._live.get(key)
                if existing is not None and not existing.closed:
                    if needs - existing.capabilities:
                        raise TierUnavailable(f"sandbox {id} is a {existing.tier} sandbox and cannot provide "
                                              f"{', '.join(sorted(needs - existing.capabilities))}")
                    self._touch(key, existing)
                    return existing
                return await self._create(key, needs, tier, limits, tools, policy)
        return await self._create((owner, f"sb_{secrets.token_hex(8)}"), needs, tier, limits, tools, policy)

    async def _create(self, key: tuple[str, str], needs: set[str], tier: str | None, limits: Limits | None,
                      tools: Any, policy: EgressPolicy | None, from_dir: Path | None = None,
                      source_id: str | None = None) -> Sandbox:
        t = self.choose(needs, tier)
        await self._recovered()
        t.check()
        owner, sid = key
        if t.name != "isolate":
            cap = int(getattr(self.settings, "max_containers_per_owner", 32))
            held = sum(1 for (o, _), sb in self._live.items() if o == owner and sb.tier == t.name and not sb.closed)
            if held >= cap:
                raise RateLimited(f"{owner} already holds {held} {t.name} sandboxes (limit {cap}); delete one first")
        defaults = self._isolate_defaults if t.name == "isolate" else self._container_defaults
        merged = (limits or Limits()).capped(defaults).merged(defaults)
        instance = secrets.token_hex(6)
        options: dict[str, Any] = {"tools": tools, "network": policy, "instance": instance}
        if from_dir is not None:
            options["from_dir"] = from_dir
        event = SandboxEvent("open", owner=owner, sandbox_id=sid, tier=t.name, instance=instance, limits=merged,
                             source_id=source_id)
        async with self.events.around(event):
            sandbox = await t.create(id=sid, owner=owner, limits=merged, **options)
            sandbox.events = self.events  # type: ignore[attr-defined]
            event.sandbox = sandbox
        self._live[key] = sandbox
        self._touch(key, sandbox)
        if t.name == "isolate":
            await self._evict_isolates(tenant_of(owner))
        else:
            self._start_reaper()
        return sandbox

    async def open_for(self, owner: str, request: dict[str, Any]) -> Sandbox:
        """Open a sandbox from an API request body ``{tier, needs, limits, network, id}``."""
        if not isinstance(request, dict):
            raise InvalidRequest("body must be a JSON object")
        known = {"tier", "needs", "limits", "network", "id"}
        unknown = set(request) - known
        if unknown:
            raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        needs = request.get("needs") or []
        if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
            raise InvalidRequest("needs must be a list of capability names")
        tier = request.get("tier")
        if tier is not None and not isinstance(tier, str):
            raise InvalidRequest("tier must be a string")
        sid = request.get("id")
        if sid is not None and key_exists(self._live, (owner, sid)):
            from myriad.errors import Conflict

            raise Conflict(f"sandbox {sid} already exists")
        return await self.open(needs=needs, tier=tier, limits=Limits.from_json(request.get("limits")), owner=owner,
                               id=sid, network=EgressPolicy.from_json(request.get("network")))

    def get(self, owner: str, id: str) -> Sandbox:
        """The live sandbox ``id`` of ``owner``; another owner's id is ``NotFound`` too."""
        sandbox = self._live.get((owner, id))
        if sandbox is None or sandbox.closed:
            raise NotFound(f"no sandbox {id!r}")
        self._touch((owner, id), sandbox)
        return sandbox

    def list(self, owner: str) -> list[Sandbox]:
        return [s for (o, _), s in self._live.items() if o == owner and not s.closed]

    async def close(self, owner: str, id: str) -> None:
        """Delete a sandbox (kill its processes, drop its files)."""
        sandbox = self._live.pop((owner, id), None)
        self._forget_isolate((owner, id))
        self._open_locks.pop((owner, id), None)
        if sandbox is None or sandbox.closed:
            raise NotFound(f"no sandbox {id!r}")
        await sandbox.close()

    async def _closed_by_host(self, sandbox: Sandbox, reason: CloseReason) -> None:
        with contextlib.suppress(Exception):
            await sandbox.close(reason=reason)

    def _touch(self, key: tuple[str, str], sandbox: Sandbox) -> None:
        if sandbox.tier == "isolate":
            lru = self._isolates_of.setdefault(tenant_of(key[0]), OrderedDict())
            lru[key] = self._isolates[key] = time.monotonic()
            lru.move_to_end(key)
            self._isolates.move_to_end(key)

    @functools.cached_property
    def isolate_cap(self) -> int:
        """Live isolates this host keeps: ``warm_isolates``, but never past what one
        process can hold: what ``vm.max_map_count`` lets it map, and V8's own wall (see
        ``isolate.V8_SANDBOX_ISOLATES``). Past either, V8 aborts the whole process; under
        them the least recently used isolate is closed instead."""
        configured = int(getattr(self.settings, "warm_isolates", 10_000))
        log = logging.getLogger("myriad.sandbox")
        cap = configured
        budget = isolate_map_budget()
        if budget is not None and budget < cap:
            log.warning(
                "keeping at most %d live isolates (warm_isolates=%d): vm.max_map_count allows about that many "
                "per process; raise it (sysctl -w vm.max_map_count=262144) to keep more", budget, configured)
            cap = budget
        wall = isolate_limit() if "isolate" in self._tier_names else None
        if wall is not None and wall < cap:
            log.warning(
                "keeping at most %d live isolates (warm_isolates=%d): V8 (sandboxed, as mini-racer builds it) aborts "
                "the process past ~4,032 isolates; run more processes (cluster mode) to hold more", wall, configured)
            cap = wall
        return cap

    def _forget_isolate(self, key: tuple[str, str]) -> None:
        self._isolates.pop(key, None)
        tenant = tenant_of(key[0])
        lru = self._isolates_of.get(tenant)
        if lru is not None:
            lru.pop(key, None)
            if not lru:
                del self._isolates_of[tenant]

    async def _evict_isolates(self, tenant: str) -> None:
        """Keep ``tenant`` within its own cap (its least recently used isolate goes) and the
        host within ``warm_isolates`` (the tenant holding the most gives one up): one tenant
        never evicts another's isolates unless that one holds more."""
        per_tenant = int(getattr(self.settings, "isolates_per_tenant", 1_000))
        host_cap = self.isolate_cap
        while True:
            lru = self._isolates_of.get(tenant)
            if lru is not None and len(lru) > per_tenant:
                victim = next(iter(lru))
            elif len(self._isolates) > host_cap and self._isolates_of:
                biggest = max(self._isolates_of.values(), key=len)
                victim = next(iter(biggest))
            else:
                return
            self._forget_isolate(victim)
            self._open_locks.pop(victim, None)
            sandbox = self._live.pop(victim, None)
            if sandbox is not None:
                await self._closed_by_host(sandbox, "evicted")

    # -- snapshots ----------------------------------------------------------------------

    def _container(self, owner: str, id: str) -> ContainerSandbox:
        sandbox = self.get(owner, id)
        if not isinstance(sandbox, ContainerSandbox):
            raise TierUnavailable(f"sandbox {id} is a {sandbox.tier} sandbox; snapshots need the container tier")
        return sandbox

    def _event(self, kind: Any, sandbox: Sandbox, **fields: Any) -> SandboxEvent:
        return SandboxEvent(kind, owner=sandbox.owner, sandbox_id=sandbox.id, tier=sandbox.tier,
                            instance=getattr(sandbox, "instance", ""), sandbox=sandbox, **fields)

    async def snapshot(self, owner: str, id: str) -> Snapshot:
        """Save the workspace of a container sandbox; the snapshot outlives the sandbox."""
        sandbox = self._container(owner, id)
        cap = int(getattr(self.settings, "max_snapshots_per_owner", 32))
        held = await asyncio.to_thread(self._snapshots_of, owner)
        if held >= cap:
            raise RateLimited(f"{owner} already keeps {held} snapshots (limit {cap}); delete one first")
        async with self.events.around(self._event("snapshot", sandbox)) as event:
            snap = await self._snapshot(owner, sandbox)
            event.snapshot_id = snap.id
            return snap

    async def _snapshot(self, owner: str, sandbox: ContainerSandbox) -> Snapshot:
        snap_id = f"snap_{secrets.token_hex(8)}"
        dest = self.root / "_snapshots" / snap_id
        # copied under a name that says whose copy it is; renamed when complete, so a copy
        # cut short (a refused special file, a full disk, a killed host) is never mistaken
        # for a snapshot and is swept (at once, or by the next start's recover())
        partial = self.root / "_snapshots" / f"{_PARTIAL}{host_tag()}-{snap_id}"
        partial.parent.mkdir(parents=True, exist_ok=True)
        try:
            await sandbox._snapshot_to(partial / "workspace")
            size = await asyncio.to_thread(_du, partial / "workspace")
            snap = Snapshot(snap_id, owner, sandbox.id, time.time(), size)
            (partial / "meta.json").write_text(json.dumps({**snap.to_json(), "owner": owner}))
            os.rename(partial, dest)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, partial, True)
            raise
        self._snapshots[snap_id] = snap
        return snap

    def _snapshots_of(self, owner: str) -> int:
        n = 0
        base = self.root / "_snapshots"
        for meta in base.glob("snap_*/meta.json") if base.is_dir() else []:
            with contextlib.suppress(OSError, ValueError):
                n += json.loads(meta.read_text()).get("owner") == owner
        return n

    def get_snapshot(self, owner: str, snapshot_id: str) -> Snapshot:
        snap = self._snapshots.get(snapshot_id)
        if snap is None and isinstance(snapshot_id, str) and _ID.match(snapshot_id):
            meta = self.root / "_snapshots" / snapshot_id / "meta.json"
            with contextlib.suppress(OSError, ValueError, KeyError):
                m = json.loads(meta.read_text())
                snap = Snapshot(m["id"], m["owner"], m["sandbox_id"], m["created_at"], m["bytes"])
                self._snapshots[snapshot_id] = snap
        if snap is None or snap.owner != owner:
            raise NotFound(f"no snapshot {snapshot_id!r}")
        return snap

    async def restore(self, owner: str, id: str, snapshot_id: str) -> None:
        """Replace sandbox ``id``'s workspace with a snapshot's."""
        snap = self.get_snapshot(owner, snapshot_id)
        sandbox = self._container(owner, id)
        async with self.events.around(self._event("restore", sandbox, snapshot_id=snap.id)):
            await sandbox._restore_from(self.root / "_snapshots" / snap.id / "workspace")

    async def fork(self, owner: str, id: str, *, new_id: str | None = None) -> ContainerSandbox:
        """A new container sandbox whose workspace starts as a copy of ``id``'s. The child is
        an ``open`` like any other (it takes a live-sandbox slot, it counts against the cap)."""
        source = self._container(owner, id)
        sid = new_id or f"sb_{secrets.token_hex(8)}"
        if not isinstance(sid, str) or not _ID.match(sid):
            raise InvalidRequest("sandbox id must be 1-64 letters, digits, '-' or '_'")
        if key_exists(self._live, (owner, sid)):
            from myriad.errors import Conflict

            raise Conflict(f"sandbox {sid} already exists")
        async with self.events.around(self._event("fork", source)) as event:
            snap = await self._snapshot(owner, source)
            try:
                sandbox = await self._create((owner, sid), set(), "container", source.limits, None, source.network,
                                             from_dir=self.root / "_snapshots" / snap.id / "workspace",
                                             source_id=source.id)
            finally:
                self._snapshots.pop(snap.id, None)
                await asyncio.to_thread(shutil.rmtree, self.root / "_snapshots" / snap.id, True)
            event.result = sandbox
        assert isinstance(sandbox, ContainerSandbox)
        return sandbox

    async def delete_snapshot(self, owner: str, snapshot_id: str) -> None:
        snap = self.get_snapshot(owner, snapshot_id)
        event = SandboxEvent("delete_snapshot", owner=owner, sandbox_id=snap.sandbox_id, tier="container",
                             snapshot_id=snap.id)
        async with self.events.around(event):
            self._snapshots.pop(snap.id, None)
            await asyncio.to_thread(shutil.rmtree, self.root / "_snapshots" / snap.id, True)

    # -- expiry -------------------------------------------------------------------------

    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap_forever())

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self._reap_interval)
            with contextlib.suppress(Exception):
                await self.reap()

    async def reap(self, now: float | None = None) -> builtins.list[str]:
        """Delete container sandboxes past their idle timeout or lifetime, and close warm
        isolates unused for ``isolate_idle_timeout``; return their ids."""
        now = time.time() if now is None else now
        gone = []
        idle = float(getattr(self.settings, "isolate_idle_timeout", 0) or 0)
        if idle > 0:
            cutoff = time.monotonic() - idle
            stale = []
            for key, used in self._isolates.items():  # least recently used first
                if used > cutoff:
                    break
                stale.append(key)
            for key in stale:
                self._forget_isolate(key)
                self._open_locks.pop(key, None)
                sandbox = self._live.pop(key, None)
                if sandbox is not None:
                    await self._closed_by_host(sandbox, "idle")
                    gone.append(key[1])
        for key, sandbox in list(self._live.items()):
            reason = getattr(sandbox, "expiry_reason", lambda _now: None)(now)
            if reason or sandbox.closed:
                self._live.pop(key, None)
                self._open_locks.pop(key, None)
                self._forget_isolate(key)
                await self._closed_by_host(sandbox, "lifetime" if reason and "lifetime" in reason else "idle")
                gone.append(key[1])
            else:
                await self._report_usage(sandbox)
        return gone

    async def _report_usage(self, sandbox: Sandbox) -> None:
        """CPU a container used since it last reported (background processes) as a ``usage`` event."""
        take = getattr(sandbox, "take_cpu_ms", None)
        if take is None:
            return
        cpu_ms = await asyncio.to_thread(take)
        if cpu_ms:
            await self.events.emit(self._event("usage", sandbox, cpu_ms=cpu_ms))

    async def aclose(self) -> None:
        """Close every sandbox and stop the reaper and the tiers."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reaper
        await self._recovered()
        for key, sandbox in list(self._live.items()):
            await self._closed_by_host(sandbox, "shutdown")
        self._live.clear()
        self._isolates.clear()
        self._isolates_of.clear()
        for t in self._tiers.values():
            await t.aclose()

    def available(self) -> dict[str, str | None]:
        """For each tier, ``None`` if usable here or the reason it is not."""
        out: dict[str, str | None] = {}
        for name in self._tier_names:
            try:
                self.tier(name).check()
                out[name] = None
            except (SandboxUnavailable, SandboxError) as e:
                out[name] = e.message
        return out


MAPS_PER_ISOLATE = 24
"""Memory mappings a live V8 isolate holds (~20 measured, with a margin)."""
MAPS_RESERVED = 8192
"""Mappings left for the rest of the process (Python, threads, libraries)."""


def isolate_map_budget(path: str = "/proc/sys/vm/max_map_count") -> int | None:
    """How many live isolates one process can hold before V8 cannot map memory, which
    aborts the whole process (every agent on it), not just the new isolate. None where
    the kernel does not say. Raise ``vm.max_map_count`` to hold more."""
    try:
        limit = int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None
    return max(16, (limit - MAPS_RESERVED) // MAPS_PER_ISOLATE)


def tenant_of(owner: str) -> str:
    """The tenant an owner key belongs to: a tenant name, or the first part of an agent path."""
    return owner.split("/", 1)[0]


def owner_key(owner: Any) -> str:
    """The string sandboxes are keyed by: a tenant name, or an agent's unique path."""
    if isinstance(owner, str):
        return owner
    path = getattr(owner, "path", None)
    if isinstance(path, str):
        return path
    raise InvalidRequest(f"sandbox owner must be a string or have a path, got {type(owner).__name__}")


def key_exists(live: dict[tuple[str, str], Sandbox], key: tuple[str, Any]) -> bool:
    s = live.get(key)
    return s is not None and not s.closed


def _du(path: Path) -> int:
    """Bytes ``path`` occupies on disk (allocated blocks: a sparse file counts its data only)."""
    total = 0
    for p in path.rglob("*"):
        with contextlib.suppress(OSError):
            total += p.lstat().st_blocks * 512
    return total


__all__ = ["Sandboxes", "Snapshot", "TIERS"]
