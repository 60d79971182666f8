"""Authentication at a node's front door, before anything reaches a shard.

The front door authenticates with the identity room the server uses
(``Identity.authenticate`` over a ``KeyStore`` in the cluster's PostgreSQL): the
same keys, tokens, expiry and revocation. On PostgreSQL the key cache is kept
coherent by ``LISTEN``/``NOTIFY``, so a key revoked anywhere (``myriad keys
revoke``) is refused at every door within the notification's delivery; a cache
miss is a query run off the event loop.

What the door refuses is exactly what a shard would refuse: the 401 body is the
server's own (``myriad.server.errors.error_body``, OpenAI's shape under ``/v1/``),
with ``WWW-Authenticate: Bearer``; a WebSocket is accepted and closed with 4001 and
the same message. Only the question "who is this?" is answered here; whether that
principal may use a door, an agent or a model (403s) stays with the shard, which
still authenticates every request itself (a dictionary hit in its own key cache):
no header the door could add is trusted by a shard, so reaching a shard's port
directly gains nothing.

Refusals are remembered too: an API key refused once (unknown, wrong secret, revoked,
expired) is refused again from memory, with the same error, until the key store's
change token moves (any write to ``api_keys`` anywhere, or the listener reconnecting):
a key can only turn valid through such a write. So a client hammering with a revoked
key costs the door a dictionary hit, not a query per request. Tokens (JWTs) are not
remembered (an identity provider's new signing key can make a refused one valid).

Paths the server serves without a credential (``/healthz``, ``/.well-known/...``,
the OAuth endpoints, the dashboard's login page, MCP's discovery documents) and
the MCP door (whose 401 carries its own ``resource_metadata``) are forwarded as
they are. Under ``/v1/`` and ``/agents/`` a request without a valid credential is
refused here even where no route exists (a shard would say 404).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from myriad.errors import AuthenticationError, MyriadError

log = logging.getLogger("myriad.cluster")

_ANONYMOUS = ("/v1/oauth/",)
_REFUSED_MAX = 10_000
"""Refused keys remembered (the memory empties when full)."""
"""Under ``/v1/``, the paths the server answers without a credential."""


def needs_credential(path: str) -> bool:
    """Whether the server authenticates every request on ``path`` (so the door may)."""
    if path.startswith("/agents/"):
        return True
    return path.startswith("/v1/") and not path.startswith(_ANONYMOUS)


class DoorAuth:
    """The identity room, opened on the cluster's database, as the door uses it."""

    def __init__(self, settings: Any, database: str) -> None:
        from myriad.identity import Identity, KeyStore

        self.keys = KeyStore(settings.data_dir, database, pool_size=2,
                             connect_timeout=settings.storage.connect_timeout)
        self.identity = Identity(settings.identity, self.keys, settings.data_dir)
        self._refused: dict[str, tuple[object, AuthenticationError]] = {}

    async def open(self) -> None:
        def opened() -> None:
            self.keys.open()
            self.keys.db.change_token()  # starts the change listener here, not on the event loop

        await asyncio.to_thread(opened)  # a probe of the database: not on the event loop

    def close(self) -> None:
        self.keys.close()

    async def refusal(self, scope: dict[str, Any]) -> AuthenticationError | None:
        """The error a shard would refuse this request or handshake with, or None when
        its credential is valid (or the door cannot tell: then the shard decides). The
        principal goes in ``scope["myriad.principal"]`` (the door's span names its tenant)."""
        from starlette.requests import HTTPConnection

        from myriad.server.auth import presented_key

        presented = presented_key(HTTPConnection(scope))
        token: object = None
        if presented and presented.count(".") != 2:  # an API key, not a JWT
            token = self.keys.db.change_token()  # read first: a write during the lookup voids what it says
            hit = self._refused.get(presented)
            if hit is not None and token is not None and hit[0] == token:
                return hit[1]
        try:
            scope["myriad.principal"] = await self.identity.authenticate(presented)
        except AuthenticationError as e:
            if token is not None and presented:
                if len(self._refused) >= _REFUSED_MAX:
                    self._refused.clear()
                self._refused[presented] = (token, e)
            return e
        except MyriadError as e:  # the key store is unreachable: the shard answers as it would
            log.debug("front door could not authenticate (%s); the shard will", e)
        return None


def refusal_body(path: str, error: MyriadError) -> dict[str, Any]:
    from myriad.server.errors import error_body

    return error_body(path, error)


__all__ = ["DoorAuth", "needs_credential", "refusal_body"]
