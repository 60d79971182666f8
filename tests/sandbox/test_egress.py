"""The egress proxy: a granted sandbox reaches only what its policy allows, through the proxy."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from myriad.errors import InvalidRequest, PermissionDenied
from myriad.sandbox import EgressPolicy, EgressRequest, Sandboxes
from tests.sandbox.conftest import make_settings


@pytest.fixture
async def sandboxes(tmp_path: Path):
    """The operator opened the host's loopback (for the test servers here)."""
    sbs = Sandboxes(make_settings(tmp_path, egress_allow_private=["127.0.0.1"]))
    try:
        yield sbs
    finally:
        await sbs.aclose()


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"path": self.path, "headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def tcp_echo():
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            data = conn.recv(100)
            conn.sendall(b"echo:" + data)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()


# -- policy --------------------------------------------------------------------------


def test_policy_matching() -> None:
    p = EgressPolicy.from_json({"allow": ["api.github.com", "*.pypi.org"], "deny": ["evil.pypi.org"]})
    assert p.check_host("api.github.com") is None
    assert p.check_host("API.GitHub.com.") is None
    assert p.check_host("files.pypi.org") is None
    assert "not in this sandbox's allowlist" in p.check_host("pypi.org")
    assert "not in this sandbox's allowlist" in p.check_host("github.com")
    assert "denied" in p.check_host("evil.pypi.org")
    ported = EgressPolicy.from_json({"allow": ["api.github.com:443", "*.pypi.org"], "deny": ["*.pypi.org:22"]})
    assert ported.check_host("api.github.com", 443) is None
    assert "api.github.com:22 is not in this sandbox's allowlist" in ported.check_host("api.github.com", 22)
    assert ported.check_host("files.pypi.org", 8080) is None
    assert "denied" in ported.check_host("files.pypi.org", 22)
    star = EgressPolicy.from_json(True)
    assert star.check_host("anything.example") is None
    # deny wins even over "*" and over allow_private
    p = EgressPolicy.from_json({"allow": ["*"], "deny": ["localhost"], "allow_private": ["localhost"]})
    assert "denied" in p.check_host("localhost")


def test_private_addresses_blocked_unless_listed() -> None:
    p = EgressPolicy.from_json({"allow": ["*"]})
    for addr in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "100.64.0.1", "::1", "fd00::1",
                 "::ffff:127.0.0.1", "0.0.0.0", "224.0.0.1"):
        assert p.check_address("h", addr) is not None, addr
    assert p.check_address("h", "93.184.216.34") is None
    q = EgressPolicy.from_json({"allow": ["*"], "allow_private": ["10.0.0.0/8", "127.0.0.1"]})
    assert q.check_address("h", "10.9.9.9") is None and q.check_address("h", "127.0.0.1") is None
    assert q.check_address("h", "192.168.1.1") is not None


@pytest.mark.parametrize("address", [
    "64:ff9b::7f00:1", "64:ff9b::a01:203", "2002:7f00:1::1", "2002:a9fe:a9fe::", "::127.0.0.1", "::10.0.0.1",
    "::ffff:0:127.0.0.1", "64:ff9b:1::1", "2001::1", "2001:db8::1", "100::1", "fe80::1%eth0",
])
def test_embedded_private_ipv4_is_not_public(address: str) -> None:
    # NAT64, 6to4 and IPv4-compatible forms of private addresses (Python 3.11.7's
    # is_global calls the first six global: this check failed before)
    assert EgressPolicy.from_json({"allow": ["*"]}).check_address("h", address) is not None, address


def test_public_addresses_stay_public() -> None:
    p = EgressPolicy.from_json({"allow": ["*"]})
    for address in ("8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1", "::ffff:1.1.1.1"):
        assert p.check_address("h", address) is None, address


