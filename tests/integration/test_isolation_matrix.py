"""Tenant isolation on every door of a real ``myriad serve`` process.

Each door (agents, models, usage, admin, vault, sandboxes) is driven with: another tenant's key, an expired key, a revoked key, a
forged token (tampered, and self-signed under Myriad's kid), replayed tokens (an
expired delegated token, an agent workload token, a token minted for another door),
and credentials whose scopes or audience do not cover the call. Every attempt must be
refused with the right status (401 or 403; 4001/4003 on WebSocket), and the error
text must not leak the presented credential, another tenant's name or data.

Tokens are minted by this test process from the server's own identity database (as the
agent host inside the server would), so they are genuine except where forged on purpose.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric import ed25519

from myriad.identity import Identity, KeyStore
from myriad.identity import jose
from myriad.settings import IdentitySettings
from tests.integration.live import REPO, LiveServer

# door -> (method, path, json body)
DOORS: list[tuple[str, str, str, Any]] = [
    ("agents", "GET", "/agents/counter/secret-room", None),
    ("agents", "GET", "/v1/agents", None),
    ("agents", "GET", "/v1/agents/counter/secret-room", None),
    ("agents", "POST", "/v1/agents/counter/secret-room/rpc", {"method": "add", "args": [1, 1]}),
    ("agents", "DELETE", "/v1/agents/counter/secret-room", None),
    ("models", "POST", "/v1/chat/completions", {"model": "MODEL", "messages": [{"role": "user", "content": "hi"}]}),
    ("models", "POST", "/v1/embeddings", {"model": "EMBED", "input": "hi"}),
    ("models", "GET", "/v1/models", None),
    ("usage", "GET", "/v1/usage", None),
    ("usage", "GET", "/v1/usage/budgets", None),
    ("admin", "GET", "/v1/admin/keys", None),
    ("admin", "GET", "/v1/admin/audit", None),
    ("vault", "GET", "/v1/vault/credentials", None),
    ("sandboxes", "GET", "/v1/sandboxes", None),
    ("sandboxes", "POST", "/v1/sandboxes", {"tier": "isolate"}),
    ("sandboxes", "GET", "/v1/sandboxes/shared-box", None),
    ("sandboxes", "POST", "/v1/sandboxes/shared-box/run", {"code": "return 1"}),
    ("sandboxes", "DELETE", "/v1/sandboxes/shared-box", None),
]
FAMILY = {"sandboxes": "sandbox"}
VAULT_SECRET = "gho_" + "victimTokenValue" * 2


def cli(server: LiveServer, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "myriad", *args, "--data-dir", str(server.data_dir)], cwd=REPO,
                         capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": f"{REPO / 'src'}:{REPO}", "PATH": "/usr/bin:/bin"})
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Any:
    server = LiveServer(tmp_path_factory.mktemp("iso") / "data").start()
    try:
        u, h = server.url, server.headers()
        # The victim tenant ("default") has an agent with state, a stored credential and usage.
        r = httpx.post(u + "/v1/agents/counter/secret-room/rpc", json={"method": "add", "args": [40, 2]}, headers=h)
        assert r.status_code == 200, r.text
        r = httpx.put(u + "/v1/vault/credentials/github", headers=h,
                      json={"user": "victim", "secret": VAULT_SECRET, "domains": ["api.github.com"]})
        assert r.status_code == 201, r.text
        r = httpx.post(u + "/v1/sandboxes", json={"tier": "isolate", "id": "shared-box"}, headers=h)
        assert r.status_code == 201, r.text
        models = [m["id"] for m in httpx.get(u + "/v1/models", headers=h).json()["data"]]
        cli(server, "tenants", "create", "intruder")
        keys = {"other_tenant": cli(server, "keys", "create", "--tenant", "intruder")}
        keys["expired"] = cli(server, "keys", "create", "--tenant", "default", "--ttl", "1")
        revoked = cli(server, "keys", "create", "--tenant", "default")
        cli(server, "keys", "revoke", revoked.split("_")[1])
        keys["revoked"] = revoked
        keys["wrong_secret"] = server.key[:-3] + ("xyz" if not server.key.endswith("xyz") else "abc")
        keys["usage_only"] = cli(server, "keys", "create", "--tenant", "default", "--scopes", "usage")
        keystore = KeyStore(server.data_dir)
        identity = Identity(IdentitySettings(), keystore, server.data_dir)
        time.sleep(1.1)  # let the 1 s key expire
        yield {"server": server, "keys": keys, "identity": identity, "models": models}
        keystore.close()
    finally:
        server.stop()


def _call(server: LiveServer, method: str, path: str, body: Any, token: str, models: list[str]) -> httpx.Response:
    if body is not None:
        body = json.loads(json.dumps(body).replace("MODEL", models[0]).replace("EMBED", models[-1]))
    return httpx.request(method, server.url + path, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def _assert_no_leak(text: str, presented: str) -> None:
    assert presented not in text
    if presented.startswith("myr_"):
        assert presented.split("_", 2)[2] not in text
    for secret in (VAULT_SECRET, "secret-room\":", "victim", "\"n\": 42", "Traceback"):
        assert secret not in text, secret


def _tokens(world: Any) -> dict[str, tuple[str, int, str]]:
    """name -> (token, expected status, expected words in the message)"""
    ident: Identity = world["identity"]
    t = ident.tokens
    all_doors = [f"urn:myriad:{d}" for d in ("agents", "models", "usage", "admin", "vault", "sandboxes")]
    good = t.user_token("default", "victim", scopes="*", resources=all_doors)
    head, body, sig = good.split(".")
    tampered_body = jose.b64url(json.dumps({**jose.parse(good).claims, "tenant": "intruder"}).encode())
    rogue = ed25519.Ed25519PrivateKey.generate()
    self_signed = jose.encode({**jose.parse(good).claims}, rogue, kid=jose.parse(good).kid)
    now = int(time.time())
    expired = t._mint({"sub": "victim", "tenant": "default", "typ": "delegated", "scope": "*", "aud": all_doors,
                       "iat": now - 900, "exp": now - 600}, 0)
    revoked = t.user_token("default", "victim", scopes="*", resources=all_doors)
    ident.revoke(revoked)
    return {
        "revoked_token": (revoked, 401, "revoked"),
        "tampered": (f"{head}.{tampered_body}.{sig}", 401, "signature"),
        "self_signed": (self_signed, 401, "signature"),
        "expired_token": (expired, 401, "expired"),
        "agent_token": (ident.for_agent("default", "counter/secret-room").token(), 401, "cannot be used here"),
        "other_audience": (t.user_token("default", "victim", scopes="*", resources=["urn:myriad:egress"]), 403, "audience"),
        "no_scope": (t.user_token("default", "victim", scopes="egress", resources=all_doors), 403, "scope"),
        "other_tenant_token": (t.user_token("intruder", "mallory", scopes="*", resources=all_doors), None, ""),
    }


@pytest.mark.parametrize("door,method,path,body", DOORS, ids=[f"{m} {p}" for _, m, p, _ in DOORS])
def test_every_http_door_refuses_bad_credentials(world, door, method, path, body):
    server, keys, models = world["server"], world["keys"], world["models"]
    cases: dict[str, tuple[str, int | None, str]] = {
        "expired_key": (keys["expired"], 401, "expired"),
        "revoked_key": (keys["revoked"], 401, "revoked"),
        "wrong_secret": (keys["wrong_secret"], 401, "invalid"),
        "garbage": ("not-a-credential", 401, "malformed"),
        "other_tenant_key": (keys["other_tenant"], None, ""),
        **_tokens(world),
    }
    if door != "usage":
        cases["usage_only_key"] = (keys["usage_only"], 403, FAMILY.get(door, door))
    for name, (token, status, words) in cases.items():
        r = _call(server, method, path, body, token, models)
        _assert_no_leak(r.text, token)
        if status is None:
            # Another tenant is not refused at its own tenant's doors, but it must never see the
            # victim's data: it addresses its own namespace.
            if name == "other_tenant_token" and r.status_code == 403 and (
                    "/secret-room" in path or path.startswith("/v1/admin")):
                continue  # a user's token: not its user's agent, no admin door (test_user_isolation.py)
            _assert_isolated(door, method, path, r)
            continue
        assert r.status_code == status, (name, r.status_code, r.text)
        message = r.json()["error"]["message"]
        assert words.lower() in message.lower(), (name, message)
        if status == 403:
            assert r.json()["error"].get("code") in ("forbidden", "permission_denied") or "scope" in message or "audience" in message


def _assert_isolated(door: str, method: str, path: str, r: httpx.Response) -> None:
    if path == "/v1/agents/counter/secret-room" and method == "GET":
        assert r.status_code == 200 and r.json()["state"] != {"n": 42}
    if path.endswith("/rpc"):
        assert r.status_code == 200 and r.json()["result"] < 42  # the intruder's own counter, not the victim's 42
    if path == "/v1/admin/keys":
        assert r.status_code == 200 and {k["tenant"] for k in r.json()["keys"]} <= {"intruder"}
    if path == "/v1/vault/credentials":
        assert r.status_code == 200 and r.json()["credentials"] == []
    if path.startswith("/v1/sandboxes/shared-box"):
        assert r.status_code == 404, r.text  # another tenant's sandbox id is as good as unknown
    if path == "/v1/sandboxes" and method == "GET":
        assert r.status_code == 200 and "shared-box" not in r.text
    assert r.status_code < 500, r.text


def test_cross_tenant_handles_are_refused(world):
    server, keys = world["server"], world["keys"]
    h = {"Authorization": f"Bearer {keys['other_tenant']}"}
    victim_key_id = server.key.split("_")[1]
    r = httpx.delete(server.url + f"/v1/admin/keys/{victim_key_id}", headers=h)
    assert r.status_code == 404 and "default" not in r.text
    r = httpx.post(server.url + f"/v1/admin/keys/{victim_key_id}/rotate", headers=h, json={})
    assert r.status_code == 404
    r = httpx.get(server.url + "/v1/usage", params={"tenant": "default"}, headers=h)
    assert r.status_code == 403
    r = httpx.delete(server.url + "/v1/vault/credentials/github", params={"user": "victim"}, headers=h)
    assert r.status_code == 404
    # The victim still has everything.
    r = httpx.get(server.url + "/v1/sandboxes/shared-box", headers=server.headers())
    assert r.status_code == 200 and r.json()["owner"] == "default"
    assert httpx.get(server.url + "/v1/agents/counter/secret-room", headers=server.headers()).json()["state"] == {"n": 42}
    creds = httpx.get(server.url + "/v1/vault/credentials", headers=server.headers()).json()["credentials"]
    assert [c["provider"] for c in creds] == ["github"] and VAULT_SECRET not in json.dumps(creds)


def test_websocket_door(world):
    server, keys = world["server"], world["keys"]
    tokens = _tokens(world)

    async def close_code(token: str) -> tuple[int, str]:
        async with websockets.connect(f"{server.ws_url}/agents/counter/secret-room?token={token}") as ws:
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            except websockets.ConnectionClosed as e:
                return (e.rcvd.code, e.rcvd.reason) if e.rcvd else (1006, "")

    async def first_state(token: str) -> Any:
        async with websockets.connect(f"{server.ws_url}/agents/counter/secret-room?token={token}") as ws:
            for _ in range(3):
                msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if msg["type"] == "cf_agent_state":
                    return msg["state"]

    async def run() -> None:
        for name, token, code in [("expired", keys["expired"], 4001), ("revoked", keys["revoked"], 4001),
                                  ("tampered", tokens["tampered"][0], 4001), ("agent_token", tokens["agent_token"][0], 4001),
                                  ("other_audience", tokens["other_audience"][0], 4003),
                                  ("no_scope", tokens["no_scope"][0], 4003), ("usage_only", keys["usage_only"], 4003)]:
            got, reason = await close_code(token)
            assert got == code, (name, got, reason)
            assert token not in reason
        assert await first_state(server.key) == {"n": 42}
        assert await first_state(keys["other_tenant"]) != {"n": 42}

    asyncio.run(run())


def test_audit_log_records_the_principal_chain(world):
    server, ident = world["server"], world["identity"]
    agent = ident.for_agent("default", "counter/victim")  # a user's token reaches its user's agents
    user = ident.tokens.user_token("default", "victim", scopes="agents", resources=["urn:myriad:agents"])
    delegated = asyncio.run(agent.act_for(user, resources=["urn:myriad:agents"]))
    r = httpx.post(server.url + "/v1/agents/counter/victim/rpc", json={"method": "add", "args": [40, 2]},
                   headers={"Authorization": f"Bearer {delegated}"})
    assert r.status_code == 200, r.text
    r = httpx.get(server.url + "/v1/agents/counter/victim", headers={"Authorization": f"Bearer {delegated}"})
    assert r.status_code == 200 and r.json()["state"] == {"n": 42}
    entries = httpx.get(server.url + "/v1/admin/audit", headers=server.headers()).json()["entries"]
    door = next(e for e in entries if e["action"] == "door.agents" and e["outcome"] == "allowed")
    assert door["chain"] == ["user:victim", agent.spiffe_id]
    assert any(e["action"] == "door.agents" and e["outcome"] == "denied" for e in entries)
    assert all(VAULT_SECRET not in json.dumps(e) for e in entries)
