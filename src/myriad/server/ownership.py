"""Per-user authorization at the doors: which objects of a tenant a principal reaches.

A principal without a user (a tenant API key, narrow or not) acts for the whole
tenant: its scopes alone decide. A principal acting for a user (a user's JWT, a
user token minted by an admin key, a delegated token whose subject is a user) is
confined to that user's objects:

- agents: instances named after the user, ``<user>`` or ``<user>~<anything>``
  (sub-agents follow their top-level instance). Stateless, so it holds across
  restarts and cluster nodes, and needs no lookup (a refusal says nothing about
  whether the instance exists).
- sandboxes and snapshots: those the same user created through the doors
  (``Owners`` remembers the creator for as long as the object lives).
- vault entries and usage: the user's own rows (the vault and usage doors force
  ``user``); tenant-wide views (keys, audit, exports, the dashboard) are refused.

Every sandbox door also checks the tier scope on the object itself
(``sandbox:<tier>``), not only at creation: an isolate-only key touches no container.
"""

from __future__ import annotations

from typing import Any

from myriad.agents import AgentRef
from myriad.errors import NotFound, PermissionDenied
from myriad.identity import Principal


def agent_owner_name(ref: AgentRef) -> str:
    """The top-level instance name (sub-agents belong to their root)."""
    while ref.parent is not None:
        ref = ref.parent
    return ref.name


def require_agent(principal: Principal, ref: AgentRef) -> None:
    """``PermissionDenied`` unless ``principal`` may reach agent instance ``ref``."""
    user = principal.user
    if user is None:
        return
    name = agent_owner_name(ref)
    if name == user or name.startswith(user + "~"):
        return
    raise PermissionDenied(f"a token acting for a user reaches only that user's agent instances "
                           f"(named {user!r} or {user + '~...'!r})", details={"user_scope": "agents"})


def require_tenant_wide(principal: Principal, what: str) -> None:
    """``PermissionDenied`` for a principal acting for a user: ``what`` spans every user."""
    if principal.user is not None:
        raise PermissionDenied(f"{what} covers every user of the tenant; a token acting for a user cannot use it")


class Owners:
    """Which user (``None``: the tenant itself) created each sandbox and snapshot.

    Kept in memory beside the live sandboxes themselves; an object with no record
    (opened by an agent, or before a restart) is the tenant's: a user's token does
    not reach it."""

    def __init__(self) -> None:
        self._users: dict[tuple[str, str, str], str | None] = {}

    def record(self, kind: str, tenant: str, id: str, principal: Principal) -> None:
        self._users[(kind, tenant, id)] = principal.user

    def forget(self, kind: str, tenant: str, id: str) -> None:
        self._users.pop((kind, tenant, id), None)

    def reaches(self, kind: str, tenant: str, id: str, principal: Principal) -> bool:
        if principal.user is None:
            return True
        return self._users.get((kind, tenant, id), None) == principal.user and (kind, tenant, id) in self._users

    def require(self, kind: str, tenant: str, id: str, principal: Principal) -> None:
        """Another user's object is as good as unknown (404, like another tenant's)."""
        if not self.reaches(kind, tenant, id, principal):
            raise NotFound(f"no {kind} {id!r}")


def owners(app: Any) -> Owners:
    """The app's ``Owners`` (made on first use)."""
    found = getattr(app.state, "myriad_owners", None)
    if found is None:
        found = app.state.myriad_owners = Owners()
    return found  # type: ignore[no-any-return]


__all__ = ["Owners", "agent_owner_name", "owners", "require_agent", "require_tenant_wide"]
