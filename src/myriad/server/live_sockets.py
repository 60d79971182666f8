"""Open WebSockets answer to their credential for as long as they are open.

A WebSocket is authenticated once, at the handshake; a key revoked (or a token
expired or revoked) afterwards must not keep a socket working. ``LiveSockets``
knows each open socket's presented credential:

- revoking a key through the admin door closes that key's sockets at once;
- a sweep every ``agents.revalidate_every`` seconds re-checks each distinct
  credential (revocations from the CLI or another process, expiry, revoked
  tokens) and closes the sockets of any that no longer authenticates.

Closing uses code 4001 (the handshake's code for a bad credential). The sweep runs
only while sockets are open, and costs one verification per distinct credential.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from myriad.errors import AuthenticationError

log = logging.getLogger("myriad.server")

CLOSE_REVOKED = 4001
Closer = Callable[[int, str], Awaitable[None]]


class LiveSockets:
    def __init__(self, authenticate: Callable[[str | None], Awaitable[Any]], every: float) -> None:
        self._authenticate = authenticate
        self._every = every
        self._open: dict[str | None, dict[int, tuple[str, Closer]]] = {}  # presented -> {id: (key id, close)}
        self._task: asyncio.Task[None] | None = None

    def add(self, presented: str | None, key_id: str, close: Closer) -> int:
        handle = id(close)
        self._open.setdefault(presented, {})[handle] = (key_id, close)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._sweep())
        return handle

    def remove(self, presented: str | None, handle: int) -> None:
        group = self._open.get(presented)
        if group is not None:
            group.pop(handle, None)
            if not group:
                del self._open[presented]

    async def close_key(self, key_id: str, reason: str = "API key revoked") -> int:
        """Close every socket opened with key ``key_id``; how many were closed."""
        closers = [c for group in self._open.values() for k, c in group.values() if k == key_id]
        for close in closers:
            await close(CLOSE_REVOKED, reason)
        return len(closers)

    async def check_now(self) -> None:
        """Re-authenticate each distinct credential; close the sockets of failed ones."""
        for presented in list(self._open):
            try:
                await self._authenticate(presented)
            except AuthenticationError as e:
                for _, close in list(self._open.get(presented, {}).values()):
                    await close(CLOSE_REVOKED, e.message[:120])
            except Exception:  # noqa: BLE001 - a store hiccup must not close sockets or kill the sweep
                log.exception("re-checking a WebSocket credential failed")

    async def _sweep(self) -> None:
        while self._open:
            await asyncio.sleep(self._every)
            await self.check_now()


def live_sockets(app: Any) -> LiveSockets:
    """The app's ``LiveSockets`` (made on first use)."""
    found = getattr(app.state, "myriad_live_sockets", None)
    if found is None:
        services = app.state.services
        identity = getattr(services, "identity", None)

        async def authenticate(presented: str | None) -> Any:
            if identity is None:
                return services.keys.verify(presented)
            return await identity.authenticate(presented)

        found = app.state.myriad_live_sockets = LiveSockets(authenticate, services.settings.agents.revalidate_every)
    return found


__all__ = ["CLOSE_REVOKED", "LiveSockets", "live_sockets"]
