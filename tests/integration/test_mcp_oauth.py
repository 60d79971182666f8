"""Myriad as the OAuth 2.1 authorization server for MCP clients, end to end: the
official ``mcp`` SDK client discovers it from the 401 (RFC 9728 -> RFC 8414),
registers (RFC 7591), runs the authorization-code flow with PKCE, and calls tools with
the token it got. Scopes only narrow from the approving credential; codes are single
use and bound to their PKCE verifier; a refresh dies with the approving key."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.integration.live import REPO, LiveServer

pytest.importorskip("mcp")
REDIRECT = "http://localhost:3999/callback"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    s = LiveServer(tmp_path_factory.mktemp("oauth") / "data", agents="examples.notes")
    s.env["MYRIAD_IDENTITY__ISSUER"] = s.url
    s.start()
    yield s
    s.stop()


def _key(server: LiveServer, scopes: str) -> tuple[str, str]:
    out = subprocess.run([sys.executable, "-m", "myriad", "keys", "create", "--tenant", "default", "--scopes", scopes,
                          "--data-dir", str(server.data_dir)], cwd=REPO, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": f"{REPO / 'src'}:{REPO}", "PATH": "/usr/bin:/bin"})
    secret = out.stdout.strip().splitlines()[-1]
    key_id = next(k["id"] for k in httpx.get(f"{server.url}/v1/admin/keys", headers=server.headers()).json()["keys"]
                  if secret.startswith(k["id"]) or k.get("scopes") == scopes)
    return secret, key_id


def _approve(server: LiveServer, authorize_url: str, credential: str) -> dict[str, list[str]]:
    """What a person does on the consent page: submit it with their credential."""
    page = httpx.get(authorize_url)
    assert page.status_code == 200 and "Approve" in page.text
    params = {k: v[0] for k, v in parse_qs(urlsplit(authorize_url).query).items()}
    r = httpx.post(f"{server.url}/v1/oauth/authorize", data={**params, "credential": credential})
    assert r.status_code == 302, r.text
    assert r.headers["location"].startswith(REDIRECT)
    return parse_qs(urlsplit(r.headers["location"]).query)


async def test_sdk_client_discovers_registers_and_authorizes(server: LiveServer) -> None:
    import httpx2
    from mcp import Client
    from mcp.client.auth import OAuthClientProvider
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

    person_key, _ = _key(server, "mcp:notes:*")
    got: dict[str, Any] = {}

    class Memory:
        tokens: Any = None
        client: Any = None

        async def get_tokens(self) -> Any:
            return self.tokens

        async def set_tokens(self, tokens: Any) -> None:
            self.tokens = tokens

        async def get_client_info(self) -> Any:
            return self.client

        async def set_client_info(self, info: Any) -> None:
            self.client = info

    async def redirect(url: str) -> None:
        got.update(_approve(server, url, person_key))

    async def callback() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=got["code"][0], state=got["state"][0], iss=got["iss"][0])

    url = f"{server.url}/mcp/notes/oauth-user"
    storage = Memory()
    provider = OAuthClientProvider(url, OAuthClientMetadata(client_name="test client", redirect_uris=[REDIRECT]),
                                   storage, redirect_handler=redirect, callback_handler=callback)
    async with Client(streamable_http_client(url, http_client=httpx2.AsyncClient(auth=provider, timeout=30))) as c:
        assert {t.name for t in (await c.list_tools()).tools} == {"add_note", "search"}
        r = await c.call_tool("add_note", {"text": "via oauth"})
        assert not r.is_error and r.structured_content["count"] == 1
    assert storage.tokens.refresh_token and storage.client.client_id
    # the token is a Myriad token for the MCP door only, with the key's scopes at most
    access = storage.tokens.access_token
    claims = json.loads(base64.urlsafe_b64decode(access.split(".")[1] + "=="))
    assert claims["aud"] == ["urn:myriad:mcp"] and set(claims["scope"].split()) <= {"mcp:notes:*", "mcp:notes:add_note",
                                                                                    "mcp:notes:search"}
    assert httpx.get(f"{server.url}/v1/agents", headers={"Authorization": f"Bearer {access}"}).status_code == 403


def _pkce() -> tuple[str, str]:
    verifier = base64.urlsafe_b64encode(hashlib.sha256(b"v").digest() * 2).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _register(server: LiveServer) -> str:
    r = httpx.post(f"{server.url}/v1/oauth/register", json={"client_name": "raw", "redirect_uris": [REDIRECT]})
    assert r.status_code == 201, r.text
    return str(r.json()["client_id"])


def _authorize_url(server: LiveServer, client_id: str, challenge: str, scope: str) -> str:
    q = httpx.QueryParams({"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": scope,
                           "state": "s1", "code_challenge": challenge, "code_challenge_method": "S256",
                           "resource": f"{server.url}/mcp/notes/x"})
    return f"{server.url}/v1/oauth/authorize?{q}"


def test_codes_are_single_use_pkce_bound_and_scopes_only_narrow(server: LiveServer) -> None:
    client_id = _register(server)
    verifier, challenge = _pkce()
    narrow, key_id = _key(server, "mcp:notes:search")
    # asking for more than the approving key holds comes back as an error, not a code
    back = _approve(server, _authorize_url(server, client_id, challenge, "mcp:notes:add_note"), narrow)
    assert back["error"] == ["invalid_scope"] and "code" not in back and back["state"] == ["s1"]
    back = _approve(server, _authorize_url(server, client_id, challenge, "mcp:notes:search"), narrow)
    code = back["code"][0]
    token = f"{server.url}/v1/oauth/token"
    form = {"grant_type": "authorization_code", "code": code, "client_id": client_id, "redirect_uri": REDIRECT}
    bad = httpx.post(token, data={**form, "code_verifier": "x" * 43})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant" and "PKCE" in bad.json()["error_description"]
    ok = httpx.post(token, data={**form, "code_verifier": verifier})
    assert ok.status_code == 200, ok.text
    again = httpx.post(token, data={**form, "code_verifier": verifier})
    assert again.json()["error"] == "invalid_grant" and "already used" in again.json()["error_description"]
    # the refresh token works once (rotation), and not after the approving key is revoked
    refresh = ok.json()["refresh_token"]
    r1 = httpx.post(token, data={"grant_type": "refresh_token", "refresh_token": refresh, "client_id": client_id})
    assert r1.status_code == 200
    assert httpx.post(token, data={"grant_type": "refresh_token", "refresh_token": refresh,
                                   "client_id": client_id}).json()["error"] == "invalid_grant"
    assert httpx.delete(f"{server.url}/v1/admin/keys/{key_id}", headers=server.headers()).status_code in (200, 204)
    r2 = httpx.post(token, data={"grant_type": "refresh_token", "refresh_token": r1.json()["refresh_token"],
                                 "client_id": client_id})
    assert r2.json()["error"] == "invalid_grant" and "revoked" in r2.json()["error_description"]


def test_unregistered_redirects_and_clients_are_refused_on_the_page(server: LiveServer) -> None:
    client_id = _register(server)
    _, challenge = _pkce()
    url = _authorize_url(server, client_id, challenge, "mcp").replace("localhost%3A3999", "evil.example")
    r = httpx.get(url)
    assert r.status_code == 400 and "redirect_uri" in r.text
    r = httpx.get(_authorize_url(server, client_id[:-4] + "AAAA", challenge, "mcp"))
    assert r.status_code == 400 and "register" in r.text
    r = httpx.post(f"{server.url}/v1/oauth/register", json={"redirect_uris": ["http://evil.example/cb"]})
    assert r.status_code == 400 and r.json()["error"] == "invalid_redirect_uri"
    meta = httpx.get(f"{server.url}/.well-known/oauth-authorization-server").json()
    assert meta["code_challenge_methods_supported"] == ["S256"] and meta["registration_endpoint"].endswith("/register")
