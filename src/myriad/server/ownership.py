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

Owners are kept in ``<data_dir>/owners.db`` (SQLite, one indexed lookup per call
of a user's token). Every sandbox door also checks the tier scope on the object
itself (``sandbox:<tier>``), not only at creation: an isolate-only key touches no
container.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from myriad.agents import AgentRef
from myriad.errors import NotFound, PermissionDenied
from myriad.identity import Principal


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

    def __init__(self, path: Path | None) -> None:
        self._db = sqlite3.connect(str(path) if path is not None else ":memory:", check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS owners (tenant TEXT NOT NULL, kind TEXT NOT NULL, "
                         "id TEXT NOT NULL, user TEXT, PRIMARY KEY (tenant, kind, id))")

    def owner(self, kind: str, tenant: str, id: str) -> tuple[bool, str | None]:
        """(recorded?, user)."""
        row = self._db.execute("SELECT user FROM owners WHERE tenant=? AND kind=? AND id=?", (tenant, kind, id)).fetchone()
        return (row is not None, row[0] if row is not None else None)

    def record(self, kind: str, tenant: str, id: str, principal: Principal) -> None:
        """``principal``'s user owns the object (a tenant key: the tenant does)."""
        self._db.execute("INSERT OR REPLACE INTO owners VALUES (?, ?, ?, ?)", (tenant, kind, id, principal.user))

    def claim(self, kind: str, tenant: str, id: str, user: str) -> str | None:
        """Record ``user`` as owner unless someone is already; the owner after."""
        self._db.execute("INSERT OR IGNORE INTO owners VALUES (?, ?, ?, ?)", (tenant, kind, id, user))
        return self.owner(kind, tenant, id)[1]

    def forget(self, kind: str, tenant: str, id: str) -> None:
        self._db.execute("DELETE FROM owners WHERE tenant=? AND kind=? AND id=?", (tenant, kind, id))

    def reaches(self, kind: str, tenant: str, id: str, principal: Principal) -> bool:
        if not _confined(principal):
            return True
        recorded, user = self.owner(kind, tenant, id)
        return recorded and user == principal.user

    def require(self, kind: str, tenant: str, id: str, principal: Principal) -> None:
        """Another user's object is as good as unknown (404, like another tenant's)."""
        if not self.reaches(kind, tenant, id, principal):
            raise NotFound(f"no {kind} {id!r}")

    async def require_agent(self, principal: Principal, ref: AgentRef, storage: Any) -> None:
        """``PermissionDenied`` unless ``principal`` may reach agent instance ``ref``;
        a user's token reaching a new instance first becomes its owner."""
        if not _confined(principal):
            return
        root = _root(ref)
        recorded, user = self.owner("agent", root.tenant, root.path)
        if not recorded:
            if await storage.load_agent(root.path) is None:
                user = self.claim("agent", root.tenant, root.path, principal.user or "")
            else:
                user = None  # made with a tenant key before any user reached it: the tenant's
        if user != principal.user:
            raise PermissionDenied("this agent instance belongs to another user or to the tenant; a token acting "
                                   "for a user reaches only its user's instances (or needs the 'users' scope)",
                                   details={"missing_scope": "users"})


def owners(app: Any) -> Owners:
    """The app's ``Owners`` (opened on first use, in the data directory)."""
    found = getattr(app.state, "myriad_owners", None)
    if found is None:
        settings = app.state.services.settings
        data_dir = getattr(settings, "data_dir", None)
        found = app.state.myriad_owners = Owners(Path(data_dir) / "owners.db" if data_dir else None)
    return found


async def require_agent(request: Any, principal: Principal, ref: AgentRef) -> None:
    """The door check for agent instance ``ref`` (HTTP request or WebSocket)."""
    await owners(request.app).require_agent(principal, ref, request.app.state.services.host.storage)


__all__ = ["Owners", "owners", "require_agent", "require_tenant_wide"]
