"""Two machines, one PostgreSQL: what one machine knows the other knows too, tried as an
attacker would, through the doors of two real ``myriad serve`` processes (separate data
directories, the same ``--database`` and identity secret, as a multi-machine deployment).

- alice's agent, made through machine 1, is alice's on machine 2 (HTTP and WebSocket);
  bob (the same tenant) is refused on both, and so is the agent made by the tenant key;
- an OAuth authorization code redeemed on machine 1 is refused on machine 2, and a
  refresh token used once is refused on the other machine (rotation holds cluster-wide);
- a response stored through machine 1 continues (``previous_response_id``) and reads
  back on machine 2, with the official ``openai`` client; another user never sees it;
- with the database stopped, those doors answer 503 ``database_unavailable`` at once (a
  WebSocket closes with 1013, which clients retry), and ``/healthz`` keeps answering
  (nothing waits on the event loop).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import openai
import pytest
import websockets

from myriad.identity import Identity, KeyStore
from myriad.models.simulated import start_simulated_upstream
from myriad.settings import IdentitySettings
from tests.integration import openai_server
from tests.integration.live import LiveServer

SECRET = "c2hhcmVkLXNlY3JldC1mb3ItYm90aC1tYWNoaW5lcyE"  # 32 bytes, base64url: identity.secret_key of both machines
DOORS = [f"urn:myriad:{d}" for d in ("agents", "models", "usage", "mcp")]
REDIRECT = "http://localhost:3999/callback"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from tests.pg import PostgresServer

    tmp: Path = tmp_path_factory.mktemp("shared")
    # its own PostgreSQL server: the last test stops it for a moment, which must not touch
    # the session's server (or the tests after this module)
    postgres = PostgresServer(fsync=False).start()
    url = postgres.create_database()
    upstream = start_simulated_upstream(tokens=5)
    cfg = tmp / "models.toml"
    cfg.write_text(openai_server.CONFIG.format(base=upstream.base_url))
    env = {"MYRIAD_DATABASE": url, "MYRIAD_IDENTITY__SECRET_KEY": SECRET, "MYRIAD_MODELS__CONFIG": str(cfg),
           "MYRIAD_STORAGE__CONNECT_TIMEOUT": "2",
           "TIKTOKEN_CACHE_DIR": str(openai_server.tiktoken_cache(tmp / "tiktoken"))}
    one = LiveServer(tmp / "machine-1", agents="examples.counter,examples.notes", env=env).start()
    two = LiveServer(tmp / "machine-2", agents="examples.counter,examples.notes", env=env).start()
    keys = KeyStore(tmp / "minter", url)
    try:
        tokens = Identity(IdentitySettings(secret_key=SECRET), keys, tmp / "minter").tokens
        scopes = "agents models usage"
        who = {"tenant": one.key,  # the default tenant's key: in the database, so both machines accept it
               "alice": tokens.user_token("default", "alice", scopes=scopes, resources=DOORS),
               "bob": tokens.user_token("default", "bob", scopes=scopes, resources=DOORS)}
        yield {"one": one, "two": two, "who": who, "url": url, "upstream": upstream, "postgres": postgres}
    finally:
        keys.close()
        one.stop()
        two.stop()
        upstream.close()
        postgres.destroy()


def _h(world: dict[str, Any], name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world['who'][name]}"}


async def _ws_first_frame(server: LiveServer, path: str, token: str) -> tuple[int | None, Any]:
    """(close code, None) when refused, (None, first frame) when admitted."""
    try:
        async with websockets.connect(f"{server.ws_url}{path}?_pk=c1&token={token}", open_timeout=10) as ws:
            raw = await asyncio.wait_for(ws.recv(), 10)
            return None, json.loads(raw)
    except websockets.ConnectionClosed as e:
        return e.rcvd.code if e.rcvd else None, None


def test_a_users_agent_is_theirs_on_every_machine(world: dict[str, Any]) -> None:
    one, two = world["one"], world["two"]
    r = httpx.post(one.url + "/v1/agents/counter/alice-c/rpc", json={"method": "add", "args": [40, 2]},
                   headers=_h(world, "alice"))
    assert r.status_code == 200 and r.json()["result"] == 42, r.text
    r = httpx.post(one.url + "/v1/agents/counter/team-c/rpc", json={"method": "add", "args": [1, 1]},
                   headers=_h(world, "tenant"))
    assert r.status_code == 200, r.text
    for server in (one, two):
        # alice reaches her own agent on both machines (machine 2 never saw her make it)
        r = httpx.get(server.url + "/v1/agents/counter/alice-c", headers=_h(world, "alice"))
        assert r.status_code == 200, (server.url, r.text)
        r = httpx.post(server.url + "/v1/agents/counter/alice-c/rpc", json={"method": "add", "args": [1, 2]},
                       headers=_h(world, "alice"))
        assert r.status_code == 200, r.text
        # bob, a user of the same tenant, is refused on both; so is alice for the tenant's agent
        for path in ("/v1/agents/counter/alice-c", "/agents/counter/alice-c", "/agents/counter/alice-c/sub/counter/x"):
            r = httpx.get(server.url + path, headers=_h(world, "bob"))
            assert r.status_code == 403, (server.url, path, r.status_code, r.text)
        r = httpx.delete(server.url + "/v1/agents/counter/alice-c", headers=_h(world, "bob"))
        assert r.status_code == 403, r.text
        r = httpx.get(server.url + "/v1/agents/counter/team-c", headers=_h(world, "alice"))
        assert r.status_code == 403, r.text
        # the tenant key reaches both
        assert httpx.get(server.url + "/v1/agents/counter/alice-c", headers=_h(world, "tenant")).status_code == 200

    async def sockets() -> None:
        for server in (one, two):
            code, frame = await _ws_first_frame(server, "/agents/counter/alice-c", world["who"]["alice"])
            assert code is None and frame["type"] == "cf_agent_identity", (server.url, code, frame)
            code, frame = await _ws_first_frame(server, "/agents/counter/alice-c", world["who"]["bob"])
            assert code == 4003 and frame is None, (server.url, code, frame)

    asyncio.run(sockets())

    # bob makes his own agent on machine 2 first: alice cannot take it on machine 1
    r = httpx.post(two.url + "/v1/agents/counter/bob-c/rpc", json={"method": "add", "args": [0, 1]},
                   headers=_h(world, "bob"))
    assert r.status_code == 200, r.text
    r = httpx.post(one.url + "/v1/agents/counter/bob-c/rpc", json={"method": "add", "args": [0, 1]},
                   headers=_h(world, "alice"))
    assert r.status_code == 403, r.text


def test_both_machines_race_to_claim_one_new_agent(world: dict[str, Any]) -> None:
    """alice through machine 1 and bob through machine 2 at the same moment: exactly one
    of them gets the new instance, on both machines."""
    async def race(i: int) -> list[int]:
        path = f"/v1/agents/counter/race-{i}/rpc"
        async with httpx.AsyncClient(timeout=10) as c:
            a, b = await asyncio.gather(
                c.post(world["one"].url + path, json={"method": "add", "args": [0, 0]}, headers=_h(world, "alice")),
                c.post(world["two"].url + path, json={"method": "add", "args": [0, 0]}, headers=_h(world, "bob")))
        return [a.status_code, b.status_code]

    for i in range(5):
        codes = asyncio.run(race(i))
        assert sorted(codes) == [200, 403], codes
        winner = "alice" if codes[0] == 200 else "bob"
        loser = "bob" if winner == "alice" else "alice"
        for server in (world["one"], world["two"]):
            assert httpx.get(f"{server.url}/v1/agents/counter/race-{i}", headers=_h(world, winner)).status_code == 200
            assert httpx.get(f"{server.url}/v1/agents/counter/race-{i}", headers=_h(world, loser)).status_code == 403


def _pkce() -> tuple[str, str]:
    verifier = base64.urlsafe_b64encode(hashlib.sha256(b"shared").digest() * 2).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _code(world: dict[str, Any], server: LiveServer, client_id: str, challenge: str) -> str:
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": "mcp:notes:*",
              "state": "s", "code_challenge": challenge, "code_challenge_method": "S256",
              "resource": f"{server.url}/mcp/notes/x"}
    r = httpx.post(server.url + "/v1/oauth/authorize", data={**params, "credential": world["who"]["tenant"]})
    assert r.status_code == 302, r.text
    return parse_qs(urlsplit(r.headers["location"]).query)["code"][0]


def test_an_oauth_code_or_refresh_token_spent_on_one_machine_is_refused_on_the_other(world: dict[str, Any]) -> None:
    one, two = world["one"], world["two"]
    r = httpx.post(one.url + "/v1/oauth/register", json={"client_name": "attacker", "redirect_uris": [REDIRECT]})
    assert r.status_code == 201, r.text
    client_id = r.json()["client_id"]
    verifier, challenge = _pkce()
    code = _code(world, one, client_id, challenge)
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier, "client_id": client_id,
            "redirect_uri": REDIRECT}
    first = httpx.post(one.url + "/v1/oauth/token", data=form)
    assert first.status_code == 200 and first.json()["access_token"], first.text
    # the same code replayed on the other machine (and on the first): refused
    for server in (two, one):
        again = httpx.post(server.url + "/v1/oauth/token", data=form)
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant", (server.url, again.text)
        assert "already used" in again.json()["error_description"]
    # a fresh code redeemed on machine 2 works there (the store is shared, not a refusal of everything)
    code2 = _code(world, one, client_id, challenge)
    ok = httpx.post(two.url + "/v1/oauth/token", data={**form, "code": code2})
    assert ok.status_code == 200, ok.text
    # refresh tokens rotate: one used on machine 2 is refused on machine 1
    refresh = ok.json()["refresh_token"]
    rform = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": client_id}
    used = httpx.post(two.url + "/v1/oauth/token", data=rform)
    assert used.status_code == 200 and used.json()["refresh_token"] != refresh, used.text
    replay = httpx.post(one.url + "/v1/oauth/token", data=rform)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant", replay.text
    # the rotated one still works, once, on either machine
    rotated = {**rform, "refresh_token": used.json()["refresh_token"]}
    assert httpx.post(one.url + "/v1/oauth/token", data=rotated).status_code == 200
    assert httpx.post(two.url + "/v1/oauth/token", data=rotated).status_code == 400


def _openai(server: LiveServer, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0, timeout=20)


def test_a_response_stored_on_one_machine_continues_on_the_other(world: dict[str, Any]) -> None:
    one, two = world["one"], world["two"]
    for who in ("tenant", "alice"):
        token = world["who"][who]
        first = _openai(one, token).responses.create(model="fast", input="remember the number 7")
        second = _openai(two, token).responses.create(model="fast", input="which number?",
                                                      previous_response_id=first.id)
        assert second.previous_response_id == first.id
        assert second.usage.input_tokens > first.usage.input_tokens  # machine 2 sent machine 1's history upstream
        back = _openai(two, token).responses.retrieve(first.id)
        assert back.id == first.id and back.output_text == first.output_text
        items = _openai(two, token).responses.input_items.list(first.id)
        assert [i.content[0].text for i in items.data] == ["remember the number 7"]
        # and the other way round: machine 1 reads what machine 2 stored
        assert _openai(one, token).responses.retrieve(second.id).output_text == second.output_text
    # bob (same tenant) sees none of alice's responses on either machine, nor can he continue them
    alice = _openai(one, world["who"]["alice"]).responses.create(model="fast", input="alice's secret")
    for server in (one, two):
        with pytest.raises(openai.NotFoundError):
            _openai(server, world["who"]["bob"]).responses.retrieve(alice.id)
        with pytest.raises(openai.NotFoundError):
            _openai(server, world["who"]["bob"]).responses.create(model="fast", input="x", previous_response_id=alice.id)
    # deleted on machine 2: gone on machine 1
    _openai(two, world["who"]["alice"]).responses.delete(alice.id)
    with pytest.raises(openai.NotFoundError):
        _openai(one, world["who"]["alice"]).responses.retrieve(alice.id)


def test_database_down_is_503_at_once_and_the_loop_keeps_serving(world: dict[str, Any]) -> None:
    """Last in this module: it stops the module's PostgreSQL for a moment."""
    one = world["one"]
    pg = world["postgres"]
    fresh = world["who"]["alice"]
    pg.stop()
    try:
        started = time.monotonic()
        with httpx.Client(timeout=30) as c:
            # an agent alice has not reached yet: its owner must come from the database
            r = c.get(one.url + "/v1/agents/counter/never-seen", headers={"Authorization": f"Bearer {fresh}"})
            assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable", r.text
            r = c.get(one.url + "/v1/responses/resp_nope", headers={"Authorization": f"Bearer {fresh}"})
            assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable", r.text
            assert r.headers.get("retry-after") == "1"
            for path in ("/.well-known/jwks.json", "/v1/admin/keys"):  # identity queries, open door and admin door
                r = c.get(one.url + path, headers=_h(world, "tenant"))
                assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable", (path, r.text)
            r = c.post(one.url + "/v1/oauth/token", data={"grant_type": "refresh_token", "refresh_token": "x.y",
                                                         "client_id": "x.y"})
            assert r.status_code == 400  # refused before any query: a malformed grant never reaches the database
        # a WebSocket is closed with 1013 (try again later), which clients retry; not 4004, which they never do
        code, frame = asyncio.run(_ws_first_frame(one, "/agents/counter/never-seen", fresh))
        assert code == 1013 and frame is None, (code, frame)
        assert time.monotonic() - started < 20, "a door waited far longer than the connect timeout"

        async def healthz_while_blocked() -> list[float]:
            async with httpx.AsyncClient(timeout=30) as c:
                slow = asyncio.ensure_future(c.get(one.url + "/v1/agents/counter/never-seen-2",
                                                   headers={"Authorization": f"Bearer {fresh}"}))
                await asyncio.sleep(0.2)
                waits = []
                for _ in range(5):
                    t0 = time.monotonic()
                    assert (await c.get(one.url + "/healthz")).status_code == 200
                    waits.append(time.monotonic() - t0)
                assert (await slow).status_code == 503
                return waits

        waits = asyncio.run(healthz_while_blocked())
        assert max(waits) < 1.0, waits  # the event loop was not held by the query waiting for the database
    finally:
        pg.start()
    deadline = time.monotonic() + 30
    while True:  # back by itself once the database is
        r = httpx.get(one.url + "/v1/agents/counter/alice-c", headers=_h(world, "alice"))
        if r.status_code == 200:
            break
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)
