"""``/v1/usage`` on a real ``myriad serve`` process, with usage written into its ledger
by this test process (the ledger file is shared safely between processes)."""

import csv
import io
import json
import subprocess
import sys

import httpx

from myriad.metering import Budget, Scope, Subject, Usage, UsageEvent
from myriad.metering._sqlite import SQLiteLedger
from tests.integration.live import REPO, LiveServer

PRICES = {"currency": "USD", "prices": [
    {"resource": "model.input_tokens", "unit_price": "0.15", "per": 1000000},
    {"resource": "model.output_tokens", "unit_price": "0.60", "per": 1000000}]}


def other_tenant_key(server: LiveServer) -> str:
    run = lambda *a: subprocess.run([sys.executable, "-m", "myriad", *a, "--data-dir", str(server.data_dir)],  # noqa: E731
                                    cwd=REPO, capture_output=True, text=True, check=True,
                                    env={"PYTHONPATH": f"{REPO / 'src'}:{REPO}", "PATH": "/usr/bin:/bin"})
    run("tenants", "create", "other")
    return run("keys", "create", "--tenant", "other").stdout.strip().splitlines()[-1]


def test_usage_api_is_tenant_scoped_and_exports(live_server: LiveServer):
    ledger = SQLiteLedger(live_server.data_dir / "metering.db")
    ledger.add_price_version(dict(PRICES))
    ledger.append([
        UsageEvent(Subject("default", "ann", "counter/a"), Usage.tokens_of("gpt", input=1000, output=100), id="d1"),
        UsageEvent(Subject("default", "bob"), Usage.tokens_of("gpt", input=10, output=0), id="d2"),
        UsageEvent(Subject("other", "eve"), Usage.tokens_of("gpt", input=5, output=5), id="o1"),
    ])
    ledger.close()
    u, h = live_server.url, live_server.headers()

    r = httpx.get(u + "/v1/usage", params={"by": "user"}, headers=h)
    assert r.status_code == 200
    body = r.json()
    assert body["tenant"] == "default" and body["currency"] == "USD"
    assert {x["user"]: x["cost"] for x in body["rows"]} == {"ann": "0.000210000", "bob": "0.000001500"}

    r = httpx.get(u + "/v1/usage", params={"by": "resource", "bucket": "hour", "format": "csv"}, headers=h)
    assert r.headers["content-type"].startswith("text/csv")
    assert {row["resource"] for row in csv.DictReader(io.StringIO(r.text))} == {
        "model.requests", "model.input_tokens", "model.output_tokens"}

    lines = [json.loads(x) for x in httpx.get(u + "/v1/usage/events", headers=h).text.splitlines()]
    assert [e["id"] for e in lines] == ["d1", "d2"]
    mes = [json.loads(x) for x in httpx.get(u + "/v1/usage/meter-events", headers=h).text.splitlines()]
    assert "d1:model.output_tokens" in {m["identifier"] for m in mes}

    r = httpx.post(u + "/v1/usage/budgets", json={"user": "ann", "period": "day", "hard": "1.50", "id": "ann-day"}, headers=h)
    assert r.status_code == 201
    (b,) = httpx.get(u + "/v1/usage/budgets", headers=h).json()["budgets"]
    assert b["id"] == "ann-day" and b["scope"]["tenant"] == "default" and b["hard"] == "1.500000000"
    r = httpx.post(u + "/v1/usage/limits", json={"kind": "requests_per_minute", "limit": 60}, headers=h)
    assert r.status_code == 201
    assert len(httpx.get(u + "/v1/usage/limits", headers=h).json()["limits"]) == 1

    inv = httpx.get(u + "/v1/usage/invoice", params={"since": "1d", "until": "0m"}, headers=h).json()
    assert inv["total"] == "0.000211500"
    assert httpx.get(u + "/v1/usage/prices", headers=h).json()["versions"][0]["version"] == 1

    # another tenant sees only its own usage and cannot touch this tenant's budget
    oh = {"Authorization": f"Bearer {other_tenant_key(live_server)}"}
    rows = httpx.get(u + "/v1/usage", params={"by": "user"}, headers=oh).json()["rows"]
    assert [x["user"] for x in rows] == ["eve"]
    assert httpx.get(u + "/v1/usage/budgets", headers=oh).json()["budgets"] == []
    r = httpx.delete(u + "/v1/usage/budgets/ann-day", headers=oh)
    assert r.status_code == 404
    r = httpx.post(u + "/v1/usage/budgets", json={"id": "ann-day", "hard": "999"}, headers=oh)
    assert r.status_code == 409
    r = httpx.get(u + "/v1/usage", params={"tenant": "default"}, headers=oh)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert httpx.delete(u + "/v1/usage/budgets/ann-day", headers=h).status_code == 204


