"""``Identity``: the room's one long-lived object, built from settings.

It authenticates whatever a caller presents (a tenant API key, a user's JWT from the
configured identity provider, or a delegated token Myriad minted), mints agent
workload tokens, performs token exchange, and owns the vault, the audit log, the
signing key rings and the outbound path. Everything opens lazily on first use.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, TypeVar

import httpx

from myriad.errors import AuthenticationError, InvalidRequest, MyriadError
from myriad.identity import jose
from myriad.identity._box import SecretBox, secret_key
from myriad.identity.audit import AuditLog
from myriad.identity.authorization import AuthorizationServer
from myriad.identity.httpsig import RequestSigner
from myriad.identity.keyring import KeyRing
from myriad.identity.keys import KeyStore
from myriad.identity.mcp_servers import McpServerRegistry
from myriad.identity.outbound import OutboundAuthorizer
from myriad.identity.owners import OwnerStore
from myriad.identity.principal import Principal
from myriad.identity.tokens import (
    GRANT_TOKEN_EXCHANGE,
    TOKEN_TYPE_ACCESS,
    TOKEN_TYPE_JWT,
    TYP_DELEGATED,
    TokenService,
    spiffe_id,
)
from myriad.identity.users import JWKSCache, UserVerifier
from myriad.identity.vault import CredentialVault

T = TypeVar("T")

class Identity:
    """Principals, tokens, the vault and signed outbound requests for one server."""

    def __init__(self, settings: Any, keys: KeyStore, data_dir: Path, *,
                 clock: Callable[[], float] = time.time, http: httpx.AsyncClient | None = None) -> None:
        self.settings, self.keys, self.data_dir = settings, keys, Path(data_dir)
        self._clock, self._http = clock, http
        self._tenants: set[str] = set()

    # -- lazily built parts ------------------------------------------------------
    @cached_property
    def _box(self) -> SecretBox:
        return SecretBox(secret_key(self.settings.secret_key, self.data_dir))

    @cached_property
    def tokens(self) -> TokenService:
        s = self.settings
        ring = KeyRing(self.keys.db, self._box, purpose="jwt", rotation=s.key_rotation,
                       max_ttl=max(s.agent_token_ttl, s.delegated_token_ttl) + 60, clock=self._clock)
        return TokenService(ring, issuer=s.issuer, trust_domain=s.trust_domain, agent_ttl=s.agent_token_ttl,
                            delegated_ttl=s.delegated_token_ttl, clock=self._clock, db=self.keys.db)

    @cached_property
    def vault(self) -> CredentialVault:
        return CredentialVault(self.keys.db, self._box)

    @cached_property
    def mcp_servers(self) -> McpServerRegistry:
        """The MCP servers each tenant registered for the gateway's ``type: "mcp"`` tools."""
        return McpServerRegistry(self.keys.db, self._box)

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog(self.keys.db, redact=self.vault.redactor.redact)

    @cached_property
    def signer(self) -> RequestSigner:
        ring = KeyRing(self.keys.db, self._box, purpose="httpsig", rotation=self.settings.key_rotation,
                       max_ttl=3600, clock=self._clock)
        return RequestSigner(ring, self.settings.signature_agent or self.settings.issuer, clock=self._clock,
                             legacy_agent=self.settings.signature_agent_legacy)

    @cached_property
    def authorization(self) -> AuthorizationServer:
        """Myriad as an OAuth 2.1 authorization server (MCP clients: registration, codes with PKCE)."""
        mac_key = hashlib.sha256(b"myriad-oauth-v1" + secret_key(self.settings.secret_key, self.data_dir)).digest()

        def key_valid(p: Principal) -> bool:
            try:
                info = self.keys.get_key(p.key_id, p.tenant)
            except MyriadError:
                return False
            return info.revoked is None and (info.expires is None or info.expires > self._clock())

        return AuthorizationServer(self.tokens, mac_key, key_valid, clock=self._clock, db=self.keys.db)

    async def grant(self, form: dict[str, Any]) -> dict[str, Any]:
        """The OAuth token endpoint's ``authorization_code`` and ``refresh_token`` grants
        (``AuthorizationServer.grant``: it records the spent code, a database write)."""
        return await self._off_loop(self.authorization.grant, form)

    @cached_property
    def owners(self) -> OwnerStore:
        """Who owns each agent instance: shared by every machine on PostgreSQL, else the
        per-host ``<data_dir>/owners.db`` (``myriad.identity.owners``)."""
        if self.keys.database is None:
            return OwnerStore.local(self.data_dir / "owners.db")
        return OwnerStore(self.keys.db)

    @property
    def blocking(self) -> bool:
        """Whether the identity database is remote (PostgreSQL): its queries belong off the event loop."""
        return self.keys.database is not None

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, a query of the identity database, where it belongs (``_off_loop``)."""
        return await self._off_loop(fn, *args)

    @cached_property
    def outbound(self) -> OutboundAuthorizer:
        return OutboundAuthorizer(self.vault, self.signer, self.audit, run=self._off_loop)

    @cached_property
    def users(self) -> UserVerifier | None:
        s = self.settings
        if not s.user_issuer or not s.user_jwks_url:
            return None
        return UserVerifier(s.user_issuer, JWKSCache(s.user_jwks_url, client=self._http), audience=s.user_audience,
                            tenant_claim=s.user_tenant_claim, default_tenant=s.user_default_tenant,
                            default_scopes=s.user_scopes)

    # -- authentication ------------------------------------------------------------
    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, a query of the identity database: inline on SQLite (a local read,
        quicker than a thread hop), in a thread on PostgreSQL (a database that is down can
        hold a query up to ``storage.connect_timeout``, which must not stop the event loop)."""
        if self.keys.database is None:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    async def authenticate(self, presented: str | None) -> Principal:
        """The principal behind an API key or a token; ``AuthenticationError`` (401) otherwise."""
        if not presented or not presented.count(".") == 2:
            hit = self.keys.cached(presented)
            return hit if hit is not None else await self._off_loop(self.keys.verify, presented)
        principal, _ = await self._verify_token(jose.parse(presented))
        return principal

    async def _verify_token(self, token: jose.Unverified) -> tuple[Principal, dict[str, Any]]:
        if token.claims.get("iss") == self.settings.issuer:
            principal = await self._off_loop(self.tokens.principal, token)  # checks the revocation list
            claims = token.claims
        elif self.users is not None and self.users.accepts(token):
            principal, claims = await self.users.verify(token)
        else:
            raise AuthenticationError("token issuer is not trusted")
        if principal.tenant not in self._tenants:
            if not await self._off_loop(self.keys.tenant_exists, principal.tenant):
                raise AuthenticationError("token names a tenant that does not exist")
            self._tenants.add(principal.tenant)  # tenants are never deleted
        return principal, claims

    # -- agents ----------------------------------------------------------------------
    def for_agent(self, tenant: str, agent_path: str) -> "AgentIdentity":
        """The identity of the agent instance at ``agent_path`` (``class/name[/sub/class/name]``)."""
        return AgentIdentity(self, tenant, agent_path)

    def for_ref(self, ref: Any) -> "AgentIdentity":
        """The identity of an agent by its ``AgentRef`` (whose ``path`` is ``tenant/class/name...``)."""
        prefix = ref.tenant + "/"
        if not ref.path.startswith(prefix):
            raise ValueError(f"agent path {ref.path!r} does not start with its tenant")
        return AgentIdentity(self, ref.tenant, ref.path[len(prefix):])

    # -- token exchange (RFC 8693) -------------------------------------------------------
    async def exchange(self, form: Mapping[str, Any]) -> dict[str, Any]:
        """Handle a token-endpoint request; returns the RFC 8693 response body."""
        def one(name: str, required: bool = False) -> str | None:
            value = form.get(name)
            if isinstance(value, list):
                if len(value) != 1:
                    raise InvalidRequest(f"parameter {name!r} must appear once", details={"param": name})
                value = value[0]
            if required and not value:
                raise InvalidRequest(f"parameter {name!r} is required", details={"param": name})
            return value if value is None or isinstance(value, str) else str(value)

        if one("grant_type", True) != GRANT_TOKEN_EXCHANGE:
            raise InvalidRequest(f"grant_type must be {GRANT_TOKEN_EXCHANGE}", details={"param": "grant_type", "oauth": "unsupported_grant_type"})
        for name in ("subject_token_type", "actor_token_type"):
            if one(name) not in (None, TOKEN_TYPE_JWT, TOKEN_TYPE_ACCESS):
                raise InvalidRequest(f"{name} must be {TOKEN_TYPE_JWT} or {TOKEN_TYPE_ACCESS}", details={"param": name})
        subject_raw, actor_raw = one("subject_token", True), one("actor_token", True)
        raw_resources = form.get("resource") or form.get("audience") or []
        resources = [raw_resources] if isinstance(raw_resources, str) else raw_resources
        if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
            raise InvalidRequest("resource must be a URI or a list of URIs", details={"param": "resource"})
        ttl_raw = one("requested_lifetime")
        try:
            ttl = float(ttl_raw) if ttl_raw else None
            if ttl is not None and not 0 < ttl < 1e9:
                raise ValueError(ttl_raw)
        except ValueError:
            raise InvalidRequest("requested_lifetime must be a positive number of seconds", details={"param": "requested_lifetime"}) from None
        subject_token = jose.parse(subject_raw or "")
        subject, claims = await self._verify_token(subject_token)
        actor_token = jose.parse(actor_raw or "")
        principal_for_audit = Principal(subject.tenant, subject.key_id, subject.scopes, kind=subject.kind,
                                        user=subject.user, actors=subject.actors)
        try:
            ours = claims.get("typ") == TYP_DELEGATED and claims.get("iss") == self.settings.issuer
            ancestors = [*(claims.get("anc") or []), claims.get("jti")] if ours else None
            # the revocation list, the signing keys and the audit log are database rows: off the loop
            token, new = await self._off_loop(lambda: self.tokens.exchange(
                subject, float(claims["exp"]), claims.get("act") if ours else None,
                actor_token, scope=one("scope"), resources=resources, may_act=claims.get("may_act"), requested_ttl=ttl,
                ancestors=[a for a in ancestors or [] if isinstance(a, str)]))
        except Exception as e:
            why = str(getattr(e, "message", type(e).__name__))
            await self._off_loop(lambda: self.audit.record(
                principal_for_audit, "token.exchange", ",".join(map(str, resources))[:200], "denied", reason=why))
            raise
        chain = Principal(subject.tenant, str(new.get("jti", "")), subject.scopes, kind="token", user=subject.user,
                          actors=_actors(new["act"]))
        await self._off_loop(lambda: self.audit.record(chain, "token.exchange", ",".join(new["aud"]), "allowed",
                                                       scope=new["scope"]))
        return {"access_token": token, "issued_token_type": TOKEN_TYPE_ACCESS, "token_type": "Bearer",
                "expires_in": max(0, int(new["exp"] - self._clock())), "scope": new["scope"]}

    def revoke(self, raw: str | None) -> None:
        """RFC 7009: revoke a token Myriad minted (anything else is quietly ignored)."""
        if not raw or raw.count(".") != 2:
            return
        try:
            token = jose.parse(raw)
        except AuthenticationError:
            return
        if self.tokens.revoke(token):
            c = token.claims
            who = Principal(str(c.get("tenant", "")), str(c.get("jti", "")), kind="token",
                            user=c.get("sub") if isinstance(c.get("sub"), str) else None,
                            actors=_actors(c.get("act")))
            self.audit.record(who, "token.revoke", str(c.get("jti", "")))

    # -- published keys -------------------------------------------------------------
    def jwks(self) -> dict[str, Any]:
        """Public keys of the tokens Myriad mints (current and not yet expired)."""
        return {"keys": self.tokens.ring.published()}


