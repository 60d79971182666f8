"""``myriad serve --database postgresql://...``: keys, tenants, ``/v1/usage``, budgets and
``myriad usage`` all live in PostgreSQL, shared with every other process: usage written
by this test process shows up in the server's API, a key revoked by the CLI (another
process) is refused by the server within the notification's delivery (milliseconds), and the ledger's budget set
through the API is the one the CLI reads."""

from __future__ import annotations

import json
import os
import subprocess
import time
import sys
from pathlib import Path

import httpx

from myriad.metering import Subject, Usage, UsageEvent, open_store
from tests.integration.live import REPO, LiveServer

PRICES = {"currency": "USD", "prices": [
    {"resource": "model.input_tokens", "unit_price": "0.15", "per": 1000000},
    {"resource": "model.output_tokens", "unit_price": "0.60", "per": 1000000}]}


def cli(data_dir: Path, url: str, *args: str) -> str:
    env = {"PYTHONPATH": f"{REPO / 'src'}:{REPO}", "PATH": "/usr/bin:/bin", "MYRIAD_DATABASE": url}
    return subprocess.run([sys.executable, "-m", "myriad", *args], cwd=REPO, capture_output=True, text=True, check=True,
                          env=env, timeout=60).stdout


def test_keys_usage_and_budgets_live_in_postgresql(tmp_path: Path, pg_url: str) -> None:
    server = LiveServer(tmp_path / "data", agents="examples.counter", env={"MYRIAD_DATABASE": pg_url}).start()
    try:
        u, h = server.url, server.headers()
        assert not (server.data_dir / "identity.db").exists() and not (server.data_dir / "metering.db").exists()

        r = httpx.post(u + "/v1/usage/budgets", json={"period": "day", "hard": "0.0001", "id": "day"}, headers=h)
        assert r.status_code == 201, r.text
        ledger = open_store(pg_url)  # another process's view of the same ledger
        ledger.add_price_version(dict(PRICES))
        ledger.append([UsageEvent(Subject("default", "ann"), Usage.tokens_of("gpt", input=1000, output=100), id="d1"),
                       UsageEvent(Subject("other", "eve"), Usage.tokens_of("gpt", input=5, output=5), id="o1")])
        r = httpx.get(u + "/v1/usage", params={"by": "user"}, headers=h)
        assert r.status_code == 200, r.text
        assert {x["user"]: x["cost"] for x in r.json()["rows"]} == {"ann": "0.000210000"}  # tenant-scoped

        [status] = ledger.budget_status("default")
        assert status.budget.id == "day" and status.spent_nanos == 210_000  # charged by this process, set by the API
        ledger.close()

        # a second tenant and key made by the CLI (another process) work on the server at once
        env_dir = str(tmp_path / "cli")
        cli(tmp_path, pg_url, "tenants", "create", "other", "--data-dir", env_dir)
        other = cli(tmp_path, pg_url, "keys", "create", "--tenant", "other", "--data-dir", env_dir).strip().splitlines()[-1]
        r = httpx.get(u + "/v1/usage", headers={"Authorization": f"Bearer {other}"})
        assert r.status_code == 200 and r.json()["tenant"] == "other"
        key_id = other.split("_")[1]
        cli(tmp_path, pg_url, "keys", "revoke", key_id, "--data-dir", env_dir)
        deadline = time.monotonic() + 5  # the server's cache hears of it by notification
        while (r := httpx.get(u + "/v1/usage", headers={"Authorization": f"Bearer {other}"})).status_code == 200:
            assert time.monotonic() < deadline, "the server still accepts a key revoked 5 s ago"
            time.sleep(0.01)
        assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]

        # myriad usage (the CLI) reads the same ledger
        out = cli(tmp_path, pg_url, "usage", "--data-dir", env_dir, "totals", "--tenant", "other", "--by", "user")
        assert "eve" in out
        budgets = json.loads(cli(tmp_path, pg_url, "usage", "--data-dir", env_dir, "budgets", "--tenant", "default"))
        assert "day" in json.dumps(budgets)
    finally:
        server.stop()
    assert os.path.exists(server.log)
