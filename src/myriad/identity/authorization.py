"""Myriad as an OAuth 2.1 authorization server for MCP clients (and any OAuth client).

The MCP authorization spec asks a resource server's clients to discover an
authorization server, register (RFC 7591) and run the authorization-code flow with
PKCE (S256) and resource indicators (RFC 8707). This module is that server, built on
the identity room's own signing keys and tokens, with no table of its own:

- a **client id** is Myriad's MAC over the client's registration (its name and redirect
  URIs), so registration needs no storage and any node can check it; codes and refresh
  tokens are sealed the same way (an HMAC under a key derived from the identity room's
  secret, so they outlive signing-key rotation);
- an **authorization code** is a 60-second sealed grant bound to the client, the
  redirect URI, the PKCE challenge, the granted scopes and the credential that
  approved it; it is redeemed once (spent ids kept until they expire);
- the **access token** is a Myriad user token (the type delegated tokens have) for
  the approving user (or ``key:{id}`` for an API key), with the scopes granted —
  never more than the approving credential holds — and the audience asked for;
- a **refresh token** (7 days, rotated on each use) gives new access tokens while the
  approving API key is still valid: revoking that key ends the grant. Refresh tokens
  themselves are not in the RFC 7009 revocation list yet.

Spent codes and refresh tokens are remembered in the identity database (table
``oauth_spent``, until they expire): ``identity.db`` in the embedded mode, PostgreSQL
with ``--database``, where one redeemed on any machine is refused on every other (the
insert of its id is the atomic test). ``grant`` therefore queries the database: call
it off the event loop on PostgreSQL (``Identity.grant`` does).

Who approves: a person presents a Myriad credential (API key, user or delegated token)
on the consent page; scopes only narrow from what that credential holds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlencode, urlsplit

from myriad.errors import AuthenticationError, InvalidRequest, MyriadError
from myriad.identity._db import Duplicate, IdentityDB
from myriad.identity.capabilities import parse_scopes
from myriad.identity.principal import Principal, resource
from myriad.identity.tokens import TokenService

TYP_CLIENT, TYP_CODE, TYP_REFRESH = "oauth-client", "oauth-code", "oauth-refresh"
CODE_TTL = 60.0
REFRESH_TTL = 7 * 86400.0
CLIENT_TTL = 10 * 365 * 86400.0
GRANT_AUTHORIZATION_CODE = "authorization_code"
GRANT_REFRESH_TOKEN = "refresh_token"
_SPENT_SCHEMA = """CREATE TABLE IF NOT EXISTS oauth_spent (jti TEXT PRIMARY KEY, exp REAL NOT NULL);
CREATE INDEX IF NOT EXISTS oauth_spent_exp ON oauth_spent(exp);"""
_SWEEP_EVERY = 64
"""Spends between two deletions of expired ids."""


class OAuthError(InvalidRequest):
    """An error in RFC 6749's vocabulary (``details["oauth"]`` is the ``error`` code)."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message, details={"oauth": error})


@dataclass
class Client:
    client_id: str
    name: str
    redirect_uris: list[str]


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _check_redirect(uri: Any) -> str:
    if not isinstance(uri, str) or len(uri) > 2000:
        raise OAuthError("invalid_redirect_uri", "redirect_uris must be URLs")
    parts = urlsplit(uri)
    local = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.fragment or not parts.hostname or not (parts.scheme == "https" or (parts.scheme == "http" and local)):
        raise OAuthError("invalid_redirect_uri",
                         f"redirect URI {uri!r} must be https (http only for localhost) and have no fragment")
    return uri


