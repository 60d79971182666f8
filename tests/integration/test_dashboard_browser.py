"""The dashboard in headless Chromium (Debian's, driven by Playwright): a served turn
shows up with its waterfall, charts draw, errors list, auth holds, nothing is fetched
from anywhere but this server. Set MYRIAD_UPDATE_SCREENSHOTS=1 to refresh docs/images."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.integration.live import REPO, LiveServer

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


def _activity(server: LiveServer) -> None:
    h = server.headers()
    for user, name, q in [("ann", "ann", "What is a span?"), ("bob", "bob", "Summarise my week"),
                          ("ann", "ann", "And a trace?")]:
        r = httpx.post(server.url + f"/v1/agents/assistant/{name}/rpc", json={"method": "ask", "args": [q]},
                       headers={**h, "baggage": f"enduser.id={user}"}, timeout=30)
        assert r.status_code == 200, r.text
    r = httpx.post(server.url + "/v1/agents/counter/c1/rpc", json={"method": "add", "args": [1, 2]},
                   headers=h, timeout=30)
    assert r.json() == {"result": 3}
    r = httpx.post(server.url + "/v1/agents/assistant/ann/rpc", json={"method": "ask", "args": [1, 2, 3]},
                   headers=h, timeout=30)
    assert r.status_code == 400  # a failed turn, for the errors panel
    r = httpx.post(server.url + "/v1/sandboxes", json={"tier": "isolate"}, headers=h, timeout=30)
    assert r.status_code in (200, 201), r.text
    sid = r.json()["id"]
    for code in ("return 6 * 7", "return [1, 2, 3].map(x => x * 2)"):
        r = httpx.post(server.url + f"/v1/sandboxes/{sid}/run", json={"code": code}, headers=h, timeout=30)
        assert r.status_code == 200, r.text
    r = httpx.post(server.url + "/v1/chat/completions", headers=h, timeout=30,
                   json={"model": "sim-large", "messages": [{"role": "user", "content": "hello"}]})
    assert r.status_code == 200


def test_dashboard_in_chromium(live_server: LiveServer, tmp_path: Path):
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium missing: run scripts/setup.sh --test (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    _activity(live_server)
    shots = tmp_path / "shots"
    shots.mkdir()
    foreign: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.on("request", lambda req: None if req.url.startswith(live_server.url) else foreign.append(req.url))

            page.goto(live_server.url + "/dashboard")
            assert "Open /dashboard?token=" in page.inner_text("body")  # no key, no dashboard

            page.goto(live_server.url + "/dashboard?token=" + live_server.key)
            assert page.url == live_server.url + "/dashboard"  # the key left the address bar
            page.wait_for_selector("body[data-loaded='1']")
            page.wait_for_selector("#turns tbody tr[data-trace]")
            assert "telemetry on" in page.inner_text("#telemetry-status")
            agents = page.inner_text("#agents")
            assert "assistant" in agents and "counter" in agents
            assert page.locator("#usage-chart svg rect").count() > 0
            assert "sim-small" in page.inner_text("#usage-legend") and "sim-large" in page.inner_text("#usage-legend")
            page.select_option("#usage-by", "user")
            page.wait_for_selector("#usage-legend span:has-text('ann')")
            assert "bob" in page.inner_text("#usage-legend")
            page.select_option("#usage-by", "model")
            page.wait_for_selector("#usage-legend span:has-text('sim-small')")
            sandboxes = page.inner_text("#sandboxes")
            assert "isolate" in sandboxes
            page.wait_for_selector("#errors li .lvl")
            assert "invalid_request" in page.inner_text("#errors") or "Wrong arguments" in page.inner_text("#errors")
            page.screenshot(path=str(shots / "dashboard.png"), full_page=True)

            # the newest successful assistant turn: its waterfall is HTTP -> invoke_agent -> chat
            row = page.locator("#turns tbody tr", has_text="assistant").filter(has_text="ok").first
            row.click()
            page.wait_for_selector(".wf-row[data-span^='chat ']")
            names = page.locator(".wf-row .wf-name").all_inner_texts()
            assert names[:3] == ["POST /v1/agents/{agent}/{name}/rpc", "invoke_agent assistant", "chat sim-small"]
            page.click(".wf-row[data-span^='chat ']")
            detail = page.inner_text("#span-detail")
            assert "gen_ai.usage.input_tokens" in detail and "gen_ai.provider.name" in detail
            page.locator("#trace-card").screenshot(path=str(shots / "dashboard-trace.png"))
        finally:
            browser.close()
    assert not foreign, f"the dashboard fetched from elsewhere: {foreign}"
    if os.environ.get("MYRIAD_UPDATE_SCREENSHOTS"):
        dest = REPO / "docs" / "images"
        dest.mkdir(parents=True, exist_ok=True)
        for f in shots.iterdir():
            shutil.copy(f, dest / f.name)


def test_dashboard_api_auth_and_bad_input(live_server: LiveServer):
    u = live_server.url
    assert httpx.get(u + "/dashboard/api/turns").status_code == 401
    assert httpx.get(u + "/dashboard/api/turns", cookies={"myriad_dashboard": "myr_nope"}).status_code == 401
    h = live_server.headers()
    r = httpx.get(u + "/dashboard/api/usage", params={"by": "colour"}, headers=h)
    assert r.status_code == 400 and "by must be" in r.json()["error"]["message"]
    r = httpx.get(u + "/dashboard/api/turns", params={"limit": "lots"}, headers=h)
    assert r.status_code == 400 and "limit" in r.json()["error"]["message"]
    r = httpx.get(u + "/dashboard/api/traces/xyz", headers=h)
    assert r.status_code == 400
    r = httpx.get(u + "/dashboard/api/traces/" + "ab" * 16, headers=h)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert httpx.get(u + "/dashboard/static/secrets.txt", headers=h).status_code == 404
    assert httpx.get(u + "/dashboard/static/app.js", headers=h).status_code == 200
    page = httpx.get(u + "/dashboard", headers=h)
    assert "default-src 'self'" in page.headers["content-security-policy"]
