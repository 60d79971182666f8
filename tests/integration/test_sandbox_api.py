"""``/v1/sandboxes`` on a real ``myriad serve`` process: both tiers, tenant-scoped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.integration.live import LiveServer
from tests.integration.test_usage_api import other_tenant_key
from tests.sandbox.conftest import sandbox_root


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    # sandboxes run as unprivileged uids that must be able to walk to their root
    s = LiveServer(tmp_path / "data", env={"MYRIAD_SANDBOX__ROOT": str(sandbox_root(tmp_path))}).start()
    yield s
    s.stop()


def test_isolate_over_http(server: LiveServer) -> None:
    u, h = server.url + "/v1/sandboxes", server.headers()
    r = httpx.post(u, json={"tier": "isolate", "limits": {"timeout": 2}}, headers=h)
    assert r.status_code == 201, r.text
    box = r.json()
    assert box["tier"] == "isolate" and box["limits"]["timeout"] == 2
    r = httpx.post(f"{u}/{box['id']}/run", json={"code": "console.log('hi'); return [1, 2, 3].map(x => x * x)"}, headers=h)
    assert r.json()["value"] == [1, 4, 9] and r.json()["stdout"] == "hi\n"
    r = httpx.post(f"{u}/{box['id']}/run", json={"code": "while (true) {}"}, headers=h, timeout=10)
    assert r.status_code == 408 and r.json()["error"]["code"] == "sandbox_timeout"
    r = httpx.post(f"{u}/{box['id']}/exec", json={"cmd": "ls"}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["code"] == "tier_unavailable"
    r = httpx.post(u, json={"tier": "isolate", "needs": ["filesystem"]}, headers=h)
    assert r.status_code == 400 and "cannot provide filesystem" in r.json()["error"]["message"]


def test_container_over_http(server: LiveServer) -> None:
    u, h = server.url + "/v1/sandboxes", server.headers()
    r = httpx.post(u, json={"needs": ["filesystem", "binaries"], "id": "dev", "limits": {"memory_mb": 128}}, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["tier"] == "container" and r.json()["id"] == "dev"
    d = f"{u}/dev"
    r = httpx.post(d + "/exec", json={"cmd": "echo $X > out.txt; cat out.txt; exit 3", "env": {"X": "42"}}, headers=h)
    assert r.json()["stdout"] == "42\n" and r.json()["exit_code"] == 3
    # files
    assert httpx.put(d + "/files/content", params={"path": "src/a.py"}, content=b"print('a')\n", headers=h).json()["bytes"] == 11
    assert httpx.get(d + "/files/content", params={"path": "src/a.py"}, headers=h).content == b"print('a')\n"
    names = {f["path"] for f in httpx.get(d + "/files", params={"recursive": "true"}, headers=h).json()["files"]}
    assert {"/workspace/out.txt", "/workspace/src", "/workspace/src/a.py"} <= names
    assert httpx.get(d + "/files/exists", params={"path": "src"}, headers=h).json() == {"exists": True}
    assert httpx.post(d + "/files/mkdir", json={"path": "x/y"}, headers=h).status_code == 200
    assert httpx.delete(d + "/files", params={"path": "x", "recursive": "true"}, headers=h).json()["deleted"]
    r = httpx.get(d + "/files/content", params={"path": "/etc/passwd"}, headers=h)
    assert r.status_code == 400 and "reaches /workspace only" in r.json()["error"]["message"]
    # streaming exec
    with httpx.stream("POST", d + "/exec", json={"cmd": "echo a; echo b >&2", "stream": True}, headers=h) as resp:
        lines = [json.loads(line) for line in resp.iter_lines() if line]
    assert {"type": "stdout", "data": "a\n"} in lines and {"type": "stderr", "data": "b\n"} in lines
    assert lines[-1]["type"] == "result" and lines[-1]["exit_code"] == 0
    # processes
    p = httpx.post(d + "/processes", json={"cmd": ["sh", "-c", "echo started; sleep 60"]}, headers=h).json()
    assert p["status"] == "running"
    assert [x["id"] for x in httpx.get(d + "/processes", headers=h).json()["processes"]] == [p["id"]]
    assert httpx.delete(f"{d}/processes/{p['id']}", headers=h).json()["status"] == "killed"
    assert httpx.get(f"{d}/processes/{p['id']}/logs", headers=h).json()["stdout"] == "started\n"
    # pause / resume
    assert httpx.post(d + "/pause", headers=h).json()["status"] == "paused"
    r = httpx.post(d + "/exec", json={"cmd": "true"}, headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    assert httpx.post(d + "/resume", headers=h).json()["status"] == "running"
    # snapshot / restore / fork
    snap = httpx.post(d + "/snapshots", headers=h).json()
    httpx.post(d + "/exec", json={"cmd": "rm -r src"}, headers=h)
    assert httpx.post(d + "/restore", json={"snapshot_id": snap["id"]}, headers=h).status_code == 200
    assert httpx.get(d + "/files/exists", params={"path": "src/a.py"}, headers=h).json() == {"exists": True}
    child = httpx.post(d + "/fork", json={"id": "dev2"}, headers=h)
    assert child.status_code == 201 and child.json()["id"] == "dev2"
    assert httpx.post(f"{u}/dev2/exec", json={"cmd": "cat src/a.py"}, headers=h).json()["stdout"] == "print('a')\n"
    assert httpx.get(f"{server.url}/v1/snapshots/{snap['id']}", headers=h).json()["sandbox_id"] == "dev"

    # another tenant: every id is a 404, and the list is empty
    oh = {"Authorization": f"Bearer {other_tenant_key(server)}"}
    for method, path, body in (("GET", d, None), ("POST", d + "/exec", {"cmd": "true"}), ("DELETE", d, None),
                               ("GET", d + "/files/content?path=out.txt", None), ("POST", d + "/snapshots", None)):
        r = httpx.request(method, path, json=body, headers=oh)
        assert r.status_code == 404, (method, path, r.text)
    assert httpx.get(f"{server.url}/v1/snapshots/{snap['id']}", headers=oh).status_code == 404
    assert httpx.get(u, headers=oh).json() == {"sandboxes": []}
    # an anonymous sandbox belongs to its creator's tenant too
    theirs = httpx.post(u, json={"tier": "isolate"}, headers=oh).json()["id"]
    assert httpx.post(f"{u}/{theirs}/run", json={"code": "1"}, headers=oh).json()["value"] == 1
    assert httpx.post(f"{u}/{theirs}/run", json={"code": "1"}, headers=h).status_code == 404
    assert [b["id"] for b in httpx.get(u, headers=oh).json()["sandboxes"]] == [theirs]
    assert {b["id"] for b in httpx.get(u, headers=h).json()["sandboxes"]} == {"dev", "dev2"}

    # bad input: 4xx JSON errors, never a 500
    for body, status in (({"cmd": 5}, 400), ({}, 400), ({"cmd": "true", "env": {"A": 1}}, 400), ({"cmd": "true", "timeout": "x"}, 400),
                         ({"cmd": "true", "timeout": -1}, 400), ({"cmd": ["a\u0000b"]}, 400)):
        r = httpx.post(d + "/exec", json=body, headers=h)
        assert r.status_code == status and r.json()["error"]["code"] == "invalid_request", (body, r.text)
    r = httpx.post(d + "/exec", content=b"{not json", headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.post(u, json={"limits": {"memory_mb": -1}}, headers=h)
    assert r.status_code == 400
    assert httpx.get(u, headers={}).status_code == 401

    assert httpx.delete(d, headers=h).json() == {"id": "dev", "deleted": True}
    assert httpx.get(d, headers=h).status_code == 404