def test_private_allowance_must_be_covered_by_the_operator() -> None:
    p = EgressPolicy.from_json({"allow": ["*"], "allow_private": ["10.1.0.0/16", "127.0.0.1", "mirror.internal"]})
    assert p.private_outside(["10.0.0.0/8", "127.0.0.1", "mirror.internal"]) == []
    assert p.private_outside(["10.1.2.0/24", "mirror.internal"]) == ["10.1.0.0/16", "127.0.0.1"]
    assert p.private_outside([]) == ["10.1.0.0/16", "127.0.0.1", "mirror.internal"]
    # and the proxy checks the operator's list again at connect time
    assert p.check_address("h", "127.0.0.1", operator=[]) is not None
    assert p.check_address("h", "127.0.0.1", operator=["127.0.0.0/8"]) is None


async def test_a_sandbox_cannot_grant_itself_private_egress(tmp_path: Path) -> None:
    sbs = Sandboxes(make_settings(tmp_path, egress_allow_private=["10.0.0.0/8"]))
    try:
        with pytest.raises(PermissionDenied, match="operator"):
            await sbs.open(needs={"shell"}, network={"allow": ["*"], "allow_private": ["127.0.0.1"]})
        assert sbs.list("default") == []
    finally:
        await sbs.aclose()


def test_policy_validation() -> None:
    assert EgressPolicy.from_json(None) is None and EgressPolicy.from_json(False) is None
    with pytest.raises(InvalidRequest, match="unknown network field"):
        EgressPolicy.from_json({"alow": ["x"]})
    with pytest.raises(InvalidRequest, match="list of non-empty strings"):
        EgressPolicy.from_json({"allow": "x"})
    with pytest.raises(InvalidRequest, match="not a network"):
        EgressPolicy.from_json({"allow_private": ["10.0.0.0/99"]})


# -- through a real sandbox ----------------------------------------------------------

pytestmark = pytest.mark.integration
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="sandbox network egress needs Myriad to run as root")


@needs_root
async def test_allowed_request_goes_through_proxy_and_hook(sandboxes: Sandboxes, echo_server: int) -> None:
    seen: list[EgressRequest] = []

    async def inject(req: EgressRequest) -> None:
        seen.append(req)
        req.headers.append(("X-Myriad-Identity", f"sandbox={req.sandbox_id}"))

    sandboxes.egress.add_hook(inject)
    box = await sandboxes.open(needs={"shell"}, owner="t", id="net",
                               network={"allow": ["127.0.0.1"], "allow_private": ["127.0.0.1"]})
    res = await box.exec(f"curl -sS --max-time 5 http://127.0.0.1:{echo_server}/hello?x=1")
    assert res.exit_code == 0, res.stderr
    body = json.loads(res.stdout)
    assert body["path"] == "/hello?x=1"
    assert body["headers"]["X-Myriad-Identity"] == "sandbox=net"
    assert seen and seen[0].host == "127.0.0.1" and seen[0].scheme == "http"
    assert any(e.allowed and e.sandbox_id == "net" for e in sandboxes.egress.events)
    # the proxy is the only way out: the same host port is not reachable directly
    res = await box.exec(f"curl -sS --noproxy '*' --max-time 3 http://127.0.0.1:{echo_server}/ || echo DIRECT-FAILED")
    assert "DIRECT-FAILED" in res.stdout


