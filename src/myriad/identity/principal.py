"""Who is calling: a ``Principal`` and the doors (resources) it may be admitted to."""

from __future__ import annotations

from dataclasses import dataclass, field

from myriad.errors import PermissionDenied
from myriad.identity.capabilities import Scopes

RESOURCE_PREFIX = "urn:myriad:"
DOORS = ("agents", "models", "usage", "admin", "sandboxes", "egress", "vault", "mcp")
"""Myriad's resources; a token's ``aud`` (RFC 8707 resource indicators) names some
of them as ``urn:myriad:<door>``."""


def resource(door: str) -> str:
    """The resource indicator of a door: ``urn:myriad:<door>``."""
    return RESOURCE_PREFIX + door


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, for whom, and with which scopes.

    ``tenant`` always. ``key_id`` is the API key id (``kind="key"``) or the token id.
    ``user`` is the end user acted for (from a user JWT or a delegated token);
    ``actors`` is the delegation chain, nearest actor first (SPIFFE URIs of agents);
    ``audience`` the resources a token is restricted to (empty for API keys: all).
    """

    tenant: str
    key_id: str
    scopes: frozenset[str] = field(default_factory=lambda: frozenset({"*"}))
    kind: str = "key"
    user: str | None = None
    actors: tuple[str, ...] = ()
    audience: tuple[str, ...] = ()

    @property
    def capabilities(self) -> Scopes:
        return Scopes(self.scopes)

    @property
    def chain(self) -> list[str]:
        """The whole principal chain, subject first: ``[tenant key or user, agent, sub-agent, ...]``."""
        head = f"user:{self.user}" if self.user else f"{self.kind}:{self.key_id}"
        return [head, *reversed(self.actors)]

    def require(self, *scopes: str) -> None:
        """``PermissionDenied`` (403) naming the first scope not held."""
        Scopes(self.scopes).require(*scopes)

    def admit(self, door: str) -> None:
        """``PermissionDenied`` unless the token's audience covers ``door`` (API keys have none)."""
        if self.audience and resource(door) not in self.audience:
            raise PermissionDenied(f"this token's audience does not include {resource(door)}",
                                   details={"missing_audience": resource(door)})


__all__ = ["DOORS", "Principal", "resource"]
