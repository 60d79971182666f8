"""Users from the application's own identity provider: JWTs verified against its JWKS.

``UserVerifier`` checks ``iss``, ``aud`` (when configured), ``exp``/``nbf`` and the
signature with a key from the issuer's JWKS. Keys are cached; a token whose ``kid``
is not in the cache triggers one refetch (at most every ``min_refetch`` seconds), so
the provider can rotate keys without Myriad being told. Keys that disappear from
the JWKS stop verifying at the next refetch.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import httpx

from myriad.errors import AuthenticationError
from myriad.identity import jose
from myriad.identity.capabilities import parse_scopes
from myriad.identity.keys import validate_tenant
from myriad.identity.principal import Principal


class JWKSCache:
    """The keys of one JWKS URL, fetched lazily and refreshed on an unknown ``kid``."""

    def __init__(self, url: str, *, min_refetch: float = 1.0, max_age: float = 300.0,
                 client: httpx.AsyncClient | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.url, self.min_refetch, self.max_age = url, min_refetch, max_age
        self._client, self._clock = client, clock
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched = float("-inf")
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def key(self, kid: str | None) -> dict[str, Any] | None:
        """The JWK for ``kid`` (the only key when the token names none and the set has one)."""
        if self._clock() - self._fetched > self.max_age:
            await self._refresh()
        found = self._lookup(kid)
        if found is None and self._clock() - self._fetched >= self.min_refetch:
            await self._refresh()
            found = self._lookup(kid)
        return found

    def _lookup(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        async with self._lock:
            if self._clock() - self._fetched < self.min_refetch:
                return
            client = self._client or httpx.AsyncClient(timeout=5.0)
            try:
                response = await client.get(self.url)
                response.raise_for_status()
                data = response.json()
            except (httpx.HTTPError, ValueError):
                # Keep the keys we have; the token at hand fails on its own merits.
                self._fetched = self._clock()
                raise AuthenticationError("the identity provider's keys could not be fetched; try again") from None
            finally:
                if self._client is None:
                    await client.aclose()
            keys = data.get("keys") if isinstance(data, dict) else None
            if isinstance(keys, list):
                self._keys = {k.get("kid") or jose.jwk_thumbprint(k): k for k in keys
                              if isinstance(k, dict) and k.get("use", "sig") == "sig" and "kty" in k}
            self._fetched = self._clock()
            self.fetches += 1


class UserVerifier:
    """Turns a user's JWT from the configured issuer into a ``Principal``."""

    def __init__(self, issuer: str, jwks: JWKSCache, *, audience: str = "", tenant_claim: str = "tenant",
                 default_tenant: str = "", default_scopes: str = "agents models", leeway: float = 30.0) -> None:
        self.issuer, self.jwks, self.audience = issuer, jwks, audience
        self.tenant_claim, self.default_tenant = tenant_claim, default_tenant
        self.default_scopes, self.leeway = default_scopes, leeway

    def accepts(self, token: jose.Unverified) -> bool:
        return token.claims.get("iss") == self.issuer

    async def verify(self, token: jose.Unverified) -> tuple[Principal, dict[str, Any]]:
        claims = token.claims
        if claims.get("iss") != self.issuer:
            raise AuthenticationError("token issuer is not trusted")
        jwk = await self.jwks.key(token.kid)
        if jwk is None:
            raise AuthenticationError("token is signed with a key the identity provider does not publish")
        jose.verify_signature(token, jwk)
        jose.check_times(claims, leeway=self.leeway)
        if self.audience and self.audience not in jose.audiences(claims):
            raise AuthenticationError("token audience is not this server")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 255:
            raise AuthenticationError("token has no usable 'sub' claim")
        tenant = claims.get(self.tenant_claim) or self.default_tenant
        if not isinstance(tenant, str) or not tenant:
            raise AuthenticationError(f"token has no '{self.tenant_claim}' claim and no default tenant is configured")
        try:
            validate_tenant(tenant)
            scope = claims.get("scope")
            scopes = parse_scopes(scope if isinstance(scope, str) else self.default_scopes)
        except Exception:
            raise AuthenticationError("token carries an invalid tenant or scope claim") from None
        jti = claims.get("jti") if isinstance(claims.get("jti"), str) else "user-jwt"
        principal = Principal(tenant=tenant, key_id=str(jti)[:64], scopes=scopes, kind="user", user=sub)
        return principal, claims


__all__ = ["JWKSCache", "UserVerifier"]
