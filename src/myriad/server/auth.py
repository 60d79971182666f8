"""Authenticating HTTP requests and WebSocket handshakes with tenant API keys."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from myriad.identity import Principal


def presented_key(conn: HTTPConnection) -> str | None:
    """The key from ``Authorization: Bearer``, else the ``token`` query parameter
    (browsers cannot set headers on a WebSocket)."""
    header = conn.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip() or None
    return conn.query_params.get("token")


async def require_principal(conn: HTTPConnection) -> Principal:
    """The caller's principal; raises ``AuthenticationError`` (401) otherwise."""
    cached = conn.scope.get("myriad.principal")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    principal = conn.app.state.services.keys.verify(presented_key(conn))
    conn.scope["myriad.principal"] = principal
    return principal


__all__ = ["presented_key", "require_principal"]
