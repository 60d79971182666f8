"""Authenticating HTTP requests and WebSocket handshakes: tenant API keys, users'
JWTs and delegated tokens (``myriad.identity.Identity.authenticate``), then the door
check: a token must be addressed to the door (RFC 8707 audience ``urn:myriad:<door>``)
and the credential must hold some scope of the door's family; handlers check the
precise scope (``agents:<class>``, ``models:<name>``)."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from myriad.identity import Principal

# (path prefix, door, scope family); paths not listed (health, well-known, token endpoint) have no door.
_DOORS = (
    ("/v1/chat/", "models", "models"), ("/v1/embeddings", "models", "models"), ("/v1/models", "models", "models"),
    ("/v1/agents", "agents", "agents"), ("/agents/", "agents", "agents"), ("/v1/usage", "usage", "usage"),
    ("/v1/admin", "admin", "admin"), ("/v1/sandboxes", "sandboxes", "sandbox"), ("/v1/snapshots", "sandboxes", "sandbox"),
    ("/v1/vault", "vault", "vault"), ("/mcp/", "mcp", "mcp"), ("/v1/mcp/", "admin", "admin"),
)


def presented_key(conn: HTTPConnection) -> str | None:
    """The key from ``Authorization: Bearer``, else the ``token`` query parameter
    (browsers cannot set headers on a WebSocket)."""
    header = conn.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip() or None
    return conn.query_params.get("token")


def door_of(path: str) -> tuple[str, str] | None:
    """The door (resource) a request path belongs to and the scope family it needs."""
    for prefix, door, family in _DOORS:
        if path.startswith(prefix):
            return door, family
    return None


async def require_principal(conn: HTTPConnection) -> Principal:
    """The caller's principal; raises ``AuthenticationError`` (401) when it cannot be
    established and ``PermissionDenied`` (403) when it may not use this door."""
    cached: Principal | None = conn.scope.get("myriad.principal")
    if cached is not None:
        return cached
    services = conn.app.state.services
    identity = getattr(services, "identity", None)
    presented = presented_key(conn)
    principal: Principal
    if identity is None:
        principal = services.keys.verify(presented)
    else:
        principal = await identity.authenticate(presented)
    found = door_of(conn.url.path)
    if found is not None:
        door, family = found
        try:
            principal.admit(door)
            if not principal.capabilities.has_family(family):
                principal.require(family)
        except Exception as e:
            if identity is not None:  # audit writes are queries: off the event loop on PostgreSQL
                why = str(e)
                await identity.off_loop(lambda: identity.audit.record(principal, "door." + door, conn.url.path,
                                                                      "denied", reason=why))
            raise
        if identity is not None and principal.kind != "key":
            await identity.off_loop(identity.audit.record, principal, "door." + door, conn.url.path)
    conn.scope["myriad.principal"] = principal
    return principal


__all__ = ["door_of", "presented_key", "require_principal"]
