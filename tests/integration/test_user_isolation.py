"""Least privilege inside one tenant (issue 10, classes 2 and 3), on a real server.

Every door is driven by every kind of principal: the tenant's ``*`` key, a narrow
key (``sandbox:isolate`` only), an ``admin`` key, a ``models``-only key, alice's
user token, bob's user token (another user of the same tenant), a token delegated
by alice's agent and a support token with the ``users`` scope. (Revoked keys
mid-WebSocket: test_slow_clients.py.) Each answer is checked against the expected status:
a user's agents, sandboxes, vault entries and usage are theirs (unless the
token holds the ``users`` scope); an isolate-only
key touches no container; the dashboard needs ``usage`` and the whole tenant; an
admin key cannot rotate or mint a key broader than itself.
(The companion: test_isolation_matrix.py, across tenants and bad credentials.)
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import websockets

from myriad.identity import Identity, KeyStore
from myriad.settings import IdentitySettings
from tests.integration.live import REPO, LiveServer
from tests.sandbox.conftest import sandbox_root

ALL_DOORS = [f"urn:myriad:{d}" for d in ("agents", "models", "usage", "admin", "vault", "sandboxes")]
USER_SCOPES = "agents models usage vault sandbox admin egress"  # everything but 'users' (which '*' would hold)


def _cli(server: LiveServer, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "myriad", *args, "--data-dir", str(server.data_dir)], cwd=REPO,
                         capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": f"{REPO / 'src'}:{REPO}", "PATH": "/usr/bin:/bin"})
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp: Path = tmp_path_factory.mktemp("users")
    server = LiveServer(tmp / "data", env={"MYRIAD_SANDBOX__ROOT": str(sandbox_root(tmp))}).start()
    keystore = KeyStore(server.data_dir)
    try:
        ident = Identity(IdentitySettings(), keystore, server.data_dir)
        t = ident.tokens
        who = {
            "tenant": server.key,
            "isolate_key": _cli(server, "keys", "create", "--tenant", "default", "--scopes", "sandbox:isolate"),
            "admin_key": _cli(server, "keys", "create", "--tenant", "default", "--scopes", "admin"),
            "models_key": _cli(server, "keys", "create", "--tenant", "default", "--scopes", "models"),
            "usage_key": _cli(server, "keys", "create", "--tenant", "default", "--scopes", "usage"),
            "alice": t.user_token("default", "alice", scopes=USER_SCOPES, resources=ALL_DOORS),
            "bob": t.user_token("default", "bob", scopes=USER_SCOPES, resources=ALL_DOORS),
            # a support tool acting for user carol, allowed across the tenant's users
            "support": t.user_token("default", "carol", scopes="agents users", resources=ALL_DOORS),
        }
        agent = ident.for_agent("default", "counter/alice")
        who["delegated"] = asyncio.run(agent.act_for(who["alice"], resources=["urn:myriad:agents"]))
        u = server.url

        def h(name: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {who[name]}"}

        # alice's objects, made with alice's own token
        for body in ({"needs": ["filesystem", "binaries"], "id": "alice-box"}, {"tier": "isolate", "id": "alice-iso"}):
            r = httpx.post(u + "/v1/sandboxes", json=body, headers=h("alice"), timeout=60)
            assert r.status_code == 201, r.text
        r = httpx.post(u + "/v1/sandboxes", json={"needs": ["filesystem"], "id": "team-box"}, headers=h("tenant"), timeout=60)
        assert r.status_code == 201, r.text
        r = httpx.post(u + "/v1/agents/counter/alice/rpc", json={"method": "add", "args": [40, 2]}, headers=h("alice"))
        assert r.status_code == 200, r.text
        r = httpx.post(u + "/v1/agents/counter/team/rpc", json={"method": "add", "args": [1, 2]}, headers=h("tenant"))
        assert r.status_code == 200, r.text
        r = httpx.put(u + "/v1/vault/credentials/github", json={"secret": "gho_alice", "domains": ["api.github.com"]},
                      headers=h("alice"))
        assert r.status_code == 201, r.text
        yield {"server": server, "who": who, "h": h}
    finally:
        keystore.close()
        server.stop()


# door -> expected status per principal (a missing principal: not asserted by this row)
T, ISO, ADM, MOD, USG, A, B, D, S = ("tenant", "isolate_key", "admin_key", "models_key", "usage_key", "alice", "bob",
                                     "delegated", "support")
MATRIX: list[tuple[str, str, Any, dict[str, int]]] = [
    # alice's container: her own and the tenant key's; bob gets 404 (as if unknown), the isolate key 403
    ("GET", "/v1/sandboxes/alice-box", None, {T: 200, A: 200, B: 404, ISO: 403, ADM: 403, D: 403}),
    ("POST", "/v1/sandboxes/alice-box/exec", {"cmd": "true"}, {T: 200, A: 200, B: 404, ISO: 403}),
    ("GET", "/v1/sandboxes/alice-box/files?path=.", None, {A: 200, B: 404, ISO: 403}),
    ("GET", "/v1/sandboxes/alice-box/files/content?path=x", None, {B: 404, ISO: 403}),
    ("PUT", "/v1/sandboxes/alice-box/files/content?path=x", b"hi", {B: 404, ISO: 403}),
    ("POST", "/v1/sandboxes/alice-box/processes", {"cmd": "sleep 1"}, {B: 404, ISO: 403}),
    ("POST", "/v1/sandboxes/alice-box/pause", None, {B: 404, ISO: 403}),
    ("POST", "/v1/sandboxes/alice-box/snapshots", None, {B: 404, ISO: 403}),
    ("POST", "/v1/sandboxes/alice-box/fork", {}, {B: 404, ISO: 403}),
    ("DELETE", "/v1/sandboxes/alice-box", None, {B: 404, ISO: 403}),
    ("POST", "/v1/sandboxes/alice-iso/run", {"code": "return 1"}, {A: 200, B: 404, ISO: 200, T: 200}),
    # the tenant's container: no user's token reaches it, the isolate key does not either
    ("POST", "/v1/sandboxes/team-box/exec", {"cmd": "true"}, {T: 200, A: 404, B: 404, ISO: 403}),
    ("DELETE", "/v1/sandboxes/team-box", None, {A: 404, ISO: 403}),
    # agents: an instance is the user's whose token reached it first; one the tenant made is the tenant's
    ("GET", "/v1/agents/counter/alice", None, {T: 200, A: 200, D: 200, S: 200, B: 403, ISO: 403}),
    ("POST", "/v1/agents/counter/alice/rpc", {"method": "add", "args": [0, 0]}, {A: 200, D: 200, B: 403}),
    ("GET", "/agents/counter/alice", None, {A: 200, B: 403}),
    ("GET", "/agents/counter/alice/sub/counter/child", None, {B: 403}),
    ("DELETE", "/v1/agents/counter/alice", None, {B: 403}),
    ("GET", "/v1/agents/counter/bobs-new", None, {B: 404, A: 403, D: 403}),  # 404: bob's now, not made yet
    ("GET", "/v1/agents/counter/team", None, {T: 200, S: 200, A: 403, B: 403}),
    # vault: a user's own entries only
    ("GET", "/v1/vault/credentials?user=alice", None, {A: 200, B: 403, T: 200}),
    ("DELETE", "/v1/vault/credentials/github?user=alice", None, {B: 403}),
    # usage: a user's token sees its own usage, nothing tenant-wide
    ("GET", "/v1/usage?user=alice", None, {A: 200, B: 403, T: 200, USG: 200, MOD: 403}),
    ("GET", "/v1/usage", None, {A: 200, B: 200}),
    ("GET", "/v1/usage/events", None, {A: 403, B: 403, T: 200, USG: 200}),
    ("GET", "/v1/usage/invoice?since=2026-01-01T00:00:00Z&until=2026-02-01T00:00:00Z", None, {A: 403, T: 200}),
    ("POST", "/v1/usage/budgets", {"user": "alice", "hard": 100}, {B: 403}),
    # the dashboard's API: the whole tenant's turns and ledger; needs usage, and no user token
    ("GET", "/dashboard/api/turns", None, {T: 200, USG: 200, MOD: 403, ISO: 403, A: 403, B: 403}),
    ("GET", "/dashboard/api/ledger", None, {T: 200, MOD: 403, A: 403}),
    ("GET", "/dashboard/api/overview", None, {MOD: 403, A: 403}),
    # admin: not for user tokens
    ("GET", "/v1/admin/keys", None, {T: 200, ADM: 200, A: 403, B: 403, ISO: 403}),
    ("POST", "/v1/admin/user-tokens", {"user": "bob", "scope": "agents", "resource": "urn:myriad:agents"}, {A: 403}),
    ("GET", "/v1/mcp/servers", None, {A: 403, ISO: 403}),
    # only model users teach the tenant's router
    ("POST", "/v1/router/outcomes", {"prompt": "hi", "weak_ok": True}, {ISO: 403, USG: 403}),
    # no key mints itself more scopes
    ("POST", "/v1/admin/keys", {"scopes": "*"}, {ADM: 403}),
    ("POST", "/v1/admin/keys", {"scopes": "admin models"}, {ADM: 403}),
    ("POST", "/v1/admin/keys", {"scopes": "admin"}, {ADM: 201}),
]


def _request(world: dict[str, Any], who: str, method: str, path: str, body: Any) -> httpx.Response:
    server = world["server"]
    kw: dict[str, Any] = {"headers": world["h"](who), "timeout": 30}
    if isinstance(body, bytes):
        kw["content"] = body
    elif body is not None:
        kw["json"] = body
    return httpx.request(method, server.url + path, **kw)


def test_every_door_with_every_principal(world: dict[str, Any]) -> None:
    # destructive rows (DELETE) list refused principals only, so the order does not matter
    failures = []
    for method, path, body, expected in MATRIX:
        for who, status in expected.items():
            r = _request(world, who, method, path, body)
            if r.status_code != status:
                failures.append(f"{who:12} {method} {path}: {r.status_code} (want {status}) {r.text[:160]}")
            assert r.status_code < 500, (who, method, path, r.text)
            if 400 <= r.status_code < 500:
                for leak in ("gho_alice", '"n": 42', "Traceback"):
                    assert leak not in r.text
    assert not failures, "\n".join(failures)


def test_listings_show_only_what_the_principal_reaches(world: dict[str, Any]) -> None:
    ids = {who: {s["id"] for s in _request(world, who, "GET", "/v1/sandboxes", None).json()["sandboxes"]}
           for who in (T, A, B, ISO)}
    assert {"alice-box", "alice-iso", "team-box"} <= ids[T]
    assert ids[A] >= {"alice-box", "alice-iso"} and "team-box" not in ids[A]
    assert not ids[B] & {"alice-box", "alice-iso", "team-box"}
    assert "alice-iso" in ids[ISO] and not ids[ISO] & {"alice-box", "team-box"}  # no containers for an isolate key
    creds = _request(world, B, "GET", "/v1/vault/credentials", None).json()["credentials"]
    assert all(c["user"] == "bob" for c in creds)


def test_admin_key_cannot_rotate_a_broader_key(world: dict[str, Any]) -> None:
    server = world["server"]
    star_id = server.key.split("_")[1]
    r = _request(world, ADM, "POST", f"/v1/admin/keys/{star_id}/rotate", {"grace": 3600})
    assert r.status_code == 403 and "no broader than itself" in r.json()["error"]["message"], r.text
    assert "key" not in r.json()
    # the * key still works, and the admin key may rotate a key no broader than itself
    assert httpx.get(server.url + "/v1/agents", headers=server.headers()).status_code == 200
    own_id = world["who"][ADM].split("_")[1]
    r = _request(world, ADM, "POST", f"/v1/admin/keys/{own_id}/rotate", {"grace": 60})
    assert r.status_code == 201 and r.json()["scopes"] == "admin", r.text


def test_websocket_door_refuses_another_users_agent(world: dict[str, Any]) -> None:
    server, who = world["server"], world["who"]

    async def close_code(token: str, name: str) -> int:
        async with websockets.connect(f"{server.ws_url}/agents/counter/{name}?token={token}") as ws:
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            except websockets.ConnectionClosed as e:
                return e.rcvd.code if e.rcvd else 1006

    async def first_state(token: str, name: str) -> Any:
        async with websockets.connect(f"{server.ws_url}/agents/counter/{name}?token={token}") as ws:
            for _ in range(3):
                msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if msg["type"] == "cf_agent_state":
                    return msg["state"]

    async def run() -> None:
        assert await close_code(who[B], "alice") == 4003
        assert await close_code(who[A], "team") == 4003
        assert await first_state(who[A], "alice") == {"n": 42}

    asyncio.run(run())