@dataclass
class AuthorizationServer:
    """Registration, authorization codes and token grants (see the module docstring)."""

    tokens: TokenService
    secret: bytes
    is_key_valid: Callable[[Principal], bool] = lambda p: True
    clock: Callable[[], float] = time.time
    db: IdentityDB | None = None
    """Where spent codes and refresh tokens are kept (None: this object's memory only)."""
    _spent: dict[str, float] = field(default_factory=dict)
    _spends: int = 0

    def __post_init__(self) -> None:
        if self.db is not None:
            self.db.schema(_SPENT_SCHEMA)

    # -- RFC 7591 dynamic registration --------------------------------------------------
    def register(self, metadata: dict[str, Any]) -> dict[str, Any]:
        uris = metadata.get("redirect_uris")
        if not isinstance(uris, list) or not uris or len(uris) > 10:
            raise OAuthError("invalid_redirect_uri", "redirect_uris must be a list of 1-10 URLs")
        uris = [_check_redirect(u) for u in uris]
        method = metadata.get("token_endpoint_auth_method", "none")
        if method != "none":
            raise OAuthError("invalid_client_metadata", "only public clients (token_endpoint_auth_method 'none', "
                                                         "with PKCE) are supported")
        grants = metadata.get("grant_types", [GRANT_AUTHORIZATION_CODE])
        if not isinstance(grants, list) or not set(grants) <= {GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN}:
            raise OAuthError("invalid_client_metadata", "grant_types may be authorization_code and refresh_token")
        name = str(metadata.get("client_name") or "MCP client")[:100]
        client_id = self._seal({"typ": TYP_CLIENT, "client_name": name, "redirect_uris": uris}, CLIENT_TTL)
        return {"client_id": client_id, "client_id_issued_at": int(self.clock()), "client_name": name,
                "redirect_uris": uris, "token_endpoint_auth_method": "none",
                "grant_types": [GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN], "response_types": ["code"]}

    def client(self, client_id: Any) -> Client:
        if not isinstance(client_id, str) or client_id.count(".") != 1:
            raise OAuthError("invalid_client", "unknown client_id: register first (POST /v1/oauth/register)")
        try:
            claims = self._verify(client_id, TYP_CLIENT)
        except MyriadError:
            raise OAuthError("invalid_client", "unknown client_id: register first (POST /v1/oauth/register)") from None
        return Client(client_id, str(claims.get("client_name", "")), list(claims.get("redirect_uris") or []))

    def _seal(self, claims: dict[str, Any], ttl: float) -> str:
        now = self.clock()
        body = {**claims, "iat": int(now), "exp": int(now + ttl), "jti": secrets.token_urlsafe(12)}
        payload = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).rstrip(b"=")
        mac = hmac.new(self.secret, payload, hashlib.sha256).digest()
        return payload.decode() + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def _verify(self, token: str, typ: str) -> dict[str, Any]:
        payload, _, mac = token.partition(".")
        want = base64.urlsafe_b64encode(hmac.new(self.secret, payload.encode(), hashlib.sha256).digest()).rstrip(b"=")
        if not mac or not hmac.compare_digest(want, mac.encode()):
            raise AuthenticationError(f"not a valid {typ}")
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError:
            raise AuthenticationError(f"not a valid {typ}") from None
        if not isinstance(claims, dict) or claims.get("typ") != typ:
            raise AuthenticationError(f"not a valid {typ}")
        if float(claims.get("exp", 0)) < self.clock():
            raise AuthenticationError(f"the {typ} has expired")
        return claims

    def _spend(self, claims: dict[str, Any], what: str) -> None:
        """Mark the code or refresh token used; ``invalid_grant`` if it already was (anywhere)."""
        now, jti, exp = self.clock(), str(claims["jti"]), float(claims["exp"])
        if self.db is None:
            self._spent = {j: e for j, e in self._spent.items() if e > now}
            if jti in self._spent:
                raise OAuthError("invalid_grant", f"the {what} was already used")
            self._spent[jti] = exp
            return
        self._spends += 1
        if self._spends % _SWEEP_EVERY == 1:  # now and then, forget what expired (it cannot verify any more)
            self.db.execute("DELETE FROM oauth_spent WHERE exp < ?", (now - 300,))  # a margin for clocks that disagree
        try:
            self.db.execute("INSERT INTO oauth_spent (jti, exp) VALUES (?, ?)", (jti, exp))
        except Duplicate:
            raise OAuthError("invalid_grant", f"the {what} was already used") from None

    # -- the authorization endpoint -------------------------------------------------------
    def check_request(self, params: dict[str, Any]) -> tuple[Client, str]:
        """Validate an authorization request before anyone approves it: (client, redirect URI).
        Errors here are shown to the person, never redirected (RFC 6749 4.1.2.1)."""
        client = self.client(params.get("client_id"))
        redirect = params.get("redirect_uri") or (client.redirect_uris[0] if len(client.redirect_uris) == 1 else None)
        if redirect not in client.redirect_uris:
            raise OAuthError("invalid_request", "redirect_uri is not one this client registered")
        return client, str(redirect)

    def approve(self, principal: Principal, params: dict[str, Any]) -> str:
        """The redirect URL (with ``code`` or ``error``) once ``principal`` approved ``params``."""
        client, redirect = self.check_request(params)
        state = params.get("state")

        def back(**query: str) -> str:
            if isinstance(state, str):
                query["state"] = state
            query["iss"] = self.tokens.issuer  # RFC 9207
            return redirect + ("&" if "?" in redirect else "?") + urlencode(query)

        if params.get("response_type") != "code":
            return back(error="unsupported_response_type", error_description="response_type must be code")
        challenge, method = params.get("code_challenge"), params.get("code_challenge_method", "plain")
        if not isinstance(challenge, str) or not 43 <= len(challenge) <= 128 or method != "S256":
            return back(error="invalid_request", error_description="PKCE with code_challenge_method S256 is required")
        wanted = params.get("scope")
        try:
            granted = principal.capabilities.narrow(parse_scopes(wanted) if isinstance(wanted, str) and wanted else None)
        except MyriadError as e:
            return back(error="invalid_scope", error_description=e.message)
        resources = params.get("resource") or [resource("mcp")]
        resources = [resources] if isinstance(resources, str) else list(resources)
        try:
            for r in resources:
                _audience(r)
        except OAuthError as e:
            return back(error="invalid_target", error_description=e.message)
        code = self._seal({
            "typ": TYP_CODE, "sub": principal.user or f"key:{principal.key_id}", "tenant": principal.tenant,
            "client": hashlib.sha256(client.client_id.encode()).hexdigest()[:32], "redirect_uri": redirect,
            "challenge": challenge, "scope": " ".join(sorted(granted.items)), "resources": resources,
            "key": principal.key_id if principal.kind == "key" else None}, CODE_TTL)
        return back(code=code)

    # -- the token endpoint ---------------------------------------------------------------
    def grant(self, form: dict[str, Any]) -> dict[str, Any]:
        kind = form.get("grant_type")
        if kind == GRANT_AUTHORIZATION_CODE:
            claims = self._redeem_code(form)
        elif kind == GRANT_REFRESH_TOKEN:
            claims = self._redeem_refresh(form)
        else:
            raise OAuthError("unsupported_grant_type", f"grant_type {kind!r} is not supported here")
        scopes, resources = claims["scope"], [_audience(r) for r in claims["resources"]]
        access = self.tokens.user_token(claims["tenant"], claims["sub"], scopes=scopes, resources=resources)
        refresh = self._seal({"typ": TYP_REFRESH, "sub": claims["sub"], "tenant": claims["tenant"],
                                    "client": claims["client"], "scope": scopes, "resources": claims["resources"],
                                    "key": claims.get("key")}, REFRESH_TTL)
        return {"access_token": access, "token_type": "Bearer", "expires_in": int(self.tokens.delegated_ttl),
                "refresh_token": refresh, "scope": scopes}

    def _redeem_code(self, form: dict[str, Any]) -> dict[str, Any]:
        code, verifier = form.get("code"), form.get("code_verifier")
        if not isinstance(code, str) or not isinstance(verifier, str):
            raise OAuthError("invalid_request", "code and code_verifier are required")
        try:
            claims = self._verify(code, TYP_CODE)
        except AuthenticationError:
            raise OAuthError("invalid_grant", "the authorization code is invalid or expired") from None
        client = self.client(form.get("client_id"))
        if claims.get("client") != hashlib.sha256(client.client_id.encode()).hexdigest()[:32]:
            raise OAuthError("invalid_grant", "the code was issued to another client")
        if form.get("redirect_uri", claims["redirect_uri"]) != claims["redirect_uri"]:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
        if not secrets.compare_digest(_s256(verifier), str(claims.get("challenge"))):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge (PKCE)")
        self._spend(claims, "authorization code")
        return claims

    def _redeem_refresh(self, form: dict[str, Any]) -> dict[str, Any]:
        token = form.get("refresh_token")
        if not isinstance(token, str):
            raise OAuthError("invalid_request", "refresh_token is required")
        try:
            claims = self._verify(token, TYP_REFRESH)
        except AuthenticationError as e:
            raise OAuthError("invalid_grant", f"the refresh token is not valid: {e.message}") from None
        client = self.client(form.get("client_id"))
        if claims.get("client") != hashlib.sha256(client.client_id.encode()).hexdigest()[:32]:
            raise OAuthError("invalid_grant", "the refresh token was issued to another client")
        key = claims.get("key")
        if key and not self.is_key_valid(Principal(claims["tenant"], key)):
            raise OAuthError("invalid_grant", "the API key that approved this grant is revoked or expired")
        self._spend(claims, "refresh token")  # rotated: each refresh token works once
        return claims

    def metadata(self) -> dict[str, Any]:
        """The RFC 8414 fields this server adds to the issuer's metadata."""
        issuer = self.tokens.issuer
        return {"authorization_endpoint": issuer + "/v1/oauth/authorize",
                "registration_endpoint": issuer + "/v1/oauth/register",
                "response_types_supported": ["code"], "code_challenge_methods_supported": ["S256"],
                "authorization_response_iss_parameter_supported": True,
                "grant_types_supported": [GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN]}


def _audience(uri: str) -> str:
    """A resource indicator as the audience of a Myriad token: an MCP endpoint's URL
    (what MCP clients send) is the ``mcp`` door; ``urn:myriad:*`` passes through."""
    if uri.startswith("urn:myriad:"):
        return uri
    path = urlsplit(uri).path
    if path.startswith("/mcp/") or path == "/mcp":
        return resource("mcp")
    raise OAuthError("invalid_target", f"resource {uri!r} is not a Myriad resource")


__all__ = ["AuthorizationServer", "Client", "OAuthError"]
