"""The identity doors.

    POST   /v1/oauth/token                         RFC 8693 token exchange (form or JSON); authorization_code
                                                   and refresh_token grants for OAuth clients (oauth_api)
    POST   /v1/oauth/revoke                        RFC 7009 revocation of a Myriad token (and its descendants)
    GET    /.well-known/jwks.json                  keys of the tokens Myriad mints
    GET    /.well-known/oauth-authorization-server metadata (RFC 8414)
    GET    /.well-known/http-message-signatures-directory   Web Bot Auth key directory (signed)
    GET    /v1/admin/keys                          the tenant's API keys (scope admin)
    POST   /v1/admin/keys                          create {label, ttl, scopes}; the key is in the reply once
    POST   /v1/admin/keys/{id}/rotate              {grace}: new key, old one ends after grace seconds
    DELETE /v1/admin/keys/{id}                     revoke
    GET    /v1/admin/audit                         the tenant's audit log (?action=&limit=)
    POST   /v1/admin/user-tokens                   {user, scope, resource, ttl?}: a user token, for apps without an IdP
    GET    /v1/vault/credentials                   metadata of stored credentials (?user=)
    PUT    /v1/vault/credentials/{provider}        {user, secret, domains, header?, prefix?}
    DELETE /v1/vault/credentials/{provider}        ?user=

A key or token acts only within its own tenant; a user's token manages only that
user's credentials. The token endpoint answers errors in RFC 6749's shape.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from myriad.errors import InvalidRequest, MyriadError, PermissionDenied
from myriad.identity import DIRECTORY_MEDIA_TYPE, DIRECTORY_PATH, GRANT_TOKEN_EXCHANGE, Identity, Principal
from myriad.identity.httpsig import authority
from myriad.server.auth import require_principal
from myriad.server.live_sockets import live_sockets
from myriad.server.ownership import require_tenant_wide
from myriad.server.params import parse_json_object, read_body

MAX_BODY = 64 * 1024


def _identity(request: Request) -> Identity:
    return request.app.state.services.identity  # type: ignore[no-any-return]


async def _body(request: Request) -> dict[str, Any]:
    raw = await read_body(request, MAX_BODY)  # refused on Content-Length before reading (413)
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw))
        except (UnicodeDecodeError, ValueError):
            raise InvalidRequest("request body is not valid application/x-www-form-urlencoded") from None
        out: dict[str, Any] = {}
        for k, v in pairs:
            out.setdefault(k, []).append(v)
        return {k: v[0] if len(v) == 1 and k != "resource" else v for k, v in out.items()}
    return parse_json_object(raw)


# -- token endpoint -------------------------------------------------------------------

_OAUTH = {401: "invalid_grant", 403: "invalid_scope"}


async def token(request: Request) -> Response:
    try:
        form = await _body(request)
        if form.get("grant_type") in ("authorization_code", "refresh_token"):  # MCP clients (oauth_api)
            result = await _identity(request).grant(form)  # a database write: off the event loop on PostgreSQL
        else:
            result = await _identity(request).exchange(form)
    except MyriadError as e:
        code = e.details.get("oauth") or _OAUTH.get(e.status, "invalid_request")
        if e.details.get("missing_audience") or e.details.get("param") == "resource":
            code = "invalid_target"
        headers = {"cache-control": "no-store"}
        if e.status == 503:  # the database is down: RFC 6749's word for it, and when to retry
            code, headers["retry-after"] = "temporarily_unavailable", str(e.details.get("retry_after", 1))
        return JSONResponse({"error": code, "error_description": e.message}, status_code=400 if e.status < 500 else e.status,
                            headers=headers)
    return JSONResponse(result, headers={"cache-control": "no-store", "pragma": "no-cache"})


async def revoke(request: Request) -> Response:
    """RFC 7009: 200 whether or not the token was valid (so it cannot be used as an oracle)."""
    try:
        body = await _body(request)
    except MyriadError as e:
        return JSONResponse({"error": "invalid_request", "error_description": e.message}, status_code=400)
    token = body.get("token")
    if not isinstance(token, str) or not token:
        return JSONResponse({"error": "invalid_request", "error_description": "parameter 'token' is required"},
                            status_code=400)
    identity = _identity(request)
    try:
        await identity.off_loop(identity.revoke, token)  # a database write
    except MyriadError as e:  # the database is down: the token is not revoked, so say so
        return JSONResponse({"error": "temporarily_unavailable", "error_description": e.message},
                            status_code=e.status if e.status >= 500 else 400, headers={"retry-after": "1"})
    return Response(status_code=200, headers={"cache-control": "no-store"})


async def jwks(request: Request) -> Response:
    identity = _identity(request)  # open to anyone: its query must not hold the event loop
    return JSONResponse(await identity.off_loop(identity.jwks), headers={"cache-control": "max-age=60"})


async def metadata(request: Request) -> Response:
    issuer = _identity(request).settings.issuer
    return JSONResponse({"issuer": issuer, "token_endpoint": issuer + "/v1/oauth/token",
                         "jwks_uri": issuer + "/.well-known/jwks.json",
                         "revocation_endpoint": issuer + "/v1/oauth/revoke",
                         **_identity(request).authorization.metadata(),
                         "grant_types_supported": [GRANT_TOKEN_EXCHANGE, "authorization_code", "refresh_token"],
                         "token_endpoint_auth_methods_supported": ["none"]})


async def signatures_directory(request: Request) -> Response:
    identity = _identity(request)
    body, headers = await identity.off_loop(identity.signer.directory, authority(str(request.url)))
    return Response(json.dumps(body), headers=headers, media_type=DIRECTORY_MEDIA_TYPE)


# -- admin: keys and audit ------------------------------------------------------------

def _key_json(k: Any) -> dict[str, Any]:
    return {"id": k.id, "tenant": k.tenant, "label": k.label, "scopes": k.scopes, "created": k.created,
            "expires": k.expires, "revoked": k.revoked}


async def _admin(request: Request) -> tuple[Identity, Principal]:
    principal = await require_principal(request)
    principal.require("admin")
    require_tenant_wide(principal, "the admin door")
    return _identity(request), principal


async def list_keys(request: Request) -> Response:
    identity, principal = await _admin(request)
    keys = await identity.off_loop(identity.keys.list_keys, principal.tenant)
    return JSONResponse({"keys": [_key_json(k) for k in keys]})


def _ttl(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise InvalidRequest(f"{name} must be a positive number of seconds", details={"param": name})
    return float(value)


async def create_key(request: Request) -> Response:
    identity, principal = await _admin(request)
    body = await _body(request)
    scopes = body.get("scopes", " ".join(sorted(principal.scopes)))  # default: the caller's own
    if not isinstance(scopes, str):
        raise InvalidRequest("scopes must be a space-separated string", details={"param": "scopes"})
    label = body.get("label", "")
    if not isinstance(label, str) or len(label) > 200:
        raise InvalidRequest("label must be a string of at most 200 characters", details={"param": "label"})
    ttl = _ttl(body.get("ttl"), "ttl")
    principal.capabilities.narrow(scopes.split())  # a key can only mint keys narrower than itself

    def create() -> tuple[Any, str]:
        info, plaintext = identity.keys.create_key(principal.tenant, label=label, ttl=ttl, scopes=scopes)
        identity.audit.record(principal, "key.create", info.id, scopes=info.scopes)
        return info, plaintext

    info, plaintext = await identity.off_loop(create)
    return JSONResponse({**_key_json(info), "key": plaintext}, status_code=201)


async def rotate_key(request: Request) -> Response:
    identity, principal = await _admin(request)
    body = await _body(request)
    grace = _ttl(body.get("grace"), "grace") or 0.0
    key_id = request.path_params["key_id"]

    def rotate() -> tuple[Any, str]:
        old = identity.keys.get_key(key_id, principal.tenant)
        try:  # rotating hands out a new key with the old one's scopes: only as much as the caller holds
            principal.capabilities.narrow(old.scopes.split())
        except PermissionDenied as e:
            identity.audit.record(principal, "key.rotate", old.id, "denied", reason=e.message)
            raise PermissionDenied(f"a key can rotate only keys no broader than itself ({e.message})",
                                   details=e.details) from None
        info, plaintext = identity.keys.rotate_key(key_id, principal.tenant, grace=grace)
        identity.audit.record(principal, "key.rotate", key_id, new_key=info.id, grace=grace)
        return info, plaintext

    info, plaintext = await identity.off_loop(rotate)
    return JSONResponse({**_key_json(info), "key": plaintext, "replaces": request.path_params["key_id"]}, status_code=201)


async def revoke_key(request: Request) -> Response:
    identity, principal = await _admin(request)
    key_id = request.path_params["key_id"]

    def revoke() -> None:
        identity.keys.revoke_key(key_id, principal.tenant)
        identity.audit.record(principal, "key.revoke", key_id)

    await identity.off_loop(revoke)
    await live_sockets(request.app).close_key(request.path_params["key_id"])  # its open WebSockets: 4001 now
    return Response(status_code=204)


async def user_token(request: Request) -> Response:
    """For applications without their own identity provider: an admin key mints a
    short-lived token for one of its users (scopes and lifetime only narrow)."""
    identity, principal = await _admin(request)
    body = await _body(request)
    user, scopes, resources = body.get("user"), body.get("scope", ""), body.get("resource")
    if not isinstance(user, str) or not 0 < len(user) <= 255:
        raise InvalidRequest("user must be a non-empty string", details={"param": "user"})
    if not isinstance(scopes, str) or not scopes.strip():
        raise InvalidRequest("scope must be a non-empty space-separated string", details={"param": "scope"})
    if isinstance(resources, str):
        resources = [resources]
    if not isinstance(resources, list):
        raise InvalidRequest("resource must be a resource URI or a list of them", details={"param": "resource"})
    principal.capabilities.narrow(scopes.split())
    ttl = _ttl(body.get("ttl"), "ttl")

    def mint() -> str:
        token = identity.tokens.user_token(principal.tenant, user, scopes=scopes, resources=resources, ttl=ttl)
        identity.audit.record(principal, "token.user", user, scope=scopes)
        return token

    token = await identity.off_loop(mint)  # the signing key and the audit log are database rows
    return JSONResponse({"access_token": token, "token_type": "Bearer", "scope": scopes,
                         "expires_in": int(identity.tokens.delegated_ttl if body.get("ttl") is None
                                           else min(float(body["ttl"]), identity.tokens.delegated_ttl))},
                        headers={"cache-control": "no-store"})


async def audit_log(request: Request) -> Response:
    identity, principal = await _admin(request)
    try:
        limit = min(max(int(request.query_params.get("limit", "100")), 1), 1000)
    except ValueError:
        raise InvalidRequest("limit must be an integer", details={"param": "limit"}) from None
    entries = await identity.off_loop(lambda: identity.audit.entries(principal.tenant, limit=limit,
                                                                     action=request.query_params.get("action")))
    return JSONResponse({"entries": [e.to_json() for e in entries]})


# -- vault ------------------------------------------------------------------------------

async def _vault_user(request: Request, principal: Principal, given: Any) -> str:
    if principal.user is not None:
        if given not in (None, principal.user):
            raise PermissionDenied("a user's token manages only that user's credentials")
        return principal.user
    if not isinstance(given, str) or not given:
        raise InvalidRequest("name the user whose credential this is ('user')", details={"param": "user"})
    return given


async def list_credentials(request: Request) -> Response:
    principal = await require_principal(request)
    user = request.query_params.get("user")
    if principal.user is not None:
        user = await _vault_user(request, principal, user)
    identity = _identity(request)
    items = await identity.off_loop(identity.vault.credentials, principal.tenant, user)
    return JSONResponse({"credentials": [c.to_json() for c in items]})


async def put_credential(request: Request) -> Response:
    principal = await require_principal(request)
    provider = request.path_params["provider"]
    principal.require(f"vault:{provider}")
    body = await _body(request)
    user = await _vault_user(request, principal, body.get("user"))
    identity = _identity(request)

    def put() -> Any:
        info = identity.vault.put(principal.tenant, user, provider, body.get("secret"),  # type: ignore[arg-type]
                                  domains=body.get("domains"),  # type: ignore[arg-type]
                                  header=body.get("header", "authorization"), prefix=body.get("prefix", "Bearer "))
        identity.audit.record(principal, "vault.put", f"{user}/{provider}", domains=info.domains)
        return info

    info = await identity.off_loop(put)
    return JSONResponse(info.to_json(), status_code=201)


async def delete_credential(request: Request) -> Response:
    principal = await require_principal(request)
    provider = request.path_params["provider"]
    principal.require(f"vault:{provider}")
    user = await _vault_user(request, principal, request.query_params.get("user"))
    identity = _identity(request)

    def delete() -> None:
        identity.vault.delete(principal.tenant, user, provider)
        identity.audit.record(principal, "vault.delete", f"{user}/{provider}")

    await identity.off_loop(delete)
    return Response(status_code=204)


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/oauth/token", token, methods=["POST"]),
        Route("/v1/oauth/revoke", revoke, methods=["POST"]),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        Route("/.well-known/oauth-authorization-server", metadata, methods=["GET"]),
        Route(DIRECTORY_PATH, signatures_directory, methods=["GET"]),
        Route("/v1/admin/keys", list_keys, methods=["GET"]),
        Route("/v1/admin/keys", create_key, methods=["POST"]),
        Route("/v1/admin/keys/{key_id}/rotate", rotate_key, methods=["POST"]),
        Route("/v1/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
        Route("/v1/admin/audit", audit_log, methods=["GET"]),
        Route("/v1/admin/user-tokens", user_token, methods=["POST"]),
        Route("/v1/vault/credentials", list_credentials, methods=["GET"]),
        Route("/v1/vault/credentials/{provider}", put_credential, methods=["PUT"]),
        Route("/v1/vault/credentials/{provider}", delete_credential, methods=["DELETE"]),
    ]


__all__ = ["routes"]
