"""Per-user authorization at the doors: which objects of a tenant a principal reaches.

A principal without a user (a tenant API key, narrow or not) acts for the whole
tenant: its scopes alone decide. A principal acting for a user (a user's JWT, a
user token minted by an admin key, a delegated token whose subject is a user) is
confined to that user's objects, unless it holds the ``users`` scope ("acts
across the tenant's users"; ``*`` includes it, so mint user tokens narrower):

- agents: an instance belongs to the user whose token first reached it (a
  top-level instance; sub-agents follow their root). One that already existed
  with no owner (made with a tenant key) is the tenant's: users do not reach it.
- sandboxes and snapshots: those the same user created through the doors.
- vault entries and usage: the user's own rows (the vault and usage doors force
  ``user``); tenant-wide views (keys, audit, exports, the dashboard) are refused.

Owners are rows of ``myriad.identity.OwnerStore``. Sandboxes and snapshots live on
one host, so their owners are in that host's ``<data_dir>/owners.db`` (SQLite, one
indexed lookup per call of a user's token). Agents can be activated on any machine
sharing the database: with ``--database`` their owners are in PostgreSQL
(``myriad_identity.owners``), queried in a worker thread (a database that is down
answers 503 ``database_unavailable``, never stalls the event loop), and an owner once
found is remembered by this process (an agent's owner never changes: rows are only
ever added). Without a database, agents' owners are in ``owners.db`` too. Every
sandbox door also checks the tier scope on the object itself (``sandbox:<tier>``),
not only at creation: an isolate-only key touches no container.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from myriad.agents import AgentRef
from myriad.errors import NotFound, PermissionDenied
from myriad.identity import OwnerStore, Principal


def _root(ref: AgentRef) -> AgentRef:
    while ref.parent is not None:
        ref = ref.parent
    return ref


def _confined(principal: Principal) -> bool:
    return principal.user is not None and not principal.capabilities.covers("users")


def require_tenant_wide(principal: Principal, what: str) -> None:
    """``PermissionDenied`` for a principal acting for one user: ``what`` spans every user."""
    if principal.user is not None:
        raise PermissionDenied(f"{what} covers every user of the tenant; a token acting for a user cannot use it")


class Owners:
    """Which user (``None``: the tenant itself) owns each agent instance, sandbox
    and snapshot a user's token reached or created."""

    _REMEMBER = 100_000
    """Agent owners remembered per process (the memory empties when full)."""

    def __init__(self, local: OwnerStore, agents: OwnerStore | None = None, *, blocking: bool = False) -> None:
        self.local = local
        """This host's objects (sandboxes, snapshots)."""
        self.agents = agents if agents is not None else local
        """Agent instances (shared by every machine on PostgreSQL)."""
        self.blocking = blocking
        """Whether ``agents`` is remote: its queries go to a thread."""
        self._known: dict[tuple[str, str], str | None] = {}

    def owner(self, kind: str, tenant: str, id: str) -> tuple[bool, str | None]:
        """(recorded?, user) of a host object (a sandbox or a snapshot)."""
        return self.local.owner(kind, tenant, id)

    def record(self, kind: str, tenant: str, id: str, principal: Principal) -> None:
        """``principal``'s user owns the host object (a tenant key: the tenant does)."""
        self.local.record(kind, tenant, id, principal.user)

    def forget(self, kind: str, tenant: str, id: str) -> None:
        self.local.forget(kind, tenant, id)

    def reaches(self, kind: str, tenant: str, id: str, principal: Principal) -> bool:
        if not _confined(principal):
            return True
        recorded, user = self.owner(kind, tenant, id)
        return recorded and user == principal.user

    def require(self, kind: str, tenant: str, id: str, principal: Principal) -> None:
        """Another user's object is as good as unknown (404, like another tenant's)."""
        if not self.reaches(kind, tenant, id, principal):
            raise NotFound(f"no {kind} {id!r}")

    async def _agents(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args) if self.blocking else fn(*args)

    async def agent_owner(self, tenant: str, path: str) -> tuple[bool, str | None]:
        """(recorded?, user) of the agent instance at ``path`` (its root)."""
        key = (tenant, path)
        if key in self._known:
            return True, self._known[key]
        recorded, user = await self._agents(self.agents.owner, "agent", tenant, path)
        if recorded:
            self._remember(key, user)
        return recorded, user

    def _remember(self, key: tuple[str, str], user: str | None) -> None:
        if len(self._known) >= self._REMEMBER:
            self._known.clear()
        self._known[key] = user

    async def require_agent(self, principal: Principal, ref: AgentRef, storage: Any) -> None:
        """``PermissionDenied`` unless ``principal`` may reach agent instance ``ref``;
        a user's token reaching a new instance first becomes its owner."""
        if not _confined(principal):
            return
        root = _root(ref)
        recorded, user = await self.agent_owner(root.tenant, root.path)
        if not recorded:
            if await storage.load_agent(root.path) is None:
                user = await self._agents(self.agents.claim, "agent", root.tenant, root.path, principal.user or "")
                self._remember((root.tenant, root.path), user)
            else:
                user = None  # made with a tenant key before any user reached it: the tenant's
        if user != principal.user:
            raise PermissionDenied("this agent instance belongs to another user or to the tenant; a token acting "
                                   "for a user reaches only its user's instances (or needs the 'users' scope)",
                                   details={"missing_scope": "users"})

    def close(self) -> None:
        self.local.close()


def owners(app: Any) -> Owners:
    """The app's ``Owners`` (opened on first use, in the data directory)."""
    found = getattr(app.state, "myriad_owners", None)
    if found is None:
        services = app.state.services
        identity = getattr(services, "identity", None)
        data_dir = getattr(services.settings, "data_dir", None)
        if identity is not None and identity.blocking:  # agents in the shared database, host objects here
            local = OwnerStore.local(Path(data_dir) / "owners.db" if data_dir else None)
            found = Owners(local, identity.owners, blocking=True)
        elif identity is not None:
            found = Owners(identity.owners)
        else:
            found = Owners(OwnerStore.local(Path(data_dir) / "owners.db" if data_dir else None))
        app.state.myriad_owners = found
    return found


async def require_agent(request: Any, principal: Principal, ref: AgentRef) -> None:
    """The door check for agent instance ``ref`` (HTTP request or WebSocket)."""
    await owners(request.app).require_agent(principal, ref, request.app.state.services.host.storage)


__all__ = ["Owners", "owners", "require_agent", "require_tenant_wide"]
