"""The outbound path: an agent's request to the outside world, authorised, given the
user's credential for that host, and signed.

``OutboundAuthorizer.prepare`` is the single place a vault secret leaves the vault:

1. the principal (a delegated token: user + agent chain) must be admitted to
   ``urn:myriad:egress`` and hold ``egress:<host>``;
2. any ``Signature*`` headers the caller set are dropped (sandboxed code cannot forge
   Myriad's signature);
3. the user's credentials whose domains match the host are injected, each needing
   ``vault:<provider>``;
4. the request is signed (RFC 9421, Web Bot Auth) and the act is audited.

Two adapters use it: ``SignedTransport`` wraps any ``httpx`` transport for the
agent's own tool layer, and ``egress_hook`` fits the sandbox egress proxy's hook
(an async callable over a request with ``method``/``host``/``port``/``scheme``/
``path``/``headers``).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

import httpx

from myriad.errors import InvalidRequest, MyriadError, PermissionDenied
from myriad.identity.audit import AuditLog
from myriad.identity.capabilities import sandbox_scopes
from myriad.identity.httpsig import RequestSigner
from myriad.identity.principal import Principal
from myriad.identity.vault import CredentialVault

_STRIP = ("signature", "signature-input", "signature-agent")
MAX_BINDINGS = 100_000


class OutboundAuthorizer:
    """Checks, credentials and signs outbound agent requests."""

    def __init__(self, vault: CredentialVault, signer: RequestSigner, audit: AuditLog, *,
                 run: Callable[..., Awaitable[Any]] | None = None) -> None:
        self.vault, self.signer, self.audit = vault, signer, audit
        self._bound: dict[tuple[str, str], Principal] = {}
        self._run = run or _inline
        """How the async adapters call ``prepare`` and the audit log (database queries): in a
        worker thread when the identity database is PostgreSQL (``Identity`` passes it)."""

    async def prepare_async(self, principal: Principal, method: str, url: str,
                            headers: dict[str, str]) -> dict[str, str]:
        """``prepare`` where its queries belong (the vault lookup and the audit row)."""
        result: dict[str, str] = await self._run(self.prepare, principal, method, url, headers)
        return result

    def prepare(self, principal: Principal, method: str, url: str, headers: dict[str, str]) -> dict[str, str]:
        """Return the headers to send (lowercase names) or raise ``PermissionDenied``."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or not host:
            raise InvalidRequest("outbound URL must be absolute http(s)")
        target = f"{method.upper()} {parts.scheme}://{host}{':' + str(parts.port) if parts.port else ''}{parts.path or '/'}"
        try:
            principal.admit("egress")
            principal.require(f"egress:{host}")
            out = {k.lower(): v for k, v in headers.items() if k.lower() not in _STRIP}
            providers = []
            if principal.user is not None:
                for inj in self.vault.injections_for(principal.tenant, principal.user, host):
                    principal.require(f"vault:{inj.provider}")
                    out[inj.header] = inj.value
                    providers.append(inj.provider)
            self.signer.sign(method, url, out)
        except PermissionDenied as e:
            self.audit.record(principal, "egress", target, "denied", reason=e.message)
            raise
        self.audit.record(principal, "egress", target, "allowed", credentials=providers)
        return out

    def redact(self, text: str) -> str:
        return self.vault.redactor.redact(text)

    def client(self, principal: Principal, *, transport: httpx.AsyncBaseTransport | None = None,
               **kwargs: Any) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` whose every request goes through ``prepare`` for ``principal``."""
        return httpx.AsyncClient(transport=SignedTransport(self, principal, transport or httpx.AsyncHTTPTransport()),
                                 **kwargs)

    def egress_hook(self, principal: Principal) -> Callable[[Any], Awaitable[None]]:
        """A sandbox egress-proxy hook acting for ``principal``. Plain HTTP requests get
        credentials and a signature; HTTPS tunnels are only scope-checked (the proxy
        cannot see inside them without terminating TLS)."""

        async def hook(req: Any) -> None:
            default = 443 if req.scheme == "https" else 80
            port = "" if req.port == default else f":{req.port}"
            url = f"{'https' if req.scheme == 'https' else 'http'}://{req.host}{port}{req.path or '/'}"
            if req.scheme != "http":
                principal.admit("egress")
                principal.require(f"egress:{req.host.lower()}")
                await self._run(lambda: self.audit.record(principal, "egress", f"CONNECT {req.host}{port}", "allowed",
                                                          credentials=[]))
                return
            headers = {k: v for k, v in req.headers}
            prepared = await self.prepare_async(principal, req.method, url, headers)
            req.headers[:] = [(k, v) for k, v in prepared.items()]

        return hook


    # -- the sandbox egress proxy ------------------------------------------------------
    def bind_sandbox(self, owner: Any, sandbox_id: str, principal: Principal) -> None:
        """Requests leaving sandbox ``(owner, sandbox_id)`` act for ``principal`` from now on."""
        self._bound[(str(owner), sandbox_id)] = principal
        while len(self._bound) > MAX_BINDINGS:  # closed sandboxes that were never unbound
            self._bound.pop(next(iter(self._bound)))

    def admit_sandbox(self, principal: Principal, box: Any) -> None:
        """Check that ``principal`` may have ``box`` (``sandbox:<tier>``, ``egress:<host>`` for
        every host its network policy allows), then bind its egress to the principal.
        Call right after opening (the sandbox API and ``AgentIdentity.sandbox`` do); on
        ``PermissionDenied`` the caller closes the box."""
        network = getattr(box, "network", None)
        allow = list(getattr(network, "allow", None) or []) + list(getattr(network, "allow_private", None) or [])
        try:
            principal.require(*sandbox_scopes(box.tier, allow))
        except PermissionDenied as e:
            self.audit.record(principal, "sandbox.open", f"{box.tier}:{box.id}", "denied", reason=e.message)
            raise
        self.bind_sandbox(box.owner, box.id, principal)
        self.audit.record(principal, "sandbox.open", f"{box.tier}:{box.id}", network=allow)

    def unbind_sandbox(self, owner: Any, sandbox_id: str) -> None:
        self._bound.pop((str(owner), sandbox_id), None)

    async def proxy_hook(self, req: Any) -> None:
        """The hook to install once on the host's egress proxy (``EgressProxy.add_hook``).
        A sandbox bound to a principal gets its requests scope-checked, credentialed and
        signed; an unbound sandbox acts for nobody: no credential, no signature, and any
        signature headers it tried to send are removed."""
        principal = self._bound.get((str(req.owner), req.sandbox_id))
        if principal is not None:
            await self.egress_hook(principal)(req)
        elif req.scheme == "http":
            req.headers[:] = [(k, v) for k, v in req.headers if k.lower() not in _STRIP]


async def _inline(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


class SignedTransport(httpx.AsyncBaseTransport):
    """Wraps a transport: each request is authorised, credentialed and signed for one principal.
    Errors raised on the way out have known secrets scrubbed."""

    def __init__(self, authorizer: OutboundAuthorizer, principal: Principal, inner: httpx.AsyncBaseTransport) -> None:
        self._auth, self._principal, self._inner = authorizer, principal, inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        headers = await self._auth.prepare_async(self._principal, request.method, str(request.url),
                                                 {k: v for k, v in request.headers.items() if k.lower() != "host"})
        for name in _STRIP:
            request.headers.pop(name, None)
        for k, v in headers.items():
            request.headers[k] = v
        try:
            return await self._inner.handle_async_request(request)
        except httpx.HTTPError as e:
            raise type(e)(self._auth.redact(str(e)), request=request) if isinstance(e, httpx.RequestError) else e

    async def aclose(self) -> None:
        await self._inner.aclose()


def redacted_error(error: MyriadError, redact: Callable[[str], str]) -> MyriadError:
    """The same error with known secrets scrubbed from its message."""
    error.message = redact(error.message)
    error.args = (error.message,)
    return error


__all__ = ["OutboundAuthorizer", "SignedTransport", "redacted_error"]
