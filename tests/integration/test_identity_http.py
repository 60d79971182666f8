"""The identity doors of a real server: admin keys API, user tokens, the RFC 8693 token
endpoint (OAuth error shapes), JWKS, metadata and the signatures directory."""

from __future__ import annotations

import httpx
import pytest

from myriad.identity import GRANT_TOKEN_EXCHANGE, Identity, KeyStore, jose
from myriad.settings import IdentitySettings
from tests.integration.live import LiveServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = LiveServer(tmp_path_factory.mktemp("idhttp") / "data").start()
    yield s
    s.stop()


def test_admin_keys_lifecycle(server):
    u, h = server.url, server.headers()
    r = httpx.post(u + "/v1/admin/keys", headers=h, json={"label": "ops", "scopes": "admin agents usage"})
    assert r.status_code == 201, r.text
    ops = r.json()
    assert ops["key"].startswith("myr_") and ops["scopes"] == "admin agents usage"
    oh = {"Authorization": f"Bearer {ops['key']}"}
    r = httpx.post(u + "/v1/admin/keys", headers=oh, json={"scopes": "models"})  # wider than itself
    assert r.status_code == 403 and "models" in r.json()["error"]["message"]
    r = httpx.post(u + "/v1/admin/keys", headers=oh, json={"scopes": "agents:counter", "ttl": 60})
    assert r.status_code == 201 and r.json()["expires"] is not None
    for bad in ({"scopes": 5}, {"ttl": -1}, {"label": ["x"]}, {"scopes": "Bad!"}):
        r = httpx.post(u + "/v1/admin/keys", headers=oh, json=bad)
        assert r.status_code == 400, (bad, r.text)
    r = httpx.post(u + f"/v1/admin/keys/{ops['id']}/rotate", headers=oh, json={"grace": 30})
    assert r.status_code == 201 and r.json()["replaces"] == ops["id"]
    new = r.json()["key"]
    assert httpx.get(u + "/v1/admin/keys", headers=oh).status_code == 200  # grace period
    nh = {"Authorization": f"Bearer {new}"}
    r = httpx.delete(u + f"/v1/admin/keys/{ops['id']}", headers=nh)
    assert r.status_code == 204
    assert httpx.get(u + "/v1/admin/keys", headers=oh).status_code == 401
    listed = httpx.get(u + "/v1/admin/keys", headers=nh).json()["keys"]
    assert all("key" not in k and "hash" not in k for k in listed) and len(listed) >= 3
    no_admin = httpx.post(u + "/v1/admin/keys", headers=h, json={"scopes": "agents"}).json()["key"]
    r = httpx.get(u + "/v1/admin/keys", headers={"Authorization": f"Bearer {no_admin}"})
    assert r.status_code == 403 and r.json()["error"]["missing_scope"] == "admin"


def test_token_exchange_over_http(server):
    u, h = server.url, server.headers()
    r = httpx.post(u + "/v1/admin/user-tokens", headers=h,
                   json={"user": "alice", "scope": "agents:counter models", "resource": ["urn:myriad:agents", "urn:myriad:models"]})
    assert r.status_code == 200, r.text
    user = r.json()["access_token"]
    keys = KeyStore(server.data_dir)
    agent = Identity(IdentitySettings(), keys, server.data_dir).for_agent("default", "counter/alice")
    form = {"grant_type": GRANT_TOKEN_EXCHANGE, "subject_token": user, "actor_token": agent.token(),
            "subject_token_type": "urn:ietf:params:oauth:token-type:access_token", "scope": "agents:counter",
            "resource": "urn:myriad:agents"}
    r = httpx.post(u + "/v1/oauth/token", data=form)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 300 and r.headers["cache-control"] == "no-store"
    claims = jose.parse(body["access_token"]).claims
    assert claims["sub"] == "alice" and claims["act"] == {"sub": agent.spiffe_id} and claims["aud"] == ["urn:myriad:agents"]
    dh = {"Authorization": f"Bearer {body['access_token']}"}
    assert httpx.post(u + "/v1/agents/counter/alice/rpc", headers=dh, json={"method": "add", "args": [1, 2]}).json()["result"] == 3
    r = httpx.get(u + "/v1/models", headers=dh)
    assert r.status_code == 403 and "urn:myriad:models" in r.text  # audience narrowed away
    # OAuth error shapes
    for change, error in [({"scope": "admin"}, "invalid_scope"), ({"resource": "urn:myriad:usage"}, "invalid_target"),
                          ({"actor_token": user}, "invalid_grant"), ({"subject_token": "x.y.z"}, "invalid_grant"),
                          ({"grant_type": "password"}, "unsupported_grant_type"), ({"resource": "https://x"}, "invalid_target")]:
        r = httpx.post(u + "/v1/oauth/token", data={**form, **change})
        assert r.status_code == 400 and r.json()["error"] == error, (change, r.text)
        assert user not in r.text
    r = httpx.post(u + "/v1/oauth/token", json={**form, "resource": ["urn:myriad:agents"]})
    assert r.status_code == 200
    # RFC 7009: revoke the delegated token; it stops working at once, and junk is a quiet 200.
    assert httpx.post(u + "/v1/oauth/revoke", data={"token": body["access_token"]}).status_code == 200
    r = httpx.post(u + "/v1/agents/counter/alice/rpc", headers=dh, json={"method": "add", "args": [1, 2]})
    assert r.status_code == 401 and "revoked" in r.text
    assert httpx.post(u + "/v1/oauth/revoke", data={"token": "junk"}).status_code == 200
    assert httpx.post(u + "/v1/oauth/revoke", data={}).status_code == 400
    for raw, ctype in [(b"a=%ZZ&&=", "application/x-www-form-urlencoded"), (b"\xff", "application/x-www-form-urlencoded"),
                       (b"[1]", "application/json"), (b"{", "application/json")]:
        r = httpx.post(u + "/v1/oauth/token", content=raw, headers={"content-type": ctype})
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", (raw, r.text)
    keys.close()


