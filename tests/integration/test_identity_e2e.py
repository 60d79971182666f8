"""End to end: an agent calls an outside HTTP API on a user's behalf.

The user (alice) arrives with a JWT from her application's identity provider (a JWKS
served on 127.0.0.1). Her tenant stored her GitHub-like token in the vault. She asks the
``courier`` agent (over the real HTTP app) to call the outside API (a server on
127.0.0.1 standing in for it); the agent exchanges her token for a delegated one
(RFC 8693: sub=alice, act=the agent), and the request leaves:

1. from the agent's own tool layer (``AgentIdentity.http``),
2. from Code Mode in an isolate, through a host-side tool,
3. from a container sandbox, through the egress proxy with the identity hook,

each time with alice's credential injected and signed with Web Bot Auth. The outside
server checks the credential and verifies the signature with the independent
``http-message-signatures`` package against the keys Myriad publishes at
``/.well-known/http-message-signatures-directory``. Sandboxed code never sees the secret.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_message_signatures import HTTPMessageVerifier, MappingKeyResolver, algorithms

from myriad.agents import Agent, callable
from myriad.identity import jose
from myriad.server import build_services, create_app
from myriad.settings import Settings
from tests.identity.conftest import IdP
from tests.sandbox.conftest import make_settings

SECRET = "gho_" + "AliceRealGithubToken" * 2


@dataclass
class _Req:
    method: str
    url: str
    headers: dict[str, str]


class OutsideAPI:
    """An API on 127.0.0.1 that demands alice's token and a valid Web Bot Auth signature."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.seen: list[dict[str, Any]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                headers = {k.lower(): v for k, v in self.headers.items()}
                url = f"http://{headers['host']}{self.path}"
                verdict: dict[str, Any] = {"path": self.path, "auth_ok": headers.get("authorization") == f"Bearer {SECRET}"}
                try:
                    verifier = HTTPMessageVerifier(signature_algorithm=algorithms.ED25519,
                                                   key_resolver=MappingKeyResolver(public_keys=api.keys, private_keys={}))
                    [result] = verifier.verify(_Req("GET", url, headers), expect_tag="web-bot-auth",
                                               require_components=("@authority", '"signature-agent";key="sig1"'))
                    verdict["signature_ok"], verdict["keyid"] = True, result.parameters["keyid"]
                except Exception as e:  # noqa: BLE001 - the verdict names it
                    verdict["signature_ok"], verdict["signature_error"] = False, str(e)
                verdict["signature_agent"] = headers.get("signature-agent")
                api.seen.append(verdict)
                status = 200 if verdict["auth_ok"] and verdict["signature_ok"] else 401
                body = json.dumps({"repos": ["myriad"], "path": self.path} if status == 200 else {"error": "unauthorized"}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Courier(Agent):
    """Calls outside APIs for its user, from each place an agent's code can run."""

    async def _delegated(self, user_token: str, scope: str) -> tuple[Any, str]:
        me = self._host.identity.for_ref(self.ref)
        return me, await me.act_for(user_token, scope=scope, resources=["urn:myriad:egress"])

    @callable()
    async def from_tool_layer(self, user_token: str, url: str) -> dict:
        me, delegated = await self._delegated(user_token, "egress:127.0.0.1 vault:github")
        async with await me.http(delegated) as client:
            r = await client.get(url)
        return {"status": r.status_code, "body": r.json(), "act": jose.parse(delegated).claims["act"]}

    @callable()
    async def from_isolate(self, user_token: str, base: str, scope: str) -> dict:
        from myriad.sandbox import tool

        me, delegated = await self._delegated(user_token, scope)
        client = await me.http(delegated)

        @tool
        async def list_repos(path: str) -> dict:
            """Call the outside API (the credential stays on the host)."""
            # The tool acts one hop further down the chain, with only what it needs.
            tool_id = me.tool("list_repos")
            narrowed = await tool_id.act_for(delegated, scope="egress:127.0.0.1 vault:github", resources=["urn:myriad:egress"])
            async with await tool_id.http(narrowed) as tool_client:
                r = await tool_client.get(base + path)
            return {"status": r.status_code, "body": r.json()}

        box = await me.sandbox(delegated, self.sandbox, tools=[list_repos])
        try:
            res = await box.run("const r = await tools.list_repos({path: '/user/repos'}); console.log(JSON.stringify(r)); return r;")
        finally:
            await box.close()
            await client.aclose()
        return {"value": res.value, "stdout": res.stdout, "error": res.error, "tier": box.tier}

    @callable()
    async def from_container(self, user_token: str, base: str, scope: str) -> dict:
        me, delegated = await self._delegated(user_token, scope)
        identity = self._host.identity
        box = await me.sandbox(delegated, self.sandbox, needs={"shell"},
                               network={"allow": ["127.0.0.1"], "allow_private": ["127.0.0.1"]})
        try:
            res = await box.exec(
                f"curl -sS -H 'Signature: sig1=:Zm9yZ2Vk:' -w '\\n%{{http_code}}' {base}/user/repos; echo; env; cat /proc/self/environ")
        finally:
            identity.outbound.unbind_sandbox(box.owner, box.id)
            await box.close()
        return {"stdout": res.stdout, "stderr": res.stderr, "exit_code": res.exit_code, "tier": box.tier}


@pytest.fixture
async def world(tmp_path: Path):
    from myriad.sandbox import Sandboxes

    idp, api = IdP(), OutsideAPI()
    settings = Settings(data_dir=tmp_path / "data")
    settings.identity.user_issuer, settings.identity.user_jwks_url = idp.issuer, idp.jwks_url
    settings.identity.user_scopes = "agents egress vault sandbox tools"
    services = build_services(settings, [Courier])
    sandboxes = Sandboxes(make_settings(tmp_path, egress_allow_private=["127.0.0.1"]))
    sandboxes.egress.add_hook(services.identity.outbound.proxy_hook)
    services.host.sandboxes = sandboxes
    await services.start()
    services.keys.create_tenant("acme")
    _, admin_key = services.keys.create_key("acme", scopes="admin vault agents")
    app = create_app(services, manage_services=False)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://myriad.test")
    r = await client.put("/v1/vault/credentials/github", headers={"Authorization": f"Bearer {admin_key}"},
                         json={"user": "alice", "secret": SECRET, "domains": ["127.0.0.1"]})
    assert r.status_code == 201, r.text
    directory = await client.get("/.well-known/http-message-signatures-directory")
    assert directory.headers["content-type"].startswith("application/http-message-signatures-directory+json")
    api.keys.update({k["kid"]: jose.load_public_jwk(k) for k in directory.json()["keys"]})
    try:
        yield {"client": client, "idp": idp, "api": api, "services": services, "sandboxes": sandboxes}
    finally:
        await client.aclose()
        await sandboxes.aclose()
        await services.close()
        idp.close()
        api.close()


async def _rpc(world: Any, method: str, *args: Any) -> Any:
    user_token = world["idp"].token("alice")
    r = await world["client"].post(f"/v1/agents/courier/alice/rpc", headers={"Authorization": f"Bearer {user_token}"},
                                   json={"method": method, "args": [user_token, *args]})
    assert r.status_code == 200, r.text
    return r.json()["result"]


def _no_secret(*texts: Any) -> None:
    for t in texts:
        assert SECRET not in json.dumps(t, default=str)
        assert "AliceRealGithubToken" not in json.dumps(t, default=str)


async def test_from_the_agents_tool_layer(world):
    out = await _rpc(world, "from_tool_layer", world["api"].url + "/user/repos")
    assert out["status"] == 200 and out["body"]["repos"] == ["myriad"], (out, world["api"].seen)
    assert out["act"]["sub"] == "spiffe://myriad.local/tenant/acme/agent/courier/alice"
    seen = world["api"].seen[-1]
    assert seen["auth_ok"] and seen["signature_ok"] and seen["signature_agent"] == 'sig1="http://127.0.0.1:8787"'
    audit = world["services"].identity.audit.entries("acme", action="egress")
    assert audit[0].chain == ["user:alice", out["act"]["sub"]] and audit[0].detail["credentials"] == ["github"]
    _no_secret([e.to_json() for e in world["services"].identity.audit.entries("acme", limit=1000)])


async def test_from_an_isolate_through_a_host_tool(world):
    out = await _rpc(world, "from_isolate", world["api"].url, "egress:127.0.0.1 vault:github sandbox:isolate tools:list_repos")
    assert out["tier"] == "isolate"
    assert out["value"] == {"status": 200, "body": {"repos": ["myriad"], "path": "/user/repos"}}, out
    assert world["api"].seen[-1]["signature_ok"] and world["api"].seen[-1]["auth_ok"]
    _no_secret(out)
    agent = "spiffe://myriad.local/tenant/acme/agent/courier/alice"
    egress = world["services"].identity.audit.entries("acme", action="egress")[0]
    assert egress.chain == ["user:alice", agent, agent + "/tool/list_repos"]
    # Without vault:github in the delegated scope the credential is not lent: the tool is refused.
    out = await _rpc(world, "from_isolate", world["api"].url, "egress:127.0.0.1 sandbox:isolate tools")
    assert out["value"] is None and "vault:github" in (out["error"] or ""), out
    _no_secret(out)
    # Without tools:list_repos the tool cannot be bound into the isolate.
    user_token = world["idp"].token("alice")
    r = await world["client"].post("/v1/agents/courier/alice/rpc", headers={"Authorization": f"Bearer {user_token}"},
                                   json={"method": "from_isolate", "args": [user_token, world["api"].url,
                                                                             "egress:127.0.0.1 vault:github sandbox:isolate tools:other"]})
    assert r.status_code == 403 and "tools:list_repos" in r.text


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("bwrap") is None, reason="container egress needs root and bwrap")
async def test_from_a_container_through_the_egress_proxy(world):
    out = await _rpc(world, "from_container", world["api"].url, "egress:127.0.0.1 vault:github sandbox:container")
    assert out["tier"] == "container"
    body, _, rest = out["stdout"].partition("\n")
    assert json.loads(body) == {"repos": ["myriad"], "path": "/user/repos"}, out
    assert rest.startswith("200")
    seen = world["api"].seen[-1]
    assert seen["auth_ok"] and seen["signature_ok"], seen  # the sandbox's forged Signature header was dropped
    _no_secret(out)  # not in the sandbox's output, environment or process
    assert not world["services"].identity.outbound._bound  # unbound on close
    # A delegated token without sandbox:container cannot open one (nor one whose egress it does not hold).
    r = await world["client"].post("/v1/agents/courier/alice/rpc",
                                   headers={"Authorization": f"Bearer {world['idp'].token('alice')}"},
                                   json={"method": "from_container",
                                         "args": [world["idp"].token("alice"), world["api"].url, "egress:127.0.0.1 vault:github"]})
    assert r.status_code == 403 and "sandbox:container" in r.text
    r = await world["client"].post("/v1/agents/courier/alice/rpc",
                                   headers={"Authorization": f"Bearer {world['idp'].token('alice')}"},
                                   json={"method": "from_container",
                                         "args": [world["idp"].token("alice"), world["api"].url, "egress:example.com vault:github sandbox"]})
    assert r.status_code == 403 and "egress:127.0.0.1" in r.text
    assert not world["sandboxes"]._live or all(b.closed for b in world["sandboxes"]._live.values())


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("bwrap") is None, reason="container egress needs root and bwrap")
def test_through_the_sandbox_api_of_a_real_server(tmp_path):
    """A user's token opens a container over ``/v1/sandboxes``; its curl to the outside API
    leaves through the egress proxy with the user's credential and a Myriad signature."""
    from tests.integration.live import LiveServer

    api = OutsideAPI()
    server = LiveServer(tmp_path / "data", env={"MYRIAD_SANDBOX__EGRESS_ALLOW_PRIVATE": "127.0.0.1"}).start()
    try:
        u, h = server.url, server.headers()
        assert httpx.put(u + "/v1/vault/credentials/github", headers=h,
                         json={"user": "alice", "secret": SECRET, "domains": ["127.0.0.1"]}).status_code == 201
        directory = httpx.get(u + "/.well-known/http-message-signatures-directory").json()
        api.keys.update({k["kid"]: jose.load_public_jwk(k) for k in directory["keys"]})

        def token(scope: str) -> dict[str, str]:
            r = httpx.post(u + "/v1/admin/user-tokens", headers=h, json={
                "user": "alice", "scope": scope, "resource": ["urn:myriad:sandboxes", "urn:myriad:egress"]})
            assert r.status_code == 200, r.text
            return {"Authorization": f"Bearer {r.json()['access_token']}"}

        net = {"allow": ["127.0.0.1"], "allow_private": ["127.0.0.1"]}
        alice = token("sandbox:container egress:127.0.0.1 vault:github")
        r = httpx.post(u + "/v1/sandboxes", headers=alice, json={"needs": ["shell"], "network": net, "id": "web"})
        assert r.status_code == 201, r.text
        r = httpx.post(u + "/v1/sandboxes/web/exec", headers=alice, timeout=30,
                       json={"cmd": f"curl -sS -w '\\n%{{http_code}}' {api.url}/user/repos; env"})
        assert r.status_code == 200, r.text
        out = r.json()["stdout"]
        assert json.loads(out.splitlines()[0]) == {"repos": ["myriad"], "path": "/user/repos"}, out
        assert api.seen[-1]["auth_ok"] and api.seen[-1]["signature_ok"]
        _no_secret(r.json())
        # Scopes are checked when the sandbox opens; a refused sandbox does not survive.
        for scope, missing in [("sandbox:isolate egress:127.0.0.1", "sandbox:container"),
                               ("sandbox:container", "egress:127.0.0.1")]:
            r = httpx.post(u + "/v1/sandboxes", headers=token(scope), json={"needs": ["shell"], "network": net, "id": "x"})
            assert r.status_code == 403 and r.json()["error"]["missing_scope"] == missing, r.text
        assert [b["id"] for b in httpx.get(u + "/v1/sandboxes", headers=h).json()["sandboxes"]] == ["web"]
        # Without vault:github the proxy refuses to lend the credential (403 from the proxy).
        r = httpx.post(u + "/v1/sandboxes", headers=token("sandbox egress:127.0.0.1"), json={"needs": ["shell"], "network": net, "id": "y"})
        assert r.status_code == 201
        r = httpx.post(u + "/v1/sandboxes/y/exec", headers=h, timeout=30,
                       json={"cmd": f"curl -s -o /dev/null -w '%{{http_code}}' {api.url}/user/repos"})
        assert r.json()["stdout"] == "403", r.text
        entries = httpx.get(u + "/v1/admin/audit", headers=h, params={"action": "egress"}).json()["entries"]
        assert entries[0]["outcome"] == "denied" and entries[1]["outcome"] == "allowed"
        assert entries[1]["chain"] == ["user:alice"] and entries[1]["detail"]["credentials"] == ["github"]
    finally:
        server.stop()
        api.close()
