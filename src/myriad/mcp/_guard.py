"""An httpx transport that reaches only public addresses (for MCP servers named by
tenants: the gateway must not become a way into Myriad's own network).

Each request's host is resolved here, every address is judged by the sandbox room's
table (``myriad.sandbox.addresses.is_public``, independent of Python's patch level),
and the request is sent to the checked address itself (``Host`` and TLS SNI keep the
name), so a DNS answer that changes between the check and the connect (rebinding)
cannot redirect it. ``allow_private`` is the operator's switch, never a tenant's.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import httpx

from myriad.errors import PermissionDenied
from myriad.sandbox.addresses import is_public


class PublicOnlyTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport | None = None, *, allow_private: bool = False) -> None:
        self._inner = inner or httpx.AsyncHTTPTransport()
        self.allow_private = allow_private

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        try:
            literal = ipaddress.ip_address(host)
            addresses = [str(literal)]
        except ValueError:
            port = request.url.port or (443 if request.url.scheme == "https" else 80)
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as e:
                raise httpx.ConnectError(f"cannot resolve {host}: {e}", request=request) from None
            addresses = list(dict.fromkeys(str(i[4][0]) for i in infos))
        if not addresses:
            raise httpx.ConnectError(f"{host} has no address", request=request)
        if not self.allow_private:
            private = [a for a in addresses if not is_public(a)]
            if private:
                raise PermissionDenied(f"{host} resolves to a non-public address ({private[0]}); MCP servers "
                                       "must be on the public internet unless the operator allows private ones "
                                       "(models.mcp_allow_private)", details={"host": host})
        target = addresses[0]
        if target != host:
            request.extensions = {**request.extensions, "sni_hostname": host}
            request.headers["host"] = request.headers.get("host", host)
            request.url = request.url.copy_with(host=target)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


__all__ = ["PublicOnlyTransport"]
