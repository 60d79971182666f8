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
import json
import re
import secrets
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from myriad.errors import InvalidRequest, NotFound, RateLimited, SandboxError, SandboxUnavailable, TierUnavailable
from myriad.sandbox.container import ContainerSandbox, ContainerTier
from myriad.sandbox.egress import EgressPolicy, EgressProxy
from myriad.sandbox.interface import CAPABILITIES, Limits, Sandbox, Tier
from myriad.sandbox.isolate import IsolateTier

def _isolate_tier(s: "Sandboxes") -> Tier:
    return IsolateTier(s.settings)


def _container_tier(s: "Sandboxes") -> Tier:
    return ContainerTier(s.settings, s.root, s.egress, explicit_root=bool(getattr(s.settings, "root", "")))


TIERS: dict[str, Callable[["Sandboxes"], Tier]] = {"isolate": _isolate_tier, "container": _container_tier}
"""Tier factories by name; add one here to plug in a new tier."""

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
        self.egress = egress or EgressProxy()
        self._tier_names = list(tiers) if tiers is not None else list(TIERS)
        self._tiers: dict[str, Tier] = {}
        self._container_defaults, self._isolate_defaults = _defaults(settings)
        self._live: dict[tuple[str, str], Sandbox] = {}
        self._isolates: OrderedDict[tuple[str, str], float] = OrderedDict()  # key -> last used (monotonic)
        self._snapshots: dict[str, Snapshot] = {}
        self._open_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._reap_interval = reap_interval

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
                      tools: Any, policy: EgressPolicy | None, from_dir: Path | None = None) -> Sandbox:
        t = self.choose(needs, tier)
        t.check()
        owner, sid = key
        if t.name != "isolate":
            cap = int(getattr(self.settings, "max_containers_per_owner", 32))
            held = sum(1 for (o, _), sb in self._live.items() if o == owner and sb.tier == t.name and not sb.closed)
            if held >= cap:
                raise RateLimited(f"{owner} already holds {held} {t.name} sandboxes (limit {cap}); delete one first")
        defaults = self._isolate_defaults if t.name == "isolate" else self._container_defaults
        merged = (limits or Limits()).capped(defaults).merged(defaults)
        options: dict[str, Any] = {"tools": tools, "network": policy}
        if from_dir is not None:
            options["from_dir"] = from_dir
        sandbox = await t.create(id=sid, owner=owner, limits=merged, **options)
        self._live[key] = sandbox
        self._touch(key, sandbox)
        if t.name == "isolate":
            await self._evict_isolates()
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
        self._isolates.pop((owner, id), None)
        self._open_locks.pop((owner, id), None)
        if sandbox is None or sandbox.closed:
            raise NotFound(f"no sandbox {id!r}")
        await sandbox.close()

    def _touch(self, key: tuple[str, str], sandbox: Sandbox) -> None:
        if sandbox.tier == "isolate":
            self._isolates[key] = time.monotonic()
            self._isolates.move_to_end(key)

    async def _evict_isolates(self) -> None:
        cap = int(getattr(self.settings, "warm_isolates", 10_000))
        while len(self._isolates) > cap:
            key, _ = self._isolates.popitem(last=False)
            sandbox = self._live.pop(key, None)
            if sandbox is not None:
                await sandbox.close()

    # -- snapshots ----------------------------------------------------------------------

    def _container(self, owner: str, id: str) -> ContainerSandbox:
        sandbox = self.get(owner, id)
        if not isinstance(sandbox, ContainerSandbox):
            raise TierUnavailable(f"sandbox {id} is a {sandbox.tier} sandbox; snapshots need the container tier")
        return sandbox

    async def snapshot(self, owner: str, id: str) -> Snapshot:
        """Save the workspace of a container sandbox; the snapshot outlives the sandbox."""
        sandbox = self._container(owner, id)
        snap_id = f"snap_{secrets.token_hex(8)}"
        dest = self.root / "_snapshots" / snap_id
        dest.parent.mkdir(parents=True, exist_ok=True)
        await sandbox.snapshot_to(dest / "workspace")
        size = await asyncio.to_thread(_du, dest / "workspace")
        snap = Snapshot(snap_id, owner, id, time.time(), size)
        (dest / "meta.json").write_text(json.dumps({**snap.to_json(), "owner": owner}))
        self._snapshots[snap_id] = snap
        return snap

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
        await self._container(owner, id).restore_from(self.root / "_snapshots" / snap.id / "workspace")

    async def fork(self, owner: str, id: str, *, new_id: str | None = None) -> ContainerSandbox:
        """A new container sandbox whose workspace starts as a copy of ``id``'s."""
        source = self._container(owner, id)
        snap = await self.snapshot(owner, id)
        try:
            sid = new_id or f"sb_{secrets.token_hex(8)}"
            if not _ID.match(sid):
                raise InvalidRequest("sandbox id must be 1-64 letters, digits, '-' or '_'")
            sandbox = await self._create((owner, sid), set(), "container", source.limits, None, source.network,
                                         from_dir=self.root / "_snapshots" / snap.id / "workspace")
        finally:
            await self.delete_snapshot(owner, snap.id)
        assert isinstance(sandbox, ContainerSandbox)
        return sandbox

    async def delete_snapshot(self, owner: str, snapshot_id: str) -> None:
        snap = self.get_snapshot(owner, snapshot_id)
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
                self._isolates.pop(key, None)
                self._open_locks.pop(key, None)
                sandbox = self._live.pop(key, None)
                if sandbox is not None:
                    await sandbox.close()
                    gone.append(key[1])
        for key, sandbox in list(self._live.items()):
            reason = getattr(sandbox, "expiry_reason", lambda _now: None)(now)
            if reason or sandbox.closed:
                self._live.pop(key, None)
                self._open_locks.pop(key, None)
                await sandbox.close()
                gone.append(key[1])
        return gone

    async def aclose(self) -> None:
        """Close every sandbox and stop the reaper and the tiers."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reaper
        for key, sandbox in list(self._live.items()):
            with contextlib.suppress(Exception):
                await sandbox.close()
        self._live.clear()
        self._isolates.clear()
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


def owner_key(owner: Any) -> str:
    """The string sandboxes are keyed by: a tenant name, or an agent's unique path."""
    if isinstance(owner, str):
        return owner
    path = getattr(owner, "path", None)
    if isinstance(path, str):
        return path
    raise InvalidRequest(f"sandbox owner must be a string or have a path, got {type(owner).__name__}")


def key_exists(live: dict[tuple[str, str], Sandbox], key: tuple[str, Any]) -> bool:
    s = live.get(key)  # type: ignore[arg-type]
    return s is not None and not s.closed


def _du(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file() and not p.is_symlink():
                total += p.lstat().st_size
    return total


__all__ = ["Sandboxes", "Snapshot", "TIERS"]