def test_well_known(server):
    u = server.url
    jwks = httpx.get(u + "/.well-known/jwks.json").json()
    assert jwks["keys"] and all(k["kty"] == "OKP" and "d" not in k for k in jwks["keys"])
    meta = httpx.get(u + "/.well-known/oauth-authorization-server").json()
    assert meta["token_endpoint"].endswith("/v1/oauth/token") and GRANT_TOKEN_EXCHANGE in meta["grant_types_supported"]
    r = httpx.get(u + "/.well-known/http-message-signatures-directory")
    assert r.headers["content-type"].startswith("application/http-message-signatures-directory+json")
    assert 'tag="http-message-signatures-directory"' in r.headers["signature-input"]
    assert all("d" not in k for k in r.json()["keys"])


def test_vault_api(server):
    u, h = server.url, server.headers()
    secret = "xoxb-" + "slackSecretValue" * 2
    r = httpx.put(u + "/v1/vault/credentials/slack", headers=h,
                  json={"user": "bob", "secret": secret, "domains": ["slack.com", "*.slack.com"], "header": "Authorization"})
    assert r.status_code == 201 and secret not in r.text and r.json()["fingerprint"].startswith("sha256:")
    for bad in ({"user": "bob", "domains": ["slack.com"]}, {"user": "bob", "secret": secret},
                {"secret": secret, "domains": ["slack.com"]}, {"user": "bob", "secret": secret, "domains": ["*"]}):
        r = httpx.put(u + "/v1/vault/credentials/slack", headers=h, json=bad)
        assert r.status_code == 400 and secret not in r.text, (bad, r.text)
    r = httpx.put(u + "/v1/vault/credentials/slack", headers=h, content=b"{nope")
    assert r.status_code == 400
    tok = httpx.post(u + "/v1/admin/user-tokens", headers=h,
                     json={"user": "bob", "scope": "vault:slack", "resource": "urn:myriad:vault"}).json()["access_token"]
    th = {"Authorization": f"Bearer {tok}"}
    listed = httpx.get(u + "/v1/vault/credentials", headers=th).json()["credentials"]
    assert [(c["user"], c["provider"]) for c in listed] == [("bob", "slack")] and secret not in str(listed)
    r = httpx.put(u + "/v1/vault/credentials/slack", headers=th, json={"user": "carol", "secret": "x" * 10, "domains": ["slack.com"]})
    assert r.status_code == 403
    r = httpx.put(u + "/v1/vault/credentials/github", headers=th, json={"secret": "x" * 10, "domains": ["github.com"]})
    assert r.status_code == 403 and "vault:github" in r.text
    assert httpx.delete(u + "/v1/vault/credentials/slack", headers=th).status_code == 204
    assert httpx.delete(u + "/v1/vault/credentials/slack", headers=th).status_code == 404
    r = httpx.post(u + "/v1/admin/keys/000000000000/rotate", headers=h, json={})
    assert r.status_code == 404
    r = httpx.post(u + "/v1/admin/keys/000000000000/rotate", headers=h, json={"grace": "soon"})
    assert r.status_code == 400


def test_class_scoped_key_sees_and_drives_only_its_classes(server):
    u, h = server.url, server.headers()
    key = httpx.post(u + "/v1/admin/keys", headers=h, json={"scopes": "agents:counter"}).json()["key"]
    kh = {"Authorization": f"Bearer {key}"}
    assert [c["agent"] for c in httpx.get(u + "/v1/agents", headers=kh).json()["classes"]] == ["counter"]
    assert len(httpx.get(u + "/v1/agents", headers=h).json()["classes"]) > 1
    assert httpx.post(u + "/v1/agents/counter/k/rpc", headers=kh, json={"method": "add", "args": [1, 1]}).status_code == 200
    r = httpx.get(u + "/v1/agents/reminders/k", headers=kh)
    assert r.status_code == 403 and r.json()["error"]["missing_scope"] == "agents:reminders"
    r = httpx.get(u + "/v1/usage", headers=kh)
    assert r.status_code == 403 and r.json()["error"]["missing_scope"] == "usage"
