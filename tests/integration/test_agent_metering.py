"""Agent turns are metered, and an agent can read its own spend."""

import httpx

from tests.integration.live import LiveServer


def test_turns_are_counted_per_agent(live_server: LiveServer):
    h = live_server.headers()
    for _ in range(3):
        r = httpx.post(live_server.url + "/v1/agents/counter/metered/rpc", json={"method": "add", "args": [1, 1]}, headers=h)
        assert r.status_code == 200
    live_server.stop()  # the counter flushes its last counts at shutdown
    live_server.start()
    r = httpx.get(live_server.url + "/v1/usage", params={"by": "agent", "resource": "agent.turns"}, headers=h)
    assert r.status_code == 200, r.text
    rows = {row["agent"]: row["quantity"] for row in r.json()["rows"]}
    assert rows == {"default/counter/metered": "3"}
