import httpx

from tests.integration.live import LiveServer


def test_health_and_auth(live_server: LiveServer):
    assert httpx.get(live_server.url + "/healthz").json()["status"] == "ok"
    r = httpx.get(live_server.url + "/v1/agents")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    r = httpx.get(live_server.url + "/v1/agents", headers={"Authorization": "Bearer myr_000000000000_" + "x" * 27})
    assert r.status_code == 401 and r.json()["error"]["message"] == "invalid API key"
    r = httpx.get(live_server.url + "/v1/agents", headers=live_server.headers())
    assert r.status_code == 200
    assert {c["agent"] for c in r.json()["classes"]} == {"counter", "reminders", "assistant"}


def test_rpc_state_and_on_request(live_server: LiveServer):
    h = live_server.headers()
    r = httpx.post(live_server.url + "/v1/agents/counter/alice/rpc", json={"method": "add", "args": [2, 3]}, headers=h)
    assert r.json() == {"result": 5}
    assert httpx.get(live_server.url + "/v1/agents/counter/alice", headers=h).json()["state"] == {"n": 5}
    assert httpx.get(live_server.url + "/agents/counter/alice", headers=h).json() == {"name": "alice", "n": 5}
    r = httpx.post(live_server.url + "/v1/agents/counter/alice/rpc", json={"method": "count", "args": [2]}, headers=h)
    assert r.json() == {"result": {"chunks": [0, 1], "result": "done"}}


def test_bad_input_gets_json_4xx(live_server: LiveServer):
    h = live_server.headers()
    u = live_server.url
    cases = [
        (httpx.get(u + "/agents/ghost/x", headers=h), 400, "unknown_agent"),
        (httpx.get(u + "/agents/counter/bad%20name!", headers=h), 400, "invalid_name"),
        (httpx.get(u + "/agents/counter/" + "a" * 200, headers=h), 400, "invalid_name"),
        (httpx.post(u + "/v1/agents/counter/a/rpc", content=b"{nope", headers=h), 400, "invalid_request"),
        (httpx.post(u + "/v1/agents/counter/a/rpc", json={"method": "nope"}, headers=h), 400, "invalid_request"),
        (httpx.post(u + "/v1/agents/counter/a/rpc", json={"method": "add", "args": [1]}, headers=h), 400, "invalid_request"),
        (httpx.get(u + "/v1/agents/counter/never-made", headers=h), 404, "not_found"),
        (httpx.get(u + "/no/such/route", headers=h), 404, "not_found"),
        (httpx.post(u + "/v1/agents/counter/a/rpc", content=b"x" * 2_000_000, headers=h), 413, "payload_too_large"),
    ]
    for r, status, code in cases:
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code, r.text
        assert "Traceback" not in r.text


def test_tenants_are_isolated(live_server: LiveServer):
    import subprocess
    import sys

    from tests.integration.live import REPO

    def cli(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "myriad", *args, "--data-dir", str(live_server.data_dir)],
                             cwd=REPO, env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
                             capture_output=True, text=True, check=True)
        return out.stdout.strip().splitlines()[-1]

    cli("tenants", "create", "acme")
    other = {"Authorization": "Bearer " + cli("keys", "create", "--tenant", "acme")}
    h = live_server.headers()
    httpx.post(live_server.url + "/v1/agents/counter/shared/rpc", json={"method": "add", "args": [10, 0]}, headers=h)
    # same address, other tenant: a different instance
    r = httpx.post(live_server.url + "/v1/agents/counter/shared/rpc", json={"method": "add", "args": [1, 0]}, headers=other)
    assert r.json() == {"result": 1}
    assert httpx.get(live_server.url + "/v1/agents/counter/shared", headers=h).json()["state"] == {"n": 10}