def test_a_tenant_cannot_lift_the_operators_cap(live_server: LiveServer):
    ledger = SQLiteLedger(live_server.data_dir / "metering.db")  # the operator (as `myriad usage set-budget` does)
    ledger.put_budget(Budget(Scope("default"), "month", hard="10", id="op-cap"))
    ledger.close()
    u, h = live_server.url, live_server.headers()
    (b,) = httpx.get(u + "/v1/usage/budgets", headers=h).json()["budgets"]
    assert b["id"] == "op-cap" and b["managed_by"] == "operator"
    r = httpx.post(u + "/v1/usage/budgets", json={"id": "op-cap", "hard": "1000000"}, headers=h)
    assert r.status_code == 403 and "operator" in r.json()["error"]["message"]
    assert httpx.delete(u + "/v1/usage/budgets/op-cap", headers=h).status_code == 403
    # its own budgets it may change and remove
    assert httpx.post(u + "/v1/usage/budgets", json={"id": "mine", "hard": "5"}, headers=h).status_code == 201
    assert httpx.post(u + "/v1/usage/budgets", json={"id": "mine", "hard": "6"}, headers=h).status_code == 201
    assert httpx.delete(u + "/v1/usage/budgets/mine", headers=h).status_code == 204


def test_bad_usage_requests_get_clear_4xx(live_server: LiveServer):
    u, h = live_server.url, live_server.headers()
    cases = [
        (httpx.get(u + "/v1/usage"), 401, "unauthenticated"),
        (httpx.get(u + "/v1/usage", params={"by": "colour"}, headers=h), 400, "invalid_request"),
        (httpx.get(u + "/v1/usage", params={"bucket": "week"}, headers=h), 400, "invalid_request"),
        (httpx.get(u + "/v1/usage", params={"since": "yesterday"}, headers=h), 400, "invalid_request"),
        (httpx.get(u + "/v1/usage", params={"format": "xml"}, headers=h), 400, "invalid_request"),
        (httpx.get(u + "/v1/usage/invoice", headers=h), 400, "invalid_request"),
        (httpx.get(u + "/v1/usage/events", params={"after": "x"}, headers=h), 400, "invalid_request"),
        (httpx.post(u + "/v1/usage/budgets", content=b"{nope", headers=h), 400, "invalid_request"),
        (httpx.post(u + "/v1/usage/budgets", json={"hard": "lots"}, headers=h), 400, "invalid_request"),
        (httpx.post(u + "/v1/usage/budgets", json={"period": "week", "hard": 1}, headers=h), 400, "invalid_request"),
        (httpx.post(u + "/v1/usage/budgets", json={"colour": "red"}, headers=h), 400, "invalid_request"),
        (httpx.post(u + "/v1/usage/budgets", json={}, headers=h), 400, "invalid_request"),
        (httpx.post(u + "/v1/usage/limits", json={"kind": "per_week", "limit": 1}, headers=h), 400, "invalid_request"),
        (httpx.post(u + "/v1/usage/limits", json={"kind": "concurrent", "limit": "x"}, headers=h), 400, "invalid_request"),
        (httpx.delete(u + "/v1/usage/limits/nope", headers=h), 404, "not_found"),
    ]
    for r, status, code in cases:
        assert r.status_code == status, (r.request.url, r.text)
        assert r.json()["error"]["code"] == code, r.text
        assert r.json()["error"]["message"]