@needs_root
async def test_hook_can_refuse(sandboxes: Sandboxes, echo_server: int) -> None:
    async def refuse(req: EgressRequest) -> None:
        raise PermissionDenied("no credential for this host")

    sandboxes.egress.add_hook(refuse)
    box = await sandboxes.open(needs={"shell"}, network={"allow": ["127.0.0.1"], "allow_private": ["127.0.0.1"]})
    res = await box.exec(f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{echo_server}/")
    assert res.stdout == "403"


@needs_root
async def test_loopback_blocked_without_allow_private(sandboxes: Sandboxes, echo_server: int) -> None:
    box = await sandboxes.open(needs={"shell"}, network={"allow": ["*"]})
    res = await box.exec(f"curl -s -w ' %{{http_code}}' http://localhost:{echo_server}/; "
                         f"curl -s -w ' %{{http_code}}' http://127.0.0.1:{echo_server}/")
    assert res.stdout.count(" 403") == 2, res.stdout
    assert "non-public address" in res.stdout
    assert not any(e.allowed for e in sandboxes.egress.events)


@needs_root
async def test_unlisted_and_denied_hosts(sandboxes: Sandboxes) -> None:
    box = await sandboxes.open(needs={"shell"}, network={"allow": ["*.example.com"], "deny": ["bad.example.com"]})
    res = await box.exec("curl -s http://not-listed.test/; echo; curl -s http://bad.example.com/")
    assert "not-listed.test is not in this sandbox's allowlist" in res.stdout
    assert "bad.example.com is denied" in res.stdout
    # HTTPS goes through CONNECT and is checked the same way (refused before any DNS or TLS)
    res = await box.exec("curl -sS https://not-listed.test/ 2>&1 || true")
    assert "403" in res.stdout


@needs_root
async def test_connect_tunnel(sandboxes: Sandboxes, tcp_echo: int) -> None:
    box = await sandboxes.open(needs={"shell"}, network={"allow": [f"127.0.0.1:{tcp_echo}"], "allow_private": ["127.0.0.1"]})
    script = (
        "import socket, sys\ns = socket.create_connection(('127.0.0.1', 3128))\n"
        "s.sendall(b'CONNECT 127.0.0.1:%s HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' % sys.argv[1].encode())\n"
        "head = b''\nwhile not head.endswith(b'\\r\\n\\r\\n'): head += s.recv(1)\n"
        "status = head.split(b'\\r\\n')[0].decode()\n"
        "if ' 200 ' in status:\n    s.sendall(b'ping'); print(status, s.recv(100).decode())\nelse:\n    print(status)"
    )
    res = await box.exec(["python3", "-c", script, str(tcp_echo)])
    assert res.stdout.strip() == "HTTP/1.1 200 Connection Established echo:ping", res.stdout + res.stderr
    # the allow entry names one port: any other port on the same host is refused
    res = await box.exec(["python3", "-c", script, str(tcp_echo + 1 if tcp_echo < 65535 else tcp_echo - 1)])
    assert res.stdout.strip() == "HTTP/1.1 403 Forbidden", res.stdout + res.stderr


@needs_root
async def test_git_clone_through_proxy(sandboxes: Sandboxes, tmp_path: Path) -> None:
    # a bare repository served over "dumb" HTTP on the host's loopback
    src = tmp_path / "src"
    src.mkdir()
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "main", str(src)], check=True)
    (src / "README").write_text("hello from git\n")
    subprocess.run([*git, "-C", str(src), "add", "README"], check=True)
    subprocess.run([*git, "-C", str(src), "commit", "-qm", "first"], check=True)
    subprocess.run([*git, "-C", str(src), "tag", "v1"], check=True)
    (src / "README").write_text("second\n")
    subprocess.run([*git, "-C", str(src), "commit", "-qam", "second"], check=True)
    serve_dir = tmp_path / "www"
    serve_dir.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(src), str(serve_dir / "repo.git")], check=True)
    subprocess.run(["git", "-C", str(serve_dir / "repo.git"), "update-server-info"], check=True)
    server = await asyncio.create_subprocess_exec(
        "python3", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(serve_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        line = (await asyncio.wait_for(server.stdout.readline(), 10)).decode()  # type: ignore[union-attr]
        port = int(line.split("port ")[1].split()[0])
        box = await sandboxes.open(needs={"git"}, network={"allow": ["127.0.0.1"], "allow_private": ["127.0.0.1"]})
        res = await box.git_clone(f"http://127.0.0.1:{port}/repo.git", "repo", ref="v1")
        assert res.exit_code == 0, res.stderr
        assert (await box.read_file("repo/README")) == b"hello from git\n"
        # without a grant the same clone fails
        offline = await sandboxes.open(needs={"git"})
        res = await offline.git_clone(f"http://127.0.0.1:{port}/repo.git", "repo", timeout=10)
        assert res.exit_code != 0
    finally:
        server.kill()
        await server.wait()
