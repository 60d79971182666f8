"""The unmodified npm ``agents`` client (AgentClient 0.32.0) against a real server."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.live import LiveServer

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed (scripts/setup.sh --test installs it)")
def test_agent_client_scenario(live_server: LiveServer):
    if not (NODE_DIR / "node_modules" / "agents").exists():
        pytest.fail("npm packages missing: run scripts/setup.sh --test (npm install in tests/node)")
    proc = subprocess.run(
        ["node", "scenario.mjs", f"127.0.0.1:{live_server.port}", live_server.key, "npm-user"],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["identity"] == {"name": "npm-user", "agent": "counter", "identified": True}
    assert out["initialState"] == {"n": 0}
    assert out["add"] == 5
    assert out["chunks"] == [0, 1, 2] and out["streamDone"] == "done"
    assert out["unknown"] == "Method nope does not exist"
    assert out["bSawAdd"] is True
    assert out["bSawSetState"] == ["server"]
    assert out["afterSet"] == 42
