"""Tokens Myriad mints: agent workload identities and delegated tokens (RFC 8693).

Workload token (``typ: agent``): ``sub`` is the agent's SPIFFE-style URI
``spiffe://{trust-domain}/tenant/{t}/agent/{class}/{name}``; short-lived; usable as
the ``actor_token`` of a token exchange, nowhere else.

Delegated token (``typ: delegated``): ``sub`` is the user, ``act`` the agent acting
for them, nested once per hop (``{"sub": sub-agent, "act": {"sub": agent}}``);
``scope`` only narrows, ``aud`` lists the resources (RFC 8707) it may be presented to,
and it never outlives its subject or its actor. ``anc`` lists the ``jti`` of the
Myriad tokens it was exchanged from, so revoking one (RFC 7009) revokes its descendants.

All are EdDSA JWTs signed by the ``jwt`` key ring and verified against it.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any, Callable
from urllib.parse import quote

from myriad.errors import AuthenticationError, InvalidRequest, PermissionDenied
from myriad.identity import jose
from myriad.identity._db import IdentityDB
from myriad.identity.capabilities import Scopes, parse_scopes
from myriad.identity.keyring import KeyRing
from myriad.identity.principal import RESOURCE_PREFIX, Principal

GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
TOKEN_TYPE_ACCESS = "urn:ietf:params:oauth:token-type:access_token"
TYP_AGENT, TYP_DELEGATED = "agent", "delegated"
MAX_CHAIN = 8
_REVOKED_SCHEMA = "CREATE TABLE IF NOT EXISTS revoked_tokens (jti TEXT PRIMARY KEY, exp REAL NOT NULL);"
_SPIFFE_RE = re.compile(r"^spiffe://([^/]+)/tenant/([^/]+)/agent/(.+)$")


def spiffe_id(trust_domain: str, tenant: str, agent_path: str) -> str:
    """``spiffe://{trust-domain}/tenant/{t}/agent/{class}/{name}`` (sub-agents append
    ``/sub/{class}/{name}``). Segments are percent-encoded, so a name cannot add a ``/``."""
    parts = [quote(p, safe="") for p in agent_path.split("/")]
    return f"spiffe://{trust_domain}/tenant/{quote(tenant, safe='')}/agent/{'/'.join(parts)}"


def act_chain(act: Any) -> tuple[str, ...]:
    """The actors of a nested ``act`` claim, nearest first."""
    chain: list[str] = []
    while isinstance(act, dict) and isinstance(act.get("sub"), str):
        chain.append(act["sub"])
        if len(chain) > MAX_CHAIN:
            raise AuthenticationError("delegation chain is too long")
        act = act.get("act")
    return tuple(chain)


class TokenService:
    """Mints and verifies Myriad's own tokens."""

    def __init__(self, ring: KeyRing, *, issuer: str, trust_domain: str, agent_ttl: float = 300.0,
                 delegated_ttl: float = 300.0, clock: Callable[[], float] = time.time,
                 db: IdentityDB | None = None) -> None:
        self.ring, self.issuer, self.trust_domain = ring, issuer, trust_domain
        self.agent_ttl, self.delegated_ttl, self._clock = agent_ttl, delegated_ttl, clock
        self._db = db
        if db is not None:
            db.schema(_REVOKED_SCHEMA)

    # -- revocation (RFC 7009) ---------------------------------------------------
    def revoke(self, token: jose.Unverified) -> bool:
        """Revoke a token Myriad minted (and with it every token exchanged from it).
        Returns whether it was one of ours; an expired token needs no revocation."""
        if self._db is None or token.claims.get("iss") != self.issuer:
            return False
        found = self.ring.public_key(token.kid or "")
        if found is None:
            return False
        try:
            jose.verify_with_key(token, *found)
        except AuthenticationError:
            return False
        jti, exp = token.claims.get("jti"), token.claims.get("exp")
        if not isinstance(jti, str) or not isinstance(exp, (int, float)):
            return False
        now = self._clock()
        self._db.execute("INSERT INTO revoked_tokens VALUES (?, ?) ON CONFLICT DO NOTHING", (jti, float(exp)))
        self._db.execute("DELETE FROM revoked_tokens WHERE exp < ?", (now - 3600,))
        return True

    def _check_revoked(self, claims: dict[str, Any]) -> None:
        if self._db is None:
            return
        ids = [claims.get("jti"), *(claims.get("anc") or [])]
        ids = [i for i in ids if isinstance(i, str)][:MAX_CHAIN + 1]
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        if self._db.execute(f"SELECT 1 FROM revoked_tokens WHERE jti IN ({marks}) LIMIT 1", ids).fetchone():
            raise AuthenticationError("token has been revoked")

    # -- minting ---------------------------------------------------------------
    def _mint(self, claims: dict[str, Any], ttl: float) -> str:
        now = int(self._clock())
        key = self.ring.current()
        body = {"iss": self.issuer, "iat": now, "nbf": now, "exp": claims.pop("exp", now + int(ttl)),
                "jti": secrets.token_urlsafe(12), **claims}
        return jose.encode(body, key.private, alg="EdDSA", kid=key.kid)

    def agent_token(self, tenant: str, agent_path: str, *, scopes: str = "*", ttl: float | None = None) -> str:
        """A workload token for the agent at ``agent_path`` (``class/name[/sub/class/name]``)."""
        return self._mint({"sub": spiffe_id(self.trust_domain, tenant, agent_path), "tenant": tenant,
                           "typ": TYP_AGENT, "scope": " ".join(sorted(parse_scopes(scopes))),
                           "aud": [self.issuer + "/v1/oauth/token"]},
                          min(ttl or self.agent_ttl, self.agent_ttl))

    def user_token(self, tenant: str, user: str, *, scopes: str, resources: list[str], ttl: float | None = None) -> str:
        """A delegated-shaped token for a user with no actor yet (for apps without their own IdP)."""
        return self._mint({"sub": user, "tenant": tenant, "typ": TYP_DELEGATED,
                           "scope": " ".join(sorted(parse_scopes(scopes))), "aud": _resources(resources)},
                          min(ttl or self.delegated_ttl, self.delegated_ttl))

    # -- verification ----------------------------------------------------------
    def verify(self, token: jose.Unverified, *, typ: str) -> dict[str, Any]:
        """Claims of a token Myriad minted, of type ``typ``; ``AuthenticationError`` otherwise."""
        claims = token.claims
        if claims.get("iss") != self.issuer:
            raise AuthenticationError("token issuer is not trusted")
        found = self.ring.public_key(token.kid or "")
        if found is None:
            raise AuthenticationError("token is signed with an unknown or retired key")
        jose.verify_with_key(token, *found)
        jose.check_times(claims, now=self._clock(), leeway=5.0)
        if claims.get("typ") != typ:
            raise AuthenticationError(f"a {claims.get('typ')!s:.20} token cannot be used here")
        if not isinstance(claims.get("tenant"), str) or not isinstance(claims.get("sub"), str):
            raise AuthenticationError("token lacks tenant or subject")
        return claims

    def principal(self, token: jose.Unverified) -> Principal:
        """The principal a delegated token stands for (agent workload tokens are not admitted at doors)."""
        claims = self.verify(token, typ=TYP_DELEGATED)
        self._check_revoked(claims)
        return Principal(tenant=claims["tenant"], key_id=str(claims.get("jti", ""))[:64],
                         scopes=parse_scopes(claims.get("scope") or ""), kind="token", user=claims["sub"],
                         actors=act_chain(claims.get("act")), audience=tuple(jose.audiences(claims)))

    def agent_identity(self, token: jose.Unverified) -> dict[str, Any]:
        """Claims of a valid workload token, with its SPIFFE URI checked against its tenant."""
        claims = self.verify(token, typ=TYP_AGENT)
        m = _SPIFFE_RE.match(claims["sub"])
        if not m or m.group(1) != self.trust_domain or m.group(2) != quote(claims["tenant"], safe=""):
            raise AuthenticationError("agent token subject is not an agent of this trust domain")
        return claims

    # -- exchange --------------------------------------------------------------
    def exchange(self, subject: Principal, subject_exp: float, subject_act: Any, actor_token: jose.Unverified,
                 *, scope: str | None, resources: list[str], may_act: Any = None,
                 requested_ttl: float | None = None, ancestors: list[str] | None = None) -> tuple[str, dict[str, Any]]:
        """A delegated token: ``sub`` = the subject's user, ``act`` = the actor (nesting
        the subject's own ``act``). Returns the token and its claims."""
        actor = self.agent_identity(actor_token)
        if actor["tenant"] != subject.tenant:
            raise PermissionDenied("the actor belongs to another tenant than the subject")
        if subject.user is None:
            raise PermissionDenied("the subject token does not stand for a user")
        if may_act is not None and not _may_act(may_act, actor["sub"]):
            raise PermissionDenied("the subject token does not allow this actor to act for it (may_act)")
        if len(act_chain(subject_act)) >= MAX_CHAIN:
            raise PermissionDenied("delegation chain is too long")
        granted = subject.capabilities.narrow(parse_scopes(scope) if scope is not None else None)
        # An actor can pass on only what it holds itself, too.
        Scopes(parse_scopes(actor.get("scope") or "")).narrow(granted.items)
        aud = _resources(resources)
        if subject.audience:
            extra = [r for r in aud if r not in subject.audience]
            if extra:
                raise PermissionDenied(f"cannot widen the audience to {extra[0]}", details={"missing_audience": extra[0]})
        now = self._clock()
        exp = int(min(now + min(requested_ttl or self.delegated_ttl, self.delegated_ttl), subject_exp, actor["exp"]))
        act: dict[str, Any] = {"sub": actor["sub"]}
        if subject_act:
            act["act"] = subject_act
        claims = {"sub": subject.user, "tenant": subject.tenant, "typ": TYP_DELEGATED, "scope": str(granted),
                  "aud": aud, "act": act, "exp": exp}
        if ancestors:
            claims["anc"] = ancestors[-MAX_CHAIN:]  # revoking any of them revokes this token too
        token = self._mint(dict(claims), 0)
        return token, claims


def _resources(resources: list[str]) -> list[str]:
    if not resources:
        raise InvalidRequest("name at least one resource (RFC 8707 'resource', e.g. urn:myriad:models)",
                             details={"param": "resource"})
    for r in resources:
        if not isinstance(r, str) or not r.startswith(RESOURCE_PREFIX) or len(r) > 200:
            raise InvalidRequest(f"unknown resource {str(r)[:80]!r}: Myriad's resources are urn:myriad:<door>",
                                 details={"param": "resource"})
    return sorted(set(resources))


def _may_act(may_act: Any, actor: str) -> bool:
    subs = may_act.get("sub") if isinstance(may_act, dict) else None
    allowed = subs if isinstance(subs, list) else [subs]
    return any(isinstance(s, str) and (s == actor or (s.endswith("/*") and actor.startswith(s[:-1]))) for s in allowed)


__all__ = ["GRANT_TOKEN_EXCHANGE", "TOKEN_TYPE_ACCESS", "TOKEN_TYPE_JWT", "TokenService", "act_chain", "spiffe_id"]