_TOOL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


def _actors(act: Any) -> tuple[str, ...]:
    from myriad.identity.tokens import act_chain

    return act_chain(act)


@dataclass
class AgentIdentity:
    """One agent instance's identity: its SPIFFE URI, its workload tokens, and
    delegated access on a user's behalf."""

    identity: Identity
    tenant: str
    agent_path: str

    @property
    def spiffe_id(self) -> str:
        return spiffe_id(self.identity.settings.trust_domain, self.tenant, self.agent_path)

    def tool(self, name: str) -> "AgentIdentity":
        """The identity of one of this agent's tools (``.../agent/{class}/{name}/tool/{tool}``):
        a tool that exchanges the agent's delegated token adds a nested ``act`` hop, so the
        audit log names the tool too, and its scope can be narrowed to what the tool needs."""
        if not isinstance(name, str) or not _TOOL_RE.match(name):
            raise InvalidRequest(f"invalid tool name {str(name)[:60]!r}")
        return AgentIdentity(self.identity, self.tenant, f"{self.agent_path}/tool/{name}")

    def token(self, scopes: str = "*") -> str:
        """A short-lived workload token (the ``actor_token`` of an exchange)."""
        return self.identity.tokens.agent_token(self.tenant, self.agent_path, scopes=scopes)

    async def act_for(self, subject_token: str, *, scope: str | None = None, resources: list[str],
                      lifetime: float | None = None) -> str:
        """Exchange a user's (or a parent agent's delegated) token for one where this agent acts."""
        actor = await self.identity.off_loop(self.token)  # the signing key is a database row
        form: dict[str, Any] = {"grant_type": GRANT_TOKEN_EXCHANGE, "subject_token": subject_token,
                                "subject_token_type": TOKEN_TYPE_JWT, "actor_token": actor,
                                "actor_token_type": TOKEN_TYPE_JWT, "resource": resources}
        if scope is not None:
            form["scope"] = scope
        if lifetime is not None:
            form["requested_lifetime"] = str(lifetime)
        return str((await self.identity.exchange(form))["access_token"])

    async def http(self, delegated_token: str, **kwargs: Any) -> httpx.AsyncClient:
        """An HTTP client for outside APIs acting under ``delegated_token``: each request is
        scope-checked, given the user's credential for its host, signed and audited."""
        return self.identity.outbound.client(await self._own(delegated_token), **kwargs)

    async def sandbox(self, delegated_token: str, open_sandbox: Callable[..., Awaitable[Any]], **options: Any) -> Any:
        """Open a sandbox acting under ``delegated_token``: ``open_sandbox`` is the agent's
        ``self.sandbox``. The token must hold ``tools:<name>`` for every bound tool,
        ``sandbox:<tier>`` for the tier chosen and
        ``egress:<host>`` for each host the network policy allows; the sandbox's egress is
        then credentialed and signed for the token's user (container tier, via the proxy)."""
        principal = await self._own(delegated_token)
        for t in options.get("tools") or ():
            principal.require(f"tools:{getattr(t, 'name', None) or getattr(t, '__name__', '?')}")
        box = await open_sandbox(**options)
        try:
            await self.identity.off_loop(self.identity.outbound.admit_sandbox, principal, box)  # audit rows
        except Exception:
            await box.close()
            raise
        return box

    async def _own(self, delegated_token: str) -> Principal:
        principal = await self.identity.authenticate(delegated_token)
        if principal.kind != "token" or not principal.actors or principal.actors[0] != self.spiffe_id:
            raise AuthenticationError("this delegated token was not issued to this agent")
        return principal


__all__ = ["AgentIdentity", "Identity"]
